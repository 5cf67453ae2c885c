package dataplane

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/moatlb/moat/internal/secgroup"
)

// dialDenied dials dst from src, a client the listener's groups deny, and returns an error
// unless the client saw what the README promises. With socket filters (Linux) its SYN is dropped
// in the kernel and the connect times out, as on AWS. Without them (secgroup.SocketFilters is
// false: other systems, or Linux with -tags moat_portable) the connection is accepted and reset
// at once, so the client's connect or its first read fails with ECONNRESET.
func dialDenied(src netip.Addr, dst netip.AddrPort) error {
	c, err := dialFrom(src, dst, deniedWait)
	if secgroup.SocketFilters {
		if isTimeout(err) {
			return nil
		}
		if c != nil {
			c.Close()
		}
		return fmt.Errorf("got %v, want a connect timeout (its SYN dropped)", err)
	}
	if err != nil {
		if isReset(err) {
			return nil
		}
		return fmt.Errorf("got %v, want a connection that is reset", err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(longWait))
	if _, err := c.Read(make([]byte, 1)); !isReset(err) {
		return fmt.Errorf("connected, then read %v; want a reset", err)
	}
	return nil
}
