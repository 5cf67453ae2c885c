package secgroup

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
)

// The generator is tested here in user space, on bare IP headers (netOff 0),
// with two interpreters: x/net/bpf's VM and stepRun below, which also counts
// the instructions a packet executes. filter_linux_test.go runs the same
// programs in the kernel, with SKF_NET_OFF, on real sockets.

func packetFor(a netip.Addr) []byte {
	a = a.Unmap()
	if a.Is4() {
		pkt := make([]byte, 20)
		pkt[0] = 0x45
		src := a.As4()
		copy(pkt[12:], src[:])
		return pkt
	}
	pkt := make([]byte, 40)
	pkt[0] = 0x60
	src := a.As16()
	copy(pkt[8:], src[:])
	return pkt
}

type vmPair struct {
	v4, dual         *bpf.VM
	v4Prog, dualProg []bpf.Instruction
}

// vmsFor builds the AF_INET and AF_INET6 programs of p, or reports false when
// they exceed the budget.
func vmsFor(t testing.TB, p *Policy) (vmPair, bool) {
	t.Helper()
	var vp vmPair
	var err error
	if vp.v4Prog, err = buildFilter(p, false, 0); err != nil {
		return vp, false
	}
	if vp.dualProg, err = buildFilter(p, true, 0); err != nil {
		return vp, false
	}
	for _, prog := range [][]bpf.Instruction{vp.v4Prog, vp.dualProg} {
		if err := kernelCheck(prog); err != nil {
			t.Fatalf("the kernel would refuse the program: %v\n%v", err, prog)
		}
	}
	if vp.v4, err = bpf.NewVM(vp.v4Prog); err != nil {
		t.Fatalf("NewVM(v4): %v", err)
	}
	if vp.dual, err = bpf.NewVM(vp.dualProg); err != nil {
		t.Fatalf("NewVM(dual): %v", err)
	}
	return vp, true
}

// judge runs the programs a socket would run for a client at a: the AF_INET
// one for IPv4 clients, and the dual-stack one for everyone.
func (vp vmPair) judge(t testing.TB, a netip.Addr, want bool) {
	t.Helper()
	pkt := packetFor(a)
	run := func(name string, vm *bpf.VM, prog []bpf.Instruction) {
		n, err := vm.Run(pkt)
		if err != nil {
			t.Fatalf("%s VM: %v", name, err)
		}
		accept, _ := stepRun(t, prog, pkt)
		if got := n != 0; got != want || accept != want {
			t.Fatalf("%s filter for client %v: VM %v, stepRun %v, want %v\n%v", name, a, got, accept, want, prog)
		}
	}
	if a.Unmap().Is4() {
		run("AF_INET", vp.v4, vp.v4Prog)
	}
	run("AF_INET6", vp.dual, vp.dualProg)
}

func checkVM(t testing.TB, p *Policy, a netip.Addr, want bool) {
	t.Helper()
	if vp, ok := vmsFor(t, p); ok {
		vp.judge(t, a, want)
	}
}

// kernelCheck mirrors the kernel's bpf_check_classic rules that a generated
// program could break: bounded length, in-range jumps, a final ret, and
// check_load_and_stores, which follows the instruction order and requires
// every scratch load to be preceded, on all incoming jumps and on the
// fall-through (even from a ret), by a store.
func kernelCheck(prog []bpf.Instruction) error {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return err
	}
	if len(raw) == 0 || len(raw) > maxInsns {
		return fmt.Errorf("%d instructions", len(raw))
	}
	if _, ok := prog[len(prog)-1].(bpf.RetConstant); !ok {
		return fmt.Errorf("last instruction %v is not a ret", prog[len(prog)-1])
	}
	masks := make([]uint16, len(raw))
	for i := range masks {
		masks[i] = 0xffff
	}
	var memvalid uint16
	for pc, ins := range prog {
		memvalid &= masks[pc]
		switch ins := ins.(type) {
		case bpf.StoreScratch:
			memvalid |= 1 << ins.N
		case bpf.LoadScratch:
			if memvalid&(1<<ins.N) == 0 {
				return fmt.Errorf("instruction %d (%v) may read M[%d] before it is stored", pc, ins, ins.N)
			}
		case bpf.Jump:
			if pc+1+int(ins.Skip) >= len(raw) {
				return fmt.Errorf("instruction %d jumps out of the program", pc)
			}
			masks[pc+1+int(ins.Skip)] &= memvalid
			memvalid = 0xffff
		case bpf.JumpIf:
			jt, jf := pc+1+int(ins.SkipTrue), pc+1+int(ins.SkipFalse)
			if jt >= len(raw) || jf >= len(raw) {
				return fmt.Errorf("instruction %d jumps out of the program", pc)
			}
			masks[jt] &= memvalid
			masks[jf] &= memvalid
			memvalid = 0xffff
		}
	}
	return nil
}

// stepRun interprets the instruction subset the generator emits and counts
// the instructions executed, to show that the filter is a search, not a scan.
func stepRun(t testing.TB, prog []bpf.Instruction, pkt []byte) (accept bool, steps int) {
	t.Helper()
	var a uint32
	var mem [16]uint32
	load := func(off uint32, size int) uint32 {
		var v uint32
		for i := range size {
			v = v<<8 | uint32(pkt[int(off)+i])
		}
		return v
	}
	for pc := 0; pc < len(prog); pc++ {
		steps++
		switch ins := prog[pc].(type) {
		case bpf.LoadAbsolute:
			a = load(ins.Off, ins.Size)
		case bpf.ALUOpConstant:
			a &= ins.Val // the only ALU op used
		case bpf.StoreScratch:
			mem[ins.N] = a
		case bpf.LoadScratch:
			a = mem[ins.N]
		case bpf.Jump:
			pc += int(ins.Skip)
		case bpf.JumpIf:
			var ok bool
			switch ins.Cond {
			case bpf.JumpEqual:
				ok = a == ins.Val
			case bpf.JumpGreaterThan:
				ok = a > ins.Val
			case bpf.JumpGreaterOrEqual:
				ok = a >= ins.Val
			default:
				t.Fatalf("unexpected condition %v", ins)
			}
			if ok {
				pc += int(ins.SkipTrue)
			} else {
				pc += int(ins.SkipFalse)
			}
		case bpf.RetConstant:
			return ins.Val != 0, steps
		default:
			t.Fatalf("unexpected instruction %v", ins)
		}
	}
	t.Fatal("program ran off its end")
	return false, steps
}

func TestFilterTrivial(t *testing.T) {
	tests := []struct {
		name string
		p    *Policy
		want uint32
	}{
		{"allow all", AllowAll(), retAccept},
		{"no rules", Compile(nil, ProtocolTCP, 80), retDrop},
		{"nil policy", nil, retDrop},
		{"only another port", Compile([]Rule{{Protocol: ProtocolTCP, FromPort: 81, ToPort: 81, Sources: pfx("0.0.0.0/0")}}, ProtocolTCP, 80), retDrop},
	}
	for _, tt := range tests {
		for _, dual := range []bool{false, true} {
			prog, err := buildFilter(tt.p, dual, skfNetOff)
			if err != nil {
				t.Fatal(err)
			}
			if len(prog) != 1 || prog[0] != (bpf.RetConstant{Val: tt.want}) {
				t.Errorf("%s, dual %v: program %v, want a single ret #%d", tt.name, dual, prog, tt.want)
			}
		}
	}
	// The whole IPv4 space without the all flag needs no comparison either.
	p := Compile([]Rule{{Protocol: ProtocolAll, Sources: pfx("0.0.0.0/1", "128.0.0.0/1")}}, ProtocolTCP, 80)
	if prog, _ := buildFilter(p, false, skfNetOff); len(prog) != 1 || prog[0] != (bpf.RetConstant{Val: retAccept}) {
		t.Errorf("0.0.0.0/0 program %v, want a single accept", prog)
	}
}

// TestFilterProperty checks that the generated programs decide like Allows
// (itself checked against the reference) on small random policies and on
// large ones, whose programs need trampolines, and that a packet executes
// O(log n) instructions.
func TestFilterProperty(t *testing.T) {
	const seed = 4242
	g := newCaseGen(seed)
	for c := range 3000 {
		hot := g.r.IntN(65536)
		rules := g.rules(hot, 8)
		proto, port := g.endpoint(rules, hot)
		p := Compile(rules, proto, port)
		vp, ok := vmsFor(t, p)
		if !ok {
			t.Fatalf("case %d: small policy does not fit: %v", c, rules)
		}
		for range 20 {
			a := g.addr(rules)
			vp.judge(t, a, p.Allows(a))
		}
	}
	r := rand.New(rand.NewPCG(seed, 1))
	for c := range 24 {
		var srcs []netip.Prefix
		n4, n6 := 0, 0
		if c%3 != 2 {
			n4 = 1 + r.IntN(1900)
		}
		if c%3 != 0 {
			n6 = 1 + r.IntN(150)
		}
		for range n4 {
			a := netip.AddrFrom4([4]byte{127, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
			srcs = append(srcs, netip.PrefixFrom(a, 20+r.IntN(13)))
		}
		for range n6 {
			var b [16]byte
			for i := range b {
				b[i] = byte(r.IntN(256))
			}
			b[0], b[1], b[5], b[10] = 0x20, 0x01, 0, 0 // shared words and zero words
			srcs = append(srcs, netip.PrefixFrom(netip.AddrFrom16(b), []int{48, 64, 100, 127, 128}[r.IntN(5)]))
		}
		p := Compile([]Rule{{Protocol: ProtocolAll, Sources: srcs}}, ProtocolTCP, 80)
		vp, ok := vmsFor(t, p)
		if !ok {
			continue // over budget: TestFilterBudget covers that
		}
		v4, v6 := p.Ranges()
		k4, k6 := 2*len(v4), 2*len(v6) // upper bounds on boundaries
		maxSteps4 := 2 + 2*bits.Len(uint(k4))
		maxSteps6 := 14 + 13*bits.Len(uint(k6))
		var queries []netip.Addr
		for _, rg := range append(v4, v6...) {
			queries = append(queries, rg.From(), rg.To(), rg.From().Prev(), rg.To().Next())
		}
		for range 200 {
			queries = append(queries, netip.AddrFrom4([4]byte{127, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}))
		}
		for _, a := range queries {
			if !a.IsValid() {
				continue
			}
			vp.judge(t, a, p.Allows(a))
			pkt := packetFor(a)
			if a.Is4() {
				if _, steps := stepRun(t, vp.v4Prog, pkt); steps > maxSteps4 {
					t.Fatalf("large case %d: %d ranges, %v took %d steps, want <= %d", c, len(v4), a, steps, maxSteps4)
				}
			} else if _, steps := stepRun(t, vp.dualProg, pkt); steps > maxSteps6 {
				t.Fatalf("large case %d: %d ranges, %v took %d steps, want <= %d", c, len(v6), a, steps, maxSteps6)
			}
		}
		t.Logf("large case %d: %d+%d ranges, %d+%d instructions", c, len(v4), len(v6), len(vp.v4Prog), len(vp.dualProg))
	}
}

// TestFilterBudget pins the capacity the SocketFilter doc promises and checks
// that an over-budget policy is refused rather than truncated.
func TestFilterBudget(t *testing.T) {
	scattered := func(n int) *Policy {
		srcs := make([]netip.Prefix, n)
		for i := range srcs {
			// Every other /32 of 127.0.0.0/8: n disjoint ranges.
			v := uint32(127)<<24 | uint32(2*i+1)
			srcs[i] = netip.PrefixFrom(addrFrom32(v), 32)
		}
		return Compile([]Rule{{Protocol: ProtocolAll, Sources: srcs}}, ProtocolTCP, 80)
	}
	for _, n := range []int{1, 100, 1900} {
		prog, err := buildFilter(scattered(n), false, skfNetOff)
		if err != nil {
			t.Fatalf("%d ranges: %v", n, err)
		}
		// One comparison per boundary, plus a few percent of shared rets and
		// trampolines (a ret is reused by every jump within 255 instructions).
		if max := 2*n + 2*n/40 + 16; len(prog) > max || len(prog) > insnBudget {
			t.Errorf("%d ranges: %d instructions, want <= %d", n, len(prog), max)
		}
	}
	if _, err := buildFilter(scattered(2100), false, skfNetOff); err != errTooBig {
		t.Errorf("2100 ranges: err = %v, want errTooBig", err)
	}
	if math.MaxUint8 != maxJump {
		t.Fatal("maxJump must be the reach of an 8-bit jump offset")
	}
}
