//go:build linux && !moat_portable

package lb

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

func TestGratuitousARPFrame(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	got, err := gratuitousARP(mac, netip.MustParseAddr("198.18.1.100"))
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06, // Ethernet, ARP
		0, 1, 0x08, 0x00, 6, 4, 0, 1, // Ethernet/IPv4 request
		0x02, 0, 0, 0, 0, 0x01, 198, 18, 1, 100, // sender: this interface, the address
		0, 0, 0, 0, 0, 0, 198, 18, 1, 100, // target: the address itself
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding to Ethernet's 60-byte minimum
	}
	if !bytes.Equal(got, want) {
		t.Errorf("frame\n% x\nwant\n% x", got, want)
	}
}
