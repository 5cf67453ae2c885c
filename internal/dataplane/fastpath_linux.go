package dataplane

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/ti-mo/conntrack"
	"go4.org/netipx"
	"golang.org/x/sys/unix"
)

// The conntrack mark of a fast-path flow: the engine's 20-bit ID (which also
// names its table, so no two live engines share one) and the socket's 12-bit
// slot. Other engines on the machine share the conntrack table; the ID keeps
// their flows apart.
const (
	markSlotBits = 12
	markSlots    = 1 << markSlotBits
	markEngine   = ^uint32(markSlots - 1)
)

// Tables are named moat_<pid>_<engine ID>. github.com/google/nftables cannot
// set NFT_TABLE_F_OWNER (which would tie a table to its netlink socket), so
// every new engine removes the tables of processes that are gone: a killed
// moat lb's rules last until the next one starts.
const tablePrefix = "moat_"

// TCP header flags.
const (
	tcpSYN = 0x02
	tcpACK = 0x10
)

// TCP conntrack states (enum tcp_conntrack) that no longer carry a flow.
const (
	ctTCPTimeWait = 7
	ctTCPClose    = 8
)

// nftMu serialises building nftables messages across engines (tests run
// several in one process): github.com/google/nftables keeps package state
// there — set IDs, and the ct timeout defaults that encoding and decoding
// ct timeout objects write to.
var nftMu sync.Mutex

// kernelPath programs the kernel fast path (see fastpath.go) into one
// nftables table of its own, through a netlink connection it keeps open.
type kernelPath struct {
	log   *slog.Logger
	nft   *nftables.Conn
	ct    *conntrack.Conn
	table *nftables.Table
	id    uint32 // engine ID: the high bits of every mark

	mu       sync.Mutex
	closed   bool
	dnat     *nftables.Chain    // admits and DNATs new flows
	snat     *nftables.Chain    // gives targets the load balancer's address when asked
	acct     *nftables.Chain    // counts bytes each way
	routes   map[sockKey]*route // every TCP socket's route, as of the last Apply
	held     bool               // an Apply is under way: its update programs everything
	socks    map[sockKey]*installed
	free     []uint32        // free slots
	timeouts map[uint32]bool // ct timeout objects, by idle timeout in seconds
	active   map[uint32]int  // flows per slot at the last poll
}

// installed is a socket the fast path serves: its slot and what was
// programmed for it.
type installed struct {
	slot uint32
	ks   kernelSocket
}

func newKernelPath(log *slog.Logger) (*kernelPath, error) {
	nftMu.Lock()
	defer nftMu.Unlock()
	nft, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	k := &kernelPath{log: log, nft: nft, socks: map[sockKey]*installed{},
		timeouts: map[uint32]bool{}, active: map[uint32]int{}}
	for slot := uint32(markSlots - 1); slot >= 1; slot-- {
		k.free = append(k.free, slot)
	}
	removeOrphanTables(nft, log)
	// Claim a table name no live engine has: creation is exclusive.
	for range 8 {
		var b [4]byte
		rand.Read(b[:])
		k.id = binary.BigEndian.Uint32(b[:]) & markEngine
		if k.id == 0 {
			continue
		}
		k.table = &nftables.Table{Family: nftables.TableFamilyIPv4,
			Name: fmt.Sprintf("%s%d_%05x", tablePrefix, os.Getpid(), k.id>>markSlotBits)}
		nft.CreateTable(k.table)
		if err = nft.Flush(); err == nil {
			break
		}
		if !errors.Is(err, unix.EEXIST) {
			nft.CloseLasting()
			return nil, fmt.Errorf("create nftables table: %w", err)
		}
	}
	if err != nil {
		nft.CloseLasting()
		return nil, fmt.Errorf("create nftables table: %w", err)
	}
	chain := func(name string, t nftables.ChainType, h *nftables.ChainHook, p *nftables.ChainPriority) *nftables.Chain {
		return nft.AddChain(&nftables.Chain{Name: name, Table: k.table, Type: t, Hooknum: h, Priority: p})
	}
	k.dnat = chain("dnat", nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest)
	k.snat = chain("snat", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	k.acct = chain("acct", nftables.ChainTypeFilter, nftables.ChainHookOutput, nftables.ChainPriorityFilter)
	if err := nft.Flush(); err != nil {
		k.nft.CloseLasting()
		return nil, fmt.Errorf("create nftables chains: %w", err)
	}
	if k.ct, err = conntrack.Dial(nil); err != nil {
		k.nft.CloseLasting()
		return nil, fmt.Errorf("conntrack: %w", err)
	}
	log.Info("kernel fast path on: eligible TCP flows are forwarded by nftables and conntrack",
		"nftables_table", "ip "+k.table.Name)
	return k, nil
}

// removeOrphanTables deletes the tables, and forgets the flows, of engines
// whose process is gone.
func removeOrphanTables(nft *nftables.Conn, log *slog.Logger) {
	tables, err := nft.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		log.Debug("list nftables tables", "error", err)
		return
	}
	for _, t := range tables {
		var pid int
		var id uint32
		if n, _ := fmt.Sscanf(t.Name, tablePrefix+"%d_%x", &pid, &id); n != 2 || pid <= 0 {
			continue
		}
		if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
			continue // alive (or not ours to judge)
		}
		nft.DelTable(t)
		if err := nft.Flush(); err != nil {
			log.Debug("delete orphan nftables table", "table", t.Name, "error", err)
			continue
		}
		if ct, err := conntrack.Dial(nil); err == nil {
			ct.FlushFilter(conntrack.NewFilter().Mark(id << markSlotBits).MarkMask(markEngine))
			ct.Close()
		}
		log.Info("removed the nftables table of a moat lb that is gone", "table", t.Name, "pid", pid)
	}
}

// hold defers refreshes until the next update: an Apply changes target
// groups one by one, then hands over all routes at once.
func (k *kernelPath) hold() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.held = true
}

// update makes the fast path serve what it can of these sockets (the end of
// an Apply).
func (k *kernelPath) update(routes map[sockKey]*route) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.routes, k.held = routes, false
	k.programLocked()
}

// refresh reprograms the fast path after a target group's eligible targets
// changed. It never takes the engine's or a target group's lock.
func (k *kernelPath) refresh() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.held {
		k.programLocked()
	}
}

func (k *kernelPath) programLocked() {
	if k.closed {
		return
	}
	var want []kernelSocket
	for key, r := range k.routes {
		if ks, ok := kernelSocketFor(key, r); ok {
			want = append(want, ks)
		}
	}
	nftMu.Lock()
	err := k.apply(want)
	nftMu.Unlock()
	if err != nil {
		k.log.Error("kernel fast path off until the next change: flows go through userspace", "error", err)
	}
}

// apply makes the fast path serve exactly want, in one nftables transaction:
// either all of it applies or nothing changes.
func (k *kernelPath) apply(want []kernelSocket) error {
	if k.programmed(want) {
		for _, ks := range want {
			k.socks[ks.key].ks = ks // the same rules, perhaps for another listener's metrics
		}
		return nil
	}
	next := make(map[sockKey]*installed, len(want))
	var added []*installed
	for _, ks := range want {
		in := k.socks[ks.key]
		if in == nil {
			if len(k.free) == 0 {
				continue // the userspace engine serves it
			}
			in = &installed{slot: k.free[len(k.free)-1]}
			k.free = k.free[:len(k.free)-1]
			added = append(added, in)
		}
		in.ks = ks
		next[ks.key] = in
	}
	var removed []*installed
	for key, in := range k.socks {
		if next[key] == nil {
			removed = append(removed, in)
		}
	}
	timeoutsBefore := maps.Clone(k.timeouts)
	// Counters of removed sockets are read before they go.
	k.creditLocked()

	for _, c := range []*nftables.Chain{k.dnat, k.snat, k.acct} {
		k.nft.FlushChain(c)
	}
	for _, in := range removed {
		for _, c := range k.slotChains(in.slot) {
			k.nft.FlushChain(c)
			k.nft.DelChain(c)
		}
		for _, o := range k.slotCounters(in.slot) {
			k.nft.DeleteObject(o)
		}
	}
	for key, in := range next {
		if k.socks[key] != nil {
			for _, c := range k.slotChains(in.slot) {
				k.nft.FlushChain(c)
			}
		}
	}
	for _, in := range added {
		for _, c := range k.slotChains(in.slot) {
			k.nft.AddChain(c)
		}
		for _, o := range k.slotCounters(in.slot) {
			k.nft.AddObj(o)
		}
	}
	err := k.rulesLocked(next)
	if err == nil {
		err = k.nft.Flush()
	}
	if err != nil {
		// Whatever failed, leave nothing half-programmed: the userspace
		// engine serves every socket until the next program succeeds.
		for _, in := range added {
			k.free = append(k.free, in.slot)
		}
		maps.DeleteFunc(k.timeouts, func(secs uint32, _ bool) bool { return !timeoutsBefore[secs] })
		k.disableLocked()
		return fmt.Errorf("program kernel fast path: %w", err)
	}
	for _, in := range removed {
		k.forgetFlows(in)
		k.free = append(k.free, in.slot)
		delete(k.active, in.slot)
	}
	k.socks = next
	return nil
}

// programmed reports whether the kernel already has exactly the rules want
// asks for.
func (k *kernelPath) programmed(want []kernelSocket) bool {
	if len(want) != len(k.socks) {
		return false
	}
	for _, ks := range want {
		if in := k.socks[ks.key]; in == nil || !in.ks.equal(ks) {
			return false
		}
	}
	return true
}

// disableLocked empties the hooked chains so that no new flow takes the fast
// path; established ones keep their conntrack state.
func (k *kernelPath) disableLocked() {
	for _, c := range []*nftables.Chain{k.dnat, k.snat, k.acct} {
		k.nft.FlushChain(c)
	}
	if err := k.nft.Flush(); err != nil {
		k.log.Error("disable kernel fast path", "error", err)
	}
	for _, in := range k.socks {
		k.free = append(k.free, in.slot)
	}
	k.socks = map[sockKey]*installed{}
}

func (k *kernelPath) slotChains(slot uint32) []*nftables.Chain {
	return []*nftables.Chain{
		{Name: "admit_" + strconv.Itoa(int(slot)), Table: k.table},
		{Name: "count_" + strconv.Itoa(int(slot)), Table: k.table},
	}
}

// Counter objects of a slot: new flows, bytes in (client to target), bytes out.
const (
	counterNew = "new_"
	counterIn  = "in_"
	counterOut = "out_"
)

func (k *kernelPath) slotCounters(slot uint32) []*nftables.NamedObj {
	var objs []*nftables.NamedObj
	for _, prefix := range []string{counterNew, counterIn, counterOut} {
		objs = append(objs, &nftables.NamedObj{Table: k.table, Name: prefix + strconv.Itoa(int(slot)),
			Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
	}
	return objs
}

// rulesLocked queues the rules of every hooked and per-slot chain.
func (k *kernelPath) rulesLocked(socks map[sockKey]*installed) error {
	if len(socks) == 0 {
		return nil
	}
	addrPortType := nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	dispatch := &nftables.Set{Table: k.table, Anonymous: true, Constant: true, IsMap: true,
		KeyType: addrPortType, DataType: nftables.TypeVerdict}
	countJump := &nftables.Set{Table: k.table, Anonymous: true, Constant: true, IsMap: true,
		KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeVerdict}
	snatTo := &nftables.Set{Table: k.table, Anonymous: true, Constant: true, IsMap: true,
		KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeIPAddr}
	var dispatchElems, countElems, snatElems []nftables.SetElement
	for key, in := range socks {
		slot := strconv.Itoa(int(in.slot))
		mark := binaryutil.NativeEndian.PutUint32(k.id | in.slot)
		jump := func(chain string) *expr.Verdict { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }
		dispatchElems = append(dispatchElems, nftables.SetElement{Key: addrPortKey(key.addrPort()), VerdictData: jump("admit_" + slot)})
		countElems = append(countElems, nftables.SetElement{Key: mark, VerdictData: jump("count_" + slot)})
		if in.ks.snat.IsValid() {
			a := in.ks.snat.As4()
			snatElems = append(snatElems, nftables.SetElement{Key: mark, Val: a[:]})
		}
		if err := k.admitRules(in, mark); err != nil {
			return err
		}
		k.countRules(in)
	}
	if err := k.addSet(dispatch, dispatchElems); err != nil {
		return err
	}
	if err := k.addSet(countJump, countElems); err != nil {
		return err
	}
	// tcp to a served address and port: ip daddr . tcp dport vmap { … }
	matchSocket := func(m *nftables.Set) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
		}
	}
	k.nft.AddRule(&nftables.Rule{Table: k.table, Chain: k.dnat, Exprs: matchSocket(dispatch)})
	k.nft.AddRule(&nftables.Rule{Table: k.table, Chain: k.acct, Exprs: []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Lookup{SourceRegister: 1, IsDestRegSet: true, SetName: countJump.Name, SetID: countJump.ID},
	}})
	if len(snatElems) > 0 {
		if err := k.addSet(snatTo, snatElems); err != nil {
			return err
		}
		// snat ip to ct mark map { … }: only flows of sockets that hide the client.
		k.nft.AddRule(&nftables.Rule{Table: k.table, Chain: k.snat, Exprs: []expr.Any{
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: snatTo.Name, SetID: snatTo.ID},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		}})
	}
	return nil
}

// admitRules fill a slot's admit chain: return unless the client is admitted,
// mark the flow, count it, DNAT it to a target.
func (k *kernelPath) admitRules(in *installed, mark []byte) error {
	chain := &nftables.Chain{Name: "admit_" + strconv.Itoa(int(in.slot)), Table: k.table}
	ks := in.ks
	// Only a SYN opens a flow. A segment of a flow conntrack no longer knows
	// (idle timeout, termination) is left to the listening socket, which
	// answers it with a reset, as AWS does after an idle timeout.
	k.nft.AddRule(&nftables.Rule{Table: k.table, Chain: chain, Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{tcpSYN | tcpACK}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{tcpSYN}},
		&expr.Verdict{Kind: expr.VerdictReturn},
	}})
	if !ks.admitAll {
		if len(ks.admit) == 0 {
			k.nft.AddRule(&nftables.Rule{Table: k.table, Chain: chain, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}})
			return nil
		}
		admit := &nftables.Set{Table: k.table, Anonymous: true, Constant: true, Interval: true, KeyType: nftables.TypeIPAddr}
		if err := k.addSet(admit, intervalElements(ks.admit)); err != nil {
			return err
		}
		// ip saddr != @admit return
		k.nft.AddRule(&nftables.Rule{Table: k.table, Chain: chain, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: admit.Name, SetID: admit.ID, Invert: true},
			&expr.Verdict{Kind: expr.VerdictReturn},
		}})
	}
	targets := &nftables.Set{Table: k.table, Anonymous: true, Constant: true, IsMap: true,
		KeyType: nftables.TypeInteger, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
	elems := make([]nftables.SetElement, len(ks.targets))
	for i, t := range ks.targets {
		elems[i] = nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(i)), Val: addrPortKey(t)}
	}
	if err := k.addSet(targets, elems); err != nil {
		return err
	}
	n := uint32(len(ks.targets))
	pick := []expr.Any{&expr.Numgen{Register: 1, Modulus: n, Type: unix.NFT_NG_RANDOM}}
	if ks.sticky {
		pick = []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Hash{SourceRegister: 1, DestRegister: 1, Length: 4, Modulus: n, Seed: k.id, Type: expr.HashTypeJenkins},
		}
	}
	exprs := []expr.Any{
		&expr.Immediate{Register: 1, Data: mark},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: counterNew + strconv.Itoa(int(in.slot))},
		// The flow is not confirmed yet: its idle timeout can still be set.
		&expr.Objref{Type: int(nftables.ObjTypeCtTimeout), Name: k.timeout(ks.idle)},
	}
	exprs = append(exprs, pick...)
	exprs = append(exprs,
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: targets.Name, SetID: targets.ID},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 9, Specified: true},
	)
	k.nft.AddRule(&nftables.Rule{Table: k.table, Chain: chain, Exprs: exprs})
	return nil
}

// countRules fill a slot's count chain: each packet of its flows counts
// toward bytes in (original direction) or out (reply).
func (k *kernelPath) countRules(in *installed) {
	chain := &nftables.Chain{Name: "count_" + strconv.Itoa(int(in.slot)), Table: k.table}
	slot := strconv.Itoa(int(in.slot))
	k.nft.AddRule(&nftables.Rule{Table: k.table, Chain: chain, Exprs: []expr.Any{
		&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}}, // IP_CT_DIR_ORIGINAL
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: counterIn + slot},
		&expr.Verdict{Kind: expr.VerdictReturn},
	}})
	k.nft.AddRule(&nftables.Rule{Table: k.table, Chain: chain, Exprs: []expr.Any{
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: counterOut + slot},
	}})
}

// timeout returns the name of the ct timeout object for an idle timeout,
// creating it on first use. Objects stay for the table's life: conntrack
// entries hold references to them.
func (k *kernelPath) timeout(idle time.Duration) string {
	secs := max(uint32(idle/time.Second), 1)
	name := "idle_" + strconv.Itoa(int(secs))
	if k.timeouts[secs] {
		return name
	}
	policy := expr.CtStatePolicyTimeout{}
	for state, v := range expr.CtStateTCPTimeoutDefaults {
		policy[state] = v
	}
	policy[expr.CtStateTCPESTABLISHED] = secs
	k.nft.AddObj(&nftables.NamedObj{Table: k.table, Name: name, Type: nftables.ObjTypeCtTimeout,
		Obj: &expr.CtTimeout{L3Proto: unix.NFPROTO_IPV4, L4Proto: unix.IPPROTO_TCP, Policy: policy}})
	k.timeouts[secs] = true
	return name
}

// setElementsPerMessage keeps a message's element list under netlink's
// 64 KiB attribute limit, past which the kernel would see a truncated set.
const setElementsPerMessage = 1024

// addSet adds a set with its elements, spread over as many messages of the
// same transaction as they need.
func (k *kernelPath) addSet(s *nftables.Set, elems []nftables.SetElement) error {
	first := elems[:min(len(elems), setElementsPerMessage)]
	if err := k.nft.AddSet(s, first); err != nil {
		return err
	}
	for rest := elems[len(first):]; len(rest) > 0; {
		n := min(len(rest), setElementsPerMessage)
		if err := k.nft.SetAddElements(s, rest[:n]); err != nil {
			return err
		}
		rest = rest[n:]
	}
	return nil
}

// addrPortKey encodes an IPv4 address and port as nftables concatenates
// them: each field padded to 4 bytes, the port in network order.
func addrPortKey(ap netip.AddrPort) []byte {
	a := ap.Addr().Unmap().As4()
	b := make([]byte, 8)
	copy(b, a[:])
	binary.BigEndian.PutUint16(b[4:], ap.Port())
	return b
}

// intervalElements encodes IPv4 ranges as an interval set: a start element
// per range and an end element just past it (none after 255.255.255.255),
// after the leading end element at 0.0.0.0 that nft itself adds.
func intervalElements(rs []netipx.IPRange) []nftables.SetElement {
	var elems []nftables.SetElement
	if len(rs) > 0 && rs[0].From() != netip.IPv4Unspecified() {
		elems = append(elems, nftables.SetElement{Key: make([]byte, 4), IntervalEnd: true})
	}
	for _, r := range rs {
		from := r.From().As4()
		elems = append(elems, nftables.SetElement{Key: from[:]})
		if next := r.To().Next(); next.IsValid() && next.Is4() {
			end := next.As4()
			elems = append(elems, nftables.SetElement{Key: end[:], IntervalEnd: true})
		}
	}
	return elems
}

// poll brings the listeners' metrics up to date with the kernel's counters
// and conntrack's count of active flows.
func (k *kernelPath) poll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed || len(k.socks) == 0 {
		return
	}
	nftMu.Lock()
	k.creditLocked()
	nftMu.Unlock()
	flows, err := k.ct.DumpFilter(conntrack.NewFilter().Mark(k.id).MarkMask(markEngine), nil)
	if err != nil {
		k.log.Debug("dump conntrack", "error", err)
		return
	}
	count := map[uint32]int{}
	for _, f := range flows {
		if f.ProtoInfo.TCP != nil && (f.ProtoInfo.TCP.State == ctTCPTimeWait || f.ProtoInfo.TCP.State == ctTCPClose) {
			continue
		}
		count[f.Mark&^markEngine]++
	}
	for _, in := range k.socks {
		n := count[in.slot]
		in.ks.m.active.Add(float64(n - k.active[in.slot]))
		k.active[in.slot] = n
	}
}

// creditLocked reads and resets every counter, in one dump, and adds them to
// their listeners' metrics. The caller holds nftMu too: the dump also decodes
// the ct timeout objects, which writes to the library's package state.
func (k *kernelPath) creditLocked() {
	if len(k.socks) == 0 {
		return
	}
	objs, err := k.nft.ResetNamedObjects(k.table)
	if err != nil {
		k.log.Debug("read kernel counters", "error", err)
		return
	}
	bySlot := make(map[string]*installed, len(k.socks))
	for _, in := range k.socks {
		bySlot[strconv.Itoa(int(in.slot))] = in
	}
	for _, o := range objs {
		named, ok := o.(*nftables.NamedObj)
		if !ok || named.Type != nftables.ObjTypeCounter {
			continue
		}
		c, _ := named.Obj.(*expr.Counter)
		prefix, slot, _ := strings.Cut(named.Name, "_")
		in := bySlot[slot]
		if c == nil || in == nil {
			continue
		}
		switch prefix + "_" {
		case counterNew:
			in.ks.m.newFlows.Add(float64(c.Packets))
		case counterIn:
			in.ks.m.bytesIn.Add(float64(c.Bytes))
		case counterOut:
			in.ks.m.bytesOut.Add(float64(c.Bytes))
		}
	}
}

// forgetFlows ends the fast-path flows of a socket that is gone, as closing
// a listening socket resets its userspace flows.
func (k *kernelPath) forgetFlows(in *installed) {
	if err := k.ct.FlushFilter(conntrack.NewFilter().Mark(k.id | in.slot)); err != nil {
		k.log.Debug("flush conntrack", "error", err)
	}
	in.ks.m.active.Sub(float64(k.active[in.slot]))
}

// terminate ends the fast-path flows to target that came through the given
// sockets.
func (k *kernelPath) terminate(keys []sockKey, target netip.AddrPort) {
	k.mu.Lock()
	defer k.mu.Unlock()
	marks := map[uint32]bool{}
	for _, key := range keys {
		if in := k.socks[key]; in != nil {
			marks[k.id|in.slot] = true
		}
	}
	if k.closed || len(marks) == 0 {
		return
	}
	flows, err := k.ct.DumpFilter(conntrack.NewFilter().Mark(k.id).MarkMask(markEngine), nil)
	if err != nil {
		k.log.Debug("dump conntrack", "error", err)
		return
	}
	for _, f := range flows {
		r := f.TupleReply
		if marks[f.Mark] && r.IP.SourceAddress == target.Addr().Unmap() && r.Proto.SourcePort == target.Port() {
			if err := k.ct.Delete(f); err != nil {
				k.log.Debug("delete conntrack entry", "error", err)
			}
		}
	}
}

// close removes the table and ends the fast path's flows.
func (k *kernelPath) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return
	}
	k.closed = true
	nftMu.Lock()
	k.nft.DelTable(k.table)
	err := k.nft.Flush()
	nftMu.Unlock()
	if err != nil {
		k.log.Debug("delete nftables table", "error", err)
	}
	k.nft.CloseLasting()
	k.ct.FlushFilter(conntrack.NewFilter().Mark(k.id).MarkMask(markEngine))
	k.ct.Close()
}
