// Package dataplane carries the traffic of moat's load balancers: it listens on
// every load balancer address and listener port, admits or denies each new flow
// by the load balancer's security groups, forwards admitted flows to a healthy
// target, and health-checks targets.
//
// The boundary is an Engine: the control plane hands it the complete desired
// state (Config) on every change, and reads back target health, listener
// status and Prometheus metrics. The engine knows nothing of the API, the store
// or AWS's identifiers beyond opaque IDs. Beside its userspace proxy it can
// hand the TCP flows it may to the kernel (Options.Kernel; see fastpath.go).
//
// # How the userspace engine works
//
// A listening socket exists per (load balancer address, port, protocol) and
// survives every Apply that still wants it; what changes is its route (the
// listener's compiled policy, target group and idle timeout), swapped with an
// atomic pointer, and its socket filter, re-attached when the policy changes.
// So a rule change decides the next flow as soon as Apply returns, and never
// touches an established one: admission is judged once per flow, and every
// accepted connection has its inherited filter removed.
//
// Target groups live across Applies too, so health survives configuration
// changes. Each keeps, per balancing scope (a zone, or all enabled zones with
// cross-zone on), the list of candidate targets — registered, not draining,
// reachable by the backend security groups — and the healthy subset. A new
// flow picks from the healthy subset by rendezvous hashing of its 5-tuple (of
// the client address alone with source-IP stickiness), or from all candidates
// when none is healthy (failing open, per scope, as AWS does per zone). TCP
// flows are carried both ways by event loops on Linux (eventloop_linux.go),
// and by two goroutines each elsewhere and for TLS (tcpFlow.pipe): small runs
// of bytes through a buffer, bulk runs spliced in the kernel. UDP flows get
// one connected upstream socket per client address and port.
//
// Idle timeouts count payload only: TCP keepalive probes, which reset an
// NLB's idle timer, are invisible to a userspace proxy.
//
// # What a denied client observes
//
// The userspace engine (Userspace) attaches a classic BPF socket filter built
// from the listener's policy to every listening socket (see
// secgroup.SocketFilter), so the kernel drops what the groups deny before a
// connection exists:
//
//   - TCP: the SYN is dropped and no SYN-ACK is sent. The client retransmits
//     and its connect times out (its own timeout, or about 127 s with Linux
//     defaults), as on AWS. The target never sees anything.
//   - UDP: the datagram vanishes; no ICMP is sent.
//
// When a policy is too large for a socket filter (about 2,000 disjoint IPv4
// ranges), or in the instant between a rule change and the new filter being
// attached, the engine judges each accepted connection itself: a denied TCP
// client's handshake completes, then the connection is reset at once
// (SO_LINGER 0), so its connect or its first read fails with ECONNRESET. Its
// bytes never reach a target. A denied UDP datagram is dropped in userspace.
// Both are counted (moat_dataplane_denied_flows_total) and can be logged
// (Options.FlowLog). Packets the kernel filter drops are counted per listener
// (moat_dataplane_listener_dropped_packets_total, one per SYN retransmission
// or datagram) but carry no client address the engine could log; moat lb's
// instance firewall logs them instead, where it runs (firewall.Listener).
//
// A client whose flow has no target at all (an empty target group, or every
// target draining or unreachable by the backend security groups) is reset
// (TCP) or dropped (UDP) and counted with reason no_target.
//
// # TLS listeners
//
// A TLS listener is a TCP socket like any other: its socket filter drops a
// denied client's SYN, so a denied client never sees a ServerHello. An
// admitted client's handshake (crypto/tls, configured from the listener's
// security policy, certificates and ALPN policy; see package tlspolicy) must
// finish within ListenerTLS.HandshakeTimeout, or the client is closed and
// counted (moat_dataplane_tls_handshake_errors_total). Then the target is
// connected as for TCP — PROXY v2 header and client IP preservation alike —
// and, for a TLS target group, a TLS session is opened to it without
// verifying its certificate. The bytes are copied through userspace (no
// splice: one side at least is encrypted) and counted as plaintext. The
// kernel fast path never takes a TLS listener's flows.
//
// # Client IP preservation
//
// With TargetGroup.PreserveClientIP the upstream socket is bound to the
// client's own address before it connects, so the target sees the client as
// the source. A userspace proxy can do that without privileges only for
// clients on loopback (127.0.0.0/8, ::1), which is where moat runs its
// addresses by default; for other clients the load balancer's zone address is
// the source, and the client's address is available to the target only
// through proxy protocol v2. Flows the kernel fast path carries are DNATed,
// so their targets see the client unless the flow is SNATed because
// PreserveClientIP is off.
package dataplane

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/moatlb/moat/internal/secgroup"
	"github.com/moatlb/moat/internal/tlspolicy"
)

// Protocol is a listener protocol, spelled as ELBv2 spells it.
type Protocol string

// Listener protocols the data plane serves.
const (
	TCP    Protocol = "TCP"
	UDP    Protocol = "UDP"
	TCPUDP Protocol = "TCP_UDP"
	// TLS terminates TLS (Listener.TLS) and forwards the plaintext, or a new
	// TLS session when the target group speaks TLS (TargetGroup.TLS).
	TLS Protocol = "TLS"
)

// Health-check protocols.
const (
	HealthCheckTCP   = "TCP"
	HealthCheckHTTP  = "HTTP"
	HealthCheckHTTPS = "HTTPS"
)

// Defaults applied where a Config leaves a value zero. They are NLB's.
const (
	DefaultTCPIdleTimeout     = 350 * time.Second
	DefaultUDPIdleTimeout     = 120 * time.Second
	DefaultHealthInterval     = 30 * time.Second
	DefaultHealthTimeoutTCP   = 10 * time.Second
	DefaultHealthTimeoutHTTP  = 6 * time.Second
	DefaultHealthyThreshold   = 5
	DefaultUnhealthyThreshold = 2
	DefaultMatcher            = "200-399"
	DefaultHealthPath         = "/"
)

// Config is the complete desired state of the data plane; Engine.Apply
// replaces the previous one.
type Config struct {
	LoadBalancers []LoadBalancer
}

// LoadBalancer is one network load balancer: addresses (one per zone, two
// for dualstack) and listeners.
type LoadBalancer struct {
	ID string // opaque (an ARN)
	// Zones are the load balancer's enabled zones with its addresses there:
	// one entry per zone, or two for a dualstack load balancer (its IPv4 and
	// its IPv6 address in the zone; a further address of a family the zone
	// already has is ignored). Every listener listens on every one of these
	// addresses. A flow leaves for a target of the other family from the
	// zone's address of the target's family (see route.upstreamSource).
	Zones []Zone
	// CrossZone false (AWS's default) makes a zone's address forward only to
	// targets in that zone; true forwards to targets in every enabled zone.
	CrossZone bool
	Listeners []Listener
}

// Zone is one enabled availability zone of a load balancer and one of the
// load balancer's addresses in it.
type Zone struct {
	Name string
	Addr netip.Addr
}

// Listener is one listener of a load balancer and the target group its
// default action forwards to.
type Listener struct {
	ID       string
	Protocol Protocol
	Port     uint16
	// AdmitTCP and AdmitUDP decide which clients may open a flow, per
	// protocol (a TCP_UDP listener is two endpoints with their own rules; a
	// TLS listener is admitted by AdmitTCP, before any handshake).
	// nil admits everyone: a load balancer created without security groups.
	// A non-nil Policy that admits no one denies everyone.
	AdmitTCP, AdmitUDP *secgroup.Policy
	// TCPIdleTimeout is the listener's tcp.idle_timeout.seconds; 0 = 350 s.
	TCPIdleTimeout time.Duration
	// UDPIdleTimeout is fixed at 120 s on AWS; 0 = 120 s. It exists so that
	// tests and the fast path can share one knob.
	UDPIdleTimeout time.Duration
	// TLS is a TLS listener's certificates and policies; required with
	// Protocol TLS, ignored otherwise.
	TLS         *ListenerTLS
	TargetGroup TargetGroup
}

// ListenerTLS is how a TLS listener terminates its clients' TLS. Its flows
// are always proxied in userspace, never by the kernel fast path.
type ListenerTLS struct {
	// Certificates are the default certificate first, then the listener's
	// certificate list. A client that sends a server name (SNI) gets the
	// first certificate of the list that matches the name and that it can
	// use; any other client gets the default.
	Certificates []tls.Certificate
	// Policy is the listener's security policy (tlspolicy.Lookup); its zero
	// value means tlspolicy.Default, NLB's.
	Policy tlspolicy.Policy
	// ALPN is the listener's ALPN policy as a preference list
	// (tlspolicy.ALPN); nil negotiates no ALPN. A client that offers none of
	// these protocols is served without ALPN, as NLB does.
	ALPN []string
	// HandshakeTimeout bounds the client's handshake, from accept; a client
	// that has not finished by then is closed. 0 = 10 s.
	HandshakeTimeout time.Duration
}

// TargetGroup is the target group a listener forwards to, with the
// attributes the data plane enforces. A group referenced by several
// listeners must be described identically by each.
type TargetGroup struct {
	ID          string
	Targets     []Target
	HealthCheck HealthCheck
	// ProxyProtocolV2 prepends a PROXY protocol v2 header carrying the
	// client's address to every TCP flow, and a LOCAL header to every health
	// check. UDP flows never carry one (AWS does not support it for UDP).
	ProxyProtocolV2 bool
	// PreserveClientIP binds the upstream socket to the client's address when
	// the client is on loopback (see the package doc); otherwise the zone
	// address of the load balancer is the source.
	PreserveClientIP bool
	// TLS (a target group of protocol TLS) makes a TLS listener's flows
	// reach the targets over TLS: moat is the client, does not verify the
	// target's certificate, and uses NLB's backend policy (see
	// tlspolicy.Policy.Backend). Only TLS listeners originate TLS; health
	// checks are unchanged.
	TLS bool
	// StickinessSourceIP pins all flows of a client address to one target
	// (stickiness.type=source_ip) instead of hashing the whole 5-tuple.
	StickinessSourceIP bool
	// TerminateOnDeregistration closes a draining target's flows when its
	// DrainingUntil passes (deregistration_delay.connection_termination).
	TerminateOnDeregistration bool
	// TerminateOnUnhealthy resets a target's flows when it turns unhealthy,
	// unless the load balancer is failing open for them
	// (target_health_state.unhealthy.connection_termination, AWS default true).
	TerminateOnUnhealthy bool
	// MinHealthyTargets and MinHealthyPercent are the unhealthy-state routing
	// thresholds (target_group_health.unhealthy_state_routing.
	// minimum_healthy_targets.count and .percentage): with fewer healthy
	// targets in a scope, its flows go to all of its targets, healthy or not.
	// Zero means AWS's defaults: count 1, percentage off.
	MinHealthyTargets, MinHealthyPercent int
}

// Target is one registered target. Its identity is (ID, Port), as on AWS.
type Target struct {
	ID   string
	Port uint16
	// Addr is where to connect: an instance's private IP or an ip target.
	Addr netip.Addr
	// Zone is the target's availability zone; "all" (or "") marks an ip
	// target outside the VPC, which every zone may use. A target in a zone
	// the load balancer has not enabled is unused (Target.NotInUse).
	Zone string
	// DrainingUntil, when non-zero, marks a deregistered target: it takes no
	// new flows, and drains until then (see TerminateOnDeregistration).
	DrainingUntil time.Time
	// TrafficAllowed and HealthCheckAllowed are the security-group decision
	// for the load balancer's own traffic to the target, computed by the
	// caller: the target interface's inbound rules with the load balancer's
	// groups (and addresses) as the source, and the load balancer groups'
	// outbound rules. May the load balancer reach the target on the traffic
	// port, and on the health-check port? A target the traffic may not reach
	// gets no flows; one the checks may not reach fails them with
	// Target.Timeout, as a dropped SYN would, and no packet is sent.
	TrafficAllowed, HealthCheckAllowed bool
}

// HealthCheck is a target group's health-check configuration. Zero fields
// take NLB's defaults (TCP, traffic port, 30 s, 10 s — 6 s for HTTP(S) —,
// 5 and 2, "200-399", "/").
type HealthCheck struct {
	Protocol string // HealthCheckTCP, HealthCheckHTTP or HealthCheckHTTPS
	Port     uint16 // 0 = the target's traffic port
	Path     string
	// Matcher is the HTTP codes counted as success: "200", "200,202",
	// "200-399".
	Matcher                              string
	Interval, Timeout                    time.Duration
	HealthyThreshold, UnhealthyThreshold int
}

// Engine is a data plane: desired state in, health and status out (metrics go
// to the Registerer it was created with).
type Engine interface {
	// Apply makes cfg the desired state. Sockets whose (address, port,
	// protocol) persist are kept and their policy and target group swapped,
	// so a rule change governs new flows as soon as Apply returns while
	// established flows continue. A listener that cannot be served (port in
	// use, privileged port, address not local, conflicting listeners) is
	// reported in an *ApplyError; everything else is applied regardless.
	Apply(Config) error
	// TargetHealth reports the health of target (targetID, port) of the
	// target group; false when the group is not in the current Config (AWS
	// reports such targets unused/Target.NotInUse) or has no such target.
	TargetHealth(targetGroupID, targetID string, port uint16) (Health, bool)
	// ListenerStatus is nil when the listener serves on every address of its
	// load balancer, a *ListenerError naming the first address it does not,
	// and ErrUnknownListener when the listener is not in the current Config.
	ListenerStatus(listenerID string) error
	// Decide reports what the engine does now with a new flow from client to the listener
	// socket at lb (network tcp or udp); false when no socket listens there. See Decision.
	Decide(client, lb netip.AddrPort, network string) (Decision, bool)
	// Close stops serving: listeners close, flows are reset, health checks
	// stop, and it returns when all of the engine's goroutines have ended.
	Close() error
}

// Health is a target's health as DescribeTargetHealth reports it.
type Health struct {
	State       string // initial, healthy, unhealthy, draining, unused
	Reason      string // empty when healthy
	Description string
}

// Target health states.
const (
	StateInitial   = "initial"
	StateHealthy   = "healthy"
	StateUnhealthy = "unhealthy"
	StateDraining  = "draining"
	StateUnused    = "unused"
)

// Target health reason codes, with AWS's descriptions below.
const (
	ReasonRegistrationInProgress   = "Elb.RegistrationInProgress"
	ReasonInitialHealthChecking    = "Elb.InitialHealthChecking"
	ReasonFailedHealthChecks       = "Target.FailedHealthChecks"
	ReasonTimeout                  = "Target.Timeout"
	ReasonResponseCodeMismatch     = "Target.ResponseCodeMismatch"
	ReasonDeregistrationInProgress = "Target.DeregistrationInProgress"
	ReasonNotRegistered            = "Target.NotRegistered"
	ReasonNotInUse                 = "Target.NotInUse"
)

var reasonDescriptions = map[string]string{
	ReasonRegistrationInProgress:   "Target registration is in progress",
	ReasonInitialHealthChecking:    "Initial health checks in progress",
	ReasonFailedHealthChecks:       "Health checks failed",
	ReasonTimeout:                  "Request timed out",
	ReasonDeregistrationInProgress: "Target deregistration is in progress",
	ReasonNotRegistered:            "Target is not registered to the target group",
	ReasonNotInUse:                 "Target is in an Availability Zone that is not enabled for the load balancer",
}

// ErrUnknownListener is ListenerStatus's answer for a listener that is not in
// the current Config.
var ErrUnknownListener = errors.New("listener not in the data plane's configuration")

// ErrClosed is returned by Apply after Close.
var ErrClosed = errors.New("data plane closed")

// ErrListenerConflict means two listeners of the Config want the same
// address, port and protocol; the first one in Config order keeps it.
var ErrListenerConflict = errors.New("another listener already uses this address, port and protocol")

// ListenerError says why a listener does not serve on one of its addresses.
// Err wraps the system error (errors.Is(err, syscall.EADDRINUSE),
// syscall.EACCES for a privileged port) or ErrListenerConflict.
type ListenerError struct {
	LoadBalancerID string
	ListenerID     string
	Network        string // tcp or udp
	Addr           netip.AddrPort
	Err            error
}

func (e *ListenerError) Error() string {
	if !e.Addr.IsValid() {
		return fmt.Sprintf("listener %s: %v", e.ListenerID, e.Err)
	}
	return fmt.Sprintf("listener %s: %s %s: %v", e.ListenerID, e.Network, e.Addr, e.Err)
}

func (e *ListenerError) Unwrap() error { return e.Err }

// ApplyError lists the listeners Apply could not serve. Everything else in
// the Config was applied.
type ApplyError struct {
	Listeners []*ListenerError
}

func (e *ApplyError) Error() string {
	msgs := make([]string, len(e.Listeners))
	for i, l := range e.Listeners {
		msgs[i] = l.Error()
	}
	return "apply data plane configuration: " + strings.Join(msgs, "; ")
}

// Unwrap lets errors.Is and errors.As see each listener's error.
func (e *ApplyError) Unwrap() []error {
	errs := make([]error, len(e.Listeners))
	for i, l := range e.Listeners {
		errs[i] = l
	}
	return errs
}
