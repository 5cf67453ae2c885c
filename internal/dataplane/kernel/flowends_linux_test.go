//go:build linux && !moat_portable

package kernel

import (
	"maps"
	"net/netip"
	"testing"

	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/moatlb/moat/internal/netnstest"
	"github.com/moatlb/moat/internal/nftutil"
)

// The ends flowEnds counts are its path's flows that were not closing, by
// slot; a full buffer reports that ends were lost.
func TestFlowEnds(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	const id = nftutil.MarkFlow | 0x2bcde000
	ends, err := dialFlowEnds(id)
	if err != nil {
		t.Fatal(err)
	}
	defer ends.close()
	ct, err := conntrack.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	// create makes a UDP flow per mark and deletes them all: each has a
	// destroy event.
	create := func(marks ...uint32) {
		t.Helper()
		for i, mark := range marks {
			f := conntrack.NewFlow(unix.IPPROTO_UDP, 0, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"),
				uint16(10000+i), 53, 60, mark)
			if err := ct.Create(f); err != nil {
				t.Fatalf("create flow %d: %v", i, err)
			}
		}
		if err := ct.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	create(id|5, id|5, id|7, id|nftutil.MarkClosing|5, (id^1<<20)|5, 0, nftutil.MarkFlow|5)
	ended := map[uint32]int{}
	lost, err := ends.drain(ended)
	if err != nil || lost {
		t.Fatalf("drain: lost %v, %v", lost, err)
	}
	if want := map[uint32]int{5: 2, 7: 1}; !maps.Equal(ended, want) {
		t.Errorf("ends by slot = %v, want %v: the path's flows that were not closing", ended, want)
	}

	// A buffer of a few events overflows.
	var serr error
	if err := ends.raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 0) // the kernel's minimum
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	many := make([]uint32, 200)
	for i := range many {
		many[i] = id | 9
	}
	create(many...)
	clear(ended)
	lost, err = ends.drain(ended)
	if err != nil {
		t.Fatal(err)
	}
	if !lost || ended[9] >= len(many) {
		t.Errorf("after %d ends into a full buffer: lost %v, counted %d; want lost ends reported", len(many), lost, ended[9])
	}
}
