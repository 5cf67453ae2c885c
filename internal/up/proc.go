package up

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// child is a program moat up started: etcd, kube-apiserver or moat controller. It runs in its own
// process group (Ctrl-C in the terminal reaches moat up only, which stops children in order) and
// dies with moat up (startGroup: Pdeathsig on Linux, a watchdog elsewhere), so a crashed moat up
// leaves nothing running.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // valid once done is closed
}

// startChild starts path with args, its output appended to logPath.
func startChild(name, logPath string, env []string, path string, args ...string) (*child, error) {
	logFile, err := openLog(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = env
	release, err := startGroup(cmd)
	if err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		release()
		logFile.Close()
		close(c.done)
	}()
	return c, nil
}

// exited reports whether the child has ended.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// failure describes a child that ended on its own, with the end of its log.
func (c *child) failure() error {
	return fmt.Errorf("%s exited (%v); the end of its log (%s):\n%s", c.name, c.err, c.logPath, logTail(c.logPath, 20))
}

// stop asks the child's process group to end (SIGTERM) and kills it after grace.
func (c *child) stop(grace time.Duration) {
	if c.exited() {
		return
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}

// openLog opens a fresh log file; the previous run's log is kept as <path>.1.
func openLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); err == nil {
		_ = os.Rename(path, path+".1")
	}
	return os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
}

// logTail returns the last n lines of a log file, indented.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "    (" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString("    " + l + "\n")
	}
	return strings.TrimRight(b.String(), "\n")
}

// resolveAddr turns host:0 into host:<a free port>; other addresses are checked to be free, so
// that a port in use fails with a clear message before anything starts.
//
// It returns the address with its port (a free one for host:0) and the listener that holds it:
// the caller closes it just before a child binds the address, so that nothing moat up binds
// meanwhile (moat lb's own host:0 addresses) is given the same port.
func resolveAddr(flag, addr string) (string, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, fmt.Errorf("--%s %q: %w", flag, addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return "", nil, fmt.Errorf("--%s %s is in use (is another moat up running?): choose another address with --%s, or host:0 for any free port", flag, addr, flag)
		}
		return "", nil, fmt.Errorf("--%s %s: %w", flag, addr, err)
	}
	if port == "0" {
		return net.JoinHostPort(host, fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)), ln, nil
	}
	return addr, ln, nil
}

// poll calls check every interval until it returns true or an error, ctx ends, or the deadline.
func poll(ctx context.Context, interval time.Duration, check func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := check()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func hostOf(addr string) string {
	h, _, _ := net.SplitHostPort(addr)
	return h
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func isConnRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
