package sigv4

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
)

// logBuffer collects a logger's lines, safe for concurrent writers.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

// replace writes content to path by rename, as careful writers do.
func replace(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestFileFollowsChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credentials")
	var logs logBuffer
	f, created, err := OpenFile(path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil || !created {
		t.Fatalf("OpenFile = created %v, err %v; want a new file", created, err)
	}
	admin, _ := onlyPair(t, f.Keys())

	// A profile added by AddProfile is accepted at the next lookup.
	node, err := AddProfile(path, "node", true)
	if err != nil {
		t.Fatal(err)
	}
	if key, ok := f.Lookup(node); !ok || !key.ReadOnly || key.Profile != "node" {
		t.Fatalf("Lookup(new read-only key) = %+v, %v", key, ok)
	}
	if key, ok := f.Lookup(admin); !ok || key.ReadOnly {
		t.Fatalf("Lookup(default key) = %+v, %v after adding a profile", key, ok)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	// An invalid file keeps the keys in use, and says so once, however many requests follow.
	replace(t, path, string(good)+"moat_read_only = maybe\n")
	for range 5 {
		if _, ok := f.Lookup(node); !ok {
			t.Fatal("an invalid file dropped the keys in use")
		}
	}
	if n := logs.count("credentials reload failed"); n != 1 {
		t.Errorf("the failure was logged %d times, want once:\n%s", n, logs.buf.String())
	}

	// So does a missing file.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, ok := f.Lookup(admin); !ok {
			t.Fatal("a missing file dropped the keys in use")
		}
	}
	if n := logs.count("credentials reload failed"); n != 2 {
		t.Errorf("%d failures logged, want 2 (invalid, then missing)", n)
	}

	// A profile removed from the file is refused at the next lookup: revoking needs no restart.
	adminOnly, _, _ := strings.Cut(string(good), "[node]")
	replace(t, path, adminOnly)
	if _, ok := f.Lookup(node); ok {
		t.Error("a removed profile's key is still accepted")
	}
	if _, ok := f.Lookup(admin); !ok {
		t.Error("the default key is refused after removing another profile")
	}
}

// TestFileReload shows what Reload is for: an in-place edit that keeps the file's size and
// modification time is invisible to the per-lookup check.
func TestFileReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credentials")
	before := "[node]\naws_access_key_id = N\naws_secret_access_key = S\nmoat_read_only = true \n"
	after := "[node]\naws_access_key_id = N\naws_secret_access_key = S\nmoat_read_only = false\n"
	if err := os.WriteFile(path, []byte(before), 0o600); err != nil {
		t.Fatal(err)
	}
	f, _, err := OpenFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(after), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, time.Time{}, info.ModTime()); err != nil {
		t.Fatal(err)
	}
	if key, _ := f.Lookup("N"); !key.ReadOnly {
		t.Fatal("the check saw an edit that kept size and mtime; this test no longer shows why Reload exists")
	}
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if key, _ := f.Lookup("N"); key.ReadOnly {
		t.Error("Reload did not re-read the file")
	}

	if err := os.WriteFile(path, []byte("[node\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Reload(); err == nil || !strings.Contains(err.Error(), "parse credentials") {
		t.Errorf("Reload of an invalid file = %v, want a parse error", err)
	}
	if _, ok := f.Lookup("N"); !ok {
		t.Error("a failed Reload dropped the keys in use")
	}
}

func TestFileConcurrentLookups(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credentials")
	f, _, err := OpenFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := onlyPair(t, f.Keys())
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, ok := f.Lookup(admin); !ok {
					t.Error("the default key was refused while profiles were added")
					return
				}
			}
		})
	}
	var added []string
	for i := range 10 {
		id, err := AddProfile(path, fmt.Sprintf("p%d", i), i%2 == 0)
		if err != nil {
			t.Fatal(err)
		}
		added = append(added, id)
	}
	close(stop)
	wg.Wait()
	for i, id := range added {
		if key, ok := f.Lookup(id); !ok || key.ReadOnly != (i%2 == 0) {
			t.Errorf("profile p%d: Lookup = %+v, %v", i, key, ok)
		}
	}
}

func TestAddProfile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "credentials")
	old := "# written by hand\n[default]\naws_access_key_id = AKIAAAAAAAAAAAAAAAAA\naws_secret_access_key = secretA\n\n[ci]\nregion = us-east-1" // no final newline
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	id, err := AddProfile(path, "node", true)
	if err != nil {
		t.Fatal(err)
	}
	if !accessKeyShape.MatchString(id) {
		t.Errorf("access key %q does not look like AWS's", id)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), old+"\n") {
		t.Errorf("the existing profiles were not kept byte for byte:\n%s", data)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("file mode = %v, want 0600", mode)
	}
	keys, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys["AKIAAAAAAAAAAAAAAAAA"] != (Key{"secretA", "default", false}) {
		t.Errorf("keys after adding = %+v", keys)
	}
	node := keys[id]
	if node.Profile != "node" || !node.ReadOnly || !secretShape.MatchString(node.Secret) {
		t.Errorf("new key = %+v", node)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("dir holds %d entries, want only the credentials file (no temporary leftovers)", len(entries))
	}

	// The SDK reads the new profile by name, so a client is configured with AWS_PROFILE alone.
	for _, env := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"} {
		t.Setenv(env, "")
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithSharedCredentialsFiles([]string{path}),
		config.WithSharedConfigFiles([]string{filepath.Join(dir, "no-config")}),
		config.WithSharedConfigProfile("node"),
		config.WithRegion("us-east-1"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := cfg.Credentials.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessKeyID != id || got.SecretAccessKey != node.Secret {
		t.Errorf("SDK read %s for profile node, want %s", got.AccessKeyID, id)
	}

	// Refusals change nothing.
	for _, name := range []string{"node", "default", "ci", "", "a b", "x]\n[y", "DEFAULT", strings.Repeat("n", 65)} {
		if _, err := AddProfile(path, name, true); err == nil {
			t.Errorf("AddProfile(%q) succeeded", name)
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, data) {
		t.Errorf("a refused AddProfile changed the file:\n%s", after)
	}
}

func TestAddProfileCreatesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lb", "credentials")
	id, err := AddProfile(path, "node", true)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || !keys[id].ReadOnly {
		t.Fatalf("keys = %+v", keys)
	}
	delete(keys, id)
	onlyPair(t, keys) // and a full-access default profile, as moat lb's first start writes
}

func TestAddProfileRefusesInvalidFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credentials")
	old := "[a]\naws_access_key_id = K\n" // no secret
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := AddProfile(path, "node", true); err == nil || !strings.Contains(err.Error(), "needs both") {
		t.Errorf("err = %v, want the file's problem", err)
	}
	if data, _ := os.ReadFile(path); string(data) != old {
		t.Errorf("file changed to %q", data)
	}
}

// TestAddProfileConcurrent adds profiles from several "processes" at once: none is lost.
func TestAddProfileConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credentials")
	const n = 8
	var (
		wg   sync.WaitGroup
		ids  [n]string
		errs [n]error
	)
	for i := range n {
		wg.Go(func() { ids[i], errs[i] = AddProfile(path, fmt.Sprintf("node-%d", i), true) })
	}
	wg.Wait()
	keys, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if key := keys[ids[i]]; key.Profile != fmt.Sprintf("node-%d", i) || !key.ReadOnly {
			t.Errorf("caller %d's profile reads back as %+v", i, key)
		}
	}
	if len(keys) != n+1 {
		t.Errorf("%d keys, want %d and the default", len(keys), n)
	}
}
