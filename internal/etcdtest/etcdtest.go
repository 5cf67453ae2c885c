// Package etcdtest starts real etcd members for tests, from the etcd binary that
// hack/kube-assets.sh builds and caches.
package etcdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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

// Member is one running etcd member, serving clients on loopback.
type Member struct {
	Endpoint string // host:port of its client URL
	metrics  string // base URL of its plain listener for /health and /metrics
	cmd      *exec.Cmd
	exited   chan struct{}
	log      string
}

// startTimeout bounds how long members may take to become healthy on a busy machine.
const startTimeout = 60 * time.Second

// Start runs a cluster of one member with its data in dataDir, and waits until it is healthy.
// Stop it with Stop.
func Start(binary, dataDir string) (*Member, error) {
	members, err := startClusterRetrying(binary, dataDir, 1, nil)
	if err != nil {
		return nil, err
	}
	return members[0], nil
}

// TLSFiles are the PEM files of a member that serves clients over TLS and asks them for
// certificates signed by CAFile.
type TLSFiles struct {
	CertFile, KeyFile string // the member's, for 127.0.0.1
	CAFile            string
}

// StartTLS is Start for a member that serves clients over TLS only, with client certificates.
func StartTLS(binary, dataDir string, files TLSFiles) (*Member, error) {
	members, err := startClusterRetrying(binary, dataDir, 1, &files)
	if err != nil {
		return nil, err
	}
	return members[0], nil
}

// StartCluster runs a cluster of n members, their data in dir/member-<i> (created), and waits
// until every one is healthy (a leader is elected). Stop each with Stop.
func StartCluster(binary, dir string, n int) ([]*Member, error) {
	return startClusterRetrying(binary, dir, n, nil)
}

func startClusterRetrying(binary, dir string, n int, files *TLSFiles) ([]*Member, error) {
	var err error
	for range 3 { // the free ports found may be taken before etcd binds them
		var members []*Member
		if members, err = startCluster(binary, dir, n, files); err == nil {
			return members, nil
		}
		for i := range n {
			if err := os.RemoveAll(filepath.Join(dir, fmt.Sprintf("member-%d", i))); err != nil {
				return nil, err
			}
		}
	}
	return nil, err
}

func startCluster(binary, dir string, n int, files *TLSFiles) ([]*Member, error) {
	clientScheme := "http"
	if files != nil {
		clientScheme = "https"
	}
	clientURLs, peerURLs, healthURLs, initial := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i := range n {
		var ports [3]int
		for j := range ports {
			var err error
			if ports[j], err = freePort(); err != nil {
				return nil, err
			}
		}
		clientURLs[i] = fmt.Sprintf("%s://127.0.0.1:%d", clientScheme, ports[0])
		peerURLs[i] = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		// /health on a plain listener of its own, whatever the client listener asks for.
		healthURLs[i] = fmt.Sprintf("http://127.0.0.1:%d", ports[2])
		initial[i] = fmt.Sprintf("m%d=%s", i, peerURLs[i])
	}
	var members []*Member
	stopAll := func() {
		for _, m := range members {
			m.Stop()
		}
	}
	for i := range n {
		dataDir := filepath.Join(dir, fmt.Sprintf("member-%d", i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		logFile, err := os.Create(dataDir + ".log")
		if err != nil {
			stopAll()
			return nil, err
		}
		m := &Member{Endpoint: strings.TrimPrefix(clientURLs[i], clientScheme+"://"), metrics: healthURLs[i], exited: make(chan struct{}), log: logFile.Name()}
		args := []string{"--name", fmt.Sprintf("m%d", i), "--data-dir", dataDir,
			"--listen-client-urls", clientURLs[i], "--advertise-client-urls", clientURLs[i],
			"--listen-peer-urls", peerURLs[i], "--initial-advertise-peer-urls", peerURLs[i],
			"--listen-metrics-urls", healthURLs[i],
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--log-level", "warn"}
		if files != nil {
			args = append(args, "--cert-file", files.CertFile, "--key-file", files.KeyFile,
				"--trusted-ca-file", files.CAFile, "--client-cert-auth")
		}
		m.cmd = exec.Command(binary, args...)
		m.cmd.Stdout, m.cmd.Stderr = logFile, logFile
		err = m.cmd.Start()
		logFile.Close()
		if err != nil {
			stopAll()
			return nil, err
		}
		go func() { _ = m.cmd.Wait(); close(m.exited) }()
		members = append(members, m)
	}
	for _, m := range members {
		if err := m.awaitHealthy(m.metrics + "/health"); err != nil {
			stopAll()
			return nil, fmt.Errorf("etcd member on %s: %w; its log (%s):\n%s", m.Endpoint, err, m.log, m.logTail())
		}
	}
	return members, nil
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
// answers until Resume. It returns once every thread has stopped: the signal only asks them to,
// and on a busy machine a thread may answer a request or two before it does.
func (m *Member) Pause() error {
	if err := m.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		stopped, err := allThreadsStopped(m.cmd.Process.Pid)
		if err != nil || stopped {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd (pid %d) did not stop within 10s of SIGSTOP", m.cmd.Process.Pid)
		}
		time.Sleep(time.Millisecond) // poll interval
	}
}

// allThreadsStopped says whether every thread of process pid is in the stopped state, as
// /proc/<pid>/task/<tid>/stat says. Without /proc (not Linux) there is no telling: it says yes.
func allThreadsStopped(pid int) (bool, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return true, err
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(task)
		if err != nil {
			return false, nil // a thread that ended while we looked: look again
		}
		// The state follows the command name, which is in parentheses and may hold any byte.
		i := bytes.LastIndex(stat, []byte(") "))
		if i < 0 || i+2 >= len(stat) {
			return false, fmt.Errorf("%s: no state in %q", task, stat)
		}
		if stat[i+2] != 'T' {
			return false, nil
		}
	}
	return true, nil
}

func (m *Member) Resume() error { return m.cmd.Process.Signal(syscall.SIGCONT) }

// IsLeader says whether the member is its cluster's raft leader now, as its etcd_server_is_leader
// metric says.
func (m *Member) IsLeader() (bool, error) {
	resp, err := http.Get(m.metrics + "/metrics")
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return false, err
	}
	for line := range strings.Lines(string(body)) {
		if value, ok := strings.CutPrefix(line, "etcd_server_is_leader "); ok {
			return strings.TrimSpace(value) == "1", nil
		}
	}
	return false, fmt.Errorf("etcd member on %s: no etcd_server_is_leader in its metrics", m.Endpoint)
}

// Stop kills the member with SIGKILL (as a crash would, no graceful shutdown) and waits until it
// has exited.
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
