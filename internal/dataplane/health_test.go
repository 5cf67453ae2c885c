package dataplane

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// Health-check tests run with AWS's smallest allowed settings (interval 5 s,
// thresholds 2) on the real clock, in parallel with each other.
func fastChecks(protocol string, port uint16) HealthCheck {
	return HealthCheck{Protocol: protocol, Port: port, Interval: 5 * time.Second, Timeout: 2 * time.Second,
		HealthyThreshold: 2, UnhealthyThreshold: 2}
}

// healthWait bounds a state change: threshold × interval, plus a check in
// flight, jitter and a loaded machine.
const healthWait = 30 * time.Second

func TestHealthTCP(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0), n.inA(1))
	a := newBackend(t, "a", n.inA(0), "zone-a", hcPort)
	b := newBackend(t, "b", n.inA(1), "zone-a", hcPort)
	b.echo.stop() // b is down
	b.hc.stop()
	port := freePort(t, n.lbA())
	tg := group("tg", hcPort, a.cfg(), b.cfg())
	tg.HealthCheck = fastChecks(HealthCheckTCP, hcPort)
	h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{ID: "l", Protocol: TCP, Port: port, TargetGroup: tg}}})
	lbAddr := ap(n.lbA(), port)
	aPort, bPort := a.echo.addr.Port(), b.echo.addr.Port()

	if hl := h.health("tg", "a", aPort); hl.State != StateInitial {
		t.Errorf("new target: %+v, want initial", hl)
	}
	h.waitHealth("tg", "a", aPort, StateHealthy, "", healthWait)
	h.waitHealth("tg", "b", bPort, StateUnhealthy, ReasonFailedHealthChecks, healthWait)
	if hl := h.health("tg", "b", bPort); hl.Description != "Health checks failed" {
		t.Errorf("unhealthy description %q", hl.Description)
	}
	if got := names(t, client2, lbAddr, 10); got["a"] != 10 {
		t.Errorf("flows went to %v, want only the healthy target a", got)
	}
	if hv, uv := h.metric("moat_dataplane_healthy_targets", "target_group", "tg"),
		h.metric("moat_dataplane_unhealthy_targets", "target_group", "tg"); hv != 1 || uv != 1 {
		t.Errorf("healthy/unhealthy gauges = %v/%v, want 1/1", hv, uv)
	}
	if got := h.metric("moat_dataplane_health_check_duration_seconds", "target_group", "tg"); got < 4 {
		t.Errorf("health-check histogram has %v samples, want at least 4", got)
	}

	// b comes up and turns healthy.
	b.echo.start()
	b.hc.start()
	h.waitHealth("tg", "b", bPort, StateHealthy, "", healthWait)

	// a's health checks start failing while it still serves: it turns
	// unhealthy within threshold × interval, its flow is reset (b is healthy,
	// so the load balancer is not failing open), new flows go to b.
	var flowOnA *client
	for range 100 {
		c, name := connect(t, client2, lbAddr)
		if name == "a" {
			flowOnA = c
			break
		}
		c.c.Close()
	}
	if flowOnA == nil {
		t.Fatal("no flow landed on a")
	}
	killed := time.Now()
	a.hc.stop()
	h.waitHealth("tg", "a", aPort, StateUnhealthy, ReasonFailedHealthChecks, healthWait)
	elapsed := time.Since(killed)
	t.Logf("a unhealthy %v after its checks started failing", elapsed)
	if limit := 2*5*time.Second + 5*time.Second; elapsed > limit {
		t.Errorf("a turned unhealthy after %v, want within threshold × interval (+ one interval of slack: %v)", elapsed, limit)
	}
	if err := flowOnA.waitClosed(t, longWait); !isReset(err) {
		t.Errorf("flow on the unhealthy target ended with %v, want a reset", err)
	}
	if got := names(t, client2, lbAddr, 10); got["b"] != 10 {
		t.Errorf("flows went to %v, want only b", got)
	}

	// a comes back.
	a.hc.start()
	h.waitHealth("tg", "a", aPort, StateHealthy, "", healthWait)
	waitFor(t, longWait, "a flow to reach a again", func() bool { return names(t, client2, lbAddr, 1)["a"] == 1 })
}

func TestHealthHTTP(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0), n.inA(1), n.inA(2), n.inA(3), n.inA(4), n.inA(5))
	type request struct{ target, host, path, agent string }
	var mu sync.Mutex
	var requests []request
	handler := func(target string, code int) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			requests = append(requests, request{target, r.Host, r.URL.Path, r.UserAgent()})
			mu.Unlock()
			w.WriteHeader(code)
		})
	}
	serve := func(addr netip.Addr, h http.Handler, tls bool) {
		ln, err := net.Listen("tcp", ap(addr, hcPort).String())
		if err != nil {
			t.Fatal(err)
		}
		s := httptest.NewUnstartedServer(h)
		s.Listener.Close()
		s.Listener = ln
		if tls {
			s.StartTLS()
		} else {
			s.Start()
		}
		t.Cleanup(s.Close)
	}
	serve(n.inA(0), handler("ok", 200), false)       // ok
	serve(n.inA(1), handler("mismatch", 404), false) // mismatch
	hang := newServer(t, ap(n.inA(2), hcPort), func(s *server, c *net.TCPConn) {
		s.record(connRecord{remote: addrPortOf(c.RemoteAddr())})
		c.SetReadDeadline(time.Now().Add(longWait))
		c.Read(make([]byte, 1024)) // reads the request, never answers
		c.Read(make([]byte, 1))
	})
	serve(n.inA(3), handler("forbidden", 200), false) // ok, but the backend groups forbid the check
	// n.inA(4): nothing listens
	serve(n.inA(5), handler("tls", 202), true) // HTTPS

	var targets []Target
	for i, id := range []string{"ok", "mismatch", "hang", "forbidden", "refused"} {
		tt := tgTarget(id, ap(n.inA(i), 8080), "zone-a")
		tt.HealthCheckAllowed = id != "forbidden"
		targets = append(targets, tt)
	}
	tg := TargetGroup{ID: "tg", Targets: targets, HealthCheck: fastChecks(HealthCheckHTTP, hcPort)}
	tg.HealthCheck.Path, tg.HealthCheck.Matcher = "/healthz", "200"
	tgs := TargetGroup{ID: "tgs", Targets: []Target{tgTarget("tls", ap(n.inA(5), 8443), "zone-a")},
		HealthCheck: fastChecks(HealthCheckHTTPS, hcPort)}
	tgs.HealthCheck.Matcher = "200-201,202"
	port, tlsPort := freePort(t, n.lbA()), freePort(t, n.lbA())
	h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{
		{ID: "l", Protocol: TCP, Port: port, TargetGroup: tg},
		{ID: "tls", Protocol: TCP, Port: tlsPort, TargetGroup: tgs},
	}})

	// After its first check a target is still initial, now with
	// Elb.InitialHealthChecking.
	h.waitHealth("tg", "ok", 8080, StateInitial, ReasonInitialHealthChecking, healthWait)
	h.waitHealth("tg", "ok", 8080, StateHealthy, "", healthWait)
	h.waitHealth("tgs", "tls", 8443, StateHealthy, "", healthWait)
	h.waitHealth("tg", "mismatch", 8080, StateUnhealthy, ReasonResponseCodeMismatch, healthWait)
	h.waitHealth("tg", "hang", 8080, StateUnhealthy, ReasonTimeout, healthWait)
	h.waitHealth("tg", "forbidden", 8080, StateUnhealthy, ReasonTimeout, healthWait)
	h.waitHealth("tg", "refused", 8080, StateUnhealthy, ReasonFailedHealthChecks, healthWait)
	if d := h.health("tg", "mismatch", 8080).Description; d != "Health checks failed with these codes: [404]" {
		t.Errorf("mismatch description %q", d)
	}
	if d := h.health("tg", "hang", 8080).Description; d != "Request timed out" {
		t.Errorf("timeout description %q", d)
	}
	if len(hang.records()) == 0 {
		t.Error("the hanging target was never checked")
	}
	mu.Lock()
	defer mu.Unlock()
	wantHost := map[string]bool{ap(n.lbA(), port).String(): true, ap(n.lbA(), tlsPort).String(): true}
	count := map[string]int{}
	for _, r := range requests {
		count[r.target]++
		wantPath := "/healthz"
		if r.target == "tls" {
			wantPath = "/"
		}
		if !wantHost[r.host] || r.path != wantPath || r.agent != "ELB-HealthChecker/2.0" {
			t.Errorf("health check request %+v, want Host <lb address>:<listener port>, path %s", r, wantPath)
		}
	}
	// The backend groups forbid checking "forbidden": it never sees one.
	if count["ok"] < 2 || count["mismatch"] < 2 || count["tls"] < 2 || count["forbidden"] != 0 {
		t.Errorf("health-check requests per target: %v", count)
	}
}

func TestFailOpen(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0), n.inA(1)) // nothing listens there: every check fails
	a := newBackend(t, "a", n.inA(0), "zone-a", 0)
	b := newBackend(t, "b", n.inA(1), "zone-a", 0)
	port := freePort(t, n.lbA())
	tg := group("tg", hcPort, a.cfg(), b.cfg())
	tg.HealthCheck = fastChecks(HealthCheckTCP, hcPort)
	h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{ID: "l", Protocol: TCP, Port: port, TargetGroup: tg}}})
	lbAddr := ap(n.lbA(), port)
	established, _ := connect(t, client2, lbAddr)

	h.waitHealth("tg", "a", a.echo.addr.Port(), StateUnhealthy, ReasonFailedHealthChecks, healthWait)
	h.waitHealth("tg", "b", b.echo.addr.Port(), StateUnhealthy, ReasonFailedHealthChecks, healthWait)
	// Every target unhealthy: the load balancer fails open to all of them,
	// and does not reset the flows it keeps sending there.
	if got := names(t, client2, lbAddr, 20); got["a"] == 0 || got["b"] == 0 {
		t.Errorf("failing open, flows went to %v, want both targets", got)
	}
	if err := established.echo("still here"); err != nil {
		t.Errorf("flow reset while failing open: %v", err)
	}
}

// TestMinimumHealthyTargets fails open below the unhealthy-state routing
// threshold: with one of two targets healthy and a minimum of two, flows go to
// both; with the default minimum of one, only to the healthy one.
func TestMinimumHealthyTargets(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0), n.inA(1))
	a := newBackend(t, "a", n.inA(0), "zone-a", hcPort) // checks succeed
	b := newBackend(t, "b", n.inA(1), "zone-a", 0)      // nothing on hcPort: checks fail
	port := freePort(t, n.lbA())
	tg := group("tg", hcPort, a.cfg(), b.cfg())
	tg.HealthCheck = fastChecks(HealthCheckTCP, hcPort)
	apply := func(minHealthy int) {
		tg.MinHealthyTargets = minHealthy
		h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{ID: "l", Protocol: TCP, Port: port, TargetGroup: tg}}})
	}
	apply(0)
	lbAddr := ap(n.lbA(), port)
	h.waitHealth("tg", "a", a.echo.addr.Port(), StateHealthy, "", healthWait)
	h.waitHealth("tg", "b", b.echo.addr.Port(), StateUnhealthy, ReasonFailedHealthChecks, healthWait)
	if got := names(t, client2, lbAddr, 20); got["b"] != 0 {
		t.Errorf("with the default minimum, flows went to %v, want only a", got)
	}
	apply(2)
	if got := names(t, client2, lbAddr, 20); got["a"] == 0 || got["b"] == 0 {
		t.Errorf("below a minimum of 2 healthy, flows went to %v, want both targets", got)
	}
}

func TestParseMatcher(t *testing.T) {
	for _, tc := range []struct {
		in      string
		yes, no []int
		bad     bool
	}{
		{in: "200-399", yes: []int{200, 302, 399}, no: []int{199, 400, 404}},
		{in: "200", yes: []int{200}, no: []int{201, 404}},
		{in: "200,202", yes: []int{200, 202}, no: []int{201}},
		{in: "200, 204-206", yes: []int{200, 205}, no: []int{203}},
		{in: "", bad: true},
		{in: "2xx", bad: true},
		{in: "300-200", bad: true},
	} {
		m, err := parseMatcher(tc.in)
		if (err != nil) != tc.bad {
			t.Errorf("parseMatcher(%q) error = %v", tc.in, err)
			continue
		}
		for _, c := range tc.yes {
			if !m.match(c) {
				t.Errorf("%q does not match %d", tc.in, c)
			}
		}
		for _, c := range tc.no {
			if m.match(c) {
				t.Errorf("%q matches %d", tc.in, c)
			}
		}
	}
}

func TestHealthCheckDefaults(t *testing.T) {
	got := HealthCheck{Protocol: "http"}.withDefaults()
	want := HealthCheck{Protocol: HealthCheckHTTP, Path: "/", Matcher: "200-399", Interval: 30 * time.Second,
		Timeout: 6 * time.Second, HealthyThreshold: 5, UnhealthyThreshold: 2}
	if got != want {
		t.Errorf("HTTP defaults %+v, want %+v", got, want)
	}
	if got := (HealthCheck{}).withDefaults(); got.Protocol != HealthCheckTCP || got.Timeout != 10*time.Second {
		t.Errorf("TCP defaults %+v", got)
	}
}

func TestPPv2Header(t *testing.T) {
	for _, tc := range []struct{ src, dst string }{
		{"127.0.0.2:40000", "127.1.0.100:8080"},
		{"[2001:db8::1]:1234", "[2001:db8::2]:443"},
		{"127.0.0.2:5", "[2001:db8::2]:443"}, // mixed: sent as IPv6
	} {
		src, dst := netip.MustParseAddrPort(tc.src), netip.MustParseAddrPort(tc.dst)
		got, err := readPPv2(bytes.NewReader(ppv2Header(src, dst)))
		if err != nil {
			t.Fatalf("%v → %v: %v", src, dst, err)
		}
		if got.local || got.src.Addr().Unmap() != src.Addr() || got.src.Port() != src.Port() ||
			got.dst.Addr().Unmap() != dst.Addr() || got.dst.Port() != dst.Port() {
			t.Errorf("%v → %v: parsed %+v", src, dst, got)
		}
	}
	got, err := readPPv2(bytes.NewReader(ppv2LocalHeader()))
	if err != nil || !got.local {
		t.Errorf("LOCAL header parsed as %+v, %v", got, err)
	}
	if !strings.HasPrefix(string(ppv2LocalHeader()), "\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00") {
		t.Errorf("LOCAL header % x", ppv2LocalHeader())
	}
}
