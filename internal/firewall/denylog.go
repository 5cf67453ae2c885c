package firewall

import (
	"encoding/binary"
	"hash/fnv"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/moatlb/moat/internal/flowlog"
)

// Denied flows reach the flow log through the kernel's packet log: a deny
// chain's log statement sends the first packet of each denied flow (a copy of
// its headers, and a prefix naming the interface and the direction) to an
// NFLOG group that the firewall reads. A shared rate limit in front of the log
// statement keeps a flood from swamping the reader; what it holds back is
// counted. This file is the pure half: the group, the prefix, and the reading
// of a logged packet.

// Log rate: at most logBurst lines at once, then logRate a second, for the
// whole table.
const (
	logRate  = 100
	logBurst = 200
	// logSnap is what the kernel copies of a packet: the longest IPv4 header
	// and the transport ports.
	logSnap = 64
	// logPrefixMax is the kernel's limit on a log prefix (NF_LOG_PREFIXLEN, 128,
	// with its NUL).
	logPrefixMax = 127
)

// ReasonNoRule is the flow log's reason for an instance firewall's denial: no
// rule of the interface's groups admits the flow.
const ReasonNoRule = "no_rule_matched"

// logGroups are the NFLOG groups the firewall tries, in order, for a table:
// from 32768 up (tools such as ulogd use low numbers), starting at a place
// drawn from the table's name. Two moat processes on one host own different
// tables, so they start at different places; if one's group is taken
// anyway, it moves on to the next.
func logGroups(table string, n int) []uint16 {
	h := fnv.New32a()
	h.Write([]byte(table))
	start := h.Sum32()
	out := make([]uint16, n)
	for i := range out {
		out[i] = uint16(0x8000 | (start+uint32(i))&0x7fff)
	}
	return out
}

// logPrefix names a deny chain in its log statement: the table (a group
// could be left to a stale table of another process), what the firewall does
// with the flow, the direction and the interface. IDs are cut to fit the
// kernel's limit, which the ones moat makes never reach.
func logPrefix(table, action, direction, instance, iface string) string {
	return strings.Join([]string{"moat", prefixField(table), action, direction, prefixField(instance), prefixField(iface)}, " ")
}

// prefixField is a name as a log prefix holds it: one word, short enough
// that six fit the kernel's limit.
func prefixField(s string) string {
	s = strings.Join(strings.Fields(s), "_")
	return s[:min(len(s), (logPrefixMax-len("moat would_deny outbound")-5)/3)]
}

// listenerLogPrefix names the listener chains' log statement: which socket is in the packet.
func listenerLogPrefix(table string) string {
	return "moat " + prefixField(table) + " " + flowlog.Deny + " listener"
}

// parseDenial reads a packet that table's deny chains logged: the prefix
// says where, the IPv4 header and the first transport bytes say which flow.
// A listener's denial is named by listener, which finds the socket by
// protocol, destination address and port (false: no listener there any more).
// It reports false for anything else.
func parseDenial(table, prefix string, payload []byte, now time.Time, listener func(listenerKey) (Listener, bool)) (flowlog.Entry, bool) {
	f := strings.Split(prefix, " ")
	atListener := prefix == listenerLogPrefix(table)
	if !atListener && (len(f) != 6 || f[0] != "moat" || f[1] != prefixField(table) || (f[2] != flowlog.Deny && f[2] != flowlog.WouldDeny)) {
		return flowlog.Entry{}, false
	}
	if len(payload) < 20 || payload[0]>>4 != 4 {
		return flowlog.Entry{}, false
	}
	ihl := int(payload[0]&0x0f) * 4
	if ihl < 20 || len(payload) < ihl {
		return flowlog.Entry{}, false
	}
	proto := payload[9]
	src, dst := netip.AddrFrom4([4]byte(payload[12:16])), netip.AddrFrom4([4]byte(payload[16:20]))
	var srcPort, dstPort uint16
	// Ports, for tcp and udp, when this is a flow's first fragment.
	fragOffset := binary.BigEndian.Uint16(payload[6:8]) & 0x1fff
	ported := (proto == 6 || proto == 17) && fragOffset == 0 && len(payload) >= ihl+4
	if ported {
		srcPort, dstPort = binary.BigEndian.Uint16(payload[ihl:]), binary.BigEndian.Uint16(payload[ihl+2:])
	}
	if atListener {
		l, ok := listener(listenerKey{int(proto), netip.AddrPortFrom(dst, dstPort)})
		if !ported || !ok {
			return flowlog.Entry{}, false
		}
		return flowlog.Entry{Time: now.UTC(), Action: flowlog.Deny, LoadBalancer: l.LoadBalancer, Listener: l.ID,
			Protocol: protocolName(proto), Client: netip.AddrPortFrom(src, srcPort).String(), Reason: ReasonListenerGroups}, true
	}
	e := flowlog.Entry{Time: now.UTC(), Action: f[2], Direction: f[3], Instance: f[4], Interface: f[5],
		Protocol: protocolName(proto), Source: src.String(), Destination: dst.String(), Reason: ReasonNoRule}
	if ported {
		e.Source = netip.AddrPortFrom(src, srcPort).String()
		e.Destination = netip.AddrPortFrom(dst, dstPort).String()
	}
	return e, true
}

func protocolName(p byte) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	}
	return strconv.Itoa(int(p))
}

// firstSeen keeps one line per denied flow: in enforce mode a flow's first
// packet is dropped, so its retries (a TCP client's SYNs, a UDP sender's
// datagrams) are new to the kernel every time. It remembers the flows of the
// last window, at most max of them.
type firstSeen struct {
	window time.Duration
	max    int
	seen   map[flowlog.Entry]time.Time
}

func newFirstSeen(window time.Duration, max int) *firstSeen {
	return &firstSeen{window: window, max: max, seen: map[flowlog.Entry]time.Time{}}
}

// first reports whether e's flow was not logged within the window.
func (s *firstSeen) first(e flowlog.Entry) bool {
	now := e.Time
	e.Time = time.Time{}
	if t, ok := s.seen[e]; ok && now.Sub(t) < s.window {
		return false
	}
	if len(s.seen) >= s.max {
		for k, t := range s.seen {
			if now.Sub(t) >= s.window {
				delete(s.seen, k)
			}
		}
		if len(s.seen) >= s.max {
			clear(s.seen) // a flood of distinct flows: start over rather than grow
		}
	}
	s.seen[e] = now
	return true
}
