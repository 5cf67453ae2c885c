//go:build linux && !moat_portable

package lb

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/dataplane"
	"github.com/moatlb/moat/internal/dataplane/kernel/kerneltest"
	"github.com/moatlb/moat/internal/store"
)

// TestReadyzWhileKernelHangs: /readyz is ready while the kernel fast path is
// current, and not ready (saying why) while a hung kernel leaves it behind.
func TestReadyzWhileKernelHangs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the kernel fast path needs root (CAP_NET_ADMIN)")
	}
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	peer := kerneltest.NewPeer()
	defer peer.Release()
	engine, err := dataplane.NewUserspace(dataplane.Options{Kernel: true,
		KernelCallTimeout: 200 * time.Millisecond, KernelNetlink: peer.Serve})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	r := &readiness{store: st}
	status := func() (int, string) {
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	if code, _ := status(); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d before the data plane runs, want 503", code)
	}
	r.engine.Store(engine)
	if code, body := status(); code != http.StatusOK {
		t.Fatalf("/readyz = %d %q with a current kernel, want 200", code, body)
	}

	peer.Hang()
	// A new TCP listener on loopback is a change for the kernel.
	ln, err := net.Listen("tcp", "127.1.249.100:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	if err := engine.Apply(dataplane.Config{LoadBalancers: []dataplane.LoadBalancer{{ID: "lb",
		Zones: []dataplane.Zone{{Name: "a", Addr: netip.MustParseAddr("127.1.249.100")}},
		Listeners: []dataplane.Listener{{ID: "l", Protocol: dataplane.TCP, Port: port,
			TargetGroup: dataplane.TargetGroup{ID: "tg"}}}}}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := status()
		if code == http.StatusServiceUnavailable {
			t.Logf("while the kernel hangs: %s", body)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d %q with the kernel hung", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
