package e2e

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
)

// TestFastPathOrphanTableRemoved: a kill -9 leaves moat lb's nftables table behind (the
// library cannot make the kernel tie it to the process); the next moat lb to start removes it, so
// no stale rule goes on capturing the dead load balancer's addresses.
func TestFastPathOrphanTableRemoved(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the kernel fast path needs root (CAP_NET_ADMIN)")
	}
	dataDir := t.TempDir()
	p := startLB(t, dataDir, "--fast-path=kernel")
	backendPort := startEchoServer(t, "127.1.0.50:0")
	st := createStack(t, p, "orphan", backendPort, freePort(t), "127.0.0.0/24", false)
	waitServing(t, "127.0.0.2", st.front)
	table := loggedTable(t, p)
	if !nftTableExists(t, table) {
		t.Fatalf("table %s missing while moat lb runs", table)
	}
	p.kill()

	q := startLB(t, t.TempDir(), "--fast-path=kernel")
	if nftTableExists(t, table) {
		t.Errorf("table %s of the killed moat lb survived the start of another", table)
	}
	if !strings.Contains(q.stderr.String(), table) {
		t.Errorf("the new moat lb did not say it removed %s:\n%s", table, q.stderr)
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

func nftTableExists(t *testing.T, name string) bool {
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
			return true
		}
	}
	return false
}

// waitServing waits until the listener answers src: moat lb binds it just after CreateListener
// returns, when the data plane applies the commit.
func waitServing(t *testing.T, src, front string) {
	t.Helper()
	waitFor(t, 10*time.Second, front+" to answer", func() bool {
		c, _, err := dialFrom(src, front, 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}
