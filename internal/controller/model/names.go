package model

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// The AWS controller's generated names: "k8s-" + the first 8 alphanumerics of the namespace
// and of the name + the first 10 hex digits of a SHA-256 over inputs that must change when the
// resource has to be replaced. Users' tooling depends on these exact strings.

// LoadBalancerName is the generated load balancer name: the hash covers the cluster, the
// Service UID and the scheme (a scheme change replaces the load balancer).
func LoadBalancerName(cluster, namespace, name, uid string, scheme Scheme) string {
	return generatedName(namespace, name, cluster, uid, string(scheme))
}

// ManagedSecurityGroupName is the name of a Service's managed frontend group: the hash covers
// the cluster, the Service name, namespace and UID.
func ManagedSecurityGroupName(cluster, namespace, name, uid string) string {
	return generatedName(namespace, name, cluster, name, namespace, uid)
}

// TargetGroupName is the name of a Service port's target group: the hash covers everything
// that forces a new target group (ports, target type, protocols, health-check interval).
func TargetGroupName(cluster, namespace, name, uid string, tgPort, svcPort int32, targetType TargetType,
	tgProtocol, hcProtocol Protocol, hcInterval int32) string {
	return generatedName(namespace, name, cluster, uid, strconv.Itoa(int(tgPort)), strconv.Itoa(int(svcPort)),
		string(targetType), string(tgProtocol), string(hcProtocol), strconv.Itoa(int(hcInterval)))
}

// BackendSecurityGroupName is the name of the cluster's auto-created shared backend group.
func BackendSecurityGroupName(cluster string) string {
	return fmt.Sprintf("k8s-traffic-%.232s-%.10s", alnum(cluster), hash(cluster))
}

func generatedName(namespace, name string, hashed ...string) string {
	return fmt.Sprintf("k8s-%.8s-%.8s-%.10s", alnum(namespace), alnum(name), hash(hashed...))
}

func hash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		_, _ = h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// alnum keeps ASCII letters and digits, as the AWS controller's [[:^alnum:]] pattern does.
func alnum(s string) string {
	return strings.Map(func(r rune) rune {
		if r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return r
		}
		return -1
	}, s)
}
