package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const testRef = "ghcr.io/moatlb/moat:test"

var (
	amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = v1.Platform{OS: "linux", Architecture: "arm64"}
)

// TestImage builds the image from real moat binaries, reads it back as a registry client would,
// unpacks each platform's filesystem and runs the host platform's entrypoint. Every pass over a
// moat-sized layer costs seconds under -race, so each happens once. In -short mode only the
// host's binary is moat; the other platform's is a small stand-in file rather than a second
// cross-build of moat (minutes on a cold build cache), and the image built around it is checked
// all the same.
func TestImage(t *testing.T) {
	bins := t.TempDir()
	standIn := filepath.Join(bins, "moat-stand-in")
	if err := os.WriteFile(standIn, []byte("stand-in for moat\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var binaries []platformBinary
	for _, p := range []v1.Platform{amd64, arm64} {
		path := standIn
		if !testing.Short() || p.Architecture == runtime.GOARCH {
			path = buildMoat(t, bins, p)
		}
		binaries = append(binaries, platformBinary{platform: p, path: path})
	}

	out := t.TempDir()
	created := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	build := func(name string, created time.Time, binaries []platformBinary) (layoutDir, dockerTar string) {
		t.Helper()
		layoutDir, dockerTar = filepath.Join(out, name), filepath.Join(out, name+"-amd64.tar")
		args := []string{
			"-out", layoutDir, "-ref", testRef, "-version", "v1.2.3",
			"-created", strconv.FormatInt(created.Unix(), 10), "-docker-tar", dockerTar,
		}
		for _, b := range binaries {
			args = append(args, b.platform.String()+"="+b.path)
		}
		if err := run(args); err != nil {
			t.Fatalf("run %q: %v", args, err)
		}
		return layoutDir, dockerTar
	}
	layoutDir, dockerTar := build("first", created, binaries)
	idx, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	multi := onlyIndex(t, idx)

	t.Run("platforms", func(t *testing.T) {
		m, err := multi.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Manifests) != len(binaries) {
			t.Fatalf("index has %d manifests, want %d: %+v", len(m.Manifests), len(binaries), m.Manifests)
		}
		ran := false
		for _, b := range binaries {
			t.Run(b.platform.String(), func(t *testing.T) { ran = checkPlatformImage(t, multi, b, created) || ran })
		}
		if !ran && runtime.GOOS == "linux" {
			t.Errorf("no image is for this host's platform %s/%s, so no entrypoint ran", runtime.GOOS, runtime.GOARCH)
		}
	})

	t.Run("tagged", func(t *testing.T) {
		m, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Manifests[0].Annotations[refNameAnnotation]; got != testRef {
			t.Errorf("layout tags the index %q, want %q", got, testRef)
		}
	})

	t.Run("docker tarball", func(t *testing.T) {
		img, err := tarball.ImageFromPath(dockerTar, nil)
		if err != nil {
			t.Fatal(err)
		}
		want, err := imageFor(multi, amd64)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := digest(t, img.ConfigName), digest(t, want.ConfigName); got != want {
			t.Errorf("docker tarball holds config %s, want linux/amd64's %s", got, want)
		}
	})

	t.Run("reproducible", func(t *testing.T) {
		againDir, againTar := build("again", created, binaries)
		if got, want := layoutDigest(t, againDir), layoutDigest(t, layoutDir); got != want {
			t.Errorf("same binaries, index digests %s and %s", got, want)
		}
		if got, want := fileBytes(t, againTar), fileBytes(t, dockerTar); !bytes.Equal(got, want) {
			t.Error("same binaries, docker tarballs differ")
		}
		// The digest does depend on the time it is given, so the equality above is not vacuous
		// (shown on stand-ins: the time is all that differs).
		standIns := []platformBinary{{platform: amd64, path: standIn}, {platform: arm64, path: standIn}}
		thenDir, _ := build("stand-ins", created, standIns)
		laterDir, _ := build("stand-ins-later", created.Add(time.Second), standIns)
		if layoutDigest(t, laterDir) == layoutDigest(t, thenDir) {
			t.Error("another -created, same index digest")
		}
	})
}

// checkPlatformImage checks b's image in multi: its config, that its filesystem is b's binary
// alone at /moat, and, for the host's platform, that this entrypoint runs and prints moat's usage.
// It reports whether it ran the entrypoint.
func checkPlatformImage(t *testing.T, multi v1.ImageIndex, b platformBinary, created time.Time) (ran bool) {
	platform := b.platform
	img, err := imageFor(multi, platform)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != platform.OS || cf.Architecture != platform.Architecture {
		t.Errorf("config says %s/%s", cf.OS, cf.Architecture)
	}
	if !cf.Created.Equal(created) {
		t.Errorf("created %s, want %s", cf.Created, created)
	}
	checkConfig(t, cf.Config)

	root := t.TempDir()
	files := unpack(t, img, root)
	if len(files) != 1 || files[0].Name != "moat" {
		t.Fatalf("files %v, want only moat", files)
	}
	if files[0].Mode&0o111 != 0o111 {
		t.Errorf("/moat has mode %o, want executable by the nonroot user", files[0].Mode)
	}
	if !bytes.Equal(fileBytes(t, files[0].path), fileBytes(t, b.path)) {
		t.Errorf("/moat is not %s", b.path)
	}

	if platform.OS != runtime.GOOS || platform.Architecture != runtime.GOARCH {
		return false
	}
	cmd := exec.Command(filepath.Join(root, cf.Config.Entrypoint[0]), "--help")
	cmd.Env = []string{} // nothing from the test's environment: the image has none either
	usage, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s --help: %v\n%s", cf.Config.Entrypoint[0], err, usage)
	}
	for _, want := range []string{"Usage:\n  moat [command]", "controller", "lb", "node"} {
		if !strings.Contains(string(usage), want) {
			t.Errorf("moat --help does not say %q:\n%s", want, usage)
		}
	}
	return true
}

func TestParsePlatformBinary(t *testing.T) {
	got, err := parsePlatformBinary("linux/arm64=bin/linux-arm64/moat")
	if err != nil || !got.platform.Equals(arm64) || got.path != "bin/linux-arm64/moat" {
		t.Errorf("parsePlatformBinary = %+v, %v", got, err)
	}
	for _, bad := range []string{"linux/amd64", "linux/amd64=", "linux=moat", "=moat"} {
		if _, err := parsePlatformBinary(bad); err == nil {
			t.Errorf("parsePlatformBinary(%q) accepted", bad)
		}
	}
}

// buildMoat builds moat for platform as `make image` does, so that the two share go's build cache.
func buildMoat(t *testing.T, dir string, platform v1.Platform) string {
	t.Helper()
	bin := filepath.Join(dir, "moat-"+platform.Architecture)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "github.com/moatlb/moat/cmd/moat")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+platform.OS, "GOARCH="+platform.Architecture)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build for %s: %v\n%s", platform, err, out)
	}
	t.Logf("built moat for %s in %s", platform, time.Since(start).Round(time.Millisecond))
	return bin
}

func checkConfig(t *testing.T, c v1.Config) {
	t.Helper()
	if len(c.Entrypoint) != 1 || c.Entrypoint[0] != "/moat" {
		t.Errorf("entrypoint %q, want [/moat]", c.Entrypoint)
	}
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532", c.User)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.source":  "https://github.com/moatlb/moat",
		"org.opencontainers.image.version": "v1.2.3",
	} {
		if got := c.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}
}

// onlyIndex is the one entry of a layout's index.json, which must be an image index.
func onlyIndex(t *testing.T, idx v1.ImageIndex) v1.ImageIndex {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 || !m.Manifests[0].MediaType.IsIndex() {
		t.Fatalf("layout holds %+v, want one image index", m.Manifests)
	}
	multi, err := idx.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return multi
}

func layoutDigest(t *testing.T, dir string) v1.Hash {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	return digest(t, onlyIndex(t, idx).Digest)
}

func digest(t *testing.T, of func() (v1.Hash, error)) v1.Hash {
	t.Helper()
	h, err := of()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func fileBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// unpackedFile is one entry of an image's filesystem and where unpack wrote it.
type unpackedFile struct {
	*tar.Header
	path string
}

// unpack writes img's flattened filesystem under root, as a container runtime would, and
// returns its entries. Only what moat's image should hold is accepted: directories and regular
// files owned by root, none of them writable by others.
func unpack(t *testing.T, img v1.Image, root string) []unpackedFile {
	t.Helper()
	fs := mutate.Extract(img)
	defer fs.Close()
	var files []unpackedFile
	tr := tar.NewReader(fs)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if !filepath.IsLocal(h.Name) {
			t.Fatalf("image holds %q, outside its root", h.Name)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Mode&0o022 != 0 {
			t.Errorf("%s: owner %d:%d mode %o, want root-owned and not writable by others", h.Name, h.Uid, h.Gid, h.Mode)
		}
		path := filepath.Join(root, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(path, 0o755)
		case tar.TypeReg:
			err = writeFile(path, tr, os.FileMode(h.Mode).Perm())
		default:
			t.Fatalf("%s: unexpected entry type %q", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, unpackedFile{Header: h, path: path})
	}
}

func writeFile(path string, r io.Reader, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
