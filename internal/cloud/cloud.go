// Package cloud is moat lb's control plane: the resources of the AWS subset it serves (VPCs,
// subnets, instances and their interfaces, security groups, prefix lists, load balancers, target
// groups, listeners), AWS's rules for changing them, and their durable state. It knows nothing of
// HTTP or XML: the awsapi package decodes requests into these calls and encodes what they return.
//
// Every mutation runs in one store transaction, validated fully before anything is written, so a
// request either happens whole or not at all, and is durable before the caller answers.
package cloud

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/moatlb/moat/internal/store"
)

// Config holds what a region of moat lb is: names, quotas and the DNS suffix.
type Config struct {
	Region    string
	AccountID string
	// DNSSuffix ends load balancer DNS names: <name>-<id>.elb.<region>.<DNSSuffix>.
	DNSSuffix string
	Quotas    Quotas
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Quotas are AWS's adjustable limits; the defaults are AWS's defaults.
type Quotas struct {
	SecurityGroupsPerLoadBalancer int
	SecurityGroupsPerInterface    int
	InboundRulesPerGroup          int
	OutboundRulesPerGroup         int
	SecurityGroupsPerVPC          int
	LoadBalancers                 int
	ListenersPerLoadBalancer      int
	TargetGroups                  int
	TargetsPerTargetGroup         int
	TagsPerResource               int
}

// DefaultQuotas are the defaults AWS applies to a new account.
func DefaultQuotas() Quotas {
	return Quotas{
		SecurityGroupsPerLoadBalancer: 5,
		SecurityGroupsPerInterface:    5,
		InboundRulesPerGroup:          60,
		OutboundRulesPerGroup:         60,
		SecurityGroupsPerVPC:          2500,
		LoadBalancers:                 50,
		ListenersPerLoadBalancer:      50,
		TargetGroups:                  3000,
		TargetsPerTargetGroup:         1000,
		TagsPerResource:               50,
	}
}

// Cloud serves the resources of one region from a store.
type Cloud struct {
	cfg   Config
	store store.Store
	// health is where DescribeTargetHealth gets the health of targets in use (the data plane).
	health atomic.Pointer[healthSource]
	ports  atomic.Pointer[portChecker]
	served atomic.Pointer[servedZones]
	idx    indexes
}

// New returns a Cloud over st. Zero fields of cfg get AWS-like defaults.
func New(st store.Store, cfg Config) *Cloud {
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.AccountID == "" {
		cfg.AccountID = "000000000000"
	}
	if cfg.DNSSuffix == "" {
		cfg.DNSSuffix = "moat.internal"
	}
	if cfg.Quotas == (Quotas{}) {
		cfg.Quotas = DefaultQuotas()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Cloud{cfg: cfg, store: st, idx: newIndexes()}
}

// Config returns the configuration the Cloud runs with.
func (c *Cloud) Config() Config { return c.cfg }

// Store returns the store, for watchers such as the data plane.
func (c *Cloud) Store() store.Store { return c.store }

// Error is an AWS API error: a code clients branch on and a message people read.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Store buckets, one per resource kind.
const (
	bucketVPCs           = "vpcs"
	bucketSubnets        = "subnets"
	bucketInstances      = "instances"
	bucketInterfaces     = "interfaces"
	bucketSecurityGroups = "security-groups"
	bucketPrefixLists    = "prefix-lists"
	bucketLoadBalancers  = "load-balancers"
	bucketTargetGroups   = "target-groups"
	bucketListeners      = "listeners"
)

// randomHex returns n random hex digits, for resource IDs.
func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return hex.EncodeToString(b)[:n]
}

// newID returns an EC2-style ID: prefix-<17 hex>.
func newID(prefix string) string { return prefix + "-" + randomHex(17) }

// Tags are a resource's tags. Keys are unique; AWS returns them in no particular order, moat in
// key order so replies are stable.
type Tags map[string]string

// Tag is one key/value pair, as the APIs carry them.
type Tag struct {
	Key   string
	Value string
}

// List returns the tags sorted by key.
func (t Tags) List() []Tag {
	out := make([]Tag, 0, len(t))
	for k, v := range t {
		out = append(out, Tag{k, v})
	}
	slices.SortFunc(out, func(a, b Tag) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Filter is an EC2 Describe filter: values of one name are OR-ed, filters are AND-ed.
type Filter struct {
	Name   string
	Values []string
}

// matchValue reports whether got matches any pattern; patterns allow * and ? as in EC2 filters.
func matchValue(patterns []string, got string) bool {
	for _, p := range patterns {
		if wildcardMatch(p, got) {
			return true
		}
	}
	return false
}

func wildcardMatch(pattern, s string) bool {
	if !strings.ContainsAny(pattern, "*?") {
		return pattern == s
	}
	// Iterative glob with backtracking on the last star: linear in practice, no recursion.
	p, i, star, mark := 0, 0, -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// matchTagFilter handles tag:<key> and tag-key filters; ok is false for other names.
func matchTagFilter(f Filter, tags Tags) (matched, ok bool) {
	if key, isTag := strings.CutPrefix(f.Name, "tag:"); isTag {
		v, has := tags[key]
		return has && matchValue(f.Values, v), true
	}
	switch f.Name {
	case "tag-key":
		for k := range tags {
			if matchValue(f.Values, k) {
				return true, true
			}
		}
		return false, true
	case "tag-value":
		for _, v := range tags {
			if matchValue(f.Values, v) {
				return true, true
			}
		}
		return false, true
	}
	return false, false
}
