package secgroup

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// Classic BPF facts the generator relies on.
const (
	// skfNetOff is SKF_NET_OFF (-0x100000) as the uint32 a load carries: a
	// negative offset makes the kernel load relative to the network header.
	// TCP and UDP run socket filters with skb->data at the transport header,
	// so plain offsets would read the TCP or UDP header, not the IP source.
	skfNetOff uint32 = 0xFFF00000

	// maxInsns is BPF_MAXINSNS, the kernel's hard cap on a classic program.
	maxInsns = 4096
	// insnBudget keeps a margin under maxInsns. The binding limit can be
	// lower: the kernel converts the program to eBPF and charges it against
	// net.core.optmem_max (128 KiB on recent kernels, 20 KiB on older ones)
	// on every socket carrying it; AttachPolicy handles that refusal.
	insnBudget = 4000

	// maxJump is the reach of a conditional jump (8-bit offsets); farther
	// targets go through an unconditional "ja" (32-bit offset) trampoline.
	maxJump = 255

	// retAccept keeps the whole packet (a socket filter returns how many
	// bytes to keep; TCP and UDP never trim below their header anyway).
	retAccept = 0xFFFFFFFF
	retDrop   = 0
)

// errTooBig reports a program over insnBudget; SocketFilter turns it into
// ok=false so the caller falls back to accept-and-reset.
var errTooBig = fmt.Errorf("socket filter would exceed %d instructions", insnBudget)

// buildFilter compiles p into a classic BPF program that returns retAccept for
// packets whose source address p allows and retDrop for the rest. netOff is
// added to every packet offset: skfNetOff on a socket, 0 in tests that run
// the program on a bare IP header in bpf.VM. With dual set (an AF_INET6
// socket, which also receives IPv4 clients unless IPV6_V6ONLY is on), the
// program first dispatches on the IP version nibble; otherwise it assumes
// IPv4, the only family an AF_INET socket receives.
//
// The decision is a balanced binary search tree of "source >= boundary"
// comparisons over the range boundaries, so a program for n ranges has O(n)
// instructions but runs O(log n) of them per packet: it stays cheap on the
// SYN path and lets large rule sets fit in the instruction budget.
func buildFilter(p *Policy, dual bool, netOff uint32) ([]bpf.Instruction, error) {
	if p != nil && p.all {
		return []bpf.Instruction{bpf.RetConstant{Val: retAccept}}, nil
	}
	var v4 []range4
	var v6 []range6
	if p != nil {
		v4, v6 = p.v4, p.v6
	}
	g := &gen{retAt: [2]int{-1, -1}}
	// The program is emitted backwards (last instruction first): every jump
	// goes forward, so its targets already exist and their distances are known.
	pts4, labels4, below4 := steps4(v4)
	t := g.tree4(pts4, labels4, below4)
	if t.kind == tPos {
		t = g.prepend(t, bpf.LoadAbsolute{Off: netOff + 12, Size: 4})
	}
	if dual {
		pts6, labels6, below6 := steps6(v6)
		t6 := g.tree6(pts6, labels6, below6)
		if t6.kind == tPos {
			// Copy the 128-bit source into scratch words M[0..3] once; the
			// tree's word-by-word comparisons then reload them cheaply
			// (negative-offset packet loads go through a kernel helper).
			t6 = g.prepend(t6,
				bpf.LoadAbsolute{Off: netOff + 8, Size: 4}, bpf.StoreScratch{Src: bpf.RegA, N: 0},
				bpf.LoadAbsolute{Off: netOff + 12, Size: 4}, bpf.StoreScratch{Src: bpf.RegA, N: 1},
				bpf.LoadAbsolute{Off: netOff + 16, Size: 4}, bpf.StoreScratch{Src: bpf.RegA, N: 2},
				bpf.LoadAbsolute{Off: netOff + 20, Size: 4}, bpf.StoreScratch{Src: bpf.RegA, N: 3},
			)
		}
		// The kernel's checker (check_load_and_stores) tracks initialised
		// scratch words along the instruction order and does not reset that
		// state after a ret, so a jump from the dispatch below (before the
		// stores) to a ret inside the IPv6 tree would make the next "ld M[0]"
		// look uninitialised and the whole program EINVAL. Jumps from above
		// the stores therefore get rets of their own.
		g.retAt = [2]int{-1, -1}
		// Version 6 goes to the IPv6 tree, version 4 to the IPv4 tree, and
		// anything else (which a socket should never see) is dropped.
		is4 := g.node([]op{{cond: bpf.JumpEqual, val: 0x40, onTrue: toT, onFalse: toF}}, t, leaf(false))
		t = g.node([]op{
			{insn: bpf.LoadAbsolute{Off: netOff, Size: 1}},
			{insn: bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0}},
			{cond: bpf.JumpEqual, val: 0x60, onTrue: toT, onFalse: toF},
		}, t6, is4)
	}
	if t.kind != tPos {
		// No boundary at all: the policy is a single verdict.
		g.ret(t.kind == tAccept)
	}
	if len(g.rev) > insnBudget {
		return nil, errTooBig
	}
	prog := make([]bpf.Instruction, len(g.rev))
	for i, ins := range g.rev {
		prog[len(prog)-1-i] = ins
	}
	return prog, nil
}

// steps4 describes the step function "allowed(x)" of sorted, disjoint,
// non-adjacent ranges: below is the verdict for x < pts[0], and labels[i] the
// verdict for pts[i] <= x < pts[i+1]. Verdicts alternate.
func steps4(rs []range4) (pts []uint32, labels []bool, below bool) {
	for _, r := range rs {
		if r.lo == 0 {
			below = true
		} else {
			pts, labels = append(pts, r.lo), append(labels, true)
		}
		if r.hi != ^uint32(0) {
			pts, labels = append(pts, r.hi+1), append(labels, false)
		}
	}
	return pts, labels, below
}

func steps6(rs []range6) (pts []u128, labels []bool, below bool) {
	for _, r := range rs {
		if r.lo == (u128{}) {
			below = true
		} else {
			pts, labels = append(pts, r.lo), append(labels, true)
		}
		if r.hi != maxU128 {
			pts, labels = append(pts, r.hi.next()), append(labels, false)
		}
	}
	return pts, labels, below
}

// tree4 emits the search tree for an IPv4 source in A, knowing that the
// verdict is below when A < pts[0].
func (g *gen) tree4(pts []uint32, labels []bool, below bool) target {
	if len(pts) == 0 {
		return leaf(below)
	}
	m := len(pts) / 2
	t := g.tree4(pts[m+1:], labels[m+1:], labels[m])
	f := g.tree4(pts[:m], labels[:m], below)
	return g.node([]op{{cond: bpf.JumpGreaterOrEqual, val: pts[m], onTrue: toT, onFalse: toF}}, t, f)
}

// tree6 is tree4 for an IPv6 source held in scratch words M[0..3]; each node
// compares 128 bits most significant word first, stopping at the first word
// that differs (trailing zero words of the boundary need no comparison).
func (g *gen) tree6(pts []u128, labels []bool, below bool) target {
	if len(pts) == 0 {
		return leaf(below)
	}
	m := len(pts) / 2
	t := g.tree6(pts[m+1:], labels[m+1:], labels[m])
	f := g.tree6(pts[:m], labels[:m], below)
	b := pts[m]
	w := [4]uint32{uint32(b.hi >> 32), uint32(b.hi), uint32(b.lo >> 32), uint32(b.lo)}
	k := 3
	for k > 0 && w[k] == 0 {
		k--
	}
	var ops []op
	for i := range k {
		ops = append(ops, op{insn: bpf.LoadScratch{Dst: bpf.RegA, N: i}})
		if w[i] != ^uint32(0) {
			ops = append(ops, op{cond: bpf.JumpGreaterThan, val: w[i], onTrue: toT, onFalse: next})
		}
		if w[i] != 0 {
			// Not greater: equal continues with the next word, less is false.
			ops = append(ops, op{cond: bpf.JumpEqual, val: w[i], onTrue: next, onFalse: toF})
		}
	}
	ops = append(ops,
		op{insn: bpf.LoadScratch{Dst: bpf.RegA, N: k}},
		op{cond: bpf.JumpGreaterOrEqual, val: w[k], onTrue: toT, onFalse: toF})
	return g.node(ops, t, f)
}

// target is where control goes: a verdict, or an already emitted instruction.
type target struct {
	kind int
	pos  int // for tPos: index in gen.rev
}

const (
	tDrop = iota
	tAccept
	tPos
)

func leaf(accept bool) target {
	if accept {
		return target{kind: tAccept}
	}
	return target{kind: tDrop}
}

// branch says where one side of a conditional jump in a node goes.
type branch uint8

const (
	next branch = iota // the following op of the same node
	toT                // the node's true target
	toF                // the node's false target
)

// op is one instruction of a node's straight-line code: a plain instruction
// (insn set), or a conditional jump "A cond val".
type op struct {
	insn            bpf.Instruction
	cond            bpf.JumpTest
	val             uint32
	onTrue, onFalse branch
}

// gen accumulates the program in reverse: rev[0] is the last instruction.
// An instruction at index q that jumps to index p skips q-p-1 instructions.
type gen struct {
	rev   []bpf.Instruction
	retAt [2]int // index of the latest emitted "ret drop" / "ret accept", or -1
}

func (g *gen) emit(ins bpf.Instruction) int {
	g.rev = append(g.rev, ins)
	return len(g.rev) - 1
}

func (g *gen) ret(accept bool) int {
	if accept {
		g.retAt[tAccept] = g.emit(bpf.RetConstant{Val: retAccept})
		return g.retAt[tAccept]
	}
	g.retAt[tDrop] = g.emit(bpf.RetConstant{Val: retDrop})
	return g.retAt[tDrop]
}

// resolve returns an instruction index for t that a conditional jump placed
// within the next span instructions can reach: a verdict reuses the latest
// matching ret when it is in reach (most are, so leaves cost nothing), and a
// far instruction gets an unconditional-jump trampoline.
func (g *gen) resolve(t target, span int) int {
	if t.kind != tPos {
		if at := g.retAt[t.kind]; at >= 0 && len(g.rev)+span-at-1 <= maxJump {
			return at
		}
		return g.ret(t.kind == tAccept)
	}
	if len(g.rev)+span-t.pos-1 > maxJump {
		return g.emit(bpf.Jump{Skip: uint32(len(g.rev) - t.pos - 1)})
	}
	return t.pos
}

// prepend puts straight-line instructions in front of the code at t and
// returns the new entry.
func (g *gen) prepend(t target, ins ...bpf.Instruction) target {
	for i := len(ins) - 1; i >= 0; i-- {
		g.emit(ins[i])
	}
	return target{kind: tPos, pos: len(g.rev) - 1}
}

// node emits ops (given in program order) whose branches lead to t or f, and
// returns its entry. A node whose two targets are the same verdict is that
// verdict. Both targets are made reachable from every op before the ops are
// emitted; resolving them adds at most two instructions, hence the span.
func (g *gen) node(ops []op, t, f target) target {
	if t.kind != tPos && t == f {
		return t
	}
	span := len(ops) + 2
	fp := g.resolve(f, span)
	tp := g.resolve(t, span)
	for i := len(ops) - 1; i >= 0; i-- {
		o := ops[i]
		if o.insn != nil {
			g.emit(o.insn)
			continue
		}
		q := len(g.rev)
		skip := func(b branch) uint8 {
			d := 0
			switch b {
			case toT:
				d = q - tp - 1
			case toF:
				d = q - fp - 1
			}
			if d < 0 || d > maxJump {
				panic(fmt.Sprintf("secgroup: BPF jump of %d out of reach", d)) // a generator bug
			}
			return uint8(d)
		}
		g.emit(bpf.JumpIf{Cond: o.cond, Val: o.val, SkipTrue: skip(o.onTrue), SkipFalse: skip(o.onFalse)})
	}
	return target{kind: tPos, pos: len(g.rev) - 1}
}
