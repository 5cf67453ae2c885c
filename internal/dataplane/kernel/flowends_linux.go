//go:build linux && !moat_portable

package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/moatlb/moat/internal/nftutil"
	"github.com/moatlb/moat/internal/secgroup"
)

// The fast path counts its active flows without reading conntrack's table: a
// dump of it, however filtered, walks every bucket of the host's hash (262,144
// on a machine with 24 GB) with softirqs off, and stalled all forwarding on its
// CPU for 12 ms at each read. Instead a slot's active flows are the flows it
// admitted (its new_N counter), less those that began to close (closed_N:
// their first FIN or RST, which sets nftutil.MarkClosing), less those conntrack
// destroyed without closing (idle timeout, termination), which conntrack's
// events tell: flowEnds.

// An event is a netlink header, a netfilter one (struct nfgenmsg, 4 bytes)
// and attributes, among them the mark (CTA_MARK).
const (
	nfgenmsgLen = 4
	ctaMark     = 8
)

// flowEndsBuffer is the event socket's receive buffer: the ends of the flows
// that idle out between two reads of the counters queue in it.
const flowEndsBuffer = 4 << 20

// flowEnds receives conntrack's destroy events for one path's flows that were
// not closing. A socket filter in the kernel drops every other flow's event,
// so that the host's other connections do not wake moat lb.
type flowEnds struct {
	f   *os.File
	raw syscall.RawConn
	buf []byte
}

func dialFlowEnds(id uint32) (*flowEnds, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("conntrack events: %w", err)
	}
	e := &flowEnds{f: os.NewFile(uintptr(fd), "conntrack-events"), buf: make([]byte, os.Getpagesize())}
	if e.raw, err = e.f.SyscallConn(); err != nil {
		e.close()
		return nil, err
	}
	// The filter goes on before the socket joins the group, so that no other
	// flow's event is ever queued.
	prog, err := bpf.Assemble(endsFilter(id))
	if err == nil {
		err = secgroup.AttachFilter(e.raw, prog)
	}
	if err != nil {
		e.close()
		return nil, fmt.Errorf("conntrack events: %w", err)
	}
	var serr error
	if err := e.raw.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, flowEndsBuffer) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, flowEndsBuffer)
		}
		serr = unix.Bind(int(fd), &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (unix.NFNLGRP_CONNTRACK_DESTROY - 1)})
	}); err != nil || serr != nil {
		e.close()
		return nil, fmt.Errorf("conntrack events: join the destroy group: %w", errors.Join(err, serr))
	}
	return e, nil
}

// endsFilter accepts a destroy event whose mark has the path's ID and not
// nftutil.MarkClosing.
func endsFilter(id uint32) []bpf.Instruction {
	const accept, drop = 0xffff, 0
	return []bpf.Instruction{
		// A = offset of CTA_MARK among the attributes after the netlink and
		// nfgen headers, or 0.
		bpf.LoadConstant{Dst: bpf.RegA, Val: unix.NLMSG_HDRLEN + nfgenmsgLen},
		bpf.LoadConstant{Dst: bpf.RegX, Val: ctaMark},
		bpf.LoadExtension{Num: bpf.ExtNetlinkAttr},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipTrue: 4},
		bpf.TAX{},
		bpf.LoadIndirect{Off: unix.SizeofNlAttr, Size: 4}, // the mark, in network order as loads read
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: idMask | nftutil.MarkClosing},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: id, SkipFalse: 1},
		bpf.RetConstant{Val: accept},
		bpf.RetConstant{Val: drop},
	}
}

// drain adds the ends queued since the last call to ended, by slot, without
// waiting. lost reports that the kernel dropped events (the buffer was full):
// the counts must be read again from conntrack.
func (e *flowEnds) drain(ended map[uint32]int) (lost bool, err error) {
	for {
		var n int
		var rerr error
		if err := e.raw.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), e.buf, unix.MSG_DONTWAIT)
			return true
		}); err != nil {
			return lost, err
		}
		switch {
		case errors.Is(rerr, unix.EAGAIN):
			return lost, nil
		case errors.Is(rerr, unix.ENOBUFS):
			lost = true
			continue
		case errors.Is(rerr, unix.EINTR):
			continue
		case rerr != nil:
			return lost, fmt.Errorf("conntrack events: %w", rerr)
		}
		msgs, err := syscall.ParseNetlinkMessage(e.buf[:n])
		if err != nil {
			return lost, fmt.Errorf("conntrack events: %w", err)
		}
		for _, m := range msgs {
			if mark, ok := eventMark(m.Data); ok {
				ended[mark&slotMask]++
			}
		}
	}
}

// eventMark is the mark of a conntrack event's payload.
func eventMark(payload []byte) (uint32, bool) {
	if len(payload) < nfgenmsgLen {
		return 0, false
	}
	ad, err := netlink.NewAttributeDecoder(payload[nfgenmsgLen:])
	if err != nil {
		return 0, false
	}
	for ad.Next() {
		if ad.Type() == ctaMark && len(ad.Bytes()) == 4 {
			return binary.BigEndian.Uint32(ad.Bytes()), true
		}
	}
	return 0, false
}

func (e *flowEnds) close() { e.f.Close() }
