//go:build !linux || moat_portable

package secgroup

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// Without socket filters the listening socket takes every client, so the data
// plane's accept-and-reset is the only enforcement: the stand-in must say it
// attached nothing, and leave the socket accepting.
func TestAttachPolicyWithoutSocketFilters(t *testing.T) {
	if SocketFilters {
		t.Fatal("SocketFilters = true in the stand-in build")
	}
	ln, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	denyAll := Compile(nil, ProtocolTCP, 80)
	if denyAll.Allows(netip.MustParseAddr("127.0.0.1")) {
		t.Fatal("a policy without rules admits 127.0.0.1")
	}
	if ok, err := AttachPolicy(rc, denyAll); ok || err != nil {
		t.Errorf("AttachPolicy = %v, %v; want false, nil (enforce by accept-and-reset)", ok, err)
	}
	if err := AttachFilter(rc, nil); !errors.Is(err, ErrNoSocketFilters) {
		t.Errorf("AttachFilter error = %v, want ErrNoSocketFilters", err)
	}
	if err := DetachFilter(rc); err != nil {
		t.Errorf("DetachFilter = %v, want nil", err)
	}
	c, err := net.DialTimeout("tcp4", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatalf("a client of the unfiltered socket: %v, want a connection", err)
	}
	c.Close()
}
