// Package tlspolicy knows ELB's predefined SSL security policies and ALPN policies by their AWS
// names, and what each allows in Go's crypto/tls: the protocol versions and, for TLS 1.0–1.2,
// the cipher suites. It is pure data and lookups; the data plane applies the result to a
// tls.Config, the API answers DescribeSslPolicies from it.
//
// Where Go cannot do what AWS does:
//
//   - TLS 1.3 cipher suites are not configurable in crypto/tls: a policy that allows TLS 1.3
//     offers Go's three, which are exactly the three every AWS TLS 1.3 policy names.
//   - crypto/tls lacks the CBC suites with SHA-384 and the RSA AES-256 CBC SHA-256 suite
//     (ECDHE-ECDSA-AES256-SHA384, ECDHE-RSA-AES256-SHA384, AES256-SHA256): a client that
//     offers only those is refused where AWS would accept it. Policy.Unsupported lists them.
//   - Go picks the cipher suite by its own preference (AES-GCM first when the hardware has it,
//     see crypto/tls's Config.CipherSuites), not by the policy's priority.
//   - Key exchange groups are the classical ones (X25519, P-256, P-384): the hybrid
//     post-quantum groups belong to AWS's "PQ" policies, which this table does not have.
package tlspolicy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Default is the policy of a TLS listener created without one through the API (the AWS CLI,
// CloudFormation, the CDK, the AWS Load Balancer Controller).
const Default = "ELBSecurityPolicy-2016-08"

// ErrUnknown is wrapped by the errors of Lookup and ALPN for a name AWS does not define (or moat
// does not know).
var ErrUnknown = errors.New("unknown policy")

// Policy is one security policy as DescribeSslPolicies describes it.
type Policy struct {
	Name string
	// Protocols are its SslProtocols: TLSv1, TLSv1.1, TLSv1.2, TLSv1.3.
	Protocols []string
	// Ciphers are the OpenSSL names of its ciphers; DescribeSslPolicies reports each with its
	// position here, from 1, as its priority.
	Ciphers []string
	// SupportedLoadBalancerTypes are application and network for every predefined policy.
	SupportedLoadBalancerTypes []string
}

// All returns every known policy, in AWS's documentation order.
func All() []Policy {
	out := make([]Policy, len(table))
	for i, p := range table {
		out[i] = p.clone()
	}
	return out
}

// Lookup returns the policy named name (exactly, as AWS spells it).
func Lookup(name string) (Policy, error) {
	for _, p := range table {
		if p.Name == name {
			return p.clone(), nil
		}
	}
	return Policy{}, fmt.Errorf("SSL policy %q: %w", name, ErrUnknown)
}

func (p Policy) clone() Policy {
	p.Protocols = slices.Clone(p.Protocols)
	p.Ciphers = slices.Clone(p.Ciphers)
	p.SupportedLoadBalancerTypes = slices.Clone(bothTypes)
	return p
}

// Backend returns the policy the load balancer uses toward TLS targets when its listener uses p:
// ELBSecurityPolicy-TLS13-1-0-2021-06 behind a policy that allows TLS 1.3, else
// ELBSecurityPolicy-2016-08 (users choose the front-end policy only).
func (p Policy) Backend() Policy {
	name := Default
	if slices.Contains(p.Protocols, TLSv13) {
		name = "ELBSecurityPolicy-TLS13-1-0-2021-06"
	}
	b, _ := Lookup(name)
	return b
}

var versions = map[string]uint16{
	TLSv10: tls.VersionTLS10,
	TLSv11: tls.VersionTLS11,
	TLSv12: tls.VersionTLS12,
	TLSv13: tls.VersionTLS13,
}

// Versions returns the lowest and highest protocol version the policy allows. Every policy's
// protocols are contiguous, so the two bound them exactly.
func (p Policy) Versions() (lowest, highest uint16) {
	for _, name := range p.Protocols {
		v := versions[name]
		if lowest == 0 || v < lowest {
			lowest = v
		}
		highest = max(highest, v)
	}
	return lowest, highest
}

// goSuites are the IDs crypto/tls implements, by IANA name, secure and insecure alike (AWS's
// older policies name suites Go files as insecure: CBC with SHA-256, 3DES).
var goSuites = func() map[string]*tls.CipherSuite {
	m := map[string]*tls.CipherSuite{}
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		m[s.Name] = s
	}
	return m
}()

func isTLS13Only(s *tls.CipherSuite) bool {
	return len(s.SupportedVersions) == 1 && s.SupportedVersions[0] == tls.VersionTLS13
}

// CipherSuites returns the crypto/tls IDs of the policy's TLS 1.0–1.2 ciphers that Go
// implements, in the policy's order. TLS 1.3 suites are left out: Go does not let them be chosen.
func (p Policy) CipherSuites() []uint16 {
	var ids []uint16
	for _, name := range p.Ciphers {
		if s := goSuites[cipherSuites[name].iana]; s != nil && !isTLS13Only(s) {
			ids = append(ids, s.ID)
		}
	}
	return ids
}

// Unsupported returns the OpenSSL names of the policy's ciphers that crypto/tls lacks, which moat
// therefore never negotiates.
func (p Policy) Unsupported() []string {
	var names []string
	for _, name := range p.Ciphers {
		if goSuites[cipherSuites[name].iana] == nil {
			names = append(names, name)
		}
	}
	return names
}

// classicalGroups are the key exchange groups of the policies in this table (none is a "PQ"
// policy), in Go's order of preference.
var classicalGroups = []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384}

// Apply restricts cfg to what the policy allows: protocol versions, TLS 1.0–1.2 cipher suites and
// key exchange groups.
func (p Policy) Apply(cfg *tls.Config) {
	cfg.MinVersion, cfg.MaxVersion = p.Versions()
	cfg.CipherSuites = p.CipherSuites()
	cfg.CurvePreferences = slices.Clone(classicalGroups)
}

// ALPN returns the protocols an ALPN policy (HTTP1Only, HTTP2Only, HTTP2Optional,
// HTTP2Preferred, None) offers, in its order of preference: a tls.Config's NextProtos. None, or
// the empty name (a listener without an ALPN policy), offers nothing.
func ALPN(policy string) ([]string, error) {
	if policy == "" {
		return nil, nil
	}
	protos, ok := alpnPolicies[policy]
	if !ok {
		return nil, fmt.Errorf("ALPN policy %q: %w", policy, ErrUnknown)
	}
	return slices.Clone(protos), nil
}

// ALPNPolicies returns the names of the ALPN policies NLB accepts, sorted.
func ALPNPolicies() []string {
	return slices.Sorted(maps.Keys(alpnPolicies))
}
