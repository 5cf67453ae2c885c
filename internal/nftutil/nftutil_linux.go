//go:build linux && !moat_portable

// Package nftutil has the few nftables messages that github.com/google/nftables
// does not send the way moat needs them, for the kernel fast path and the
// instance firewall: an owned table, and a dump of counter objects that does
// not decode (and so write to the library's package state) anything else.
package nftutil

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/mdlayher/netlink"
	"go4.org/netipx"
	"golang.org/x/sys/unix"
)

// buildMu serialises building nftables messages in this process (the fast
// path and the firewall, and several engines in tests): github.com/google/nftables
// keeps package state there — set IDs, and the ct timeout defaults that
// encoding writes to.
var buildMu sync.Mutex

// Build runs fn, which queues messages on a connection and does no I/O,
// while no other nftables messages are built in this process.
func Build(fn func() error) error {
	buildMu.Lock()
	defer buildMu.Unlock()
	return fn()
}

// TableFlagOwner ties a table to the netlink socket that created it
// (NFT_TABLE_F_OWNER): no other socket may change it, and the kernel deletes
// it when that socket closes.
const TableFlagOwner = 0x2

// ErrTableExists means a table of that name exists already.
var ErrTableExists = errors.New("nftables table exists")

// CreateTable creates a table with flags in a transaction of its own, on
// nl (the socket of a github.com/google/nftables connection, captured with
// nftables.WithSockOptions, so that an owned table belongs to it).
func CreateTable(nl *netlink.Conn, t *nftables.Table, flags uint32) error {
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_TABLE_NAME, Data: []byte(t.Name + "\x00")},
		{Type: unix.NFTA_TABLE_FLAGS, Data: binaryutil.BigEndian.PutUint32(flags)},
	})
	if err != nil {
		return err
	}
	msgs := []netlink.Message{
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN), Flags: netlink.Request},
			Data: nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)},
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE),
			Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl},
			Data: append(nfgen(uint8(t.Family), 0), attrs...)},
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_MSG_BATCH_END), Flags: netlink.Request},
			Data: nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)},
	}
	sent, err := nl.SendMessages(msgs)
	if err != nil {
		return fmt.Errorf("create nftables table: %w", err)
	}
	for {
		replies, err := nl.Receive()
		if err != nil {
			if errors.Is(err, unix.EEXIST) {
				return ErrTableExists
			}
			return fmt.Errorf("create nftables table: %w", err)
		}
		for _, r := range replies {
			if r.Header.Sequence == sent[1].Header.Sequence && r.Header.Type == netlink.Error {
				return nil // an ack: errors come back from Receive
			}
		}
	}
}

// nfgen is the nfgenmsg header of a netfilter message.
func nfgen(family uint8, resID uint16) []byte {
	return []byte{family, unix.NFNETLINK_V0, byte(resID >> 8), byte(resID)}
}

// Counter is a counter object's values.
type Counter struct{ Packets, Bytes uint64 }

// ResetCounters reads and resets every counter object of a table in one
// dump, by name.
func ResetCounters(nl *netlink.Conn, t *nftables.Table) (map[string]Counter, error) {
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_OBJ_TABLE, Data: []byte(t.Name + "\x00")},
		{Type: unix.NFTA_OBJ_TYPE, Data: binaryutil.BigEndian.PutUint32(unix.NFT_OBJECT_COUNTER)},
	})
	if err != nil {
		return nil, err
	}
	replies, err := nl.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETOBJ_RESET),
			Flags: netlink.Request | netlink.Dump},
		Data: append(nfgen(uint8(t.Family), 0), attrs...),
	})
	if err != nil {
		return nil, fmt.Errorf("read counters: %w", err)
	}
	out := map[string]Counter{}
	for _, m := range replies {
		if len(m.Data) < 4 {
			continue
		}
		name, c, err := decodeCounter(m.Data[4:])
		if err != nil {
			return nil, err
		}
		out[name] = c
	}
	return out, nil
}

// decodeCounter reads a counter object's name and values from a
// NFT_MSG_NEWOBJ message's attributes.
func decodeCounter(data []byte) (name string, c Counter, err error) {
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return "", c, err
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_OBJ_NAME:
			name = ad.String()
		case unix.NFTA_OBJ_DATA:
			ad.Nested(func(nd *netlink.AttributeDecoder) error {
				for nd.Next() {
					switch nd.Type() {
					case unix.NFTA_COUNTER_BYTES:
						c.Bytes = nd.Uint64()
					case unix.NFTA_COUNTER_PACKETS:
						c.Packets = nd.Uint64()
					}
				}
				return nil
			})
		}
	}
	return name, c, ad.Err()
}

// IntervalElements encodes sorted ranges of one family as an interval set:
// a start element per range and an end element just past it (none after the
// family's last address), after the leading end element at the family's
// zero address that nft itself adds.
func IntervalElements(rs []netipx.IPRange) []nftables.SetElement {
	var elems []nftables.SetElement
	if len(rs) > 0 && !rs[0].From().IsUnspecified() {
		elems = append(elems, nftables.SetElement{Key: make([]byte, rs[0].From().BitLen()/8), IntervalEnd: true})
	}
	for _, r := range rs {
		elems = append(elems, nftables.SetElement{Key: r.From().AsSlice()})
		if next := r.To().Next(); next.IsValid() {
			elems = append(elems, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
		}
	}
	return elems
}

// setElementsPerMessage keeps a message's element list under netlink's 64 KiB attribute limit
// (its length is 16 bits): past it the kernel sees a truncated list and refuses the transaction,
// with ENOENT for a verdict map's element naming a chain, at about 1,600 of them.
const setElementsPerMessage = 1024

// AddSet queues a set with its elements, spread over as many messages of the same transaction
// as they need (nftables.Conn.AddSet puts them all in one). A set that needs more than one must
// be named and not constant: the library refuses to add to an anonymous set, and gives a
// constant one the size of its first message, past which the kernel refuses elements (ENFILE).
func AddSet(nft *nftables.Conn, s *nftables.Set, elems []nftables.SetElement) error {
	if len(elems) > setElementsPerMessage && (s.Anonymous || s.Constant) {
		return fmt.Errorf("set of %d elements: more than one message holds, which an anonymous or constant set cannot take", len(elems))
	}
	first := elems[:min(len(elems), setElementsPerMessage)]
	if err := nft.AddSet(s, first); err != nil {
		return err
	}
	return AddElements(nft, s, elems[len(first):])
}

// AddElements queues elements for a named set, spread over as many messages of the same
// transaction as they need.
func AddElements(nft *nftables.Conn, s *nftables.Set, elems []nftables.SetElement) error {
	for len(elems) > 0 {
		n := min(len(elems), setElementsPerMessage)
		if err := nft.SetAddElements(s, elems[:n]); err != nil {
			return err
		}
		elems = elems[n:]
	}
	return nil
}

// batchBuffer bounds one transaction: a whole table is one sendmsg, and the
// kernel refuses a message larger than the socket's send buffer (by default
// about 200 KiB, a few dozen rules with their sets). SO_SNDBUF only sets a
// limit; no memory is reserved.
const batchBuffer = 64 << 20

// ForLargeBatches lets nl (a github.com/google/nftables connection's socket,
// captured with nftables.WithSockOptions) send a large ruleset in one
// transaction: a send buffer that holds it, and acknowledgements that do not
// echo every request back (by default each ack carries its whole request,
// and hundreds of them overflow the receive buffer with ENOBUFS). The
// *FORCE options exceed the system's maximum; they need CAP_NET_ADMIN, as
// changing nftables does, so without it the plain ones are tried.
func ForLargeBatches(nl *netlink.Conn) error {
	if err := nl.SetOption(netlink.CapAcknowledge, true); err != nil {
		return fmt.Errorf("netlink capped acks: %w", err)
	}
	rc, err := nl.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], batchBuffer) != nil {
				serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], batchBuffer))
			}
		}
	}); err != nil {
		return err
	}
	return serr
}
