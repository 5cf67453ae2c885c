// Command image writes moat's container image without a Docker daemon: the static moat binaries
// given on the command line, one per platform, each alone on an empty base, gathered in one
// multi-platform index and written as an OCI image layout (a directory that `crane push` takes).
// It can also write one platform as a docker tarball, which `kind load image-archive` and
// `docker load` take.
//
//	go run ./hack/image -out bin/image -ref ghcr.io/moatlb/moat:latest \
//	    linux/amd64=bin/linux-amd64/moat linux/arm64=bin/linux-arm64/moat
//
// Every timestamp is -created (SOURCE_DATE_EPOCH by default, else 1970-01-01), so the same
// binaries always give the same digests. `make image` builds the binaries and runs it.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// entrypoint is where the binary sits in the image.
	entrypoint = "/moat"
	// nonroot is distroless's nonroot user and group; the manifests' securityContext names it too.
	nonroot = "65532:65532"
	// refNameAnnotation tags the index in the layout's index.json, as the OCI image layout
	// specification and containerd read it.
	refNameAnnotation = "org.opencontainers.image.ref.name"
)

// platformBinary is one platform's moat binary.
type platformBinary struct {
	platform v1.Platform
	path     string
}

// options describe the image; run fills them from the command line.
type options struct {
	ref      name.Reference
	version  string
	source   string
	created  time.Time
	binaries []platformBinary
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	created, err := sourceDateEpoch()
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	out := fs.String("out", "bin/image", "directory to write the OCI image layout to (replaced)")
	ref := fs.String("ref", "ghcr.io/moatlb/moat:latest", "image reference recorded in the layout and the docker tarball")
	version := fs.String("version", "", "value of the org.opencontainers.image.version label")
	source := fs.String("source", "https://github.com/moatlb/moat", "value of the org.opencontainers.image.source label")
	createdUnix := fs.Int64("created", created, "creation time in seconds since the epoch (default $SOURCE_DATE_EPOCH, else 0)")
	dockerTar := fs.String("docker-tar", "", "also write the -docker-platform image to this file as a docker tarball")
	dockerPlatform := fs.String("docker-platform", "linux/amd64", "platform of the -docker-tar image")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: image [flags] os/arch=binary...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}

	o := options{version: *version, source: *source, created: time.Unix(*createdUnix, 0).UTC()}
	if o.ref, err = name.ParseReference(*ref); err != nil {
		return fmt.Errorf("-ref: %w", err)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("no binaries given")
	}
	for _, arg := range fs.Args() {
		b, err := parsePlatformBinary(arg)
		if err != nil {
			return err
		}
		o.binaries = append(o.binaries, b)
	}

	idx, err := buildIndex(o)
	if err != nil {
		return err
	}
	if err := writeLayout(*out, idx, o.ref); err != nil {
		return err
	}
	if *dockerTar == "" {
		return nil
	}
	platform, err := v1.ParsePlatform(*dockerPlatform)
	if err != nil {
		return fmt.Errorf("-docker-platform: %w", err)
	}
	img, err := imageFor(idx, *platform)
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(*dockerTar, o.ref, img); err != nil {
		return fmt.Errorf("write docker tarball %s: %w", *dockerTar, err)
	}
	return nil
}

// sourceDateEpoch is $SOURCE_DATE_EPOCH (reproducible-builds.org's convention), or 0.
func sourceDateEpoch() (int64, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return 0, nil
	}
	t, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
	}
	return t, nil
}

// parsePlatformBinary reads "linux/arm64=path/to/moat".
func parsePlatformBinary(arg string) (platformBinary, error) {
	p, path, ok := strings.Cut(arg, "=")
	if !ok || path == "" {
		return platformBinary{}, fmt.Errorf("%q: want os/arch=binary", arg)
	}
	platform, err := v1.ParsePlatform(p)
	if err != nil {
		return platformBinary{}, fmt.Errorf("%q: %w", arg, err)
	}
	if platform.OS == "" || platform.Architecture == "" {
		return platformBinary{}, fmt.Errorf("%q: want os/arch=binary", arg)
	}
	return platformBinary{platform: *platform, path: path}, nil
}

// buildIndex makes one image per binary and gathers them in an OCI image index.
func buildIndex(o options) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, b := range o.binaries {
		img, err := platformImage(o, b)
		if err != nil {
			return nil, fmt.Errorf("image for %s: %w", b.platform, err)
		}
		platform := b.platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &platform},
		})
	}
	return idx, nil
}

// platformImage is the binary alone on an empty base, run as the nonroot user.
func platformImage(o options, b platformBinary) (v1.Image, error) {
	layer, err := binaryLayer(b.path, o.created)
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: o.created}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: created, CreatedBy: "hack/image: " + entrypoint},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = created
	cf.OS = b.platform.OS
	cf.Architecture = b.platform.Architecture
	cf.Variant = b.platform.Variant
	cf.Config = v1.Config{
		Entrypoint: []string{entrypoint},
		User:       nonroot,
		Labels:     labels(o),
	}
	return mutate.ConfigFile(img, cf)
}

func labels(o options) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":  "moat",
		"org.opencontainers.image.source": o.source,
	}
	if o.version != "" {
		l["org.opencontainers.image.version"] = o.version
	}
	return l
}

// binaryLayer is a layer holding the binary at the entrypoint, owned by root and executable by
// everyone. The tar is built in memory (the binary is tens of megabytes) and compressed once.
func binaryLayer(path string, modTime time.Time) (v1.Layer, error) {
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     strings.TrimPrefix(entrypoint, "/"),
		Mode:     0o755,
		Size:     int64(len(bin)),
		ModTime:  modTime,
		Format:   tar.FormatPAX,
	}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerTar := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

// writeLayout writes idx as the only entry of an OCI image layout at dir, tagged with ref. It
// writes next to dir and renames, so an interrupted build never leaves half a layout, nor blobs
// of an earlier build.
func writeLayout(dir string, idx v1.ImageIndex, ref name.Reference) error {
	tmp := filepath.Clean(dir) + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return fmt.Errorf("write layout %s: %w", tmp, err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{refNameAnnotation: ref.Name()})); err != nil {
		return fmt.Errorf("write layout %s: %w", tmp, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// imageFor is idx's image for platform.
func imageFor(idx v1.ImageIndex, platform v1.Platform) (v1.Image, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range m.Manifests {
		if d.Platform != nil && d.Platform.Equals(platform) {
			return idx.Image(d.Digest)
		}
	}
	return nil, fmt.Errorf("no image for %s", platform)
}
