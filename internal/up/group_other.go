//go:build !linux || moat_portable

package up

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
)

// Systems other than Linux have no Pdeathsig, and etcd and kube-apiserver cannot be made to watch
// for moat up's death themselves. So moat up starts one watchdog: this same binary again, with
// watchdogEnv set, reading a pipe from moat up. moat up writes "+<pgid>" to it when it starts a
// child's process group and "-<pgid>" once it has waited for that child. When the pipe ends —
// moat up exited or died, kill -9 included, since the kernel closes a dead process's descriptors —
// the watchdog sends SIGKILL to every group still listed, and exits. Killing the group rather
// than the process also ends what a child started itself (the compilers under
// hack/kube-assets.sh). The Linux build uses this path too with the moat_portable tag, so that its
// tests cover it.

// watchdogEnv, set to 1, makes MaybeRunWatchdog run the watchdog.
const watchdogEnv = "MOAT_UP_WATCHDOG"

// MaybeRunWatchdog runs the watchdog and exits if this process was started as moat up's
// watchdog; otherwise it returns at once. main calls it first.
func MaybeRunWatchdog() {
	if os.Getenv(watchdogEnv) != "1" {
		return
	}
	// Only the end of the pipe ends the watchdog: a Ctrl-C, a hangup or a SIGTERM meant for moat
	// up must not take away the guard of the children moat up is still stopping.
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGTERM)
	runWatchdog(os.Stdin)
	os.Exit(0)
}

// runWatchdog reads "+<pgid>" and "-<pgid>" lines until r ends, then kills the groups left.
func runWatchdog(r io.Reader) {
	groups := map[int]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if len(line) < 2 {
			continue
		}
		pgid, err := strconv.Atoi(line[1:])
		if err != nil || pgid <= 1 {
			continue
		}
		switch line[0] {
		case '+':
			groups[pgid] = true
		case '-':
			delete(groups, pgid)
		}
	}
	for pgid := range groups {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

// watchdog is moat up's end of the pipe; it is started with the first child.
var watchdog struct {
	once sync.Once
	err  error
	mu   sync.Mutex
	w    *os.File
}

// watchdogSend writes one line to the watchdog, starting it first if need be.
func watchdogSend(line string) error {
	watchdog.once.Do(func() { watchdog.w, watchdog.err = startWatchdog() })
	if watchdog.err != nil {
		return watchdog.err
	}
	watchdog.mu.Lock()
	defer watchdog.mu.Unlock()
	if _, err := io.WriteString(watchdog.w, line+"\n"); err != nil {
		return fmt.Errorf("the watchdog is gone: %w", err)
	}
	return nil
}

func startWatchdog() (*os.File, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command(self)
	cmd.Env = []string{watchdogEnv + "=1"}
	cmd.Stdin = r
	// Its own group: Ctrl-C in the terminal must not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, err
	}
	go func() { _ = cmd.Wait() }()
	return w, nil
}

// startGroup starts cmd as the leader of a process group of its own, so that Ctrl-C in the
// terminal reaches moat up only, which stops its children in order, and hands the group to the
// watchdog, which kills it if moat up ends first. A child the watchdog cannot guard is not left
// running. Call release once the child has been waited for.
func startGroup(cmd *exec.Cmd) (release func(), err error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pgid := cmd.Process.Pid
	if err := watchdogSend("+" + strconv.Itoa(pgid)); err != nil {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		_ = cmd.Wait()
		return nil, errors.Join(errors.New("no watchdog to stop it with moat up"), err)
	}
	return func() { _ = watchdogSend("-" + strconv.Itoa(pgid)) }, nil
}
