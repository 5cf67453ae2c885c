package dataplane

import (
	"encoding/binary"
	"net/netip"
)

// PROXY protocol v2 (haproxy's proxy-protocol.txt, section 2.2), the binary
// header an NLB prepends when proxy_protocol_v2.enabled is set.
var ppv2Signature = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

const (
	ppv2Local = 0x20 // version 2, command LOCAL: a health check, no addresses
	ppv2Proxy = 0x21 // version 2, command PROXY

	ppv2TCP4 = 0x11 // AF_INET, STREAM
	ppv2TCP6 = 0x21 // AF_INET6, STREAM
)

// ppv2Header returns the PROXY header of a TCP flow from src (the client) to
// dst (the load balancer address it connected to). Mixed families, which a
// dual-stack socket can produce, are sent as IPv6 with IPv4-mapped addresses.
func ppv2Header(src, dst netip.AddrPort) []byte {
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	if sa.Is4() && da.Is4() {
		b := make([]byte, 16+12)
		copy(b, ppv2Signature[:])
		b[12], b[13] = ppv2Proxy, ppv2TCP4
		binary.BigEndian.PutUint16(b[14:], 12)
		s4, d4 := sa.As4(), da.As4()
		copy(b[16:], s4[:])
		copy(b[20:], d4[:])
		binary.BigEndian.PutUint16(b[24:], src.Port())
		binary.BigEndian.PutUint16(b[26:], dst.Port())
		return b
	}
	b := make([]byte, 16+36)
	copy(b, ppv2Signature[:])
	b[12], b[13] = ppv2Proxy, ppv2TCP6
	binary.BigEndian.PutUint16(b[14:], 36)
	s16, d16 := sa.As16(), da.As16()
	copy(b[16:], s16[:])
	copy(b[32:], d16[:])
	binary.BigEndian.PutUint16(b[48:], src.Port())
	binary.BigEndian.PutUint16(b[50:], dst.Port())
	return b
}

// ppv2LocalHeader is the header of a health-check connection: command LOCAL,
// family UNSPEC, no address block. Receivers must accept it and use the
// connection's real endpoints.
func ppv2LocalHeader() []byte {
	b := make([]byte, 16)
	copy(b, ppv2Signature[:])
	b[12] = ppv2Local
	return b
}
