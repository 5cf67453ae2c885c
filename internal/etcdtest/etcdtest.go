// Package etcdtest starts real etcd members for tests, from the etcd binary that
// hack/kube-assets.sh builds and caches.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// ErrNoBinary says that no etcd binary was found: tests skip, naming where they looked.
var ErrNoBinary = errors.New("no etcd binary")

// Binary returns the etcd binary of the kube assets: in $KUBEBUILDER_ASSETS if set, else in
// hack/kube-assets.sh's cache (${XDG_CACHE_HOME:-$HOME/.cache}/moat/kube/<version>/, the newest
// version first). It never builds them: run hack/kube-assets.sh for that.
func Binary() (string, error) {
	var dirs []string
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		dirs = append(dirs, dir)
	}
	cache := os.Getenv("XDG_CACHE_HOME") // where hack/kube-assets.sh puts it, on every OS
	if !filepath.IsAbs(cache) {
		cache = filepath.Join(os.Getenv("HOME"), ".cache")
	}
	versions, _ := filepath.Glob(filepath.Join(cache, "moat", "kube", "v*"))
	slices.Reverse(versions) // lexical order: good enough to prefer a newer patch release
	dirs = append(dirs, versions...)
	for _, dir := range dirs {
		bin := filepath.Join(dir, "etcd")
		if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return bin, nil
		}
	}
	return "", fmt.Errorf("%w in $KUBEBUILDER_ASSETS or the kube assets cache (%s); run hack/kube-assets.sh to build one", ErrNoBinary, strings.Join(dirs, ", "))
}

// Member is one running etcd, a cluster of its own, serving clients on loopback.
type Member struct {
	Endpoint string // host:port of its client URL
	cmd      *exec.Cmd
	exited   chan struct{}
	log      string
}

// startTimeout bounds how long a member may take to become healthy on a busy machine.
const startTimeout = 60 * time.Second

// Start runs a member of binary with its data in dataDir (created), and waits until it is healthy.
// Stop it with Stop.
func Start(binary, dataDir string) (*Member, error) {
	var err error
	for range 3 { // the free ports found may be taken before etcd binds them
		var m *Member
		if m, err = start(binary, dataDir); err == nil {
			return m, nil
		}
		if err := os.RemoveAll(dataDir); err != nil {
			return nil, err
		}
	}
	return nil, err
}

func start(binary, dataDir string) (*Member, error) {
	clientPort, err := freePort()
	if err != nil {
		return nil, err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, err
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	logPath := dataDir + ".log"
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	m := &Member{Endpoint: fmt.Sprintf("127.0.0.1:%d", clientPort), exited: make(chan struct{}), log: logPath}
	m.cmd = exec.Command(binary,
		"--name", "test", "--data-dir", dataDir,
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "test="+peerURL, "--log-level", "warn")
	m.cmd.Stdout, m.cmd.Stderr = logFile, logFile
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = m.cmd.Wait(); close(m.exited) }()
	if err := m.awaitHealthy(clientURL + "/health"); err != nil {
		m.Stop()
		return nil, fmt.Errorf("etcd member on %s: %w; its log (%s):\n%s", m.Endpoint, err, logPath, m.logTail())
	}
	return m, nil
}

func (m *Member) awaitHealthy(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-m.exited:
			return errors.New("exited before it was healthy")
		case <-ctx.Done():
			return fmt.Errorf("not healthy after %s", startTimeout)
		case <-tick.C:
		}
	}
}

func (m *Member) logTail() string {
	b, _ := os.ReadFile(m.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Pause stops the member's process without killing it, as a machine that hangs: clients get no
// answers until Resume.
func (m *Member) Pause() error { return m.cmd.Process.Signal(syscall.SIGSTOP) }

func (m *Member) Resume() error { return m.cmd.Process.Signal(syscall.SIGCONT) }

// Stop kills the member (as a crash would) and waits until it has exited.
func (m *Member) Stop() {
	_ = m.cmd.Process.Kill() // also ends a paused one
	<-m.exited
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
