package flowlog

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
)

// TestSharedLines: users of one writer share one Log, and lines written
// from many goroutines arrive whole, one JSON object each.
func TestSharedLines(t *testing.T) {
	var buf bytes.Buffer // not safe for concurrent use: the Log's lock must cover it
	l := New(&buf)
	if New(l) != l {
		t.Fatal("New of a Log is not that Log")
	}
	if New(nil) != nil {
		t.Fatal("New(nil) is not nil")
	}
	New(nil).Add(Entry{Reason: "dropped"}) // a nil Log logs nothing, without failing
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := New(l) // as the data plane and the firewall each do
			for range 100 {
				w.Add(Entry{Action: Deny, Instance: strings.Repeat("i", g+1), Protocol: "tcp", Reason: "no_rule_matched"})
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 800 {
		t.Fatalf("%d lines, want 800", len(lines))
	}
	for _, line := range lines {
		var e Entry
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.Action != Deny || e.Reason != "no_rule_matched" {
			t.Fatalf("line %q: %v", line, err)
		}
		if strings.Contains(line, "load_balancer") || strings.Contains(line, "client") {
			t.Fatalf("line %q has fields of a load balancer's denial", line)
		}
	}
}

// TestSubscribe: subscribers get every entry added after they subscribed, a
// full buffer drops and counts instead of blocking Add, and a closed
// subscription receives nothing more. The zero Log feeds subscribers only.
func TestSubscribe(t *testing.T) {
	var l Log
	a := l.Subscribe(2)
	b := l.Subscribe(10)
	for i := range 5 {
		l.Add(Entry{Action: Deny, Client: strings.Repeat("c", i+1)}) // must not block on a's full buffer
	}
	if got := a.Dropped(); got != 3 {
		t.Fatalf("a dropped %d, want 3", got)
	}
	if got := (<-a.C).Client; got != "c" {
		t.Fatalf("a's first entry: client %q", got)
	}
	if b.Dropped() != 0 || len(b.C) != 5 {
		t.Fatalf("b: %d buffered, %d dropped; want 5, 0", len(b.C), b.Dropped())
	}
	b.Close()
	l.Add(Entry{Action: Deny})
	if len(b.C) != 5 {
		t.Fatalf("a closed subscription received an entry")
	}
	if n, err := l.Write([]byte("x\n")); n != 2 || err != nil {
		t.Fatalf("zero Log Write: %d, %v", n, err)
	}
}
