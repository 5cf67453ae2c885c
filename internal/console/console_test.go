package console

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/awsapi/sigv4"
	"github.com/moatlb/moat/internal/flowlog"
)

const (
	keyID     = "AKIAMOATCONSOLETEST1"
	keySecret = "secret-of-the-console-test-key"
)

// mutableKeys are credentials a test may change while the console runs.
type mutableKeys struct {
	mu   sync.Mutex
	keys sigv4.Keys
}

func (m *mutableKeys) Lookup(id string) (sigv4.Key, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.keys.Lookup(id)
}

func (m *mutableKeys) set(keys sigv4.Keys) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys = keys
}

// demoSnapshot is a load balancer with one listener and two groups, as moat up --demo makes.
func demoSnapshot() Snapshot {
	return Snapshot{
		LoadBalancers: []LoadBalancer{{
			ARN: "arn:lb", Name: "k8s-demo", DNSName: "k8s-demo-0123.elb.us-east-1.moat.internal", Scheme: "internet-facing", State: "active",
			Addresses: []string{"127.1.1.1"}, SecurityGroups: []string{"sg-front", "sg-back"},
			Listeners: []Listener{{ARN: "arn:listener", Protocol: "TCP", Port: 8080,
				TargetGroup: &TargetGroup{ARN: "arn:tg", Name: "k8s-tg", Protocol: "TCP", Port: 30080, TargetType: "instance",
					Targets: []Target{{ID: "i-a", Address: "127.1.0.10", Port: 30080, State: "healthy"}}},
				Flows: ListenerFlows{Admitted: 3, KernelDropped: 2}}},
		}},
		SecurityGroups: []SecurityGroup{
			{ID: "sg-front", Name: "front", VPCID: "vpc-1", Inbound: []Rule{{ID: "sgr-1", Protocol: "tcp", Ports: "8080", Peer: "127.0.0.2/32"}}, Outbound: []Rule{}, ReferencedBy: []string{}, UsedBy: []string{"k8s-demo"}},
			{ID: "sg-back", Name: "back", VPCID: "vpc-1", Inbound: []Rule{}, Outbound: []Rule{}, ReferencedBy: []string{"sg-node"}, UsedBy: []string{"k8s-demo"}},
			{ID: "sg-node", Name: "node", VPCID: "vpc-1", Inbound: []Rule{{ID: "sgr-2", Protocol: "tcp", Ports: "30080", Peer: "sg-back"}}, Outbound: []Rule{}, ReferencedBy: []string{}, UsedBy: []string{"eni-a"}},
		},
		Interfaces:      []Interface{{ID: "eni-a", Instance: "i-a", Addresses: []string{"127.1.0.10"}, Groups: []string{"sg-node"}}},
		ListenerFlowLog: "the kernel does not say who they were",
	}
}

type fixture struct {
	srv   *httptest.Server
	con   *Console
	keys  *mutableKeys
	flows *flowlog.Log
	// commit announces a change of the state, as the store's Changes does.
	commit chan struct{}
}

func newFixture(t *testing.T, explainer Explainer) *fixture {
	t.Helper()
	f := &fixture{keys: &mutableKeys{keys: sigv4.Keys{keyID: {Secret: keySecret, Profile: "node", ReadOnly: true}}}, flows: &flowlog.Log{}, commit: make(chan struct{}, 1)}
	f.con = New(Config{
		Credentials: f.keys,
		Snapshot:    func() (Snapshot, error) { return demoSnapshot(), nil },
		Changes:     func() (<-chan struct{}, func()) { return f.commit, func() {} },
		FlowLog:     f.flows,
		Explainer:   explainer,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.con.Run(ctx); close(done) }()
	mux := http.NewServeMux()
	mux.Handle(Path, f.con)
	mux.Handle(Path+"/", f.con)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		cancel()
		<-done
		f.srv.Close()
	})
	return f
}

// client is a browser-like client: it keeps cookies and does not follow redirects.
func (f *fixture) client(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (f *fixture) signIn(t *testing.T, c *http.Client, id, secret string) *http.Response {
	t.Helper()
	req, err := http.NewRequest("POST", f.srv.URL+Path+"/signin", strings.NewReader(url.Values{"access_key_id": {id}, "secret_access_key": {secret}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", f.srv.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	return resp, b.String()
}

var apiPaths = []string{"/api/snapshot", "/api/denials", "/api/events", "/api/explain?from=127.0.0.3&to=x:1", "/api/nothing-here"}

func TestUnauthenticated(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client(t)
	for _, p := range apiPaths {
		resp, body := get(t, c, f.srv.URL+Path+p)
		var e struct{ Error string }
		if resp.StatusCode != http.StatusUnauthorized || json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
			t.Errorf("GET %s without a session: %d %q, want 401 with a JSON error", p, resp.StatusCode, body)
		}
	}
	resp, err := c.Post(f.srv.URL+Path+"/api/snapshot", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /api/snapshot without a session: %d, want 401", resp.StatusCode)
	}
	resp, body := get(t, c, f.srv.URL+Path)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="secret_access_key"`) || strings.Contains(body, "console.js") {
		t.Errorf("GET /console without a session: %d, want the sign-in page:\n%s", resp.StatusCode, body)
	}
}

func TestSignIn(t *testing.T) {
	f := newFixture(t, nil)
	for _, tc := range []struct{ name, id, secret string }{
		{"unknown key", "AKIANOSUCHKEY0000000", keySecret},
		{"bad secret", keyID, keySecret + "x"},
		{"empty secret", keyID, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.client(t)
			resp := f.signIn(t, c, tc.id, tc.secret)
			if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
				t.Fatalf("sign-in: %d, cookies %v; want 401 and none", resp.StatusCode, resp.Cookies())
			}
			if resp, _ := get(t, c, f.srv.URL+Path+"/api/snapshot"); resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("snapshot after a refused sign-in: %d", resp.StatusCode)
			}
		})
	}

	c := f.client(t)
	resp := f.signIn(t, c, keyID, keySecret)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != Path {
		t.Fatalf("sign-in: %d to %q, want 303 to %s", resp.StatusCode, resp.Header.Get("Location"), Path)
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies: %v", cookies)
	}
	ck := cookies[0]
	if ck.Name != cookieName || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != Path || strings.Contains(ck.Value, keySecret) {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=%s, no secret", ck, Path)
	}
	if d := time.Until(ck.Expires); d < DefaultSessionTTL-time.Minute || d > DefaultSessionTTL {
		t.Fatalf("cookie expires in %s, want %s", d, DefaultSessionTTL)
	}
	if _, body := get(t, c, f.srv.URL+Path); !strings.Contains(body, "console.js") {
		t.Fatalf("GET /console signed in: not the console:\n%s", body)
	}
	resp, body := get(t, c, f.srv.URL+Path+"/api/snapshot")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("snapshot: %d %s", resp.StatusCode, body)
	}
	var snap map[string]any
	if err := json.Unmarshal([]byte(body), &snap); err != nil {
		t.Fatal(err)
	}
	// The page's script reads these names.
	lb := snap["loadBalancers"].([]any)[0].(map[string]any)
	l := lb["listeners"].([]any)[0].(map[string]any)
	target := l["targetGroup"].(map[string]any)["targets"].([]any)[0].(map[string]any)
	sg := snap["securityGroups"].([]any)[1].(map[string]any)
	if lb["name"] != "k8s-demo" || l["port"] != 8080.0 || l["flows"].(map[string]any)["kernelDropped"] != 2.0 || target["state"] != "healthy" ||
		sg["referencedBy"].([]any)[0] != "sg-node" || sg["usedBy"].([]any)[0] != "k8s-demo" {
		t.Fatalf("snapshot JSON:\n%s", body)
	}

	// A key removed from the credentials file ends its sessions at once.
	f.keys.set(sigv4.Keys{})
	if resp, _ := get(t, c, f.srv.URL+Path+"/api/snapshot"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("snapshot after the key was removed: %d, want 401", resp.StatusCode)
	}
	// So does a new secret for the same key.
	f.keys.set(sigv4.Keys{keyID: {Secret: "another secret"}})
	if resp, _ := get(t, c, f.srv.URL+Path+"/api/snapshot"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("snapshot after the key's secret changed: %d, want 401", resp.StatusCode)
	}
}

func TestSessionCookies(t *testing.T) {
	f := newFixture(t, nil)
	s := f.con.sessions
	good, _, ok := s.signIn(keyID, keySecret)
	if !ok {
		t.Fatal("sign-in refused")
	}
	payload, mac, _ := strings.Cut(good, ".")
	otherID := base64url(keyID + "X\n" + "99999999999")
	for name, value := range map[string]string{
		"expired":        s.value(keyID, keySecret, time.Now().Add(-time.Second)),
		"tampered mac":   payload + "." + flip(mac),
		"tampered data":  flip(payload) + "." + mac,
		"other key id":   otherID + "." + mac,
		"no mac":         payload,
		"another key's":  (&sessions{key: []byte("another process"), creds: f.keys, ttl: time.Hour, now: time.Now}).value(keyID, keySecret, time.Now().Add(time.Hour)),
		"empty":          "",
		"garbage":        "!!!.???",
		"extended":       base64url(keyID+"\n"+"99999999999") + "." + mac,
		"wrong secret":   s.value(keyID, "guess", time.Now().Add(time.Hour)),
		"unknown key id": s.value("AKIANOSUCHKEY0000000", keySecret, time.Now().Add(time.Hour)),
	} {
		req, _ := http.NewRequest("GET", f.srv.URL+Path+"/api/snapshot", nil)
		req.AddCookie(&http.Cookie{Name: cookieName, Value: value})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s cookie: %d, want 401", name, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("GET", f.srv.URL+Path+"/api/snapshot", nil)
	req.AddCookie(&http.Cookie{Name: cookieName, Value: good})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("good cookie: %d", resp.StatusCode)
	}
}

func base64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// flip changes the first character of a base64url string.
func flip(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

func TestCrossSiteSignIn(t *testing.T) {
	f := newFixture(t, nil)
	for _, h := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site"},
		{"Origin": "http://evil.example"},
	} {
		req, _ := http.NewRequest("POST", f.srv.URL+Path+"/signin", strings.NewReader(url.Values{"access_key_id": {keyID}, "secret_access_key": {keySecret}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := f.client(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Errorf("sign-in with %v: %d, cookies %v; want 403 and none", h, resp.StatusCode, resp.Cookies())
		}
	}
}

type explainFunc func(ctx context.Context, from netip.Addr, to, protocol string) (any, error)

func (f explainFunc) Explain(ctx context.Context, from netip.Addr, to, protocol string) (any, error) {
	return f(ctx, from, to, protocol)
}

func TestExplain(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client(t)
	f.signIn(t, c, keyID, keySecret)
	if resp, _ := get(t, c, f.srv.URL+Path+"/api/explain?from=127.0.0.3&to=lb:8080"); resp.StatusCode != http.StatusNotImplemented {
		t.Fatalf("explain without an Explainer: %d, want 501", resp.StatusCode)
	}

	f = newFixture(t, explainFunc(func(_ context.Context, from netip.Addr, to, protocol string) (any, error) {
		if to == "unknown:1" {
			return nil, errors.New("no load balancer or instance unknown")
		}
		return map[string]string{"from": from.String(), "to": to, "protocol": protocol, "verdict": "dropped"}, nil
	}))
	c = f.client(t)
	f.signIn(t, c, keyID, keySecret)
	resp, body := get(t, c, f.srv.URL+Path+"/api/explain?from=127.0.0.3&to=lb:8080")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"from":"127.0.0.3"`) || !strings.Contains(body, `"protocol":"tcp"`) {
		t.Fatalf("explain: %d %s", resp.StatusCode, body)
	}
	for _, q := range []string{"from=nonsense&to=lb:8080", "from=127.0.0.3", "from=127.0.0.3&to=unknown:1"} {
		if resp, body := get(t, c, f.srv.URL+Path+"/api/explain?"+q); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("explain?%s: %d %s, want 400", q, resp.StatusCode, body)
		}
	}
}

func TestDenials(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client(t)
	f.signIn(t, c, keyID, keySecret)

	// The event stream says hello, then "denied" when a flow is denied and "changed" at a commit.
	resp, err := c.Get(f.srv.URL + Path + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, ct)
	}
	events := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				events <- ev
			}
		}
		close(events)
	}()
	next := func(want string) {
		t.Helper()
		select {
		case ev := <-events:
			if ev != want {
				t.Fatalf("event %q, want %q", ev, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %q event within 10s", want)
		}
	}
	next("hello")
	now := time.Now().UTC()
	f.flows.Add(flowlog.Entry{Time: now, Action: flowlog.Deny, LoadBalancer: "arn:lb", Listener: "arn:listener", Protocol: "tcp", Client: "127.0.0.3:40522", Reason: "security_group"})
	next("denied")
	f.flows.Add(flowlog.Entry{Time: now, Action: flowlog.Deny, LoadBalancer: "arn:lb", Listener: "arn:listener", Protocol: "tcp", Client: "127.0.0.3:40524", Reason: "security_group"})
	f.flows.Add(flowlog.Entry{Time: now, Action: flowlog.Deny, Instance: "i-a", Interface: "eni-a", Direction: "inbound", Protocol: "tcp", Source: "127.0.0.3:5555", Destination: "127.1.0.10:30080", Reason: "no_rule_matched"})
	f.flows.Add(flowlog.Entry{Time: now, Action: flowlog.WouldDeny, Instance: "i-a", Interface: "eni-a", Direction: "outbound", Protocol: "udp", Source: "127.1.0.10:5353", Destination: "10.9.9.9:53", Reason: "no_rule_matched"})
	f.commit <- struct{}{}
	deadline := time.Now().Add(10 * time.Second)
	var d Denials
	for len(d.Recent) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("denials: %d of 4 within 10s", len(d.Recent))
		}
		_, body := get(t, c, f.srv.URL+Path+"/api/denials")
		if err := json.Unmarshal([]byte(body), &d); err != nil {
			t.Fatal(err)
		}
	}
	want := []RuleDenials{
		{"an inbound rule in one of the load balancer's groups sg-front, sg-back: tcp 8080 from 127.0.0.3/32", 2, now},
		{"an inbound rule in one of eni-a's groups sg-node: tcp 30080 from 127.0.0.3/32", 1, now},
		{"an outbound rule in one of eni-a's groups sg-node: udp 53 to 10.9.9.9/32", 1, now},
	}
	if len(d.ByRule) != len(want) {
		t.Fatalf("by rule: %+v", d.ByRule)
	}
	for i, w := range want {
		if g := d.ByRule[i]; g.Suggestion != w.Suggestion || g.Count != w.Count || !g.Last.Equal(w.Last) {
			t.Errorf("by rule %d: %+v, want %+v", i, g, w)
		}
	}
	if r := d.Recent[0]; r.Action != flowlog.WouldDeny || r.From != "127.1.0.10:5353" || r.To != "10.9.9.9:53" {
		t.Errorf("newest denial: %+v", r)
	}
	if r := d.Recent[3]; r.Where != "k8s-demo TCP 8080" || r.From != "127.0.0.3:40522" || r.To != "k8s-demo-0123.elb.us-east-1.moat.internal:8080" || r.Suggestion != want[0].Suggestion {
		t.Errorf("oldest denial: %+v", r)
	}
	if len(d.Listeners) != 1 || d.Listeners[0].Flows.KernelDropped != 2 || d.Listeners[0].Listener != "TCP 8080" ||
		d.Listeners[0].Suggestion != "an inbound rule in one of the load balancer's groups sg-front, sg-back: tcp 8080 from the client's address" {
		t.Errorf("listeners: %+v", d.Listeners)
	}
	if want := []string{"Clients that a load balancer's groups deny are counted per listener, not listed one by one: the kernel does not say who they were."}; !slices.Equal(d.Notes, want) || d.Dropped != 0 {
		t.Errorf("notes %q, dropped %d; want %q, 0", d.Notes, d.Dropped, want)
	}
	// Each denial announces itself, and the commit too; notices coalesce, so wait for "changed".
	for {
		select {
		case ev := <-events:
			if ev == "changed" {
				return
			}
			if ev != "denied" {
				t.Fatalf("event %q", ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no changed event within 10s of a commit")
		}
	}
}
