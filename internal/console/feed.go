package console

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/moatlb/moat/internal/flowlog"
)

// Bounds of what the feed keeps: the latest denials, and counts for this many distinct missing
// rules (denials past that are counted together).
const (
	recentDenials  = 200
	countedDenials = 1024
	feedBuffer     = 1024
)

// feed follows the flow log: it keeps the latest denied flows and counts them by the rule that
// would have admitted them, and tells the event streams when one arrives.
type feed struct {
	sub *flowlog.Subscription // nil: no flow log

	mu       sync.Mutex
	recent   []flowlog.Entry // oldest first, at most recentDenials
	counts   map[denialKey]*denialCount
	uncount  uint64 // denials past countedDenials distinct keys
	watchers map[chan struct{}]struct{}
}

// denialKey is what decides the missing rule of a denial: where it was denied, and the peer,
// protocol and port a rule would have to name.
type denialKey struct {
	LoadBalancer, Listener string
	Interface, Direction   string
	Protocol, Peer, Port   string
	Reason                 string
}

type denialCount struct {
	n    uint64
	last time.Time
}

func newFeed(log *flowlog.Log) *feed {
	f := &feed{counts: map[denialKey]*denialCount{}, watchers: map[chan struct{}]struct{}{}}
	if log != nil {
		f.sub = log.Subscribe(feedBuffer)
	}
	return f
}

// run takes entries from the flow log until ctx ends.
func (f *feed) run(ctx context.Context) {
	if f.sub == nil {
		return
	}
	defer f.sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-f.sub.C:
			f.add(e)
		}
	}
}

func (f *feed) add(e flowlog.Entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.recent) == recentDenials {
		f.recent = slices.Delete(f.recent, 0, 1)
	}
	f.recent = append(f.recent, e)
	k := keyOf(e)
	c, ok := f.counts[k]
	switch {
	case ok:
	case len(f.counts) < countedDenials:
		c = &denialCount{}
		f.counts[k] = c
	default:
		f.uncount++
	}
	if c != nil {
		c.n++
		c.last = e.Time
	}
	for w := range f.watchers {
		select {
		case w <- struct{}{}:
		default: // it has a notice pending already
		}
	}
}

// watch returns a channel that receives a notice when denials arrive, and its cancel.
func (f *feed) watch() (<-chan struct{}, func()) {
	w := make(chan struct{}, 1)
	f.mu.Lock()
	f.watchers[w] = struct{}{}
	f.mu.Unlock()
	return w, func() {
		f.mu.Lock()
		delete(f.watchers, w)
		f.mu.Unlock()
	}
}

func keyOf(e flowlog.Entry) denialKey {
	k := denialKey{LoadBalancer: e.LoadBalancer, Listener: e.Listener, Interface: e.Interface, Direction: e.Direction, Protocol: e.Protocol, Reason: e.Reason}
	if e.Listener != "" {
		k.Peer = addrOf(e.Client)
		return k
	}
	peer := e.Source
	if e.Direction == "outbound" {
		peer = e.Destination
	}
	k.Peer = addrOf(peer)
	if ap, err := netip.ParseAddrPort(e.Destination); err == nil {
		k.Port = fmt.Sprint(ap.Port())
	}
	return k
}

// addrOf is the address of "addr:port" or of a bare address.
func addrOf(s string) string {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().String()
	}
	return s
}

// Denials is the feed as the console shows it.
type Denials struct {
	Recent []Denial      `json:"recent"` // newest first
	ByRule []RuleDenials `json:"byRule"` // most denied first
	// Uncounted are denials not in ByRule: too many distinct missing rules.
	Uncounted uint64 `json:"uncounted"`
	// Dropped are flow log entries the console missed because it fell behind.
	Dropped   uint64           `json:"dropped"`
	Listeners []ListenerDenial `json:"listeners"`
	Notes     []string         `json:"notes"`
}

// Denial is one denied flow and the rule that would have admitted it.
type Denial struct {
	Time       time.Time `json:"time"`
	Action     string    `json:"action"` // deny or would_deny
	Where      string    `json:"where"`  // the listener or interface
	Protocol   string    `json:"protocol"`
	From       string    `json:"from"`
	To         string    `json:"to"`
	Reason     string    `json:"reason"`
	Suggestion string    `json:"suggestion"`
}

// RuleDenials counts the denials one missing rule would have admitted.
type RuleDenials struct {
	Suggestion string    `json:"suggestion"`
	Count      uint64    `json:"count"`
	Last       time.Time `json:"last"`
}

// ListenerDenial is a listener's denial counts, with what would admit a client it denies.
type ListenerDenial struct {
	LoadBalancer string        `json:"loadBalancer"`
	Listener     string        `json:"listener"` // "TCP 8080"
	Flows        ListenerFlows `json:"flows"`
	Suggestion   string        `json:"suggestion"`
}

// noteNoFlowLog says why no flow is listed at all.
const noteNoFlowLog = "This moat lb keeps no flow log, so no flow is listed: only the counts per listener."

// denials renders the feed against snap, which names the groups a missing rule belongs in.
func (f *feed) denials(snap *Snapshot) Denials {
	ix := newIndex(snap)
	f.mu.Lock()
	out := Denials{Uncounted: f.uncount, Recent: make([]Denial, 0, len(f.recent)), ByRule: make([]RuleDenials, 0, len(f.counts))}
	for _, e := range slices.Backward(f.recent) {
		out.Recent = append(out.Recent, ix.denial(e))
	}
	byRule := map[string]*RuleDenials{}
	for k, c := range f.counts {
		s := ix.suggest(k)
		r, ok := byRule[s]
		if !ok {
			r = &RuleDenials{Suggestion: s}
			byRule[s] = r
		}
		r.Count += c.n
		if c.last.After(r.Last) {
			r.Last = c.last
		}
	}
	f.mu.Unlock()
	for _, r := range byRule {
		out.ByRule = append(out.ByRule, *r)
	}
	slices.SortFunc(out.ByRule, func(a, b RuleDenials) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Suggestion, b.Suggestion))
	})
	if f.sub != nil {
		out.Dropped = f.sub.Dropped()
	}
	for _, lb := range snap.LoadBalancers {
		for _, l := range lb.Listeners {
			out.Listeners = append(out.Listeners, ListenerDenial{
				LoadBalancer: lb.Name, Listener: fmt.Sprintf("%s %d", l.Protocol, l.Port), Flows: l.Flows,
				Suggestion: inboundRule("the load balancer's groups", lb.SecurityGroups, listenerProtocol(l.Protocol), fmt.Sprint(l.Port), "the client's address"),
			})
		}
	}
	out.Notes = []string{}
	if f.sub == nil {
		out.Notes = append(out.Notes, noteNoFlowLog)
	}
	if snap.ListenerFlowLog != "" {
		out.Notes = append(out.Notes, "Clients that a load balancer's groups deny are counted per listener, not listed one by one: "+snap.ListenerFlowLog+".")
	}
	if snap.InstanceFlowLog != "" {
		out.Notes = append(out.Notes, "Denied flows to instances are not listed one by one: "+snap.InstanceFlowLog+".")
	}
	return out
}

// index finds a snapshot's listeners and interfaces by ID.
type index struct {
	listeners  map[string]listenerAt
	interfaces map[string]Interface
}

type listenerAt struct {
	lb *LoadBalancer
	l  *Listener
}

func newIndex(snap *Snapshot) index {
	ix := index{listeners: map[string]listenerAt{}, interfaces: map[string]Interface{}}
	for i := range snap.LoadBalancers {
		lb := &snap.LoadBalancers[i]
		for j := range lb.Listeners {
			ix.listeners[lb.Listeners[j].ARN] = listenerAt{lb, &lb.Listeners[j]}
		}
	}
	for _, eni := range snap.Interfaces {
		ix.interfaces[eni.ID] = eni
	}
	return ix
}

func (ix index) denial(e flowlog.Entry) Denial {
	d := Denial{Time: e.Time, Action: e.Action, Protocol: e.Protocol, Reason: e.Reason, Suggestion: ix.suggest(keyOf(e))}
	if e.Listener != "" {
		d.From, d.Where = e.Client, e.Listener
		if at, ok := ix.listeners[e.Listener]; ok {
			d.Where = fmt.Sprintf("%s %s %d", at.lb.Name, at.l.Protocol, at.l.Port)
			d.To = fmt.Sprintf("%s:%d", at.lb.DNSName, at.l.Port)
		}
		return d
	}
	d.From, d.To = e.Source, e.Destination
	d.Where = fmt.Sprintf("%s %s (%s)", e.Interface, e.Direction, e.Instance)
	return d
}

// suggest is the rule that would have admitted the denials of k, or what else would.
func (ix index) suggest(k denialKey) string {
	if k.Listener != "" {
		at, ok := ix.listeners[k.Listener]
		if !ok {
			return "the listener " + k.Listener + " no longer exists"
		}
		switch k.Reason {
		case "no_target":
			return "a target that can take flows in the listener's target group (none is healthy, or the backend groups let none be reached)"
		case "flow_limit":
			return "fewer flows at once, or a larger --max-flows-per-listener"
		}
		return inboundRule("the load balancer's groups", at.lb.SecurityGroups, k.Protocol, fmt.Sprint(at.l.Port), hostPrefix(k.Peer))
	}
	eni, ok := ix.interfaces[k.Interface]
	if !ok {
		return "the interface " + k.Interface + " no longer exists"
	}
	where := eni.ID + "'s groups"
	if k.Direction == "outbound" {
		return fmt.Sprintf("an outbound rule in one of %s %s: %s to %s", where, strings.Join(eni.Groups, ", "), protoPort(k.Protocol, k.Port), hostPrefix(k.Peer))
	}
	return inboundRule(where, eni.Groups, k.Protocol, k.Port, hostPrefix(k.Peer))
}

func inboundRule(where string, groups []string, protocol, port, from string) string {
	return fmt.Sprintf("an inbound rule in one of %s %s: %s from %s", where, strings.Join(groups, ", "), protoPort(protocol, port), from)
}

func protoPort(protocol, port string) string {
	if port == "" {
		return protocol
	}
	return protocol + " " + port
}

// hostPrefix is the /32 (or /128) of an address.
func hostPrefix(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	return netip.PrefixFrom(a, a.BitLen()).String()
}

// listenerProtocol is the IP protocol of a listener's clients as a rule names it.
func listenerProtocol(p string) string {
	switch p {
	case "UDP":
		return "udp"
	case "TCP_UDP":
		return "tcp and udp"
	}
	return "tcp"
}
