//go:build linux && !moat_portable

package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/moatlb/moat/internal/flowlog"
	"github.com/moatlb/moat/internal/nftutil"
)

// The table, ip moat_fw_<name>, when this host has instance interfaces:
//
//	chain input  (filter, hook input):  established/related → accept; [iif lo → accept;]
//	                                    moat's flows → accept;
//	                                    ip daddr vmap { <interface address> : jump in_<n> }
//	chain output (filter, hook output): established/related → accept; [oif lo → accept;]
//	                                    moat's flows → accept
//	                                    (a packet marked by its socket marks its flow too);
//	                                    ip saddr vmap { … : jump out_<n> }
//	chain in_<n>, out_<n>: one rule per (protocol, ports) with its peers → accept; then the
//	                       denial counter and drop (enforce) or return (audit).
//
// When denials go to the flow log, the end of each interface chain is instead
//
//	counter deny_<chain>; limit name log_rate; log group G prefix "moat …"; drop | return
//	counter unlogged; drop (enforce) | nothing (audit)
//
// so every denial is counted, at most the shared log_rate is logged, and what
// the limit holds back is counted in unlogged.
// Without interfaces the table hooks nothing, or only the listeners' log (listenerLog, a base
// chain of its own on the input hook), and nothing in it asks connection tracking.
// The whole table is replaced in one transaction (add, delete, add), so the
// kernel goes from one complete rule set to the next.

// ctStateEstablishedRelated are conntrack's state bits for packets of a flow
// it already knows.
const ctStateEstablishedRelated = 0x2 | 0x4 // NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | (IP_CT_RELATED)

// TCP header flags.
const tcpSYN, tcpACK = 0x02, 0x10

type nftConn struct {
	name  string // the table's, without moat_fw_
	nft   *nftables.Conn
	nl    *netlink.Conn
	table *nftables.Table
	// peerSets numbers the rules' named peer sets while a table is queued.
	peerSets int
}

func dial(name string) (kernelConn, error) {
	c := &nftConn{name: name, table: &nftables.Table{Family: nftables.TableFamilyIPv4, Name: "moat_fw_" + name}}
	var err error
	c.nft, err = nftables.New(nftables.AsLasting(), nftables.WithSockOptions(func(nl *netlink.Conn) error {
		c.nl = nl
		return nftutil.ForLargeBatches(nl)
	}))
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	// Probe: the kernel must let us list tables (CAP_NET_ADMIN for changes
	// is checked by the first replace).
	if _, err := c.nft.ListTablesOfFamily(nftables.TableFamilyIPv4); err != nil {
		c.close()
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return c, nil
}

func (c *nftConn) close() { c.nl.Close() }

func (c *nftConn) replace(ifaces []compiled, p *Program, logGroup int) (map[string][2]string, error) {
	var labels map[string][2]string
	err := nftutil.Build(func() (err error) {
		labels, err = c.queue(ifaces, p, logGroup)
		return err
	})
	if err != nil {
		// Send nothing: what was queued (the table's deletion among it) goes
		// with this connection, which the caller drops after any error.
		return nil, fmt.Errorf("build instance firewall: %w", err)
	}
	if err := c.nft.Flush(); err != nil {
		return nil, fmt.Errorf("replace instance firewall: %w", err)
	}
	return labels, nil
}

func (c *nftConn) queue(ifaces []compiled, p *Program, logGroup int) (map[string][2]string, error) {
	t := c.table
	c.peerSets = 0
	c.nft.AddTable(t)
	c.nft.DelTable(t)
	if p.Mode == Off {
		return nil, nil
	}
	c.nft.AddTable(t)
	hook := func(name string, hooknum *nftables.ChainHook) *nftables.Chain {
		return c.nft.AddChain(&nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: hooknum, Priority: nftables.ChainPriorityFilter})
	}
	// The hooks, and the rules that ask connection tracking, are there only for instance
	// interfaces on this host: a rule that reads a flow's state turns the connection tracker on
	// for every packet of the namespace, which a host of load balancers alone should not pay.
	var input, output *nftables.Chain
	if len(ifaces) > 0 {
		input, output = hook("input", nftables.ChainHookInput), hook("output", nftables.ChainHookOutput)
		c.protectFlows(input, output, p.SkipLoopback)
	}
	if logGroup >= 0 {
		c.nft.AddObj(&nftables.NamedObj{Table: t, Name: "log_rate", Type: nftables.ObjTypeLimit,
			Obj: &expr.Limit{Type: expr.LimitTypePkts, Rate: logRate, Unit: expr.LimitTimeSecond, Burst: logBurst}})
		c.nft.AddObj(&nftables.NamedObj{Table: t, Name: unloggedCounter, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
	}
	if logGroup >= 0 && len(p.Listeners) > 0 {
		if err := c.listenerLog(hook("listeners", nftables.ChainHookInput), p.Listeners, logGroup); err != nil {
			return nil, err
		}
	}
	labels := map[string][2]string{}
	var inElems, outElems []nftables.SetElement
	for n, ifc := range ifaces {
		in, out := "in_"+strconv.Itoa(n), "out_"+strconv.Itoa(n)
		for _, dir := range []struct {
			chain, direction string
			matches          []match
			peerOffset       uint32 // the peer is the source inbound, the destination outbound
		}{{in, "inbound", ifc.in, 12}, {out, "outbound", ifc.out, 16}} {
			ch := c.nft.AddChain(&nftables.Chain{Name: dir.chain, Table: t})
			counter := "deny_" + dir.chain
			c.nft.AddObj(&nftables.NamedObj{Table: t, Name: counter, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
			labels[counter] = [2]string{ifc.instance, dir.direction}
			for _, m := range dir.matches {
				if err := c.matchRule(ch, m, dir.peerOffset); err != nil {
					return nil, err
				}
			}
			c.denyRules(ch, p.Mode, counter, logGroup, dir.direction, ifc)
		}
		for _, a := range ifc.addrs {
			b := a.As4()
			inElems = append(inElems, nftables.SetElement{Key: b[:], VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: in}})
			outElems = append(outElems, nftables.SetElement{Key: b[:], VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: out}})
		}
	}
	for _, d := range []struct {
		chain  *nftables.Chain
		elems  []nftables.SetElement
		offset uint32 // the interface is the destination inbound, the source outbound
	}{{input, inElems, 16}, {output, outElems, 12}} {
		if len(d.elems) == 0 {
			continue
		}
		// Named and not constant, as every set of the table: their elements may take several
		// messages (nftutil.AddSet).
		vmap := &nftables.Set{Table: t, Name: d.chain.Name + "_addrs", IsMap: true,
			KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict}
		if err := nftutil.AddSet(c.nft, vmap, d.elems); err != nil {
			return nil, err
		}
		c.nft.AddRule(&nftables.Rule{Table: t, Chain: d.chain, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: d.offset, Len: 4},
			&expr.Lookup{SourceRegister: 1, IsDestRegSet: true, SetName: vmap.Name, SetID: vmap.ID},
		}})
	}
	return labels, nil
}

// protectFlows starts the hooks' chains for instance interfaces: the packets of known flows pass
// (the groups are stateful), [the loopback's,] and moat lb's own flows.
func (c *nftConn) protectFlows(input, output *nftables.Chain, skipLoopback bool) {
	t := c.table
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	established := []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ctStateEstablishedRelated), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		accept,
	}
	for _, ch := range []*nftables.Chain{input, output} {
		c.nft.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: established})
	}
	if skipLoopback {
		// The loopback interface has index 1 in every network namespace.
		for _, d := range []struct {
			chain *nftables.Chain
			key   expr.MetaKey
		}{{input, expr.MetaKeyIIF}, {output, expr.MetaKeyOIF}} {
			c.nft.AddRule(&nftables.Rule{Table: t, Chain: d.chain, Exprs: []expr.Any{
				&expr.Meta{Key: d.key, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(1)},
				accept,
			}})
		}
	}
	// moat lb's flows: the fast path marks them in conntrack; the userspace
	// proxy marks its sockets (SO_MARK), which the flow's conntrack entry
	// takes on its way out, for the input hook.
	moatFlow := func(key expr.Any) []expr.Any {
		return []expr.Any{key,
			&expr.Bitwise{SourceRegister: 1, DestRegister: 2, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(nftutil.MarkFlow), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 2, Data: make([]byte, 4)},
		}
	}
	for _, ch := range []*nftables.Chain{input, output} {
		c.nft.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(moatFlow(&expr.Ct{Key: expr.CtKeyMARK, Register: 1}), accept)})
	}
	c.nft.AddRule(&nftables.Rule{Table: t, Chain: output, Exprs: append(moatFlow(&expr.Meta{Key: expr.MetaKeyMARK, Register: 1}),
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true}, accept)})
}

// listenerLog adds the chains that log the denied clients of moat lb's listener sockets (see
// Listener): a base chain of their own on the input hook, and one chain per load balancer
// address:
//
//	chain listeners: meta l4proto tcp tcp flags & (syn|ack) != syn accept;
//	                 ip daddr vmap { <address> : jump lb_<n> }
//	chain lb_<n>: per socket: meta l4proto P th dport PORT ip saddr @admitted return;
//	                          meta l4proto P th dport PORT limit name log_rate log group G prefix "moat <table> deny listener"
//
// Only a TCP flow's first packet is judged: without connection tracking, this is what keeps an
// established flow of a client revoked since from being logged segment by segment. The first
// rule is all the segments of established flows cost (their hook's evaluation is on the
// userspace proxy's round trip: the address map and a jump before it cost as much again,
// measured). The chains never drop: the data plane's socket decides. Being a base chain of its
// own, the log's accepting leaves the packet to the instances' chain (input), whatever their
// order: a verdict ends only its own base chain.
func (c *nftConn) listenerLog(base *nftables.Chain, ls []Listener, logGroup int) error {
	t := c.table
	byAddr := map[netip.Addr]*nftables.Chain{}
	// Listeners' admitted ranges go in named sets, one per distinct list: a load balancer's
	// listeners, and Services with the same source ranges, share one. An anonymous set per
	// listener cost the kernel time in proportion to the sets of the transaction for each one
	// it bound (__nft_set_trans_bind), so a table of thousands of listeners took it seconds.
	admitSets := map[string]*nftables.Set{}
	var elems []nftables.SetElement
	for _, l := range ls {
		ch := byAddr[l.Addr.Addr()]
		if ch == nil {
			ch = c.nft.AddChain(&nftables.Chain{Name: "lb_" + strconv.Itoa(len(byAddr)), Table: t})
			byAddr[l.Addr.Addr()] = ch
			b := l.Addr.Addr().As4()
			elems = append(elems, nftables.SetElement{Key: b[:], VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: ch.Name}})
		}
		socket := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(l.Protocol)}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(l.Addr.Port())},
		}
		if len(l.Admit) > 0 {
			key := fmt.Sprint(l.Admit)
			admitted := admitSets[key]
			if admitted == nil {
				admitted = &nftables.Set{Table: t, Name: "admit_" + strconv.Itoa(len(admitSets)), Interval: true,
					KeyType: nftables.TypeIPAddr}
				if err := nftutil.AddSet(c.nft, admitted, nftutil.IntervalElements(l.Admit)); err != nil {
					return err
				}
				admitSets[key] = admitted
			}
			c.nft.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(slices.Clip(socket),
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
				&expr.Lookup{SourceRegister: 1, SetName: admitted.Name, SetID: admitted.ID},
				&expr.Verdict{Kind: expr.VerdictReturn})})
		}
		c.nft.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(slices.Clip(socket),
			&expr.Objref{Type: int(nftables.ObjTypeLimit), Name: "log_rate"},
			&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_SNAPLEN,
				Group: uint16(logGroup), Snaplen: logSnap, Data: []byte(listenerLogPrefix(c.name))})})
	}
	vmap := &nftables.Set{Table: t, Name: "listener_addrs", IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict}
	if err := nftutil.AddSet(c.nft, vmap, elems); err != nil {
		return err
	}
	c.nft.AddRule(&nftables.Rule{Table: t, Chain: base, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{tcpSYN | tcpACK}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{tcpSYN}},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	c.nft.AddRule(&nftables.Rule{Table: t, Chain: base, Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, IsDestRegSet: true, SetName: vmap.Name, SetID: vmap.ID},
	}})
	return nil
}

// denyRules end an interface chain: count the denial, and log it when
// logGroup is not negative (see the table's layout above).
func (c *nftConn) denyRules(ch *nftables.Chain, mode Mode, counter string, logGroup int, direction string, ifc compiled) {
	count := func(name string) expr.Any { return &expr.Objref{Type: int(nftables.ObjTypeCounter), Name: name} }
	var end []expr.Any
	if mode == Enforce {
		end = []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}
	}
	if logGroup < 0 {
		c.nft.AddRule(&nftables.Rule{Table: c.table, Chain: ch, Exprs: append([]expr.Any{count(counter)}, end...)})
		return
	}
	action, verdict := flowlog.Deny, expr.VerdictDrop
	if mode != Enforce {
		action, verdict = flowlog.WouldDeny, expr.VerdictReturn
	}
	c.nft.AddRule(&nftables.Rule{Table: c.table, Chain: ch, Exprs: []expr.Any{
		count(counter),
		&expr.Objref{Type: int(nftables.ObjTypeLimit), Name: "log_rate"},
		&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_SNAPLEN,
			Group: uint16(logGroup), Snaplen: logSnap, Data: []byte(logPrefix(c.name, action, direction, ifc.instance, ifc.id))},
		&expr.Verdict{Kind: verdict},
	}})
	c.nft.AddRule(&nftables.Rule{Table: c.table, Chain: ch, Exprs: append([]expr.Any{count(unloggedCounter)}, end...)})
}

// matchRule adds: [meta l4proto P] [th dport from-to] ip saddr|daddr @peers accept.
func (c *nftConn) matchRule(ch *nftables.Chain, m match, peerOffset uint32) error {
	var exprs []expr.Any
	if m.protocol >= 0 {
		exprs = append(exprs,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(m.protocol)}})
	}
	if m.ports {
		exprs = append(exprs,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Range{Op: expr.CmpOpEq, Register: 1,
				FromData: binaryutil.BigEndian.PutUint16(m.fromPort), ToData: binaryutil.BigEndian.PutUint16(m.toPort)})
	}
	exprs = append(exprs, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: peerOffset, Len: 4})
	if !(len(m.peers) == 1 && m.peers[0].From() == netip.IPv4Unspecified() && m.peers[0].To() == netip.AddrFrom4([4]byte{255, 255, 255, 255})) {
		c.peerSets++
		peers := &nftables.Set{Table: c.table, Name: "peers_" + strconv.Itoa(c.peerSets), Interval: true, KeyType: nftables.TypeIPAddr}
		if err := nftutil.AddSet(c.nft, peers, nftutil.IntervalElements(m.peers)); err != nil {
			return err
		}
		exprs = append(exprs, &expr.Lookup{SourceRegister: 1, SetName: peers.Name, SetID: peers.ID})
	}
	exprs = append(exprs, &expr.Verdict{Kind: expr.VerdictAccept})
	c.nft.AddRule(&nftables.Rule{Table: c.table, Chain: ch, Exprs: exprs})
	return nil
}

func (c *nftConn) denials() (map[string]uint64, error) {
	counters, err := nftutil.ResetCounters(c.nl, c.table)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(counters))
	for name, v := range counters {
		out[name] = v.Packets
	}
	return out, nil
}
