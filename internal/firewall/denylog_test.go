package firewall

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/flowlog"
)

// ipv4 is a packet's first bytes: a 20-byte IPv4 header (with ihl words of
// header in all) and ports.
func ipv4(proto byte, ihl int, fragOffset uint16, src, dst [4]byte, sport, dport uint16) []byte {
	p := make([]byte, ihl*4+4)
	p[0] = 0x40 | byte(ihl)
	p[6], p[7] = byte(fragOffset>>8), byte(fragOffset)
	p[9] = proto
	copy(p[12:], src[:])
	copy(p[16:], dst[:])
	p[ihl*4], p[ihl*4+1], p[ihl*4+2], p[ihl*4+3] = byte(sport>>8), byte(sport), byte(dport>>8), byte(dport)
	return p
}

func TestParseDenial(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	client, node := [4]byte{127, 0, 0, 3}, [4]byte{127, 1, 0, 10}
	prefix := logPrefix("t1", flowlog.Deny, "inbound", "i-a", "eni-a")
	for _, c := range []struct {
		name     string
		prefix   string
		payload  []byte
		ok       bool
		src, dst string
		proto    string
	}{
		{"tcp", prefix, ipv4(6, 5, 0, client, node, 40522, 30080), true, "127.0.0.3:40522", "127.1.0.10:30080", "tcp"},
		{"udp with ip options", prefix, ipv4(17, 6, 0, client, node, 53, 30053), true, "127.0.0.3:53", "127.1.0.10:30053", "udp"},
		{"icmp has no ports", prefix, ipv4(1, 5, 0, client, node, 0, 0), true, "127.0.0.3", "127.1.0.10", "icmp"},
		{"a later fragment has no ports", prefix, ipv4(6, 5, 100, client, node, 1, 2), true, "127.0.0.3", "127.1.0.10", "tcp"},
		{"gre by number", prefix, ipv4(47, 5, 0, client, node, 0, 0), true, "127.0.0.3", "127.1.0.10", "47"},
		{"ports cut off", prefix, ipv4(6, 5, 0, client, node, 1, 2)[:22], true, "127.0.0.3", "127.1.0.10", "tcp"},
		{"another table's", logPrefix("t2", flowlog.Deny, "inbound", "i-a", "eni-a"), ipv4(6, 5, 0, client, node, 1, 2), false, "", "", ""},
		{"not moat's", "DROP ", ipv4(6, 5, 0, client, node, 1, 2), false, "", "", ""},
		{"ipv6", prefix, append([]byte{0x60}, make([]byte, 40)...), false, "", "", ""},
		{"short header", prefix, ipv4(6, 5, 0, client, node, 1, 2)[:19], false, "", "", ""},
		{"ihl under 5", prefix, ipv4(6, 4, 0, client, node, 1, 2), false, "", "", ""},
		{"ihl past the payload", prefix, ipv4(6, 15, 0, client, node, 1, 2)[:40], false, "", "", ""},
	} {
		e, ok := parseDenial("t1", c.prefix, c.payload, now, noListener)
		if ok != c.ok {
			t.Errorf("%s: ok %v, want %v", c.name, ok, c.ok)
			continue
		}
		if !ok {
			continue
		}
		want := flowlog.Entry{Time: now, Action: flowlog.Deny, Instance: "i-a", Interface: "eni-a", Direction: "inbound",
			Protocol: c.proto, Source: c.src, Destination: c.dst, Reason: ReasonNoRule}
		if e != want {
			t.Errorf("%s: %+v, want %+v", c.name, e, want)
		}
	}
}

func noListener(listenerKey) (Listener, bool) { return Listener{}, false }

// TestParseListenerDenial: a listener chain's packet names the listener found by protocol,
// destination address and port, and the client; one of no listener, or without ports, is
// dropped.
func TestParseListenerDenial(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	client, lb := [4]byte{127, 0, 0, 3}, [4]byte{127, 1, 0, 100}
	web := Listener{LoadBalancer: "arn:lb", ID: "arn:listener", Addr: netip.MustParseAddrPort("127.1.0.100:8080"), Protocol: 6}
	find := func(k listenerKey) (Listener, bool) { return web, k == listenerKey{6, web.Addr} }
	prefix := listenerLogPrefix("t1")
	e, ok := parseDenial("t1", prefix, ipv4(6, 5, 0, client, lb, 40522, 8080), now, find)
	want := flowlog.Entry{Time: now, Action: flowlog.Deny, LoadBalancer: "arn:lb", Listener: "arn:listener", Protocol: "tcp", Client: "127.0.0.3:40522", Reason: ReasonListenerGroups}
	if !ok || e != want {
		t.Errorf("got %+v %v, want %+v", e, ok, want)
	}
	for name, payload := range map[string][]byte{
		"another port":          ipv4(6, 5, 0, client, lb, 40522, 8081),
		"udp to a tcp listener": ipv4(17, 5, 0, client, lb, 40522, 8080),
		"a later fragment":      ipv4(6, 5, 100, client, lb, 40522, 8080),
	} {
		if e, ok := parseDenial("t1", prefix, payload, now, find); ok {
			t.Errorf("%s: %+v", name, e)
		}
	}
	if _, ok := parseDenial("t2", prefix, ipv4(6, 5, 0, client, lb, 40522, 8080), now, find); ok {
		t.Error("another table's listener denial was read")
	}
}

// TestLogPrefixFits: whatever IDs a caller passes, the prefix fits the
// kernel's limit (which would refuse the table) and stays six fields.
func TestLogPrefixFits(t *testing.T) {
	long := strings.Repeat("x", 300)
	p := logPrefix(long, flowlog.WouldDeny, "outbound", long+" with spaces", long)
	if len(p) > logPrefixMax || len(strings.Split(p, " ")) != 6 {
		t.Errorf("prefix %q: %d bytes, %d fields", p, len(p), len(strings.Split(p, " ")))
	}
}

// TestLogGroups: a table's groups are above 32767, distinct, and another
// table starts elsewhere.
func TestLogGroups(t *testing.T) {
	a, b := logGroups("0a1b2c3d", 8), logGroups("4e5f6071", 8)
	seen := map[uint16]bool{}
	for _, g := range a {
		if g < 0x8000 || seen[g] {
			t.Errorf("groups %v: %d is low or repeated", a, g)
		}
		seen[g] = true
	}
	if a[0] == b[0] {
		t.Errorf("two tables start at the same group %d", a[0])
	}
	if c := logGroups("0a1b2c3d", 8); c[0] != a[0] {
		t.Errorf("a table's groups change: %v, then %v", a, c)
	}
}

func TestFirstSeen(t *testing.T) {
	s := newFirstSeen(time.Minute, 2)
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	flow := func(port string, at time.Time) flowlog.Entry {
		return flowlog.Entry{Time: at, Source: "127.0.0.3:" + port, Destination: "127.1.0.10:80", Protocol: "tcp"}
	}
	for _, c := range []struct {
		e     flowlog.Entry
		first bool
	}{
		{flow("1", t0), true},
		{flow("1", t0.Add(time.Second)), false}, // a retry
		{flow("2", t0.Add(2*time.Second)), true},
		{flow("1", t0.Add(2*time.Minute)), true}, // the window is over
		{flow("3", t0.Add(2*time.Minute)), true}, // full: 2 leaves, being old
		{flow("2", t0.Add(2*time.Minute+time.Second)), true},
	} {
		if got := s.first(c.e); got != c.first {
			t.Errorf("%s at %v: first %v, want %v", c.e.Source, c.e.Time.Sub(t0), got, c.first)
		}
		if len(s.seen) > s.max {
			t.Fatalf("%d flows remembered, max %d", len(s.seen), s.max)
		}
	}
}

// FuzzParseDenial: whatever the kernel hands over, reading it does not
// fail, and what it accepts names the table's interface.
func FuzzParseDenial(f *testing.F) {
	prefix := logPrefix("t1", flowlog.Deny, "inbound", "i-a", "eni-a")
	f.Add(prefix, ipv4(6, 5, 0, [4]byte{127, 0, 0, 3}, [4]byte{127, 1, 0, 10}, 1, 2))
	f.Add(prefix, ipv4(17, 15, 0, [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}, 3, 4))
	f.Add("moat t1 deny", []byte{0x45})
	f.Fuzz(func(t *testing.T, prefix string, payload []byte) {
		e, ok := parseDenial("t1", prefix, payload, time.Now(), noListener)
		if ok && (e.Source == "" || e.Destination == "" || e.Protocol == "" || e.Reason != ReasonNoRule) {
			t.Errorf("accepted %q %x as %+v", prefix, payload, e)
		}
	})
}

// TestParseDenialLongTable: a table name the prefix has to cut still
// matches its own prefixes.
func TestParseDenialLongTable(t *testing.T) {
	table := strings.Repeat("t", 100) + " x"
	prefix := logPrefix(table, flowlog.WouldDeny, "outbound", "i-a", "eni-a")
	e, ok := parseDenial(table, prefix, ipv4(6, 5, 0, [4]byte{127, 1, 0, 10}, [4]byte{127, 0, 0, 5}, 1, 2), time.Now(), noListener)
	if !ok || e.Action != flowlog.WouldDeny || e.Direction != "outbound" {
		t.Errorf("%q: %+v %v", prefix, e, ok)
	}
}
