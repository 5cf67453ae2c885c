// Package storetest gives tests the store they run against, chosen by the test binary's flag
// -store: bolt (the default), a file in the test's temporary directory; or etcd, a root of its
// own on a three-member etcd cluster that the test binary starts with the first test that needs
// it. So the same tests check both implementations:
//
//	go test ./internal/awsapi -args -store=etcd
//
// A package whose tests use it runs them through Main, which stops the cluster at the end.
package storetest

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/etcdtest"
	"github.com/moatlb/moat/internal/store"
)

var kind = flag.String("store", "bolt", "the store the tests run against: bolt or etcd (a 3-member cluster from the kube assets' etcd)")

// Main runs the tests, then stops the etcd cluster if a test started one. Call it from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	cluster.stop()
	return code
}

// Location is where one store lives: a bolt file or an etcd root. Opening it again, after the
// store was closed, is a restart of the same state.
type Location struct {
	boltPath  string
	endpoints []string
	root      string
}

// New gives the test a location of its own, in the store -store names. With -store=etcd and no
// etcd binary the test is skipped.
func New(t testing.TB) Location {
	t.Helper()
	switch *kind {
	case "bolt":
		return Location{boltPath: filepath.Join(t.TempDir(), "state.db")}
	case "etcd":
		endpoints := cluster.endpoints(t)
		// Fresh for every run of the test (-count), as the cluster outlives them.
		root := fmt.Sprintf("/test/%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), roots.Add(1))
		return Location{endpoints: endpoints, root: root}
	default:
		t.Fatalf("-store=%s: want bolt or etcd", *kind)
		return Location{}
	}
}

var roots atomic.Int64

// Open opens a fresh store for the test, closed when the test ends.
func Open(t testing.TB) store.Store {
	t.Helper()
	st, err := New(t).Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// Open opens the store at the location; the caller closes it.
func (l Location) Open() (store.Store, error) {
	if l.boltPath != "" {
		return store.OpenBolt(l.boltPath)
	}
	// Generous: a loaded machine runs the race detector and three members' fsyncs.
	return store.OpenEtcd(store.EtcdConfig{Endpoints: l.endpoints, Root: l.root, Timeout: 30 * time.Second})
}

// BoltPath is the location's file when the store is bolt, for what only a file has (its mode).
func (l Location) BoltPath() (string, bool) { return l.boltPath, l.boltPath != "" }

// etcdCluster is the test binary's etcd cluster, started by the first test that asks for it.
type etcdCluster struct {
	once    sync.Once
	members []*etcdtest.Member
	dir     string
	err     error
	skip    bool // no etcd binary
}

var cluster etcdCluster

func (c *etcdCluster) endpoints(t testing.TB) []string {
	t.Helper()
	c.once.Do(func() {
		bin, err := etcdtest.Binary()
		if err != nil {
			c.err, c.skip = err, errors.Is(err, etcdtest.ErrNoBinary)
			return
		}
		if c.dir, c.err = os.MkdirTemp("", "storetest-etcd-"); c.err != nil {
			return
		}
		c.members, c.err = etcdtest.StartCluster(bin, c.dir, 3)
	})
	switch {
	case c.skip:
		t.Skipf("-store=etcd: %v", c.err)
	case c.err != nil:
		t.Fatalf("-store=etcd: starting the cluster: %v", c.err)
	}
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.Endpoint)
	}
	return eps
}

func (c *etcdCluster) stop() {
	for _, m := range c.members {
		m.Stop()
	}
	if c.dir != "" {
		os.RemoveAll(c.dir)
	}
}
