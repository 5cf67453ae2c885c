package dataplane

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Health checks run one goroutine per target in an enabled zone, for as long
// as the target group is in the Config (AWS checks only groups a listener
// references). Each check is a fresh connection from the load balancer's
// address in the target's zone, so targets and tests see the source they
// would see on AWS.
//
// HTTP and HTTPS checks send, as an NLB does,
//
//	GET <path> HTTP/1.1
//	Host: <load balancer address in the target's zone>:<listener port>
//	User-Agent: ELB-HealthChecker/2.0
//
// and count the status code against the matcher; HTTPS does not verify the
// target's certificate. With proxy protocol v2 on, every check starts with a
// PPv2 LOCAL header.

const userAgent = "ELB-HealthChecker/2.0"

// withDefaults fills a health check's zero fields with NLB's defaults.
func (hc HealthCheck) withDefaults() HealthCheck {
	hc.Protocol = strings.ToUpper(hc.Protocol)
	if hc.Protocol == "" {
		hc.Protocol = HealthCheckTCP
	}
	if hc.Interval <= 0 {
		hc.Interval = DefaultHealthInterval
	}
	if hc.Timeout <= 0 {
		hc.Timeout = DefaultHealthTimeoutTCP
		if hc.Protocol != HealthCheckTCP {
			hc.Timeout = DefaultHealthTimeoutHTTP
		}
	}
	if hc.HealthyThreshold <= 0 {
		hc.HealthyThreshold = DefaultHealthyThreshold
	}
	if hc.UnhealthyThreshold <= 0 {
		hc.UnhealthyThreshold = DefaultUnhealthyThreshold
	}
	if hc.Matcher == "" {
		hc.Matcher = DefaultMatcher
	}
	if hc.Path == "" {
		hc.Path = DefaultHealthPath
	}
	return hc
}

// matcher is a parsed HTTP code matcher: a list of inclusive ranges.
type matcher [][2]int

// parseMatcher reads "200", "200,202" or "200-399" (and mixes of them).
func parseMatcher(s string) (matcher, error) {
	var m matcher
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(strings.TrimSpace(lo))
		if err != nil {
			return nil, fmt.Errorf("health check matcher %q: %q is not a code", s, part)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil || b < a {
				return nil, fmt.Errorf("health check matcher %q: %q is not a range of codes", s, part)
			}
		}
		m = append(m, [2]int{a, b})
	}
	return m, nil
}

func (m matcher) match(code int) bool {
	for _, r := range m {
		if r[0] <= code && code <= r[1] {
			return true
		}
	}
	return false
}

func (g *targetGroup) startChecksLocked(t *target) {
	if t.stopChecks != nil || g.closed {
		return
	}
	ctx, cancel := context.WithCancel(g.u.ctx)
	t.checkCtx, t.stopChecks = ctx, cancel
	g.u.wg.Go(func() { g.runChecks(ctx, t) })
}

func (t *target) stopChecksLocked() {
	if t.stopChecks != nil {
		t.stopChecks()
		t.stopChecks, t.checkCtx = nil, nil
	}
}

// checkPlan is a snapshot of what one check needs, taken under the group's
// lock so that the check itself runs without it.
type checkPlan struct {
	hc       HealthCheck
	match    matcher
	ppv2     bool
	src      netip.Addr
	dst      netip.AddrPort
	host     string
	allowed  bool
	interval time.Duration
	control  func(network, address string, c syscall.RawConn) error
}

func (g *targetGroup) plan(t *target) checkPlan {
	g.mu.Lock()
	defer g.mu.Unlock()
	set := g.set
	p := checkPlan{
		hc: set.hc, match: set.match, ppv2: set.ProxyProtocolV2,
		allowed: t.cfg.HealthCheckAllowed, interval: set.hc.Interval, control: g.u.controlUpstream,
	}
	port := set.hc.Port
	if port == 0 {
		port = t.cfg.Port
	}
	p.dst = netip.AddrPortFrom(t.cfg.Addr, port)
	za, ok := set.zones[t.cfg.Zone]
	if !ok && len(set.zoneOrder) > 0 { // zone "all": the first zone's node checks it
		za = set.zones[set.zoneOrder[0]]
	}
	// From the zone's address of the target's family; with none, or none that may leave the host
	// toward the target, the kernel chooses.
	p.src = sourceToward(za.of(t.cfg.Addr), t.cfg.Addr)
	host := p.src
	if !host.IsValid() {
		host = t.cfg.Addr
	}
	p.host = netip.AddrPortFrom(host, set.hostPort).String()
	return p
}

// runChecks is a target's checker: a first check after a small random delay
// (so that many targets registered together do not check in step), then one
// every interval, with a little jitter each time so that phases keep spreading.
func (g *targetGroup) runChecks(ctx context.Context, t *target) {
	p := g.plan(t)
	timer := time.NewTimer(rand.N(min(p.interval/2, time.Second) + 1))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		p = g.plan(t)
		r, measured := runCheck(ctx, p)
		if ctx.Err() != nil {
			return
		}
		if measured {
			g.u.metrics.healthCheck.WithLabelValues(g.id).Observe(time.Since(start).Seconds())
		}
		g.record(t, ctx, r)
		jitter := time.Duration(rand.Int64N(int64(p.interval)/20+1)) - p.interval/40
		timer.Reset(time.Until(start.Add(p.interval + jitter)))
	}
}

// runCheck performs one check; measured is false when no packet was sent (the
// backend security groups forbid the check, which then fails as a dropped SYN
// would: Target.Timeout).
func runCheck(ctx context.Context, p checkPlan) (r checkResult, measured bool) {
	if !p.allowed {
		return checkResult{reason: ReasonTimeout}, false
	}
	ctx, cancel := context.WithTimeout(ctx, p.hc.Timeout)
	defer cancel()
	d := net.Dialer{KeepAlive: -1, Control: p.control} // a check lives for one probe: no keepalives
	d.SetMultipathTCP(false)
	if p.src.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(p.src, 0))
	}
	conn, err := d.DialContext(ctx, "tcp", p.dst.String())
	if err != nil {
		return failure(err), true
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if p.ppv2 {
		if _, err := conn.Write(ppv2LocalHeader()); err != nil {
			return failure(err), true
		}
	}
	if p.hc.Protocol == HealthCheckTCP {
		return checkResult{ok: true}, true
	}
	var c net.Conn = conn
	if p.hc.Protocol == HealthCheckHTTPS {
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}) // NLB does not verify targets
		if err := tc.HandshakeContext(ctx); err != nil {
			return failure(err), true
		}
		c = tc
	}
	req := "GET " + p.hc.Path + " HTTP/1.1\r\nHost: " + p.host + "\r\nUser-Agent: " + userAgent +
		"\r\nAccept: */*\r\nConnection: close\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		return failure(err), true
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodGet})
	if err != nil {
		return failure(err), true
	}
	resp.Body.Close()
	if !p.match.match(resp.StatusCode) {
		return checkResult{
			reason: ReasonResponseCodeMismatch,
			desc:   fmt.Sprintf("Health checks failed with these codes: [%d]", resp.StatusCode),
		}, true
	}
	return checkResult{ok: true}, true
}

// failure classifies a failed check: no answer in time is Target.Timeout,
// anything else (refused, reset, a malformed answer) Target.FailedHealthChecks.
func failure(err error) checkResult {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()) {
		return checkResult{reason: ReasonTimeout}
	}
	return checkResult{reason: ReasonFailedHealthChecks}
}
