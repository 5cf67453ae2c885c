package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"io"
	"io/fs"
	"math/bits"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/google/renameio/v2"
	"golang.org/x/sys/unix"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrCorrupt is the cause of every error about a damaged store file, so that callers can tell
// damage (restore a backup) from other failures.
var ErrCorrupt = errors.New("damaged")

// ErrLocked says another process holds the store file open for writing.
var ErrLocked = errors.New("locked by another process")

// CorruptError says what is wrong with the store file at Path, and in which record if the damage
// is in one.
type CorruptError struct {
	Path        string
	Bucket, Key string // the damaged record; empty when the damage is not in one record
	Problem     string
}

func (e *CorruptError) Error() string {
	if e.Bucket != "" {
		return fmt.Sprintf("%s is damaged: record %s/%s: %s", e.Path, e.Bucket, e.Key, e.Problem)
	}
	return fmt.Sprintf("%s is damaged: %s", e.Path, e.Problem)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

func corrupt(path, format string, args ...any) *CorruptError {
	return &CorruptError{Path: path, Problem: fmt.Sprintf(format, args...)}
}

// lockWait is how long opening waits for another process to let go of the file: long enough for a
// stopping moat lb to close it, short enough that a second one is told at once.
const lockWait = time.Second

// Record format. bbolt checksums only its meta pages, so each record carries its own checksum:
// the CRC-32C of its bucket, key and value, before the value. A flipped bit in a value, or a
// value found under another key, fails the check.
//
// Format 1 (no meta bucket) stored bare values; format 2 adds the checksums and the meta bucket
// that records the format.
const (
	formatBucket  = "store.meta"
	formatKey     = "format"
	formatCurrent = 2
	sumSize       = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func recordSum(bucket, key string, value []byte) uint32 {
	var n [binary.MaxVarintLen64]byte
	sum := crc32.Update(0, castagnoli, n[:binary.PutUvarint(n[:], uint64(len(bucket)))])
	sum = crc32.Update(sum, castagnoli, []byte(bucket))
	sum = crc32.Update(sum, castagnoli, n[:binary.PutUvarint(n[:], uint64(len(key)))])
	sum = crc32.Update(sum, castagnoli, []byte(key))
	return crc32.Update(sum, castagnoli, value)
}

// seal returns value as stored: its checksum, then the value.
func seal(bucket, key string, value []byte) []byte {
	out := make([]byte, sumSize, sumSize+len(value))
	binary.BigEndian.PutUint32(out, recordSum(bucket, key, value))
	return append(out, value...)
}

// unseal checks a stored record and returns its value (a slice of stored).
func unseal(path, bucket, key string, stored []byte) ([]byte, error) {
	if len(stored) < sumSize {
		return nil, &CorruptError{Path: path, Bucket: bucket, Key: key, Problem: fmt.Sprintf("%d bytes, shorter than its checksum", len(stored))}
	}
	value := stored[sumSize:]
	if binary.BigEndian.Uint32(stored) != recordSum(bucket, key, value) {
		return nil, &CorruptError{Path: path, Bucket: bucket, Key: key, Problem: "checksum mismatch"}
	}
	return value, nil
}

// inspectFile checks what bbolt trusts without checking, before it maps the file: that the file is
// a bbolt file with a valid meta page, as long as that meta page says, and that its pages point
// only within it (checkPages). bbolt reads pages past the end of a truncated file through its
// memory map and faults or fails an assertion. A missing or empty file is fine unless readOnly
// (bbolt then creates a new database).
func inspectFile(path string, readOnly bool) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) && !readOnly {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	// Hold a shared lock while reading, so a writer in another process cannot change the file
	// underneath; it is released before bbolt takes its own lock.
	if err := lockShared(f); err != nil {
		return err
	}
	info, err := f.Stat()
	if err != nil {
		return err
	}
	size := info.Size()
	if size == 0 {
		if readOnly {
			return corrupt(path, "the file is empty (0 bytes)")
		}
		return nil
	}
	m, err := newestMeta(f, size)
	if err != nil {
		return corrupt(path, "%v", err)
	}
	if end := m.pgid * uint64(m.pageSize); uint64(size) < end {
		return corrupt(path, "the file is truncated: it is %d bytes, but its pages reach %d bytes", size, end)
	}
	if err := checkPages(f, m); err != nil {
		return corrupt(path, "%v", err)
	}
	return nil
}

// lockShared takes a shared flock on f, waiting up to lockWait: a writer holds it exclusively.
func lockShared(f *os.File) error {
	deadline := time.Now().Add(lockWait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %w", f.Name(), ErrLocked)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bbolt's meta page: a 16-byte page header (id, flags, count, overflow), then magic, version,
// page size, flags, root bucket (page, sequence), freelist page, high-water page, transaction ID
// and an FNV-64a checksum of the fields before it, in the machine's byte order.
const (
	pageHeaderSize = 16
	metaSize       = 64
	metaFlag       = 0x04
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	noFreelist     = ^uint64(0)
)

type meta struct {
	pageSize                   uint32
	root, freelist, pgid, txid uint64
}

func parseMeta(page []byte) (meta, error) {
	if len(page) < pageHeaderSize+metaSize {
		return meta{}, errors.New("too short for a meta page")
	}
	ne := binary.NativeEndian
	if ne.Uint16(page[8:])&metaFlag == 0 {
		return meta{}, errors.New("not a meta page")
	}
	b := page[pageHeaderSize : pageHeaderSize+metaSize]
	if ne.Uint32(b[0:]) != boltMagic {
		return meta{}, errors.New("not a bbolt file (bad magic number)")
	}
	if v := ne.Uint32(b[4:]); v != boltVersion {
		return meta{}, fmt.Errorf("bbolt format version %d, want %d", v, boltVersion)
	}
	h := fnv.New64a()
	h.Write(b[:56])
	if ne.Uint64(b[56:]) != h.Sum64() {
		return meta{}, errors.New("meta page checksum mismatch")
	}
	m := meta{pageSize: ne.Uint32(b[8:]), root: ne.Uint64(b[16:]), freelist: ne.Uint64(b[32:]), pgid: ne.Uint64(b[40:]), txid: ne.Uint64(b[48:])}
	if m.pageSize < pageHeaderSize+metaSize || bits.OnesCount32(m.pageSize) != 1 {
		return meta{}, fmt.Errorf("page size %d is not a power of two", m.pageSize)
	}
	return m, nil
}

// newestMeta returns the meta page bbolt will use: the valid one with the higher transaction ID.
// As bbolt does, it looks for the second meta page at every page size when the first is invalid.
func newestMeta(f *os.File, size int64) (meta, error) {
	read := func(off int64) []byte {
		buf := make([]byte, pageHeaderSize+metaSize)
		if n, _ := f.ReadAt(buf, off); n < len(buf) {
			return nil
		}
		return buf
	}
	m0, err0 := parseMeta(read(0))
	var m1 meta
	err1 := err0
	if err0 == nil {
		m1, err1 = parseMeta(read(int64(m0.pageSize)))
	} else {
		for pageSize := int64(1024); pageSize <= 1<<24 && pageSize < size; pageSize *= 2 {
			if m1, err1 = parseMeta(read(pageSize)); err1 == nil {
				break
			}
		}
	}
	switch {
	case err0 != nil && err1 != nil:
		return meta{}, fmt.Errorf("neither of its two meta pages is valid (%v; %v)", err0, err1)
	case err0 != nil:
		return m1, nil
	case err1 != nil || m0.txid > m1.txid:
		return m0, nil
	}
	return m1, nil
}

// guard runs fn, turning a panic or a memory fault while bbolt reads a damaged file into an error
// naming the file.
func guard(path string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = corrupt(path, "reading it failed: %v", r)
		}
	}()
	return fn()
}

// openDB opens the file with bbolt, guarded. A lock held elsewhere past lockWait is ErrLocked.
func openDB(path string, readOnly bool) (*bolt.DB, error) {
	var file *os.File
	opts := &bolt.Options{Timeout: lockWait, ReadOnly: readOnly, OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, perm)
		file = f
		return f, err
	}}
	var db *bolt.DB
	err := guard(path, func() (err error) {
		db, err = bolt.Open(path, 0o600, opts)
		return err
	})
	var ce *CorruptError
	switch {
	case err == nil:
		return db, nil
	case errors.As(err, &ce):
		if file != nil {
			file.Close() // bbolt panicked with the file open: release it and its lock
		}
		return nil, err
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%s: %w", path, ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, corrupt(path, "%v", err)
	}
	return nil, fmt.Errorf("open %s: %w", path, err)
}

// verify reads every record and checks it, then runs bbolt's consistency check, and upgrades a
// format 1 file to the current format unless readOnly. It returns the number of records.
//
// inspectFile has checked that the pages bbolt follows stay within the file. As a second line the
// records are read first, in this goroutine under guard: bbolt's Check runs in a goroutine of its
// own, where a fault could not be recovered, and the walk touches its pages first.
func (b *Bolt) verify(readOnly bool) (int, error) {
	var format, records int
	err := guard(b.path, func() error {
		return b.db.View(func(tx *bolt.Tx) (err error) {
			if format, err = readFormat(b.path, tx); err != nil {
				return err
			}
			records, err = checkRecords(b.path, tx, format)
			return err
		})
	})
	if err != nil {
		return 0, err
	}
	err = b.db.View(func(tx *bolt.Tx) error {
		var problems []string
		n := 0
		for err := range tx.Check() {
			if n++; len(problems) < 3 {
				problems = append(problems, err.Error())
			}
		}
		if n > 0 {
			return corrupt(b.path, "bbolt's consistency check found %d problems, first %q", n, problems)
		}
		return nil
	})
	if err != nil || readOnly || format == formatCurrent {
		return records, err
	}
	return records, b.upgrade(format)
}

// readFormat returns the file's record format. A file with no buckets at all is new and takes the
// current one; a file with buckets but no meta bucket is format 1.
func readFormat(path string, tx *bolt.Tx) (int, error) {
	if bk := tx.Bucket([]byte(formatBucket)); bk != nil {
		raw := bk.Get([]byte(formatKey))
		format, err := strconv.Atoi(string(raw))
		switch {
		case err != nil || format < 2:
			return 0, &CorruptError{Path: path, Bucket: formatBucket, Key: formatKey, Problem: fmt.Sprintf("unknown format %q", raw)}
		case format > formatCurrent:
			return 0, fmt.Errorf("%s has record format %d, newer than this moat's %d: run a newer moat", path, format, formatCurrent)
		}
		return format, nil
	}
	empty := true
	_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
	if empty {
		return 0, nil // new: upgrade writes the format
	}
	return 1, nil
}

// checkRecords checks every record of every bucket: its checksum, or for format 1 (no checksums)
// that it is JSON, which every record of that format is.
func checkRecords(path string, tx *bolt.Tx, format int) (int, error) {
	n := 0
	err := tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
		bucket := string(name)
		if bucket == formatBucket {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error {
			n++
			key := string(k)
			switch {
			case v == nil:
				return &CorruptError{Path: path, Bucket: bucket, Key: key, Problem: "a nested bucket where a record belongs"}
			case format == 1:
				if !json.Valid(v) {
					return &CorruptError{Path: path, Bucket: bucket, Key: key, Problem: "not valid JSON"}
				}
				return nil
			}
			_, err := unseal(path, bucket, key, v)
			return err
		})
	})
	return n, err
}

// upgrade rewrites a format 1 file in the current format, in one transaction so that a crash
// leaves the old format whole. A format 1 file is first copied aside (<path>.format1), because an
// older moat cannot read the new format.
func (b *Bolt) upgrade(from int) error {
	if from == 1 {
		aside := b.path + ".format1"
		if _, err := WriteVerified(aside, func(w io.Writer) error { _, err := b.Backup(w); return err }); err != nil {
			return fmt.Errorf("copy %s before upgrading it: %w", b.path, err)
		}
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		if from == 1 {
			err := tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
				var keys, values [][]byte
				if err := bk.ForEach(func(k, v []byte) error {
					keys, values = append(keys, k), append(values, v)
					return nil
				}); err != nil {
					return err
				}
				// bbolt forbids writes inside ForEach, so the records are rewritten after the walk.
				for i, k := range keys {
					if err := bk.Put(k, seal(string(name), string(k), append([]byte(nil), values[i]...))); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		bk, err := tx.CreateBucketIfNotExists([]byte(formatBucket))
		if err != nil {
			return err
		}
		return bk.Put([]byte(formatKey), []byte(strconv.Itoa(formatCurrent)))
	})
}

// WriteVerified writes a store file at path from what fill writes (a copy of a store file, such
// as Backup produces) and checks it as OpenBolt would before it appears: synced, mode 0600, and
// either whole and verified or not there at all. It returns the number of records.
func WriteVerified(path string, fill func(io.Writer) error) (records int, err error) {
	f, err := renameio.NewPendingFile(path, renameio.WithTempDir(filepath.Dir(path)), renameio.WithStaticPermissions(0o600))
	if err != nil {
		return 0, err
	}
	defer f.Cleanup()
	if err := fill(f); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	b, records, err := openBolt(f.Name(), true)
	if err != nil {
		return 0, fmt.Errorf("the copy does not verify: %w", err)
	}
	if err := b.Close(); err != nil {
		return 0, err
	}
	if err := f.CloseAtomicallyReplace(); err != nil {
		return 0, err
	}
	return records, syncDir(filepath.Dir(path))
}

// syncDir fsyncs a directory, so that a file just renamed into it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
