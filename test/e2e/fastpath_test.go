//go:build linux

package e2e

import (
	"encoding/binary"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/google/nftables"
)

// TestFastPathTableDiesWithProcess: moat lb's nftables table is owned by its netlink socket, so
// no other process can change or delete it, and the kernel removes it the moment moat lb dies, even
// by kill -9: no stale rule goes on capturing the dead load balancer's addresses, and no other
// moat lb has to judge whether a table is orphaned.
func TestFastPathTableDiesWithProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the kernel fast path needs root (CAP_NET_ADMIN)")
	}
	dataDir := t.TempDir()
	p := startLB(t, dataDir, "--fast-path=kernel")
	backendPort := startEchoServer(t, "127.1.0.50:0")
	st := createStack(t, p, "orphan", backendPort, freePort(t), "127.0.0.0/24", false)
	waitServing(t, "127.0.0.2", st.front)
	table := loggedTable(t, p)
	tb := nftTable(t, table)
	if tb == nil {
		t.Fatalf("table %s missing while moat lb runs", table)
	}
	const ownerFlag = 0x2 // NFT_TABLE_F_OWNER
	// github.com/google/nftables decodes the flags in host order; the kernel sends them in
	// network order.
	if flags := binary.BigEndian.Uint32(binary.NativeEndian.AppendUint32(nil, tb.Flags)); flags&ownerFlag == 0 {
		t.Fatalf("table %s has flags %#x: not owned by moat lb's socket", table, tb.Flags)
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	c.DelTable(tb)
	if err := c.Flush(); err == nil {
		t.Fatalf("another process deleted moat lb's table %s", table)
	}

	p.kill()
	deadline := time.Now().Add(10 * time.Second)
	for nftTable(t, table) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("table %s of the killed moat lb is still there", table)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Nothing answers on the dead load balancer's address any more.
	if c, _, err := dialFrom("127.0.0.2", st.front, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("%s still answers after moat lb was killed", st.front)
	}
}

func loggedTable(t *testing.T, p *lbProcess) string {
	t.Helper()
	m := regexp.MustCompile(`nftables_table="?ip (moat_[0-9a-f_]+)`).FindStringSubmatch(p.stderr.String())
	if m == nil {
		t.Fatalf("moat lb did not log its nftables table:\n%s", p.stderr)
	}
	return m[1]
}

// nftTable is the IPv4 table of that name, or nil.
func nftTable(t *testing.T, name string) *nftables.Table {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == name {
			return tb
		}
	}
	return nil
}
