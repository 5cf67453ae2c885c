//go:build linux && !moat_portable

package lb

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// announcer puts the IPv4 load balancer addresses of the zones this node serves on a real
// interface (--announce-interface), those in one of its connected networks, and sends a
// gratuitous ARP for each it adds, so that the link's hosts, whose ARP caches still name the
// previous node, send to this one after a failover. It takes them off when the node stops
// serving the zone. Its addresses carry the label <interface>:moat, so that a node started
// after a crash removes what the crashed one left (ip addr show label '*:moat').
type announcer struct {
	link     netlink.Link
	label    string
	networks []netip.Prefix
	have     map[netip.Addr]bool
	log      *slog.Logger
}

func newAnnouncer(name string, log *slog.Logger) (*announcer, error) {
	if name == "" {
		return nil, nil
	}
	bad := func(err error) error { return fmt.Errorf("--announce-interface %s: %w", name, err) }
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, bad(err)
	}
	a := &announcer{link: link, label: name + ":moat", have: map[netip.Addr]bool{}, log: log}
	if len(a.label) >= unix.IFNAMSIZ {
		return nil, bad(fmt.Errorf("name longer than %d characters, too long to label its addresses", unix.IFNAMSIZ-len(":moat")-1))
	}
	if len(link.Attrs().HardwareAddr) != 6 {
		return nil, bad(errors.New("not an Ethernet interface"))
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, bad(err)
	}
	for _, addr := range addrs {
		if addr.Label == a.label {
			if err := netlink.AddrDel(link, &addr); err != nil {
				return nil, bad(fmt.Errorf("remove %s left by an earlier run: %w", addr.IPNet, err))
			}
			log.Info("removed a load balancer address an earlier run left", "interface", name, "addr", addr.IPNet)
			continue
		}
		if p, ok := prefixOf(addr.IPNet); ok && p.Bits() < 32 {
			a.networks = append(a.networks, p.Masked())
		}
	}
	if len(a.networks) == 0 {
		return nil, bad(errors.New("has no IPv4 network to announce load balancer addresses in"))
	}
	return a, nil
}

// covers says whether addr is one this announcer puts on its interface while served.
func (a *announcer) covers(addr netip.Addr) bool {
	if a == nil {
		return false
	}
	for _, p := range a.networks {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// add puts the covered addresses of want that are not yet on the interface there, and returns
// them: announce them once they are served.
func (a *announcer) add(want map[netip.Addr]bool) []netip.Addr {
	if a == nil {
		return nil
	}
	var added []netip.Addr
	for addr := range want {
		if a.have[addr] || !a.covers(addr) {
			continue
		}
		if err := netlink.AddrAdd(a.link, a.netlinkAddr(addr)); err != nil && !errors.Is(err, unix.EEXIST) {
			a.log.Error("cannot put a load balancer address on the interface", "interface", a.link.Attrs().Name, "addr", addr, "err", err)
			continue
		}
		a.have[addr] = true
		added = append(added, addr)
	}
	return added
}

// removeExcept takes off the interface the addresses it put there that are not in want.
func (a *announcer) removeExcept(want map[netip.Addr]bool) {
	if a == nil {
		return
	}
	for addr := range a.have {
		if want[addr] {
			continue
		}
		if err := netlink.AddrDel(a.link, a.netlinkAddr(addr)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			a.log.Error("cannot take a load balancer address off the interface", "interface", a.link.Attrs().Name, "addr", addr, "err", err)
			continue
		}
		delete(a.have, addr)
	}
}

func (a *announcer) netlinkAddr(addr netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}, Label: a.label}
}

// announce sends a gratuitous ARP request for each address: sender and target the address,
// sender hardware this interface's, to the broadcast address.
func (a *announcer) announce(addrs []netip.Addr) {
	if a == nil || len(addrs) == 0 {
		return
	}
	name, mac := a.link.Attrs().Name, a.link.Attrs().HardwareAddr
	conn, err := packet.Listen(&net.Interface{Index: a.link.Attrs().Index, Name: name, HardwareAddr: mac}, packet.Raw, int(ethernet.EtherTypeARP), nil)
	if err != nil {
		a.log.Error("cannot send gratuitous ARP", "interface", name, "err", err)
		return
	}
	defer conn.Close()
	for _, addr := range addrs {
		frame, err := gratuitousARP(mac, addr)
		if err == nil {
			_, err = conn.WriteTo(frame, &packet.Addr{HardwareAddr: ethernet.Broadcast})
		}
		if err != nil {
			a.log.Error("cannot send gratuitous ARP", "interface", name, "addr", addr, "err", err)
			continue
		}
		a.log.Info("sent gratuitous ARP", "interface", name, "addr", addr, "mac", mac.String())
	}
}

// gratuitousARP is the Ethernet frame of a gratuitous ARP request for addr from mac.
func gratuitousARP(mac net.HardwareAddr, addr netip.Addr) ([]byte, error) {
	p, err := arp.NewPacket(arp.OperationRequest, mac, addr, make(net.HardwareAddr, len(mac)), addr)
	if err != nil {
		return nil, err
	}
	payload, err := p.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return (&ethernet.Frame{Destination: ethernet.Broadcast, Source: mac, EtherType: ethernet.EtherTypeARP, Payload: payload}).MarshalBinary()
}
