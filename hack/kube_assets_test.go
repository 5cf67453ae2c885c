package hack

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The tests run kube-assets.sh as moat up does (the embedded copy), against a local server that
// plays the envtest release index and its archive, with the cache, HOME and TMPDIR in temporary
// directories: nothing reaches the internet or the real ~/.cache/moat/kube, and the build from
// the Go module proxy is replaced by a stub through the MOAT_KUBE_ASSETS_BUILD_CMD test hook.

const testKubeVersion = "v1.37.2"

var assetNames = []string{"kube-apiserver", "etcd", "kubectl"}

// envtestArchive is a release archive as envtest publishes it: the three binaries under
// controller-tools/envtest/, here shell stand-ins that print their name.
func envtestArchive(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, d := range []string{"controller-tools/", "controller-tools/envtest/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range assetNames {
		body := fmt.Sprintf("#!/bin/sh\necho %s from the release archive\n", name)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "controller-tools/envtest/" + name, Mode: 0o755, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// releaseServer serves a release index at /envtest-releases.yaml and the archive at
// /envtest.tar.gz, and counts the requests for each.
type releaseServer struct {
	*httptest.Server
	indexHits, archiveHits atomic.Int32
}

// newReleaseServer lists the archive under version with hash (the archive's true sha512 if
// empty), for every platform the script may run on.
func newReleaseServer(t *testing.T, version, hash string) *releaseServer {
	t.Helper()
	archive := envtestArchive(t)
	if hash == "" {
		sum := sha512.Sum512(archive)
		hash = hex.EncodeToString(sum[:])
	}
	s := &releaseServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /envtest-releases.yaml", func(w http.ResponseWriter, _ *http.Request) {
		s.indexHits.Add(1)
		fmt.Fprintf(w, "releases:\n  %s:\n", version)
		for _, platform := range []string{"linux-amd64", "linux-arm64", "darwin-amd64", "darwin-arm64"} {
			fmt.Fprintf(w, "    envtest-%s-%s.tar.gz:\n      hash: %s\n      selfLink: %s/envtest.tar.gz\n", version, platform, hash, s.URL)
		}
	})
	mux.HandleFunc("GET /envtest.tar.gz", func(w http.ResponseWriter, _ *http.Request) {
		s.archiveHits.Add(1)
		_, _ = w.Write(archive)
	})
	s.Server = httptest.NewUnstartedServer(mux) // set before the handlers can read s.URL
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *releaseServer) indexURL() string { return s.URL + "/envtest-releases.yaml" }

// unreachableURL is an index URL on a loopback port that nothing listens on.
func unreachableURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + "/envtest-releases.yaml"
}

// assetsEnv is a temporary home for the script: its cache, HOME, TMPDIR, the embedded script
// and the build stub.
type assetsEnv struct {
	cacheHome, script, buildStub string
}

func newAssetsEnv(t *testing.T) *assetsEnv {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("hack/kube-assets.sh runs on Linux only (flock, GNU mv -T)")
	}
	for _, tool := range []string{"bash", "curl", "tar", "flock", "sha512sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("kube-assets.sh tests need %s in PATH: %v", tool, err)
		}
	}
	dir := t.TempDir()
	e := &assetsEnv{
		cacheHome: filepath.Join(dir, "cache"),
		script:    filepath.Join(dir, "kube-assets.sh"),
		buildStub: filepath.Join(dir, "build-stub.sh"),
	}
	if err := os.WriteFile(e.script, []byte(KubeAssetsScript), 0o755); err != nil {
		t.Fatal(err)
	}
	stub := "#!/bin/sh\nset -e\nfor f in kube-apiserver etcd kubectl; do\n\tprintf '#!/bin/sh\\necho %s built by the stub\\n' \"$f\" >\"$1/$f\"\n\tchmod 755 \"$1/$f\"\ndone\n"
	if err := os.WriteFile(e.buildStub, []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"home", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("HOME", filepath.Join(dir, "home"))
	t.Setenv("TMPDIR", filepath.Join(dir, "tmp"))
	return e
}

func (e *assetsEnv) assetsDir() string {
	return filepath.Join(e.cacheHome, "moat", "kube", testKubeVersion)
}

// run runs the script with the given index URL and arguments; the build is always the stub.
func (e *assetsEnv) run(t *testing.T, indexURL string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{e.script}, args...)...)
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case name == "KUBE_VERSION", name == "ETCD_VERSION", name == "XDG_CACHE_HOME",
			strings.HasPrefix(name, "MOAT_KUBE_ASSETS_"):
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env,
		"XDG_CACHE_HOME="+e.cacheHome,
		"KUBE_VERSION="+testKubeVersion,
		"MOAT_KUBE_ASSETS_INDEX="+indexURL,
		"MOAT_KUBE_ASSETS_BUILD_CMD="+e.buildStub)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	t.Logf("kube-assets.sh %s:\n%s", strings.Join(args, " "), errOut.String())
	return out.String(), errOut.String(), err
}

// checkAssets asserts that the script printed the cache directory, that it holds the three
// binaries, executable and saying madeBy, and that its stamp begins with stamp.
func (e *assetsEnv) checkAssets(t *testing.T, stdout, madeBy, stamp string) {
	t.Helper()
	if want := e.assetsDir() + "\n"; stdout != want {
		t.Fatalf("stdout = %q, want exactly one line %q", stdout, want)
	}
	for _, name := range assetNames {
		path := filepath.Join(e.assetsDir(), name)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable (%v)", path, fi.Mode())
		}
		said, err := exec.Command(path).Output()
		if err != nil {
			t.Fatalf("run %s: %v", path, err)
		}
		if want := name + " " + madeBy + "\n"; string(said) != want {
			t.Errorf("%s says %q, want %q", path, said, want)
		}
	}
	got, err := os.ReadFile(filepath.Join(e.assetsDir(), ".stamp"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(got), stamp) {
		t.Errorf(".stamp = %q, want it to begin with %q", got, stamp)
	}
}

// checkNoCache asserts that a failed run left neither the cache directory nor temporary files.
func (e *assetsEnv) checkNoCache(t *testing.T) {
	t.Helper()
	root := filepath.Dir(e.assetsDir())
	entries, err := os.ReadDir(root)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, entry := range entries {
		if entry.Name() != "."+testKubeVersion+".lock" {
			t.Errorf("a failed run left %s in the cache", filepath.Join(root, entry.Name()))
		}
	}
}

const (
	downloadStamp = "kube=" + testKubeVersion + " source=download sha512="
	buildStamp    = "kube=" + testKubeVersion + " etcd=v3.6.16"
)

func TestKubeAssetsDownloadIsVerifiedAndCached(t *testing.T) {
	e := newAssetsEnv(t)
	srv := newReleaseServer(t, testKubeVersion, "")

	stdout, stderr, err := e.run(t, srv.indexURL(), "--kube-assets-source=download")
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	e.checkAssets(t, stdout, "from the release archive", downloadStamp)
	if !strings.Contains(stderr, "matches the release index") {
		t.Errorf("stderr does not report the verified checksum")
	}
	if !strings.Contains(stderr, "received") {
		t.Errorf("stderr shows no download progress in bytes")
	}

	// The cache answers the next run, whichever source it asks for, without a request.
	for _, source := range []string{"download", "auto", "build"} {
		stdout, _, err := e.run(t, srv.indexURL(), "--kube-assets-source="+source)
		if err != nil {
			t.Fatalf("cached run with %s: %v", source, err)
		}
		e.checkAssets(t, stdout, "from the release archive", downloadStamp)
	}
	if got := srv.archiveHits.Load(); got != 1 {
		t.Errorf("the archive was requested %d times, want once", got)
	}
	if got := srv.indexHits.Load(); got != 1 {
		t.Errorf("the index was requested %d times, want once", got)
	}
}

// TestKubeAssetsSources: download fails clearly and leaves no cache when the index is
// unreachable, lacks the version or gives a wrong checksum; auto then builds instead; build never
// asks the index.
func TestKubeAssetsSources(t *testing.T) {
	const wrongHash = "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
	for _, tc := range []struct {
		name, source string
		index        func(t *testing.T) (url string, srv *releaseServer)
		wantErr      bool
		wantStderr   string
	}{
		{"download/bad checksum", "download", serving(testKubeVersion, wrongHash), true, "refusing envtest-" + testKubeVersion},
		{"download/unreachable", "download", unreachable, true, "cannot fetch the release index"},
		{"download/no such version", "download", serving("v1.36.0", ""), true, "has no envtest-" + testKubeVersion + "-"},
		{"auto/bad checksum", "auto", serving(testKubeVersion, wrongHash), false, "refusing envtest-" + testKubeVersion},
		{"auto/unreachable", "auto", unreachable, false, "cannot fetch the release index"},
		{"auto/no such version", "auto", serving("v1.36.0", ""), false, "has no envtest-" + testKubeVersion + "-"},
		{"build", "build", serving(testKubeVersion, ""), false, "MOAT_KUBE_ASSETS_BUILD_CMD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newAssetsEnv(t)
			url, srv := tc.index(t)
			stdout, stderr, err := e.run(t, url, "--kube-assets-source="+tc.source)
			if !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr does not say %q", tc.wantStderr)
			}
			if tc.wantErr {
				if err == nil {
					t.Fatalf("succeeded (stdout %q), want a failure", stdout)
				}
				if stdout != "" {
					t.Errorf("a failed run printed %q on stdout", stdout)
				}
				e.checkNoCache(t)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.source == "auto" && !strings.Contains(stderr, "building from the Go module proxy instead") {
				t.Errorf("stderr does not announce the fallback to building")
			}
			e.checkAssets(t, stdout, "built by the stub", buildStamp)
			if tc.source == "build" && srv.indexHits.Load()+srv.archiveHits.Load() != 0 {
				t.Errorf("build asked the release server (%d index, %d archive requests)", srv.indexHits.Load(), srv.archiveHits.Load())
			}
		})
	}
}

func serving(version, hash string) func(t *testing.T) (string, *releaseServer) {
	return func(t *testing.T) (string, *releaseServer) {
		srv := newReleaseServer(t, version, hash)
		return srv.indexURL(), srv
	}
}

func unreachable(t *testing.T) (string, *releaseServer) { return unreachableURL(t), nil }
