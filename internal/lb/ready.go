package lb

import (
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/moatlb/moat/internal/dataplane"
	"github.com/moatlb/moat/internal/store"
)

// maxKernelLag is how far the kernel fast path may be behind the data plane's
// configuration before moat lb says it is not ready: a rule change is
// promised to govern new flows within a second.
const maxKernelLag = time.Second

// readiness answers /readyz: ready when the store answers, the data plane
// runs, and the kernel fast path (if any) is not behind.
type readiness struct {
	store  store.Store
	engine atomic.Pointer[dataplane.Userspace]
}

func (r *readiness) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	if err := r.store.View(probeStore); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	e := r.engine.Load()
	if e == nil {
		http.Error(w, "data plane starting", http.StatusServiceUnavailable)
		return
	}
	if lag := e.KernelLag(); lag > maxKernelLag {
		http.Error(w, fmt.Sprintf("kernel fast path %v behind the configuration", lag.Round(time.Millisecond)),
			http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// probeStore reads a record (one that never exists): an empty transaction would not reach an etcd
// store, which talks to the cluster only when a transaction reads.
func probeStore(tx store.Tx) error {
	_, err := tx.Get("readyz", "probe")
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}
