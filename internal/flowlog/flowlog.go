// Package flowlog is moat's flow log: one JSON line per flow that a security
// group denied, whoever denied it — a load balancer's listener (the data
// plane) or an instance's interface (the instance firewall) — so that one
// file tells every denial in one format:
//
//	{"time":"…Z","action":"deny","load_balancer":"arn:…","listener":"arn:…","protocol":"tcp","client":"127.0.0.3:40522","reason":"security_group"}
//	{"time":"…Z","action":"deny","instance":"i-…","interface":"eni-…","direction":"inbound","protocol":"tcp","source":"127.0.0.3:40522","destination":"127.1.0.10:30080","reason":"no_rule_matched"}
//
// A field that does not apply to the place of the denial is left out.
package flowlog

import (
	"encoding/json"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Actions: what happened to the flow.
const (
	Deny      = "deny"
	WouldDeny = "would_deny" // an instance firewall in audit mode let it through
)

// Entry is one denied flow.
type Entry struct {
	Time   time.Time `json:"time"`
	Action string    `json:"action"`
	// At a load balancer: which listener, and its client's address.
	LoadBalancer string `json:"load_balancer,omitempty"`
	Listener     string `json:"listener,omitempty"`
	// At an instance: which interface, and the flow's direction from the
	// interface's side (inbound, outbound).
	Instance  string `json:"instance,omitempty"`
	Interface string `json:"interface,omitempty"`
	Direction string `json:"direction,omitempty"`
	Protocol  string `json:"protocol"`
	Client    string `json:"client,omitempty"`
	// At an instance: the flow's addresses (and ports, for tcp and udp).
	Source      string `json:"source,omitempty"`
	Destination string `json:"destination,omitempty"`
	Reason      string `json:"reason"`
}

// Log writes entries to one writer for all its users: each line in one
// Write, under a lock, so that lines from the data plane and the firewall
// never interleave. It also hands every entry to its subscribers (the web
// console). The zero Log writes nowhere and only feeds subscribers.
type Log struct {
	mu sync.Mutex
	w  io.Writer

	subsMu sync.RWMutex
	subs   map[*Subscription]struct{}
}

// Subscription receives the entries added to a Log after Subscribe. Its
// buffer is bounded: an entry that finds it full is dropped and counted,
// never waited for, so that a slow reader cannot hold up the data plane or
// the firewall that adds entries.
type Subscription struct {
	C       <-chan Entry
	c       chan Entry
	dropped atomic.Uint64
	log     *Log
}

// Dropped is how many entries found the buffer full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close ends the subscription; C receives nothing more (it is not closed, so
// that an Add under way never sends on a closed channel).
func (s *Subscription) Close() {
	s.log.subsMu.Lock()
	defer s.log.subsMu.Unlock()
	delete(s.log.subs, s)
}

// Subscribe returns a subscription to l's entries with room for buffer of
// them.
func (l *Log) Subscribe(buffer int) *Subscription {
	c := make(chan Entry, buffer)
	s := &Subscription{C: c, c: c, log: l}
	l.subsMu.Lock()
	defer l.subsMu.Unlock()
	if l.subs == nil {
		l.subs = map[*Subscription]struct{}{}
	}
	l.subs[s] = struct{}{}
	return s
}

func (l *Log) publish(e Entry) {
	l.subsMu.RLock()
	defer l.subsMu.RUnlock()
	for s := range l.subs {
		select {
		case s.c <- e:
		default:
			s.dropped.Add(1)
		}
	}
}

// New returns a Log writing to w, or nil (logging nothing) for a nil w.
// Given a Log, it returns that Log, so that every user of one writer shares
// its lock.
func New(w io.Writer) *Log {
	switch w := w.(type) {
	case nil:
		return nil
	case *Log:
		return w
	}
	return &Log{w: w}
}

// Write writes p whole under the Log's lock.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w == nil {
		return len(p), nil
	}
	return l.w.Write(p)
}

// Add writes e as one line and hands it to the subscribers; a nil Log drops
// it.
func (l *Log) Add(e Entry) {
	if l == nil {
		return
	}
	l.publish(e)
	if l.w == nil {
		return
	}
	line, err := json.Marshal(e)
	if err != nil {
		return
	}
	_, _ = l.Write(append(line, '\n'))
}
