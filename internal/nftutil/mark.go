package nftutil

import (
	"crypto/rand"
	"encoding/binary"
)

// The marks of moat's flows. The data plane owns the whole 32-bit conntrack
// mark (and packet mark) of the flows moat lb forwards and of its health
// checks, laid out so:
//
//	bit 31      MarkFlow: moat lb forwarded it; the instance firewall admits such flows, which
//	            moat lb judged with the load balancer's groups as their source before they left
//	            (moat node marks its own connections to moat lb's API so too: the firewall it
//	            programs must never cut it off from the rules)
//	bit 30      MarkClosing: the kernel fast path saw the flow's first FIN or RST; it is no
//	            longer active (AWS counts only flows in SYN_SENT and ESTABLISHED as active)
//	bits 29-12  the ID of the data plane that forwarded it (random per process)
//	bits 11-0   the kernel fast path's socket slot; 0 for the userspace proxy and health checks
const (
	MarkFlow     = 1 << 31
	MarkClosing  = 1 << 30
	MarkSlotBits = 12
	// MarkIDMask selects a mark's data plane ID (MarkFlow included).
	MarkIDMask = ^uint32(1<<MarkSlotBits-1) &^ MarkClosing
)

// NewMarkID draws a data plane ID: MarkFlow and 18 random bits.
func NewMarkID() uint32 {
	for {
		var b [4]byte
		rand.Read(b[:])
		if id := binary.BigEndian.Uint32(b[:])&MarkIDMask | MarkFlow; id != MarkFlow {
			return id
		}
	}
}
