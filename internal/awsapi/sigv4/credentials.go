package sigv4

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/ini.v1"
)

// The AWS shared-credentials format, so that the file moat writes works as
// AWS_SHARED_CREDENTIALS_FILE for the CLI and the SDKs. moat adds one key of its
// own, which AWS's tools ignore.
const (
	profileDefault  = "default"
	keyAccessKeyID  = "aws_access_key_id"
	keySecretAccess = "aws_secret_access_key"
	keyReadOnly     = "moat_read_only"
	moatKeyPrefix   = "moat_"
)

// Key is one access key that moat accepts.
type Key struct {
	Secret string
	// Profile names the key's profile in the credentials file (the first, if the
	// key appears in several); error messages call it the user.
	Profile string
	// ReadOnly marks a key that may call only read actions (moat_read_only = true).
	ReadOnly bool
}

// Keys are the access keys of a credentials file, by access key ID.
type Keys map[string]Key

// Lookup implements CredentialStore.
func (k Keys) Lookup(accessKeyID string) (Key, bool) {
	key, ok := k[accessKeyID]
	return key, ok
}

// Static is a fixed set of full-access keys, access key ID -> secret access key.
type Static map[string]string

// Lookup implements CredentialStore.
func (s Static) Lookup(accessKeyID string) (Key, bool) {
	secret, ok := s[accessKeyID]
	return Key{Secret: secret}, ok
}

// LoadFile reads an AWS shared-credentials file. The key pairs of all profiles
// become valid, so an operator can give each client its own profile without
// telling moat the profile names. Profiles without aws_access_key_id (for
// example ones holding only a region) are skipped. A key without a secret, or one
// key with two different secrets, is an error: either guess would let the wrong
// client in or lock the right one out.
//
// A profile with moat_read_only = true gets a read-only key (false, the default,
// gives full access). Any other value, and any other key starting with moat_, is
// an error rather than ignored: a misspelt marker must not quietly grant full
// access. Keys of other names (region, output, ...) are ignored, as AWS's tools
// ignore what they do not know, so one file can serve both. A profile's keys are
// its own: ini's inheritance from a dotted parent section ([a] for [a.b]) is not
// applied, as AWS's tools do not apply it.
//
// The file's mode is not checked: a Kubernetes Secret is mounted 0644 by default,
// and refusing it would break the usual deployment. The file moat creates is 0600.
func LoadFile(path string) (Keys, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	return ParseKeys(path, data)
}

// ParseKeys implements LoadFile on the file's content; path is for messages.
func ParseKeys(path string, data []byte) (Keys, error) {
	f, err := parseINI(data)
	if err != nil {
		return nil, fmt.Errorf("parse credentials %s: %w", path, err)
	}
	keys := Keys{}
	for _, sec := range f.Sections() {
		values := sec.KeysHash() // the section's own keys, lowercased
		readOnly := false
		for name, value := range values {
			switch {
			case name == keyReadOnly:
				switch strings.ToLower(strings.TrimSpace(value)) {
				case "true":
					readOnly = true
				case "false":
				default:
					return nil, fmt.Errorf("credentials %s: profile %q: %s must be true or false, not %q", path, sec.Name(), keyReadOnly, value)
				}
			case strings.HasPrefix(name, moatKeyPrefix):
				return nil, fmt.Errorf("credentials %s: profile %q: unknown key %s (moat knows %s)", path, sec.Name(), name, keyReadOnly)
			}
		}
		rawID, ok := values[keyAccessKeyID]
		if !ok {
			continue
		}
		id := strings.TrimSpace(rawID)
		secret := strings.TrimSpace(values[keySecretAccess])
		if id == "" || secret == "" {
			return nil, fmt.Errorf("credentials %s: profile %q needs both %s and %s", path, sec.Name(), keyAccessKeyID, keySecretAccess)
		}
		if prev, dup := keys[id]; dup {
			if prev.Secret != secret {
				return nil, fmt.Errorf("credentials %s: access key %s appears with two different secrets", path, id)
			}
			if prev.ReadOnly != readOnly {
				return nil, fmt.Errorf("credentials %s: access key %s is in profiles %q and %q, read-only in only one", path, id, prev.Profile, sec.Name())
			}
			continue
		}
		keys[id] = Key{Secret: secret, Profile: sec.Name(), ReadOnly: readOnly}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("credentials %s: no profile has %s and %s", path, keyAccessKeyID, keySecretAccess)
	}
	return keys, nil
}

func parseINI(data []byte) (*ini.File, error) {
	return ini.LoadSources(ini.LoadOptions{InsensitiveKeys: true}, data)
}

// LoadOrCreateFile returns the credentials in path, creating the file with a
// fresh random key pair if it does not exist, so that a first start works
// without configuration and later starts keep the same key. It never replaces an
// existing file: if another process creates path at the same moment, its file
// wins and is loaded (created is then false).
func LoadOrCreateFile(path string) (creds Keys, created bool, err error) {
	creds, err = LoadFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return creds, false, err
	}
	creds, err = createFile(path)
	if errors.Is(err, fs.ErrExist) {
		creds, err = LoadFile(path)
		return creds, false, err
	}
	if err != nil {
		return nil, false, err
	}
	return creds, true, nil
}

// createFile writes a new key pair as the [default] profile. The file is
// complete and synced under a temporary name before it appears at path, so a
// crash never leaves a truncated file that would lock clients out. It is
// published with link rather than rename because link fails if path exists,
// where rename would silently replace a file created concurrently.
func createFile(path string) (Keys, error) {
	content, keys, err := NewCredentials()
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create credentials directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".credentials-*.tmp") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("create credentials: %w", err)
	}
	defer os.Remove(tmp.Name()) // once linked, this only drops the temporary name
	_, err = tmp.Write(content)
	if err == nil {
		err = tmp.Sync()
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return nil, fmt.Errorf("write credentials %s: %w", tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("create credentials: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("create credentials: %w", err)
	}
	return keys, nil
}

// NewCredentials returns the content of a new credentials file, a fresh key pair as the
// [default] profile, and its keys.
func NewCredentials() ([]byte, Keys, error) {
	id, secret := newKeyPair()
	f := ini.Empty()
	sec, err := f.NewSection(profileDefault)
	if err != nil {
		return nil, nil, fmt.Errorf("build credentials: %w", err)
	}
	if _, err := sec.NewKey(keyAccessKeyID, id); err != nil {
		return nil, nil, fmt.Errorf("build credentials: %w", err)
	}
	if _, err := sec.NewKey(keySecretAccess, secret); err != nil {
		return nil, nil, fmt.Errorf("build credentials: %w", err)
	}
	var buf bytes.Buffer
	if _, err := f.WriteTo(&buf); err != nil {
		return nil, nil, fmt.Errorf("build credentials: %w", err)
	}
	return buf.Bytes(), Keys{id: {Secret: secret, Profile: profileDefault}}, nil
}

// syncDir makes a new directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// newKeyPair returns a key pair shaped like AWS's: "AKIA" plus 16 base32
// characters, and a 40-character base64 secret, so tools that validate the shape
// of AWS keys accept them.
func newKeyPair() (accessKeyID, secret string) {
	b := make([]byte, 30) // 30 bytes = 40 base64 characters, no padding
	rand.Read(b)          // never fails: crypto/rand crashes the program instead
	return "AKIA" + rand.Text()[:16], base64.StdEncoding.EncodeToString(b)
}
