package hack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/etcdtest"
)

// TestEtcdClusterScript runs etcd-cluster.sh --check: three namespaces on a bridge, a 3-member
// etcd and three moat lb nodes on it, every node ready and reading a group created through
// node 1. Afterwards its namespaces must be gone. It runs the script in a network namespace of
// its own (unshare --net), so that the bridge is not the host's, and with a prefix of its own, so
// that its namespaces do not meet those of a cluster someone is trying out.
func TestEtcdClusterScript(t *testing.T) {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("needs Linux and root, for network namespaces")
	}
	for _, tool := range []string{"ip", "curl", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s", tool)
		}
	}
	etcd, err := etcdtest.Binary()
	if err != nil {
		t.Skipf("no etcd binary (%v): run hack/kube-assets.sh", err)
	}
	moat := filepath.Join(t.TempDir(), "moat")
	if out, err := exec.Command("go", "build", "-o", moat, "../cmd/moat").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prefix := fmt.Sprintf("mt%d", os.Getpid()%100000)
	cmd := exec.CommandContext(ctx, "unshare", "--net", "bash", "etcd-cluster.sh", "--check", "--moat", moat, "--etcd", etcd, "--prefix", prefix)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) } // unshare execs bash: let it tear down
	cmd.WaitDelay = 30 * time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("etcd-cluster.sh --check:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if !strings.Contains(string(out), fmt.Sprintf("node %d: ready, and reads the group created through node 1", i)) {
			t.Errorf("node %d was not checked", i)
		}
	}
	namespaces, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(namespaces), prefix+"-") {
		t.Errorf("namespaces left behind:\n%s", namespaces)
	}
}
