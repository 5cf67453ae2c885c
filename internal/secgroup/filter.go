package secgroup

import (
	"errors"
	"fmt"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// SocketFilter compiles p into a classic BPF socket filter that accepts
// packets whose source address p allows and drops the rest, for a socket of
// the given family (unix.AF_INET, or unix.AF_INET6, whose program also judges
// the IPv4 clients a dual-stack socket receives). AllowAll yields "accept
// everything" and a policy that admits nothing yields "drop everything".
//
// Why: AWS drops the packets of a denied client silently, so its connect
// times out. A userspace proxy only sees a TCP connection after the kernel has
// completed the handshake, too late to be silent; a socket filter on the
// listening socket runs before that, needs no privileges, and drops the SYN.
// What a denied client observes:
//   - TCP, filter attached: no SYN-ACK. The client retransmits its SYN
//     (net.ipv4.tcp_syn_retries, 6 by default, about 127 s) and connect fails
//     with ETIMEDOUT, or earlier with the client's own connect timeout — as
//     on AWS.
//   - UDP, filter attached: its datagrams vanish, and no ICMP is sent.
//   - ok=false (or AttachFilter failed): the caller falls back to
//     accept-and-reset. The client's connect succeeds, then the data plane
//     resets the connection (close with SO_LINGER 0), so the client's reads
//     fail with ECONNRESET. Its data never reaches a target.
//
// ok is false, with a nil error, when the program would need more than 4000
// instructions (BPF_MAXINSNS is 4096): about 1,980 disjoint IPv4 ranges, or
// about 200 scattered IPv6 /128s (a 128-bit comparison takes several 32-bit
// ones). Merged CIDRs count once, so typical rule sets are far below that.
//
// Attaching the program needs Linux (SocketFilters); compiling it works
// everywhere.
//
// The filter is only the silent, early half of enforcement: the data plane
// must still check Policy.Allows for every accepted flow, which stays
// authoritative when the filter is too big, and in the moment between
// swapping a Policy and re-attaching its filter.
//
// TCP and UDP differ after a revoke. An accepted TCP connection is its own
// socket, so re-attaching the listener's filter never touches it (see
// AttachFilter). A UDP listening socket receives the datagrams of every flow,
// so its new filter would also drop those of established flows whose client
// the new rules deny: compile it from the new policy plus the active clients
// (Policy.With) to keep established flows, as AWS does.
//
// TCP listeners must not be MPTCP (ErrMultipathTCP). Attaching from a
// net.ListenConfig's Control function, before the socket listens, leaves no
// moment in which it accepts unfiltered.
func SocketFilter(p *Policy, family int) (prog []bpf.RawInstruction, ok bool, err error) {
	var dual bool
	switch family {
	case unix.AF_INET:
	case unix.AF_INET6:
		dual = true
	default:
		return nil, false, fmt.Errorf("socket filter for address family %d: want AF_INET or AF_INET6", family)
	}
	insns, err := buildFilter(p, dual, skfNetOff)
	if errors.Is(err, errTooBig) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	prog, err = bpf.Assemble(insns)
	if err != nil {
		return nil, false, fmt.Errorf("assemble socket filter: %w", err)
	}
	return prog, true, nil
}
