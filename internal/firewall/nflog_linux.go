//go:build linux && !moat_portable

package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// NFLOG's messages and attributes (linux/netfilter/nfnetlink_log.h); x/sys
// does not have them.
const (
	nfulnlMsgPacket   = 0
	nfulnlMsgConfig   = 1
	nfulaPayload      = 9
	nfulaPrefix       = 10
	nfulaCfgCmd       = 1
	nfulaCfgMode      = 2
	nfulaCfgTimeout   = 4
	nfulnlCfgCmdBind  = 1
	nfulnlCopyPacket  = 2
	logFlushTimeout   = 10 // hundredths of a second a logged packet may wait to be sent in a batch
	logReadBuffer     = 1 << 20
	logGroupAttempts  = 8
	logConfigDeadline = 5 * time.Second
)

// nflog is a socket bound to an NFLOG group.
type nflog struct {
	nl *netlink.Conn
	g  uint16
}

// openPacketLog binds the first free group of table's (see logGroups). It
// fails where moat may not read the packet log (CAP_NET_ADMIN) or the kernel
// has none.
func openPacketLog(table string) (packetLog, error) {
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nflog: %w", err)
	}
	_ = nl.SetReadBuffer(logReadBuffer)
	// A group another socket holds answers EPERM (EBUSY when it is ours already).
	var errs error
	for _, g := range logGroups(table, logGroupAttempts) {
		err := configure(nl, g)
		if err == nil {
			return &nflog{nl: nl, g: g}, nil
		}
		errs = err
		if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EBUSY) {
			break
		}
	}
	nl.Close()
	return nil, fmt.Errorf("nflog: bind a group: %w", errs)
}

// configure binds group g and asks for each packet's first logSnap bytes,
// with a deadline.
func configure(nl *netlink.Conn, g uint16) error {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Bytes(nfulaCfgCmd, []byte{nfulnlCfgCmdBind})
	mode := make([]byte, 6) // __be32 copy_range, __u8 copy_mode, __u8 pad
	binary.BigEndian.PutUint32(mode, logSnap)
	mode[4] = nfulnlCopyPacket
	ae.Bytes(nfulaCfgMode, mode)
	ae.Uint32(nfulaCfgTimeout, logFlushTimeout)
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	if err := nl.SetDeadline(time.Now().Add(logConfigDeadline)); err != nil {
		return err
	}
	defer nl.SetDeadline(time.Time{})
	_, err = nl.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8 | nfulnlMsgConfig),
			Flags: netlink.Request | netlink.Acknowledge},
		Data: append([]byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, byte(g >> 8), byte(g)}, attrs...),
	})
	return err
}

func (l *nflog) group() uint16 { return l.g }

// read returns the next batch of logged packets; closing the log ends it.
func (l *nflog) read() ([]loggedPacket, error) {
	msgs, err := l.nl.Receive()
	if err != nil {
		if errors.Is(err, unix.ENOBUFS) {
			return nil, errOverrun
		}
		return nil, err
	}
	var out []loggedPacket
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgPacket) || len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			continue
		}
		var p loggedPacket
		for ad.Next() {
			switch ad.Type() {
			case nfulaPrefix:
				p.prefix = strings.TrimRight(string(ad.Bytes()), "\x00")
			case nfulaPayload:
				p.payload = ad.Bytes()
			}
		}
		if ad.Err() == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

func (l *nflog) close() { l.nl.Close() }
