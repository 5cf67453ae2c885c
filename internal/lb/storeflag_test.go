package lb

import (
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moatlb/moat/internal/etcdtest"
	"github.com/moatlb/moat/internal/lbtest"
	"github.com/moatlb/moat/internal/store"
)

func TestParseStore(t *testing.T) {
	for in, want := range map[string]store.EtcdConfig{
		"etcd://127.0.0.1:2379":             {Endpoints: []string{"127.0.0.1:2379"}},
		"etcd://a:1,[::1]:2/moat-prod":      {Endpoints: []string{"a:1", "[::1]:2"}, Root: "/moat-prod"},
		"etcd://etcd.example:2379/a/b-c.d_": {Endpoints: []string{"etcd.example:2379"}, Root: "/a/b-c.d_"},
	} {
		got, err := parseStore(in)
		if err != nil || !slices.Equal(got.Endpoints, want.Endpoints) || got.Root != want.Root {
			t.Errorf("parseStore(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}

// TestOpenStoreOnEtcd: two data dirs (two nodes) with one --store share the state; a second
// moat lb on the same data dir is refused; /readyz says when the store cannot be reached.
func TestOpenStoreOnEtcd(t *testing.T) {
	member := etcdMember(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	node := func(dataDir string) Config {
		return Config{DataDir: dataDir, Store: "etcd://" + member.Endpoint + "/lbtest"}
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	a, closeA, err := openStore(node(dirA), log)
	if err != nil {
		t.Fatal(err)
	}
	defer closeA()
	if _, ok := a.(*store.Etcd); !ok {
		t.Fatalf("--store etcd:// opened a %T", a)
	}
	if _, _, err := openStore(node(dirA), log); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second moat lb on data dir A: %v, want it refused as in use", err)
	}
	b, closeB, err := openStore(node(dirB), log)
	if err != nil {
		t.Fatal(err)
	}
	defer closeB()
	if err := a.Update(func(tx store.Tx) error { return store.Save(tx, "things", "x", "from a") }); err != nil {
		t.Fatal(err)
	}
	err = b.View(func(tx store.Tx) error {
		got, err := store.Load[string](tx, "things", "x")
		if err == nil && got != "from a" {
			t.Errorf("node b reads %q, want node a's write", got)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	readyz := func() string {
		rec := httptest.NewRecorder()
		(&readiness{store: a}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		if rec.Code == http.StatusOK {
			t.Fatal("/readyz ready without a data plane")
		}
		return rec.Body.String()
	}
	if body := readyz(); !strings.Contains(body, "data plane starting") {
		t.Errorf("/readyz with etcd up: %q, want only the data plane missing", body)
	}
	member.Stop()
	if body := readyz(); strings.Contains(body, "data plane starting") {
		t.Errorf("/readyz with etcd down: %q, want the store's error", body)
	}
}

// TestOpenStoreOnEtcdOverTLS: the TLS flags reach etcd, which serves only clients with a
// certificate of its CA.
func TestOpenStoreOnEtcdOverTLS(t *testing.T) {
	bin, err := etcdtest.Binary()
	if errors.Is(err, etcdtest.ErrNoBinary) {
		t.Skipf("needs etcd: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := lbtest.NewCA(t)
	server := ca.IssueWith(t, "etcd", func(c *x509.Certificate) {
		c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	})
	client := ca.IssueWith(t, "moat lb", func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} })
	write := func(name string, pem []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	files := etcdtest.TLSFiles{CertFile: write("server.pem", server.PEM), KeyFile: write("server-key.pem", server.KeyPEM), CAFile: write("ca.pem", ca.PEM)}
	member, err := etcdtest.StartTLS(bin, filepath.Join(dir, "etcd"), files)
	if err != nil {
		t.Fatal(err)
	}
	defer member.Stop()
	cfg := validConfig()
	cfg.DataDir, cfg.Store = t.TempDir(), "etcd://"+member.Endpoint
	cfg.StoreCAFile, cfg.StoreCertFile, cfg.StoreKeyFile = files.CAFile, write("client.pem", client.PEM), write("client-key.pem", client.KeyPEM)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	st, closeStore, err := openStore(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore()
	if err := st.Update(func(tx store.Tx) error { return store.Save(tx, "things", "x", "over TLS") }); err != nil {
		t.Fatal(err)
	}
}
