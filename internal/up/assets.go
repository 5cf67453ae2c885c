package up

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moatlb/moat/hack"
)

// kubeAssets returns the directory holding kube-apiserver, etcd and kubectl: dir if given,
// otherwise what hack/kube-assets.sh (embedded in the binary) prints — the first time it
// downloads the envtest release (seconds) or builds them from the Go module proxy (minutes), as
// source says (empty: the script's default), and afterwards it answers from its cache.
func kubeAssets(ctx context.Context, dir, source string, p *progress) (string, error) {
	if dir != "" {
		return dir, checkAssets(dir)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		return "", errors.New("moat up needs bash to fetch the Kubernetes API server (hack/kube-assets.sh); install bash, or pass --kube-assets with a directory holding kube-apiserver, etcd and kubectl")
	}
	script, err := os.CreateTemp("", "moat-kube-assets-*.sh")
	if err != nil {
		return "", err
	}
	defer os.Remove(script.Name())
	if _, err := script.WriteString(hack.KubeAssetsScript); err != nil {
		script.Close()
		return "", err
	}
	if err := script.Close(); err != nil {
		return "", err
	}

	args := []string{script.Name()}
	if source != "" {
		args = append(args, "--kube-assets-source="+source)
	}
	cmd := exec.Command(bash, args...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	// Its own process group, which dies with moat up: the build's compilers too.
	release, err := startGroup(cmd)
	if err != nil {
		return "", fmt.Errorf("run hack/kube-assets.sh: %w", err)
	}

	// Stream the script's progress lines (download bytes, build steps); while it is quiet
	// (compiling for minutes), say so every 30 s, so the first start shows progress rather than
	// silence.
	var mu sync.Mutex
	lastLine := time.Now()
	var lines []string
	streamed := make(chan struct{})
	go func() {
		defer close(streamed)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			lastLine = time.Now()
			lines = append(lines, line)
			mu.Unlock()
			p.detail(line)
		}
	}()
	waited := make(chan error, 1)
	go func() {
		<-streamed
		err := cmd.Wait()
		release()
		waited <- err
	}()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	start := time.Now()
	for {
		select {
		case err := <-waited:
			if err != nil {
				return "", assetsError(err, lines)
			}
			out := strings.TrimSpace(stdout.String())
			if i := strings.LastIndexByte(out, '\n'); i >= 0 {
				out = out[i+1:]
			}
			if out == "" {
				return "", errors.New("hack/kube-assets.sh printed no directory")
			}
			return out, checkAssets(out)
		case <-ctx.Done():
			// The script traps TERM and removes its half-built files.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-waited:
			case <-time.After(10 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-waited
			}
			return "", ctx.Err()
		case <-tick.C:
			mu.Lock()
			quiet := time.Since(lastLine)
			mu.Unlock()
			if quiet >= 30*time.Second {
				p.detail(fmt.Sprintf("kube-assets: still working (%s so far)…", time.Since(start).Round(time.Second)))
				mu.Lock()
				lastLine = time.Now()
				mu.Unlock()
			}
		}
	}
}

// assetsError explains a failed first start: without a release download, the usual cause on a
// fresh machine is a missing Go toolchain, which the build needs.
func assetsError(err error, lines []string) error {
	tail := lines
	if len(tail) > 15 {
		tail = tail[len(tail)-15:]
	}
	hint := "pass --kube-assets with a directory holding kube-apiserver, etcd and kubectl to use binaries from elsewhere"
	if _, lookErr := exec.LookPath("go"); lookErr != nil {
		hint = "the build from the Go module proxy needs the Go toolchain (1.26 or newer) in PATH, which is missing: install Go and run moat up again (later starts use the cache and need neither Go nor the network), or " + hint
	}
	return fmt.Errorf("cannot fetch the Kubernetes API server: hack/kube-assets.sh failed (%v); its last lines:\n    %s\n(%s)", err, strings.Join(tail, "\n    "), hint)
}

func checkAssets(dir string) error {
	for _, bin := range []string{"etcd", "kube-apiserver", "kubectl"} {
		fi, err := os.Stat(filepath.Join(dir, bin))
		if err != nil {
			return fmt.Errorf("kube assets %s: %w", dir, err)
		}
		if fi.Mode()&0o111 == 0 {
			return fmt.Errorf("kube assets: %s is not executable", filepath.Join(dir, bin))
		}
	}
	return nil
}
