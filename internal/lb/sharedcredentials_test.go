package lb

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/awsapi/sigv4"
	"github.com/moatlb/moat/internal/etcdtest"
	"github.com/moatlb/moat/internal/store"
)

// startEtcd runs a one-member etcd cluster for the test and returns its --store value for root;
// the test is skipped without an etcd binary.
func startEtcd(t *testing.T, root string) string {
	t.Helper()
	return "etcd://" + etcdMember(t).Endpoint + root
}

// etcdMember runs a one-member etcd cluster until the test ends; the test is skipped without an
// etcd binary.
func etcdMember(t *testing.T) *etcdtest.Member {
	t.Helper()
	bin, err := etcdtest.Binary()
	if errors.Is(err, etcdtest.ErrNoBinary) {
		t.Skipf("needs etcd: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	member, err := etcdtest.Start(bin, filepath.Join(t.TempDir(), "etcd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(member.Stop)
	return member
}

// openNode opens the etcd store of a node whose data dir is dataDir, closed at the test's end.
func openNode(t *testing.T, storeFlag, dataDir string) *store.Etcd {
	t.Helper()
	st, closeStore, err := openStore(Config{DataDir: dataDir, Store: storeFlag}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeStore)
	return st.(*store.Etcd)
}

func readCredentials(t *testing.T, dataDir string) []byte {
	t.Helper()
	content, err := os.ReadFile(filepath.Join(dataDir, CredentialsFile))
	if err != nil {
		t.Fatal(err)
	}
	return content
}

// TestSharedCredentialsAgreeWhenNodesStartTogether: nodes starting at the same moment on an
// empty store, none with a credentials file, end with one key pair, the store's, in every data
// dir; a node starting later gets it too, its own file replaced.
func TestSharedCredentialsAgreeWhenNodesStartTogether(t *testing.T) {
	storeFlag := startEtcd(t, "/creds")
	const nodes = 4
	dirs := make([]string, nodes)
	stores := make([]*store.Etcd, nodes)
	for i := range nodes {
		dirs[i] = t.TempDir()
		stores[i] = openNode(t, storeFlag, dirs[i])
	}
	var wg sync.WaitGroup
	errs := make([]error, nodes)
	for i := range nodes {
		wg.Go(func() {
			var stop func()
			if stop, errs[i] = shareCredentials(stores[i], dirs[i], slog.New(slog.DiscardHandler)); errs[i] == nil {
				stop()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	creds, err := loadSharedCredentials(stores[0])
	if err != nil {
		t.Fatal(err)
	}
	keys, err := sigv4.ParseKeys("store", []byte(creds.File))
	if err != nil || len(keys) != 1 {
		t.Fatalf("the store's credentials: %v, %v; want one key", keys, err)
	}
	for i, dir := range dirs {
		if got := readCredentials(t, dir); string(got) != creds.File {
			t.Errorf("node %d's credentials file differs from the store's:\n%s\nwant\n%s", i, got, creds.File)
		}
	}

	late := t.TempDir()
	if _, _, err := sigv4.LoadOrCreateFile(filepath.Join(late, CredentialsFile)); err != nil {
		t.Fatal(err)
	}
	stop, err := shareCredentials(openNode(t, storeFlag, late), late, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if got := readCredentials(t, late); string(got) != creds.File {
		t.Errorf("a later node's own credentials file was kept:\n%s\nwant the store's\n%s", got, creds.File)
	}
}

// TestSharedCredentialsSeedFromDataDirAndFollowTheStore: the first node puts its existing
// credentials file in the store (its clients keep working), and every node's copy follows a
// read-only profile added to the store (moat lb credentials add-read-only --store) while it runs;
// adding one to a store without credentials is refused.
func TestSharedCredentialsSeedFromDataDirAndFollowTheStore(t *testing.T) {
	storeFlag := startEtcd(t, "/creds")
	if _, err := AddReadOnlyProfileToStore(Config{Store: storeFlag}, "early"); err == nil || !strings.Contains(err.Error(), "no credentials yet") {
		t.Errorf("adding a profile to a store without credentials: %v, want it refused", err)
	}
	first, second := t.TempDir(), t.TempDir()
	if _, _, err := sigv4.LoadOrCreateFile(filepath.Join(first, CredentialsFile)); err != nil {
		t.Fatal(err)
	}
	own := readCredentials(t, first)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, b := openNode(t, storeFlag, first), openNode(t, storeFlag, second)
	for _, node := range []struct {
		st  *store.Etcd
		dir string
	}{{a, first}, {b, second}} {
		stop, err := shareCredentials(node.st, node.dir, log)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
	}
	if got := readCredentials(t, second); !bytes.Equal(got, own) {
		t.Fatalf("second node's credentials:\n%s\nwant the first node's own file\n%s", got, own)
	}

	id, err := AddReadOnlyProfileToStore(Config{Store: storeFlag}, "reader")
	if err != nil {
		t.Fatal(err)
	}
	changed, err := loadSharedCredentials(a)
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := sigv4.ParseKeys("store", []byte(changed.File)); err != nil || !keys[id].ReadOnly || len(keys) != 2 {
		t.Fatalf("the store's credentials after adding a read-only profile: %v, %v", keys, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, dir := range []string{first, second} {
		for string(readCredentials(t, dir)) != changed.File {
			if time.Now().After(deadline) {
				t.Fatalf("%s still holds\n%s\nafter the store's record changed", dir, readCredentials(t, dir))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
