package sigv4

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
)

// File is a CredentialStore that follows a credentials file, so that a profile
// added, removed or marked read-only takes effect without a restart: every
// Lookup stats the file (one system call) and re-reads it when it is another
// file or its size or modification time changed. Checking at each request rather
// than on a signal means a tool that adds a profile needs no way to reach the
// server process, and a revoked key stops working at the next request.
//
// A re-read that fails (the file is missing, unreadable or invalid) keeps the
// keys in use and is logged once per version of the file. A file caught
// changing while it is read is not taken, and is read again at the next
// request. Writers should still replace the file (write a temporary file and
// rename it, as AddProfile and most editors do): a file rewritten in place can
// be seen half-written between two of its writer's writes. Reload forces a
// re-read, for edits that keep the size and mtime.
type File struct {
	path string
	log  *slog.Logger
	mu   sync.Mutex // serialises re-reads
	cur  atomic.Pointer[fileVersion]
}

// fileVersion is the keys in use and the version of the file last looked at.
type fileVersion struct {
	keys Keys
	seen os.FileInfo // nil: the file could not be stat'ed
	err  error       // why the version seen is not the one in use; nil when it is
}

// OpenFile loads the credentials file at path, creating it as LoadOrCreateFile
// does, and follows it from then on. log (nil: none) receives re-reads and their
// failures.
func OpenFile(path string, log *slog.Logger) (f *File, created bool, err error) {
	if _, created, err = LoadOrCreateFile(path); err != nil {
		return nil, false, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f = &File{path: path, log: log}
	for range 3 {
		var v *fileVersion
		if v, err = f.read(nil, nil); err == nil {
			if v.err != nil {
				return nil, false, v.err
			}
			f.cur.Store(v)
			return f, created, nil
		}
	}
	return nil, false, fmt.Errorf("credentials %s: %w", path, err)
}

// Path is the file followed.
func (f *File) Path() string { return f.path }

// Keys returns the keys in use, after re-reading the file if it changed.
func (f *File) Keys() Keys {
	v := f.cur.Load()
	info, err := os.Stat(f.path)
	if sameVersion(v.seen, info, err) {
		return v.keys
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v = f.cur.Load() // another request may have re-read it meanwhile
	info, err = os.Stat(f.path)
	if sameVersion(v.seen, info, err) {
		return v.keys
	}
	next := &fileVersion{keys: v.keys, err: fmt.Errorf("read credentials: %w", err)}
	if err == nil {
		if next, err = f.read(v.keys, info); err != nil {
			return v.keys // changing while read: look again at the next request
		}
	}
	f.settle(v, next)
	return next.keys
}

// Lookup implements CredentialStore.
func (f *File) Lookup(accessKeyID string) (Key, bool) {
	return f.Keys().Lookup(accessKeyID)
}

// Reload re-reads the file whether or not it seems to have changed. On failure
// the keys in use stay, and the error says why.
func (f *File) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := f.cur.Load()
	info, err := os.Stat(f.path)
	if err != nil {
		return fmt.Errorf("read credentials: %w", err)
	}
	next, err := f.read(v.keys, info)
	if err != nil {
		return err
	}
	f.cur.Store(next)
	if next.err != nil {
		return next.err
	}
	f.log.Info("credentials reloaded", "file", f.path, "keys", len(next.keys), "read_only", countReadOnly(next.keys))
	return nil
}

// read reads the file's current version, of which info is a recent stat. A
// version that cannot be read or parsed keeps prev as its keys and says why in
// its err. read fails only with errChanging, when the file changed while it was
// read.
func (f *File) read(prev Keys, info os.FileInfo) (*fileVersion, error) {
	failed := func(err error) (*fileVersion, error) {
		return &fileVersion{keys: prev, seen: info, err: err}, nil
	}
	fh, err := os.Open(f.path)
	if err != nil {
		return failed(fmt.Errorf("read credentials: %w", err))
	}
	defer fh.Close()
	before, err := fh.Stat()
	if err != nil {
		return failed(fmt.Errorf("read credentials: %w", err))
	}
	data, err := io.ReadAll(fh)
	if err != nil {
		return failed(fmt.Errorf("read credentials: %w", err))
	}
	after, err := fh.Stat()
	if err != nil {
		return failed(fmt.Errorf("read credentials: %w", err))
	}
	if !sameVersion(before, after, nil) {
		return nil, errChanging
	}
	keys, err := ParseKeys(f.path, data)
	if err != nil {
		return &fileVersion{keys: prev, seen: before, err: err}, nil
	}
	return &fileVersion{keys: keys, seen: before}, nil
}

var errChanging = errors.New("credentials file changed while it was read")

// settle makes next current and logs the change from prev.
func (f *File) settle(prev, next *fileVersion) {
	f.cur.Store(next)
	switch {
	case next.err == nil:
		f.log.Info("credentials reloaded", "file", f.path, "keys", len(next.keys), "read_only", countReadOnly(next.keys))
	case prev.err == nil || prev.err.Error() != next.err.Error():
		f.log.Error("credentials reload failed; keeping the previous keys", "file", f.path, "err", next.err)
	}
}

// sameVersion reports whether info (stat'ed with err) is the version seen.
func sameVersion(seen, info os.FileInfo, err error) bool {
	if err != nil || seen == nil {
		return err != nil && seen == nil
	}
	return os.SameFile(seen, info) && seen.Size() == info.Size() && seen.ModTime().Equal(info.ModTime())
}

func countReadOnly(keys Keys) int {
	n := 0
	for _, k := range keys {
		if k.ReadOnly {
			n++
		}
	}
	return n
}
