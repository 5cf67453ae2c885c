package sigv4

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/config"
)

var (
	accessKeyShape = regexp.MustCompile(`^AKIA[A-Z2-7]{16}$`)
	secretShape    = regexp.MustCompile(`^[A-Za-z0-9+/]{40}$`)
)

// onlyPair returns the single key pair of creds, which must be the full-access
// [default] profile.
func onlyPair(t *testing.T, creds Keys) (id, secret string) {
	t.Helper()
	if len(creds) != 1 {
		t.Fatalf("want one key pair, have %d", len(creds))
	}
	var key Key
	for id, key = range creds {
	}
	if key.Profile != "default" || key.ReadOnly {
		t.Fatalf("key %s is %+v, want the full-access default profile", id, key)
	}
	return id, key.Secret
}

func TestLoadOrCreateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "data", "credentials") // data dir not created yet

	creds, created, err := LoadOrCreateFile(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreateFile = created %v, err %v; want a new file", created, err)
	}
	id, secret := onlyPair(t, creds)
	if !accessKeyShape.MatchString(id) || !secretShape.MatchString(secret) {
		t.Errorf("key pair %q / %q does not look like AWS's", id, secret)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("file mode = %v, want 0600", mode)
	}
	if key, ok := creds.Lookup(id); !ok || key.Secret == "" {
		t.Errorf("Lookup(%s) = %+v, %v", id, key, ok)
	}
	if _, ok := creds.Lookup("AKIAOTHER"); ok {
		t.Error("Lookup knows a key that was never created")
	}

	// The SDK's own loader finds the same pair in the [default] profile.
	for _, env := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"} {
		t.Setenv(env, "")
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithSharedCredentialsFiles([]string{path}),
		config.WithSharedConfigFiles([]string{filepath.Join(dir, "no-config")}),
		config.WithRegion("us-east-1"))
	if err != nil {
		t.Fatalf("LoadDefaultConfig: %v", err)
	}
	got, err := cfg.Credentials.Retrieve(context.Background())
	if err != nil {
		t.Fatalf("Retrieve: %v", err)
	}
	if got.AccessKeyID != id || got.SecretAccessKey != secret {
		t.Errorf("SDK read %s / %s, want %s / %s", got.AccessKeyID, got.SecretAccessKey, id, secret)
	}

	// A later start reads the same file and leaves it alone.
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	again, created, err := LoadOrCreateFile(path)
	if err != nil || created {
		t.Fatalf("second LoadOrCreateFile = created %v, err %v; want the existing file", created, err)
	}
	if !maps.Equal(again, creds) {
		t.Errorf("second load = %v, want %v", again, creds)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	infoAfter, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) || !infoAfter.ModTime().Equal(info.ModTime()) {
		t.Error("second LoadOrCreateFile changed the file")
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("data dir holds %d entries, want only the credentials file (no temporary leftovers)", len(entries))
	}
}

func TestLoadOrCreateFileFreshKeys(t *testing.T) {
	a, _, err := LoadOrCreateFile(filepath.Join(t.TempDir(), "credentials"))
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := LoadOrCreateFile(filepath.Join(t.TempDir(), "credentials"))
	if err != nil {
		t.Fatal(err)
	}
	idA, secretA := onlyPair(t, a)
	idB, secretB := onlyPair(t, b)
	if idA == idB || secretA == secretB {
		t.Errorf("two new files share a key: %s/%s and %s/%s", idA, secretA, idB, secretB)
	}
}

// TestLoadOrCreateFileConcurrent starts several "processes" on one data dir:
// exactly one creates the file and all end up with its key.
func TestLoadOrCreateFileConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credentials")
	const n = 8
	var (
		wg      sync.WaitGroup
		results [n]Keys
		created [n]bool
		errs    [n]error
	)
	for i := range n {
		wg.Go(func() { results[i], created[i], errs[i] = LoadOrCreateFile(path) })
	}
	wg.Wait()
	creators := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if created[i] {
			creators++
		}
		if !maps.Equal(results[i], results[0]) {
			t.Errorf("caller %d got %v, caller 0 got %v", i, results[i], results[0])
		}
	}
	if creators != 1 {
		t.Errorf("%d callers created the file, want 1", creators)
	}
}

func TestLoadOrCreateFileKeepsExisting(t *testing.T) {
	tests := []struct {
		name, content string
		wantErr       string // substring; "" = loads
	}{
		{name: "valid", content: "[default]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = s3cret\n"},
		{name: "no keys", content: "[default]\nregion = us-east-1\n", wantErr: "no profile has"},
		{name: "empty", content: "", wantErr: "no profile has"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "credentials")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			creds, created, err := LoadOrCreateFile(path)
			if created {
				t.Error("created a file over an existing one")
			}
			if tt.wantErr == "" && (err != nil || creds["AKIDEXAMPLE"].Secret != "s3cret") {
				t.Errorf("LoadOrCreateFile = %v, %v", creds, err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("err = %v, want it to mention %q", err, tt.wantErr)
			}
			if data, _ := os.ReadFile(path); string(data) != tt.content {
				t.Errorf("file rewritten to %q", data)
			}
		})
	}

	t.Run("path is a directory", func(t *testing.T) {
		if _, _, err := LoadOrCreateFile(t.TempDir()); err == nil {
			t.Error("want an error for a directory")
		}
	})
}

func TestLoadFile(t *testing.T) {
	tests := []struct {
		name, content string
		want          Keys
		wantErr       string
	}{
		{
			name: "all profiles",
			content: `# moat clients
[default]
aws_access_key_id = AKIAAAAAAAAAAAAAAAAA
aws_secret_access_key = secretA

[profile lbc]
region = us-east-1

[ci]
AWS_ACCESS_KEY_ID=AKIABBBBBBBBBBBBBBBB
AWS_SECRET_ACCESS_KEY=secret/B+b
`,
			want: Keys{"AKIAAAAAAAAAAAAAAAAA": {"secretA", "default", false}, "AKIABBBBBBBBBBBBBBBB": {"secret/B+b", "ci", false}},
		},
		{
			name:    "same key, same secret twice",
			content: "[a]\naws_access_key_id=K\naws_secret_access_key=S\n[b]\naws_access_key_id=K\naws_secret_access_key=S\n",
			want:    Keys{"K": {"S", "a", false}},
		},
		{
			name:    "same key, two secrets",
			content: "[a]\naws_access_key_id=K\naws_secret_access_key=S\n[b]\naws_access_key_id=K\naws_secret_access_key=T\n",
			wantErr: "two different secrets",
		},
		{name: "key without secret", content: "[a]\naws_access_key_id=K\n", wantErr: `profile "a" needs both`},
		{name: "empty secret", content: "[a]\naws_access_key_id=K\naws_secret_access_key=\n", wantErr: `profile "a" needs both`},
		{name: "not INI", content: "[unterminated\n", wantErr: "parse credentials"},
		{
			name: "read-only profile",
			content: `[default]
aws_access_key_id = F
aws_secret_access_key = s1
moat_read_only = false

[node]
aws_access_key_id = N
aws_secret_access_key = s2
MOAT_READ_ONLY = True
region = us-east-1
output = json
`,
			want: Keys{"F": {"s1", "default", false}, "N": {"s2", "node", true}},
		},
		{
			name:    "no inheritance from a dotted parent",
			content: "[node]\naws_access_key_id=N\naws_secret_access_key=S\nmoat_read_only=true\n[node.x]\naws_access_key_id=X\naws_secret_access_key=T\n[node.y]\nregion=us-east-1\n",
			want:    Keys{"N": {"S", "node", true}, "X": {"T", "node.x", false}},
		},
		{name: "read-only not a boolean", content: "[a]\naws_access_key_id=K\naws_secret_access_key=S\nmoat_read_only=yes\n", wantErr: `profile "a": moat_read_only must be true or false, not "yes"`},
		{name: "read-only empty", content: "[a]\naws_access_key_id=K\naws_secret_access_key=S\nmoat_read_only=\n", wantErr: "must be true or false"},
		{name: "misspelt moat key", content: "[a]\naws_access_key_id=K\naws_secret_access_key=S\nmoat_readonly=true\n", wantErr: `profile "a": unknown key moat_readonly`},
		{name: "moat key in a profile without a key", content: "[a]\naws_access_key_id=K\naws_secret_access_key=S\n[b]\nmoat_admin=true\n", wantErr: "unknown key moat_admin"},
		{
			name:    "same key, read-only in one profile only",
			content: "[a]\naws_access_key_id=K\naws_secret_access_key=S\n[b]\naws_access_key_id=K\naws_secret_access_key=S\nmoat_read_only=true\n",
			wantErr: `access key K is in profiles "a" and "b", read-only in only one`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "credentials")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := LoadFile(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !maps.Equal(got, tt.want) {
				t.Fatalf("LoadFile = %v, %v; want %v", got, err, tt.want)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		if _, err := LoadFile(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v, want not-exist", err)
		}
	})
}
