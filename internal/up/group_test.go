package up

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// fakeUpEnv makes the test binary stand in for moat up (see fakeUp).
const fakeUpEnv = "MOAT_TEST_FAKE_UP"

func TestMain(m *testing.M) {
	MaybeRunWatchdog()
	if dir := os.Getenv(fakeUpEnv); dir != "" {
		fakeUp(dir)
		return
	}
	os.Exit(m.Run())
}

// fakeUp starts a child as moat up starts etcd, prints its PID, and waits to be killed.
func fakeUp(logDir string) {
	c, err := startChild("sleeper", filepath.Join(logDir, "sleeper.log"), os.Environ(), "sleep", "300")
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	os.Stdout.WriteString(strconv.Itoa(c.cmd.Process.Pid) + "\n")
	time.Sleep(time.Hour)
}

// A moat up killed with kill -9 leaves no child running: Pdeathsig on Linux, the watchdog
// elsewhere (and on Linux with -tags moat_portable).
func TestChildrenDieWithMoatUp(t *testing.T) {
	// The write end becomes the fake moat up's descriptor 3, which has no close-on-exec flag, so
	// every process it starts holds it too: the read end ends once all of them are gone.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	up := exec.Command(os.Args[0], "-test.run=^$")
	up.Env = append(os.Environ(), fakeUpEnv+"="+t.TempDir())
	up.ExtraFiles = []*os.File{w}
	up.Stderr = os.Stderr
	out, err := up.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		up.Process.Kill()
		up.Wait()
		t.Fatalf("the fake moat up did not start its child: %v", err)
	}
	pid, err := strconv.Atoi(line[:len(line)-1])
	if err != nil {
		t.Fatalf("child PID %q: %v", line, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })

	if err := up.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = up.Wait()

	gone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, r)
		close(gone)
	}()
	select {
	case <-gone:
	case <-time.After(20 * time.Second):
		t.Fatalf("20 s after moat up was killed, its child (PID %d) or its watchdog still runs", pid)
	}
}
