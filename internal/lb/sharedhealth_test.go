package lb

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/dataplane"
	"github.com/moatlb/moat/internal/store"
)

// checkingEngine is an engine whose health checks the test decides.
type checkingEngine struct {
	dataplane.Engine
	mu     sync.Mutex
	health map[targetKey]dataplane.Health
}

func (e *checkingEngine) set(k targetKey, h dataplane.Health) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.health[k] = h
}

func (e *checkingEngine) stop(k targetKey) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.health, k)
}

func (e *checkingEngine) targets() []targetKey {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []targetKey
	for k := range e.health {
		out = append(out, k)
	}
	return out
}

func (e *checkingEngine) TargetHealth(group, id string, port uint16) (dataplane.Health, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	h, ok := e.health[targetKey{group, id, port}]
	return h, ok
}

// healthNode is one node's shared health reporter on its own connection to the store.
type healthNode struct {
	engine   *checkingEngine
	reporter *sharedHealth
	store    *store.Etcd
	stop     func()
}

func startHealthNode(t *testing.T, storeFlag, name string) *healthNode {
	t.Helper()
	st := openNode(t, storeFlag, t.TempDir())
	engine := &checkingEngine{health: map[targetKey]dataplane.Health{}}
	reporter := newSharedHealth(st, engine, engine.targets, name, 2*time.Second, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	wait := reporter.start(ctx)
	n := &healthNode{engine: engine, reporter: reporter, store: st}
	var once sync.Once
	n.stop = func() { once.Do(func() { cancel(); wait() }) }
	t.Cleanup(n.stop)
	return n
}

var (
	healthy   = dataplane.Health{State: dataplane.StateHealthy}
	unhealthy = dataplane.Health{State: dataplane.StateUnhealthy, Reason: dataplane.ReasonTimeout, Description: "Request timed out"}
	unused    = dataplane.Health{State: dataplane.StateUnused, Reason: dataplane.ReasonNotInUse, Description: "Target is in an Availability Zone that is not enabled for the load balancer"}
)

// awaitHealth polls node's answer for k until it is want (ok false: no answer), within 10 s.
func awaitHealth(t *testing.T, node *healthNode, name string, k targetKey, want dataplane.Health, wantOK bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, ok := node.reporter.TargetHealth(k.Group, k.ID, int(k.Port))
		if ok == wantOK && (!ok || got == cloud.TargetHealth(want)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s: target health %+v (%v), want %+v (%v)", name, got, ok, want, wantOK)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Nodes share the health of the targets they serve through the store: a node that serves none
// answers with the serving node's view, a target two nodes serve shows the worse view on every
// node (a checking node's over unused), and a node's records go when it stops serving a target or
// stops. Health writes do not
// signal the store's change feed, which would make every node read the whole state again.
func TestSharedHealthThroughTheStore(t *testing.T) {
	storeFlag := startEtcd(t, "/health")
	a, b, c := startHealthNode(t, storeFlag, "node-a"), startHealthNode(t, storeFlag, "node-b"), startHealthNode(t, storeFlag, "node-c")
	changes, stopChanges := c.store.Changes()
	defer stopChanges()
	target := targetKey{"arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/web/0123456789abcdef", "i-0123", 8080}

	awaitHealth(t, c, "c", target, dataplane.Health{}, false)
	a.engine.set(target, healthy)
	awaitHealth(t, c, "c", target, healthy, true)

	resp, err := c.store.Client().Get(context.Background(), c.store.QuietPrefix()+"health/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("%d health records, want node-a's one", len(resp.Kvs))
	}
	var r healthRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		t.Fatal(err)
	}
	if r.targetKey != target || r.State != healthy.State || r.Node != "node-a" || time.Since(r.Time) > time.Minute || resp.Kvs[0].Lease == 0 {
		t.Errorf("record %s = %+v (lease %x), want node-a's healthy view of %+v, on a lease", resp.Kvs[0].Key, r, resp.Kvs[0].Lease, target)
	}

	a.engine.set(target, unhealthy)
	awaitHealth(t, c, "c", target, unhealthy, true)

	// node-b checks it too (another zone) and finds it healthy: every node shows the worse view.
	b.engine.set(target, healthy)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := c.store.Client().Get(context.Background(), c.store.QuietPrefix()+"health/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if got.Count == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d health records, want node-a's and node-b's", got.Count)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for name, n := range map[string]*healthNode{"a": a, "b": b, "c": c} {
		awaitHealth(t, n, name, target, unhealthy, true)
	}
	a.engine.set(target, healthy)
	for name, n := range map[string]*healthNode{"a": a, "b": b, "c": c} {
		awaitHealth(t, n, name, target, healthy, true)
	}
	b.engine.set(target, unhealthy)
	awaitHealth(t, a, "a", target, unhealthy, true)

	// A node that stops checking the target (its zone moved) deletes its record; one that stops
	// revokes its records' lease.
	b.engine.set(target, unused) // node-b's zone moved away; node-b still serves the group elsewhere
	awaitHealth(t, c, "c", target, healthy, true)
	a.engine.stop(target)
	awaitHealth(t, c, "c", target, unused, true)
	a.engine.set(target, healthy)
	b.engine.stop(target)
	awaitHealth(t, c, "c", target, healthy, true)
	a.stop()
	awaitHealth(t, c, "c", target, dataplane.Health{}, false)

	select {
	case <-changes:
		t.Error("health records signalled the store's change feed")
	default:
	}
}
