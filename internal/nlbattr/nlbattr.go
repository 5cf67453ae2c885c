// Package nlbattr is the catalog of network load balancer attributes AWS accepts, with how their
// values are checked. moat lb's API rejects what AWS rejects with it, and the controller rejects
// bad annotations with it before calling any API.
package nlbattr

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Check returns "" for a value AWS accepts, else what AWS expects: "true or false".
type Check func(value string) string

// LoadBalancer are the attributes of network load balancers.
var LoadBalancer = map[string]Check{
	"deletion_protection.enabled":            Bool,
	"load_balancing.cross_zone.enabled":      Bool,
	"access_logs.s3.enabled":                 Bool,
	"access_logs.s3.bucket":                  Any,
	"access_logs.s3.prefix":                  Any,
	"ipv6.deny_all_igw_traffic":              Bool,
	"zonal_shift.config.enabled":             Bool,
	"dns_record.client_routing_policy":       OneOf("availability_zone_affinity", "partial_availability_zone_affinity", "any_availability_zone"),
	"secondary_ips.auto_assigned.per_subnet": Int(0, 7),
}

// TargetGroup are the attributes of network load balancer target groups.
var TargetGroup = map[string]Check{
	"deregistration_delay.timeout_seconds":                                           Int(0, 3600),
	"deregistration_delay.connection_termination.enabled":                            Bool,
	"stickiness.enabled":                                                             Bool,
	"stickiness.type":                                                                OneOf("source_ip"),
	"proxy_protocol_v2.enabled":                                                      Bool,
	"preserve_client_ip.enabled":                                                     Bool,
	"load_balancing.cross_zone.enabled":                                              OneOf("true", "false", "use_load_balancer_configuration"),
	"target_health_state.unhealthy.connection_termination.enabled":                   Bool,
	"target_health_state.unhealthy.draining_interval_seconds":                        Int(0, 360000),
	"target_group_health.dns_failover.minimum_healthy_targets.count":                 OffOr(Int(1, 1<<31-1)),
	"target_group_health.dns_failover.minimum_healthy_targets.percentage":            OffOr(Int(1, 100)),
	"target_group_health.unhealthy_state_routing.minimum_healthy_targets.count":      Int(1, 1<<31-1),
	"target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage": OffOr(Int(1, 100)),
}

// Listener are the attributes of network load balancer listeners.
var Listener = map[string]Check{
	"tcp.idle_timeout.seconds": Int(60, 6000),
}

// Bool accepts true and false.
func Bool(v string) string {
	if v == "true" || v == "false" {
		return ""
	}
	return "true or false"
}

// Any accepts every value.
func Any(string) string { return "" }

// OneOf accepts the values listed.
func OneOf(allowed ...string) Check {
	return func(v string) string {
		if slices.Contains(allowed, v) {
			return ""
		}
		return "one of " + strings.Join(allowed, ", ")
	}
}

// Int accepts decimal integers from lo to hi.
func Int(lo, hi int64) Check {
	return func(v string) string {
		n, err := strconv.ParseInt(v, 10, 64)
		if err == nil && n >= lo && n <= hi {
			return ""
		}
		return fmt.Sprintf("an integer from %d to %d", lo, hi)
	}
}

// OffOr accepts "off" and what check accepts.
func OffOr(check Check) Check {
	return func(v string) string {
		if v == "off" {
			return ""
		}
		if msg := check(v); msg != "" {
			return msg + ", or off"
		}
		return ""
	}
}
