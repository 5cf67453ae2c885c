package lb

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/moatlb/moat/internal/lockfile"
	"github.com/moatlb/moat/internal/store"
	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// etcdScheme starts a --store that names an etcd cluster.
const etcdScheme = "etcd://"

// validateStore checks --store and the TLS flags that go with it.
func (cfg Config) validateStore() error {
	if cfg.Store == "" {
		if cfg.StoreCAFile != "" || cfg.StoreCertFile != "" || cfg.StoreKeyFile != "" {
			return errors.New("--store-cacert, --store-cert and --store-key: only with --store etcd://…")
		}
		return nil
	}
	if (cfg.StoreCertFile == "") != (cfg.StoreKeyFile == "") {
		return errors.New("--store-cert and --store-key: give both or neither")
	}
	_, err := parseStore(cfg.Store)
	return err
}

// storeTLS is the client TLS configuration the flags ask for: nil without any of them.
func (cfg Config) storeTLS() (*tls.Config, error) {
	if cfg.StoreCAFile == "" && cfg.StoreCertFile == "" && cfg.StoreKeyFile == "" {
		return nil, nil
	}
	info := transport.TLSInfo{TrustedCAFile: cfg.StoreCAFile, CertFile: cfg.StoreCertFile, KeyFile: cfg.StoreKeyFile}
	tlsCfg, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("--store TLS: %w", err)
	}
	return tlsCfg, nil
}

// parseStore reads --store: etcd://host:port[,host:port…][/root], the cluster's client
// endpoints and the key prefix under which this deployment's records live (/moat by default;
// deployments sharing a cluster need different ones).
func parseStore(s string) (store.EtcdConfig, error) {
	bad := func(why string, args ...any) error {
		return fmt.Errorf("--store %q: %s", s, fmt.Sprintf(why, args...))
	}
	rest, ok := strings.CutPrefix(s, etcdScheme)
	if !ok {
		return store.EtcdConfig{}, bad("want %shost:port[,host:port…][/root], or no --store for the state in --data-dir", etcdScheme)
	}
	hosts, root, _ := strings.Cut(rest, "/")
	cfg := store.EtcdConfig{Root: "/" + root}
	if root == "" {
		cfg.Root = ""
	}
	for ep := range strings.SplitSeq(hosts, ",") {
		host, port, err := net.SplitHostPort(ep)
		if err != nil {
			return store.EtcdConfig{}, bad("endpoint %q: want host:port", ep)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || host == "" {
			return store.EtcdConfig{}, bad("endpoint %q: want host:port with a port from 1 to 65535", ep)
		}
		cfg.Endpoints = append(cfg.Endpoints, ep)
	}
	if strings.Contains(root, "//") || strings.HasSuffix(root, "/") {
		return store.EtcdConfig{}, bad("root %q: want names joined by single slashes", cfg.Root)
	}
	return cfg, nil
}

// openStore opens the store --store names: the data dir's state file when it names none, else
// the etcd cluster. With etcd the data dir still holds this node's credentials and endpoints, so
// it is locked as the state file locks it: one moat lb per data dir.
func openStore(cfg Config, log *slog.Logger) (st store.Store, closeStore func(), err error) {
	if cfg.Store == "" {
		bolt, err := openState(cfg.DataDir, cfg.StartFresh, log)
		if err != nil {
			return nil, nil, err
		}
		return bolt, func() { bolt.Close() }, nil
	}
	release, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, nil, err
	}
	etcd, err := openEtcd(cfg)
	if err != nil {
		release()
		return nil, nil, err
	}
	log.Info("state in etcd", "store", cfg.Store)
	return etcd, func() { etcd.Close(); release() }, nil
}

// lockDataDir takes the lock of a data dir with --store (the state file's own lock guards it
// without): one moat lb, or one migrate, at a time.
func lockDataDir(dataDir string) (release func(), err error) {
	release, err = lockfile.Acquire(filepath.Join(dataDir, "lock"))
	if errors.Is(err, lockfile.ErrHeld) {
		return nil, fmt.Errorf("data dir %s is in use by another moat lb: %w", dataDir, err)
	}
	return release, err
}

// openEtcd connects to the etcd store --store and its TLS flags name.
func openEtcd(cfg Config) (*store.Etcd, error) {
	etcdCfg, err := parseStore(cfg.Store)
	if err != nil {
		return nil, err
	}
	if etcdCfg.TLS, err = cfg.storeTLS(); err != nil {
		return nil, err
	}
	etcd, err := store.OpenEtcd(etcdCfg)
	if err != nil {
		return nil, fmt.Errorf("--store: %w", err)
	}
	return etcd, nil
}
