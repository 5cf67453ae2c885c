//go:build linux && !moat_portable

package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/moatlb/moat/internal/nftutil"
)

// The table is created with the owner flag (nftutil.TableFlagOwner): the
// kernel ties it to the netlink socket that created it, lets no other socket
// change it, and deletes it when that socket closes — when the path
// disconnects, and when the process dies, however it dies. No other moat
// process judges whether a table is orphaned.

// TCP header flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// allCtEvents is every conntrack event type (enum ip_conntrack_events), the
// mask a flow gets when conntrack's events are on.
const allCtEvents = 0xffff

// Base objects of the table. Every socket's slot adds its own chains
// (admit_N, count_N) and counters (new_N, in_N, out_N) and elements in the
// maps, so a change touches only its own slot. The sockets and snat_to maps
// come once per family (suffixed _ip, _ip6), since their keys or values are
// the family's addresses.
const (
	mapSockets  = "sockets"  // meta l4proto . ip daddr . th dport → jump admit_N, for sockets taking new flows
	mapCounting = "counting" // ct mark → jump count_N, for every slot
	mapSNAT     = "snat_to"  // ct mark → address, for sockets that hide the client
)

// Counter objects of a slot: new flows, flows that began to close (TCP),
// bytes in (client to target), bytes out.
const (
	counterNew    = "new_"
	counterClosed = "closed_"
	counterIn     = "in_"
	counterOut    = "out_"
)

// l3 is what the rules of one address family need: its nfproto, and where
// and how long its addresses are in the network header.
type l3 struct {
	name         string // nft's name of the family's addresses (ip, ip6)
	nfproto      uint8
	addrLen      uint32
	saddr, daddr uint32 // offsets in the network header
	addrType     nftables.SetDatatype
}

var l3s = [families]l3{
	ipv4: {name: "ip", nfproto: unix.NFPROTO_IPV4, addrLen: 4, saddr: 12, daddr: 16, addrType: nftables.TypeIPAddr},
	ipv6: {name: "ip6", nfproto: unix.NFPROTO_IPV6, addrLen: 16, saddr: 8, daddr: 24, addrType: nftables.TypeIP6Addr},
}

// reg32 is NFT_REG32_00, the first 32-bit register, where register 1 starts:
// a concatenation loaded there has its parts, each padded to 4 bytes, in
// consecutive 32-bit registers.
const reg32 = 8

// addrBytes is an address as nftables holds it: 4 bytes for IPv4, 16 for
// IPv6.
func addrBytes(a netip.Addr) []byte {
	if a = a.Unmap(); a.Is4() {
		b := a.As4()
		return b[:]
	}
	b := a.As16()
	return b[:]
}

// familyMaps are the maps of one family.
type familyMaps struct{ sockets, snat *nftables.Set }

type nftConn struct {
	id       uint32
	nft      *nftables.Conn
	nl       *netlink.Conn // the library's socket, which owns the table
	ct       *conntrack.Conn
	ends     *flowEnds
	table    *nftables.Table
	counting *nftables.Set
	maps     [families]familyMaps

	timeouts map[timeoutKey]bool // ct timeout objects

	// live is each slot's active flows (see flowEnds); stale says it must be
	// read from conntrack first (a new connection, or lost events).
	live  map[uint32]int
	stale bool
}

var errTableExists = nftutil.ErrTableExists

// dialNFT opens the netlink sockets (nftables through testDial when given),
// creates the path's table with its base chains and maps, and returns the
// connection.
func dialNFT(id uint32, testDial func([]netlink.Message) ([]netlink.Message, error)) (conn, error) {
	c := &nftConn{id: id, timeouts: map[timeoutKey]bool{}, live: map[uint32]int{}, stale: true,
		table: &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName(id)}}
	capture := func(nl *netlink.Conn) error {
		c.nl = nl
		if testDial != nil {
			return nil
		}
		return nftutil.ForLargeBatches(nl)
	}
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(capture)}
	if testDial != nil {
		opts = append(opts, nftables.WithTestDial(testDial))
	}
	var err error
	if c.nft, err = nftables.New(opts...); err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	if err := c.createTable(); err != nil {
		c.nft.CloseLasting()
		return nil, err
	}
	if err := c.addBase(); err != nil {
		c.nft.CloseLasting()
		return nil, fmt.Errorf("create nftables chains: %w", err)
	}
	if c.ct, err = conntrack.Dial(nil); err != nil {
		c.nft.CloseLasting()
		return nil, fmt.Errorf("conntrack: %w", err)
	}
	if c.ends, err = dialFlowEnds(id); err != nil {
		c.ct.Close()
		c.nft.CloseLasting()
		return nil, err
	}
	return c, nil
}

// createTable creates the table, owned by this socket, in a transaction of
// its own.
func (c *nftConn) createTable() error {
	err := nftutil.CreateTable(c.nl, c.table, nftutil.TableFlagOwner)
	if errors.Is(err, nftutil.ErrTableExists) {
		return errTableExists
	}
	return err
}

// addBase adds the hooked chains, the maps they dispatch through and their
// one rule each.
func (c *nftConn) addBase() error {
	if err := nftutil.Build(c.queueBase); err != nil {
		return err
	}
	return c.nft.Flush()
}

func (c *nftConn) queueBase() error {
	t := c.table
	chain := func(name string, ty nftables.ChainType, h *nftables.ChainHook, p *nftables.ChainPriority) *nftables.Chain {
		return c.nft.AddChain(&nftables.Chain{Name: name, Table: t, Type: ty, Hooknum: h, Priority: p})
	}
	// A new flow meets nat once, where its first packet enters: output when
	// it starts on this host, prerouting when it arrives on an interface (a
	// flow that starts here and loops back over lo met nat in output).
	dnat := []*nftables.Chain{
		chain("dnat", nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest),
		chain("dnat_in", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest),
	}
	// Its source is rewritten where its first packet leaves for the target:
	// postrouting, or input for a target on this host reached from an
	// interface.
	snat := []*nftables.Chain{
		chain("snat", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource),
		chain("snat_in", nftables.ChainTypeNAT, nftables.ChainHookInput, nftables.ChainPriorityNATSource),
	}
	// Each packet is counted once: in output when this host sent it, in
	// prerouting when it arrived on an interface other than lo (a packet
	// looping back over lo was counted in output).
	acct := chain("acct", nftables.ChainTypeFilter, nftables.ChainHookOutput, nftables.ChainPriorityFilter)
	acctIn := chain("acct_in", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityFilter)
	c.counting = &nftables.Set{Table: t, Name: mapCounting, IsMap: true,
		KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeVerdict}
	if err := c.nft.AddSet(c.counting, nil); err != nil {
		return err
	}
	for f, fam := range l3s {
		m := familyMaps{
			sockets: &nftables.Set{Table: t, Name: mapSockets + "_" + fam.name, IsMap: true, DataType: nftables.TypeVerdict,
				KeyType: nftables.MustConcatSetType(nftables.TypeInetProto, fam.addrType, nftables.TypeInetService)},
			snat: &nftables.Set{Table: t, Name: mapSNAT + "_" + fam.name, IsMap: true,
				KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian, DataType: fam.addrType},
		}
		for _, s := range []*nftables.Set{m.sockets, m.snat} {
			if err := c.nft.AddSet(s, nil); err != nil {
				return err
			}
		}
		c.maps[f] = m
		isFamily := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam.nfproto}},
		}
		for _, ch := range dnat {
			// meta nfproto ipv4 meta l4proto . ip daddr . th dport vmap @sockets_ip
			// (and so for ip6: the addresses are where the family has them)
			c.nft.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(slices.Clone(isFamily),
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Payload{DestRegister: reg32 + 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.daddr, Len: fam.addrLen},
				&expr.Payload{DestRegister: reg32 + 1 + fam.addrLen/4, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Lookup{SourceRegister: 1, IsDestRegSet: true, SetName: m.sockets.Name, SetID: m.sockets.ID},
			)})
		}
		for _, ch := range snat {
			// meta nfproto ipv4 snat ip to ct mark map @snat_to_ip
			c.nft.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(slices.Clone(isFamily),
				&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
				&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: m.snat.Name, SetID: m.snat.ID},
				&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(fam.nfproto), RegAddrMin: 1},
			)})
		}
	}
	// A closing flow's mark has MarkClosing besides its slot's.
	countByMark := []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(nftutil.MarkClosing)), Xor: make([]byte, 4)},
		&expr.Lookup{SourceRegister: 1, IsDestRegSet: true, SetName: c.counting.Name, SetID: c.counting.ID},
	}
	// ct mark & ~closing vmap @counting
	c.nft.AddRule(&nftables.Rule{Table: t, Chain: acct, Exprs: countByMark})
	// meta iiftype != loopback ct mark & ~closing vmap @counting
	c.nft.AddRule(&nftables.Rule{Table: t, Chain: acctIn, Exprs: append([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint16(unix.ARPHRD_LOOPBACK)},
	}, countByMark...)})
	return nil
}

func (c *nftConn) program(changes []change) error {
	err := nftutil.Build(func() error {
		for _, ch := range changes {
			if err := c.queue(ch); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		c.nft.Flush() // drop what was queued; the connection is abandoned anyway
		return err
	}
	return c.nft.Flush()
}

// queue adds one slot's change to the transaction being built.
func (c *nftConn) queue(ch change) error {
	mark := binaryutil.NativeEndian.PutUint32(c.id | ch.slot)
	name := strconv.Itoa(int(ch.slot))
	maps := c.maps[familyOf(ch.key.Addr.Addr())]
	admit := &nftables.Chain{Name: "admit_" + name, Table: c.table}
	count := &nftables.Chain{Name: "count_" + name, Table: c.table}
	sockElem := []nftables.SetElement{{Key: socketKey(ch.key),
		VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: admit.Name}}}
	snatElem := func(a netip.Addr) []nftables.SetElement {
		return []nftables.SetElement{{Key: mark, Val: addrBytes(a)}}
	}
	snatOf := func(f *Forward) netip.Addr {
		if f == nil {
			return netip.Addr{}
		}
		return f.SNAT
	}
	// Elements referring to chains go before the chains.
	if ch.existed {
		if ch.from != nil && (ch.remove || ch.to == nil) {
			if err := c.nft.SetDeleteElements(maps.sockets, sockElem); err != nil {
				return err
			}
		}
		if from := snatOf(ch.from); from.IsValid() && (ch.remove || snatOf(ch.to) != from) {
			if err := c.nft.SetDeleteElements(maps.snat, snatElem(from)); err != nil {
				return err
			}
		}
		c.nft.FlushChain(admit)
		if ch.remove || ch.to == nil {
			// The rules that used the slot's sets are gone with the flush: the sets can go.
			c.dropSets(ch.key, ch.from, name)
		}
		if ch.remove {
			if err := c.nft.SetDeleteElements(c.counting, []nftables.SetElement{{Key: mark}}); err != nil {
				return err
			}
			c.nft.FlushChain(count)
			c.nft.DelChain(admit)
			c.nft.DelChain(count)
			for _, o := range c.counters(ch.slot, ch.key.Proto) {
				c.nft.DeleteObject(o)
			}
			return nil
		}
	} else {
		c.nft.AddChain(admit)
		c.nft.AddChain(count)
		for _, o := range c.counters(ch.slot, ch.key.Proto) {
			c.nft.AddObj(o)
		}
		c.countRules(count, ch.key.Proto, name)
		if err := c.nft.SetAddElements(c.counting, []nftables.SetElement{{Key: mark,
			VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: count.Name}}}); err != nil {
			return err
		}
	}
	if ch.to == nil {
		return nil
	}
	if err := c.admitRules(admit, ch, mark, name); err != nil {
		return err
	}
	if ch.from == nil || !ch.existed {
		if err := c.nft.SetAddElements(maps.sockets, sockElem); err != nil {
			return err
		}
	}
	if to := snatOf(ch.to); to.IsValid() && (!ch.existed || snatOf(ch.from) != to) {
		return c.nft.SetAddElements(maps.snat, snatElem(to))
	}
	return nil
}

// counters are a slot's counter objects; closed_N only for TCP.
func (c *nftConn) counters(slot uint32, proto Proto) []*nftables.NamedObj {
	prefixes := []string{counterNew, counterIn, counterOut}
	if proto == TCP {
		prefixes = append(prefixes, counterClosed)
	}
	var objs []*nftables.NamedObj
	for _, prefix := range prefixes {
		objs = append(objs, &nftables.NamedObj{Table: c.table, Name: prefix + strconv.Itoa(int(slot)),
			Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
	}
	return objs
}

// countRules fill a slot's count chain: a TCP flow's first FIN or RST marks
// it closing and counts it closed; each packet of its flows counts toward
// bytes in (original direction) or out (reply).
func (c *nftConn) countRules(chain *nftables.Chain, proto Proto, slot string) {
	if proto == TCP {
		closing := binaryutil.NativeEndian.PutUint32(nftutil.MarkClosing)
		// meta l4proto tcp tcp flags & (fin|rst) != 0 ct mark & closing == 0
		// ct mark set ct mark | closing counter name closed_N
		// (an ICMP error of the flow has its mark too: the first test skips it)
		c.nft.AddRule(&nftables.Rule{Table: c.table, Chain: chain, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{tcpFIN | tcpRST}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0}},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 2, Len: 4, Mask: closing, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 2, Data: make([]byte, 4)},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(^uint32(nftutil.MarkClosing)), Xor: closing},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
			&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: counterClosed + slot},
		}})
	}
	c.nft.AddRule(&nftables.Rule{Table: c.table, Chain: chain, Exprs: []expr.Any{
		&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}}, // IP_CT_DIR_ORIGINAL
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: counterIn + slot},
		&expr.Verdict{Kind: expr.VerdictReturn},
	}})
	c.nft.AddRule(&nftables.Rule{Table: c.table, Chain: chain, Exprs: []expr.Any{
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: counterOut + slot},
	}})
}

// admitRules fill a slot's admit chain, which sees the first packet of every
// new flow to the socket (nat chains see no other): return unless the kernel
// takes it and the client is admitted, then mark the flow, count it, set its
// idle timeout, DNAT it to a target.
func (c *nftConn) admitRules(chain *nftables.Chain, ch change, mark []byte, slot string) error {
	f := ch.to
	fam := l3s[familyOf(ch.key.Addr.Addr())]
	var existing *Forward // what the slot's sets hold now
	if ch.existed {
		existing = ch.from
	}
	if f.AdmitAll && hasAdmitSet(existing) {
		c.nft.DelSet(c.admitSet(ch.key, slot))
	}
	if !ch.ingress {
		// meta iif != 0 return: a flow from an interface that the kernel
		// must not take (see hostNet.ingress); output has no input interface.
		c.nft.AddRule(&nftables.Rule{Table: c.table, Chain: chain, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIF, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
			&expr.Verdict{Kind: expr.VerdictReturn},
		}})
	}
	if ch.key.Proto == TCP {
		// Only a SYN opens a flow. A segment of a flow conntrack no longer
		// knows (idle timeout, termination) is left to the listening socket,
		// which answers it with a reset, as AWS does after an idle timeout.
		// Any UDP datagram opens one, as in userspace.
		c.nft.AddRule(&nftables.Rule{Table: c.table, Chain: chain, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{tcpSYN | tcpACK}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{tcpSYN}},
			&expr.Verdict{Kind: expr.VerdictReturn},
		}})
	}
	if !f.AdmitAll {
		if len(f.Admit) == 0 {
			c.nft.AddRule(&nftables.Rule{Table: c.table, Chain: chain, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}})
			if hasTargetsMap(existing) {
				c.nft.DelSet(c.targetsMap(ch.key, slot))
			}
			if hasAdmitSet(existing) {
				c.nft.DelSet(c.admitSet(ch.key, slot))
			}
			return nil
		}
		admit := c.admitSet(ch.key, slot)
		// A health change touches the targets only: the admitted ranges stay as they are.
		if !hasAdmitSet(existing) || !slices.Equal(existing.Admit, f.Admit) {
			if err := c.fillSet(admit, hasAdmitSet(existing), nftutil.IntervalElements(f.Admit)); err != nil {
				return err
			}
		}
		// ip saddr != @admit return (ip6 saddr for IPv6)
		c.nft.AddRule(&nftables.Rule{Table: c.table, Chain: chain, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.saddr, Len: fam.addrLen},
			&expr.Lookup{SourceRegister: 1, SetName: admit.Name, SetID: admit.ID, Invert: true},
			&expr.Verdict{Kind: expr.VerdictReturn},
		}})
	}
	targets := c.targetsMap(ch.key, slot)
	if !hasTargetsMap(existing) || !slices.Equal(existing.Targets, f.Targets) {
		elems := make([]nftables.SetElement, len(f.Targets))
		for i, t := range f.Targets {
			elems[i] = nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(i)), Val: addrPortKey(t)}
		}
		if err := c.fillSet(targets, hasTargetsMap(existing), elems); err != nil {
			return err
		}
	}
	n := uint32(len(f.Targets))
	pick := []expr.Any{&expr.Numgen{Register: 1, Modulus: n, Type: unix.NFT_NG_RANDOM}}
	if f.Sticky {
		pick = []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.saddr, Len: fam.addrLen},
			&expr.Hash{SourceRegister: 1, DestRegister: 1, Length: fam.addrLen, Modulus: n, Seed: c.id, Type: expr.HashTypeJenkins},
		}
	}
	exprs := []expr.Any{
		&expr.Immediate{Register: 1, Data: mark},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: counterNew + slot},
		// The flow is not confirmed yet: its idle timeout and its events can
		// still be set. Its end must be reported (see flowEnds) even where
		// conntrack's events are off (nf_conntrack_events 0).
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(allCtEvents)},
		&expr.Ct{Key: expr.CtKeyEVENTMASK, Register: 1, SourceRegister: true},
		&expr.Objref{Type: int(nftables.ObjTypeCtTimeout), Name: c.timeout(fam, ch.key.Proto, f.Idle)},
	}
	exprs = append(exprs, pick...)
	exprs = append(exprs,
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: targets.Name, SetID: targets.ID},
		// The target's address from register 1, its port just after it.
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(fam.nfproto), RegAddrMin: 1, RegProtoMin: reg32 + fam.addrLen/4, Specified: true},
	)
	c.nft.AddRule(&nftables.Rule{Table: c.table, Chain: chain, Exprs: exprs})
	return nil
}

// Each slot has two named sets, kept for its life and refilled on each change: the clients it
// admits and its targets. Anonymous sets, made anew with each change, cost the kernel a scan of
// every set in the table to name each one (and a bind per set per transaction): a change took
// time proportional to the table, and hundreds of load balancers coming up one health change
// at a time made programming quadratic.

// admitSet is the slot's set of admitted client ranges.
func (c *nftConn) admitSet(key Key, slot string) *nftables.Set {
	return &nftables.Set{Table: c.table, Name: "admit_" + slot, Interval: true, KeyType: l3s[familyOf(key.Addr.Addr())].addrType}
}

// targetsMap is the slot's map from a target's index to its address and port.
func (c *nftConn) targetsMap(key Key, slot string) *nftables.Set {
	return &nftables.Set{Table: c.table, Name: "targets_" + slot, IsMap: true,
		KeyType: nftables.TypeInteger, KeyByteOrder: binaryutil.NativeEndian,
		DataType: nftables.MustConcatSetType(l3s[familyOf(key.Addr.Addr())].addrType, nftables.TypeInetService)}
}

// hasAdmitSet says whether a slot programmed with f has an admit set.
func hasAdmitSet(f *Forward) bool { return f != nil && !f.AdmitAll && len(f.Admit) > 0 }

// hasTargetsMap says whether a slot programmed with f has a targets map: one that admits no
// client has none.
func hasTargetsMap(f *Forward) bool { return f != nil && (f.AdmitAll || len(f.Admit) > 0) }

// fillSet makes s hold exactly elems: a set the slot has is flushed and refilled, else made.
// Callers skip it when the set holds elems already.
func (c *nftConn) fillSet(s *nftables.Set, exists bool, elems []nftables.SetElement) error {
	if !exists {
		return nftutil.AddSet(c.nft, s, elems)
	}
	c.nft.FlushSet(s)
	return nftutil.AddElements(c.nft, s, elems)
}

// dropSets deletes the sets of a slot programmed with from, once no rule uses them.
func (c *nftConn) dropSets(key Key, from *Forward, slot string) {
	if hasTargetsMap(from) {
		c.nft.DelSet(c.targetsMap(key, slot))
	}
	if hasAdmitSet(from) {
		c.nft.DelSet(c.admitSet(key, slot))
	}
}

// timeout returns the name of the ct timeout object for a family's and
// protocol's idle timeout, creating it on first use. Objects stay for the
// table's life: conntrack entries hold references to them.
func (c *nftConn) timeout(fam l3, proto Proto, idle time.Duration) string {
	secs := max(uint32(idle/time.Second), 1)
	key := timeoutKey{fam.nfproto, proto, secs}
	name := "idle_" + fam.name + "_" + proto.String() + "_" + strconv.Itoa(int(secs))
	if c.timeouts[key] {
		return name
	}
	policy := expr.CtStatePolicyTimeout{}
	if proto == UDP {
		// A UDP flow lives while datagrams pass either way, answered or
		// not, as in userspace.
		policy[expr.CtStateUDPUNREPLIED] = secs
		policy[expr.CtStateUDPREPLIED] = secs
	} else {
		for state, v := range expr.CtStateTCPTimeoutDefaults {
			policy[state] = v
		}
		policy[expr.CtStateTCPESTABLISHED] = secs
	}
	c.nft.AddObj(&nftables.NamedObj{Table: c.table, Name: name, Type: nftables.ObjTypeCtTimeout,
		Obj: &expr.CtTimeout{L3Proto: uint16(fam.nfproto), L4Proto: uint8(proto), Policy: policy}})
	c.timeouts[key] = true
	return name
}

type timeoutKey struct {
	nfproto uint8
	proto   Proto
	secs    uint32
}

// counts reads and resets the table's counters in one dump of counter
// objects, and updates each slot's active flows with them and the ends that
// conntrack reported since (see flowEnds).
func (c *nftConn) counts() (slots map[uint32]Counts, walked bool, err error) {
	counters, err := nftutil.ResetCounters(c.nl, c.table)
	if err != nil {
		return nil, false, err
	}
	out := map[uint32]Counts{}
	closed := map[uint32]uint64{}
	for name, v := range counters {
		prefix, num, _ := strings.Cut(name, "_")
		slot, err := strconv.ParseUint(num, 10, 32)
		if err != nil {
			continue
		}
		got := out[uint32(slot)]
		switch prefix + "_" {
		case counterNew:
			got.NewFlows += v.Packets
		case counterClosed:
			closed[uint32(slot)] += v.Packets
		case counterIn:
			got.BytesIn += v.Bytes
		case counterOut:
			got.BytesOut += v.Bytes
		}
		out[uint32(slot)] = got
	}
	for slot, got := range out {
		c.live[slot] += int(got.NewFlows) - int(closed[slot])
	}
	if err := c.takeEnds(); err != nil {
		return nil, false, err
	}
	walked = c.stale
	if walked {
		// A flow that started after the counters' read is both in the
		// table now and in the next read: the count is one too high for
		// each, until it ends.
		if err := c.recount(); err != nil {
			return nil, true, err
		}
	}
	for slot, n := range c.live {
		got := out[slot]
		// A flow that started after the counters' read and ended before
		// the events' is counted ended first.
		got.Active = max(n, 0)
		out[slot] = got
	}
	return out, walked, nil
}

// recount reads each slot's active flows from conntrack, walking its whole
// table: only when the counts are not known from the counters and events.
func (c *nftConn) recount() error {
	flows, err := c.ct.DumpFilter(conntrack.NewFilter().Mark(c.id).MarkMask(idMask), nil)
	if err != nil {
		return fmt.Errorf("dump conntrack: %w", err)
	}
	clear(c.live)
	for _, f := range flows {
		if f.Mark&nftutil.MarkClosing == 0 {
			c.live[f.Mark&slotMask]++
		}
	}
	// Ends queued during the walk may be of flows it counted or not: both
	// errors are one flow each, and so rare.
	return c.discardEnds()
}

// endFlows deletes the conntrack entries of a slot's flows (to target, when
// valid); slot 0 means every flow of the path. The next segment of either
// side is then answered with a reset.
func (c *nftConn) endFlows(slot uint32, target netip.AddrPort) error {
	if slot == 0 {
		if err := c.ct.FlushFilter(conntrack.NewFilter().Mark(c.id).MarkMask(idMask)); err != nil {
			return err
		}
		clear(c.live)
		return c.discardEnds()
	}
	mark := conntrack.NewFilter().Mark(c.id | slot).MarkMask(^uint32(nftutil.MarkClosing))
	if !target.IsValid() {
		if err := c.ct.FlushFilter(mark); err != nil {
			return err
		}
		// The slot may be given to another socket: the ends of its flows,
		// queued now, must not count against that one.
		err := c.takeEnds()
		delete(c.live, slot)
		return err
	}
	flows, err := c.ct.DumpFilter(mark, nil)
	if err != nil {
		return fmt.Errorf("dump conntrack: %w", err)
	}
	for _, f := range flows {
		r := f.TupleReply
		if r.IP.SourceAddress == target.Addr().Unmap() && r.Proto.SourcePort == target.Port() {
			if err := c.ct.Delete(f); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("delete conntrack entry: %w", err)
			}
		}
	}
	return nil
}

// takeEnds takes the queued ends off live; lost ones make it stale.
func (c *nftConn) takeEnds() error {
	ended := map[uint32]int{}
	lost, err := c.ends.drain(ended)
	for slot, n := range ended {
		c.live[slot] -= n
	}
	c.stale = c.stale || lost
	return err
}

// discardEnds drops the queued ends: live counts the flows there are.
func (c *nftConn) discardEnds() error {
	lost, err := c.ends.drain(map[uint32]int{})
	c.stale = lost || err != nil
	return err
}

// close closes the sockets without taking the library's lock, which a
// stuck call holds; the kernel drops the table with its owner.
func (c *nftConn) close() {
	c.nl.Close()
	if c.ct != nil {
		c.ct.Close()
	}
	if c.ends != nil {
		c.ends.close()
	}
}

// socketKey encodes a socket as its family's sockets map's key: protocol,
// address and port, each padded to 4 bytes as nftables concatenates them,
// the port in network order.
func socketKey(k Key) []byte {
	return append([]byte{byte(k.Proto), 0, 0, 0}, addrPortKey(k.Addr)...)
}

// addrPortKey encodes an address and port as nftables concatenates them
// (see socketKey).
func addrPortKey(ap netip.AddrPort) []byte {
	return append(binary.BigEndian.AppendUint16(addrBytes(ap.Addr()), ap.Port()), 0, 0)
}
