package sigv4

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"syscall"

	"github.com/google/renameio/v2"
	"gopkg.in/ini.v1"
)

// profileName is what AddProfile accepts as a profile name: the characters and
// length of an IAM user name, since error messages name the profile as the user
// in an ARN, and nothing that could break the INI syntax.
var profileName = regexp.MustCompile(`^[A-Za-z0-9+=,.@_-]{1,64}$`)

// AddProfile adds a profile with a fresh key pair to the credentials file at
// path, marked moat_read_only if readOnly, and returns its access key ID. The
// rest of the file is kept byte for byte; the new profile is appended.
//
// The new file is written under a temporary name, synced and renamed over the
// old one, so a reader (a running moat lb, see File) sees the old file or the
// new one, never a mix, and a crash leaves one of the two. It is mode 0600 even
// if the old file was not. Concurrent AddProfile calls on one file are
// serialised by a lock on its directory, so none loses another's profile.
//
// A file that does not exist yet is first created as moat lb's first start
// would (LoadOrCreateFile: a full-access [default] profile), so that adding a
// read-only profile never leaves moat lb without a full-access key. A name that
// is already a profile, or a file that is not valid, is an error and changes
// nothing.
func AddProfile(path, name string, readOnly bool) (accessKeyID string, err error) {
	if err := checkProfileName(name); err != nil {
		return "", err
	}
	if _, _, err := LoadOrCreateFile(path); err != nil {
		return "", err
	}
	dir := filepath.Dir(path)
	unlock, err := lockDir(dir)
	if err != nil {
		return "", fmt.Errorf("lock %s: %w", dir, err)
	}
	defer unlock()

	old, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read credentials: %w", err)
	}
	content, id, err := AppendProfile(path, old, name, readOnly)
	if err != nil {
		return "", err
	}

	t, err := renameio.NewPendingFile(path, renameio.WithTempDir(dir), renameio.WithStaticPermissions(0o600))
	if err != nil {
		return "", fmt.Errorf("write credentials: %w", err)
	}
	defer t.Cleanup()
	if _, err := t.Write(content); err != nil {
		return "", fmt.Errorf("write credentials: %w", err)
	}
	if err := t.CloseAtomicallyReplace(); err != nil {
		return "", fmt.Errorf("write credentials: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return "", fmt.Errorf("write credentials: %w", err)
	}
	return id, nil
}

// lockDir takes an exclusive lock on a directory (flock on its descriptor, which
// the kernel releases if the process dies) until the returned func is called.
func lockDir(dir string) (unlock func(), err error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		d.Close()
		return nil, err
	}
	return func() { d.Close() }, nil
}

// AppendProfile is AddProfile on a credentials file's content, old (path names it in messages):
// it returns the new content and the new profile's access key ID.
func AppendProfile(path string, old []byte, name string, readOnly bool) (content []byte, accessKeyID string, err error) {
	if err := checkProfileName(name); err != nil {
		return nil, "", err
	}
	if _, err := ParseKeys(path, old); err != nil {
		return nil, "", err
	}
	f, err := parseINI(old)
	if err != nil {
		return nil, "", fmt.Errorf("parse credentials %s: %w", path, err)
	}
	if f.HasSection(name) {
		return nil, "", fmt.Errorf("credentials %s: profile %q exists already", path, name)
	}

	id, secret := newKeyPair()
	var buf bytes.Buffer
	buf.Write(old)
	if len(old) > 0 {
		if old[len(old)-1] != '\n' {
			buf.WriteByte('\n')
		}
		buf.WriteByte('\n')
	}
	fmt.Fprintf(&buf, "[%s]\n%s = %s\n%s = %s\n%s = %t\n", name, keyAccessKeyID, id, keySecretAccess, secret, keyReadOnly, readOnly)
	// The new file must say exactly what was meant, read as moat lb will read it.
	keys, err := ParseKeys(path, buf.Bytes())
	if err != nil {
		return nil, "", fmt.Errorf("add profile %q: %w", name, err)
	}
	if got := keys[id]; got != (Key{Secret: secret, Profile: name, ReadOnly: readOnly}) {
		return nil, "", fmt.Errorf("add profile %q: the new file reads back as %+v", name, got)
	}
	return buf.Bytes(), id, nil
}

func checkProfileName(name string) error {
	if !profileName.MatchString(name) || name == ini.DefaultSection {
		return fmt.Errorf("profile name %q: want 1 to 64 letters, digits or +=,.@_-, and not %s", name, ini.DefaultSection)
	}
	return nil
}
