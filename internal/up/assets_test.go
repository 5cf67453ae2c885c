package up

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// moat up's --kube-assets-source reaches the embedded script and wins over the environment:
// with MOAT_KUBE_ASSETS_SOURCE=download and an index nobody serves, only a passed "build" (here
// the script's test hook, a stub) can succeed. Nothing touches the network or the real cache.
func TestKubeAssetsPassesSource(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("hack/kube-assets.sh runs on Linux only")
	}
	for _, tool := range []string{"bash", "flock"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	dir := t.TempDir()
	stub := filepath.Join(dir, "build-stub.sh")
	script := "#!/bin/sh\nfor f in kube-apiserver etcd kubectl; do printf '#!/bin/sh\\n' >\"$1/$f\"; chmod 755 \"$1/$f\"; done\n"
	if err := os.WriteFile(stub, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", dir)
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	t.Setenv("TMPDIR", dir)
	t.Setenv("KUBE_VERSION", "v1.37.2")
	t.Setenv("ETCD_VERSION", "v3.6.16")
	t.Setenv("MOAT_KUBE_ASSETS_SOURCE", "download")
	t.Setenv("MOAT_KUBE_ASSETS_INDEX", "http://127.0.0.1:1/envtest-releases.yaml")
	t.Setenv("MOAT_KUBE_ASSETS_BUILD_CMD", stub)
	p := &progress{out: io.Discard, start: time.Now()}

	if _, err := kubeAssets(t.Context(), "", "", p); err == nil || !strings.Contains(err.Error(), "cannot fetch the release index") {
		t.Fatalf("without a source, the environment's download should fail on the index: %v", err)
	}
	got, err := kubeAssets(t.Context(), "", "build", p)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "cache", "moat", "kube", "v1.37.2"); got != want {
		t.Errorf("kube assets in %s, want %s", got, want)
	}
}

// An unknown --kube-assets-source is refused before moat up starts anything.
func TestRunRefusesBadKubeAssetsSource(t *testing.T) {
	dir := t.TempDir()
	err := Run(t.Context(), Options{StateDir: dir, KubeAssetsSource: "fetch", Out: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "--kube-assets-source=fetch") {
		t.Fatalf("moat up with --kube-assets-source=fetch: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("moat up left %d files in its state dir before refusing", len(entries))
	}
}
