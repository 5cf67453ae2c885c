package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// marker is a value no bbolt structure contains, so the tests can find a record's bytes in the file.
var marker = strings.Repeat("integrity-marker-", 12) // 204 bytes

type markedRecord struct {
	Name string
	Note string
}

// writeStore makes a store at path with n records in bucket "things", over several commits, and
// one record "marked" whose value holds marker; it returns the file's bytes.
func writeStore(t testing.TB, path string, n int) []byte {
	t.Helper()
	st, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 50 {
		err := st.Update(func(tx Tx) error {
			for j := i; j < min(i+50, n); j++ {
				if err := Save(tx, "things", fmt.Sprintf("thing-%04d", j), record{fmt.Sprintf("thing %d %s", j, strings.Repeat("x", 100)), j}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Update(func(tx Tx) error { return Save(tx, "marked", "the-key", markedRecord{"m", marker}) }); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// flipAt inverts n bytes at each offset in the file at path.
func flipAt(t *testing.T, path string, offsets []int, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range offsets {
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, int64(off)); err != nil {
			t.Fatal(err)
		}
		for i := range buf {
			buf[i] ^= 0xff
		}
		if _, err := f.WriteAt(buf, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
}

// indexAll returns every offset of sub in data: copy-on-write leaves old copies of a record in
// freed pages, and the tests damage all of them so that none is the live one by luck.
func indexAll(data []byte, sub string) []int {
	var out []int
	for off := 0; ; {
		i := bytes.Index(data[off:], []byte(sub))
		if i < 0 {
			return out
		}
		out = append(out, off+i)
		off += i + 1
	}
}

func TestOpenBoltRefusesFlippedRecordBytes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		find        string // bytes of the record to damage
		skip, flips int    // from the start of find: how many bytes to leave, how many to invert
	}{
		{"one value byte", marker, 100, 1},
		{"200 value bytes", marker, 0, 200},
		{"one key byte", "the-key", 4, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			data := writeStore(t, path, 200)
			offsets := indexAll(data, tc.find)
			if len(offsets) == 0 {
				t.Fatalf("%q is not in the file: the test would damage nothing", tc.find)
			}
			for i := range offsets {
				offsets[i] += tc.skip
			}
			flipAt(t, path, offsets, tc.flips)
			after, _ := os.ReadFile(path)
			if n := len(indexAll(after, tc.find)); n != 0 {
				t.Fatalf("%d copies of the record's bytes left undamaged", n)
			}

			st, err := OpenBolt(path)
			if err == nil {
				st.Close()
				t.Fatal("a store with a damaged record opened")
			}
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v (%T), want a *CorruptError", err, err)
			}
			if ce.Path != path || ce.Bucket != "marked" {
				t.Errorf("error %q names file %q bucket %q, want %s and bucket marked", err, ce.Path, ce.Bucket, path)
			}
			if !strings.Contains(err.Error(), "checksum mismatch") {
				t.Errorf("error %q does not say the checksum failed", err)
			}
		})
	}
}

func TestOpenBoltRefusesTruncatedFile(t *testing.T) {
	dir := t.TempDir()
	good := writeStore(t, filepath.Join(dir, "good.db"), 500)
	if len(good) < 16*4096 {
		t.Fatalf("the store is only %d bytes: halving it would test little", len(good))
	}
	// bbolt grows the file ahead of its pages; cutting only that slack loses nothing.
	f, err := os.Open(filepath.Join(dir, "good.db"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := newestMeta(f, int64(len(good)))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	end := int(m.pgid) * int(m.pageSize)
	for _, tc := range []struct {
		name string
		size int
		want string
	}{
		{"half", len(good) / 2, "truncated"},
		{"all but the last used page", end - int(m.pageSize), "truncated"},
		{"two pages", 8192, "truncated"},
		{"100 bytes", 100, "truncated"},
		{"10 bytes", 10, "meta pages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".db")
			if err := os.WriteFile(path, good[:tc.size], 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := OpenBolt(path)
			if err == nil {
				st.Close()
				t.Fatalf("a store truncated to %d of %d bytes opened", tc.size, len(good))
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q: want ErrCorrupt naming %s and saying %q", err, path, tc.want)
			}
			if data, _ := os.ReadFile(path); len(data) != tc.size {
				t.Errorf("opening changed the damaged file from %d to %d bytes", tc.size, len(data))
			}
		})
	}
}

func TestOpenBoltRefusesGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	garbage := bytes.Repeat([]byte("not a database "), 4096)
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	if st, err := OpenBolt(path); !errors.Is(err, ErrCorrupt) {
		if err == nil {
			st.Close()
		}
		t.Fatalf("garbage: %v, want ErrCorrupt", err)
	}
}

func TestOpenBoltReadOnlyRefusesEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if st, err := OpenBoltReadOnly(path); !errors.Is(err, ErrCorrupt) {
		if err == nil {
			st.Close()
		}
		t.Fatalf("empty file read-only: %v, want ErrCorrupt", err)
	}
}

// TestTxRefusesRecordDamagedWhileOpen damages a record under an open store: Get and ForEach fail
// naming it, rather than return its bytes.
func TestTxRefusesRecordDamagedWhileOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Update(func(tx Tx) error { return Save(tx, "marked", "the-key", markedRecord{"m", marker}) }); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	offsets := indexAll(data, marker)
	if len(offsets) == 0 {
		t.Fatal("the record is not in the file")
	}
	flipAt(t, path, offsets, 1) // bbolt maps the file shared: the open store sees the change
	err = st.View(func(tx Tx) error {
		_, err := Load[markedRecord](tx, "marked", "the-key")
		return err
	})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "marked/the-key") {
		t.Errorf("Load of a damaged record: %v, want ErrCorrupt naming marked/the-key", err)
	}
	err = st.View(func(tx Tx) error {
		_, err := List[markedRecord](tx, "marked")
		return err
	})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "marked/the-key") {
		t.Errorf("List over a damaged record: %v, want ErrCorrupt naming marked/the-key", err)
	}
}

// writeFormat1 makes a store as moat wrote it before records had checksums: bare JSON values and
// no meta bucket.
func writeFormat1(t *testing.T, path string, values map[string]string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucket([]byte("things"))
		if err != nil {
			return err
		}
		for k, v := range values {
			if err := bk.Put([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenBoltUpgradesFormat1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	writeFormat1(t, path, map[string]string{"a": `{"Name":"a","Count":1}`, "b": `{"Name":"b","Count":2}`})
	for range 2 { // the upgrade, then an open of the upgraded file
		st, err := OpenBolt(path)
		if err != nil {
			t.Fatal(err)
		}
		var all []record
		if err := st.View(func(tx Tx) (err error) { all, err = List[record](tx, "things"); return err }); err != nil {
			t.Fatal(err)
		}
		if len(all) != 2 || all[0] != (record{"a", 1}) || all[1] != (record{"b", 2}) {
			t.Errorf("after the upgrade: %+v", all)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		if got := string(tx.Bucket([]byte(formatBucket)).Get([]byte(formatKey))); got != "2" {
			t.Errorf("format %q after the upgrade, want 2", got)
		}
		if raw := tx.Bucket([]byte("things")).Get([]byte("a")); string(raw) == `{"Name":"a","Count":1}` {
			t.Error("record a has no checksum after the upgrade")
		}
		return nil
	})
	db.Close()

	// The old file is kept whole beside it, for an older moat.
	old, err := bolt.Open(path+".format1", 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("the copy of the format 1 file: %v", err)
	}
	defer old.Close()
	_ = old.View(func(tx *bolt.Tx) error {
		if got := string(tx.Bucket([]byte("things")).Get([]byte("a"))); got != `{"Name":"a","Count":1}` {
			t.Errorf("format 1 copy holds %q", got)
		}
		return nil
	})
}

func TestOpenBoltRefusesDamagedFormat1Record(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	writeFormat1(t, path, map[string]string{"a": `{"Name":"a","Count":1}`, "b": `{"Name":"b",` + "\xff" + `"Count":2}`})
	st, err := OpenBolt(path)
	if err == nil {
		st.Close()
		t.Fatal("a format 1 store with a record that is not JSON opened")
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "things/b") {
		t.Errorf("error %q: want ErrCorrupt naming things/b", err)
	}
	if _, err := os.Stat(path + ".format1"); err == nil {
		t.Error("a damaged store was upgraded")
	}
}

func TestOpenBoltRefusesNewerFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Update(func(tx *bolt.Tx) error {
		bk, _ := tx.CreateBucket([]byte(formatBucket))
		return bk.Put([]byte(formatKey), []byte("3"))
	})
	db.Close()
	st, err := OpenBolt(path)
	if err == nil {
		st.Close()
		t.Fatal("a store of a newer format opened")
	}
	if !strings.Contains(err.Error(), "newer") || errors.Is(err, ErrCorrupt) {
		t.Errorf("error %q: want a newer-format error that is not damage", err)
	}
}

func TestOpenBoltLockedIsErrLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start := time.Now()
	second, err := OpenBolt(path) // flock locks conflict between two open files of one process too
	if err == nil {
		second.Close()
		t.Fatal("a second OpenBolt of a store in use succeeded")
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Errorf("error %q: want ErrLocked naming %s", err, path)
	}
	if d := time.Since(start); d > 10*lockWait {
		t.Errorf("waited %v for the lock", d)
	}
	if ro, err := OpenBoltReadOnly(path); !errors.Is(err, ErrLocked) {
		if err == nil {
			ro.Close()
		}
		t.Errorf("read-only open of a store in use: %v, want ErrLocked", err)
	}
}

// TestBackupWhileWritingIsConsistent backs a store up while commits continue: the copy verifies,
// holds every commit made before the backup started, and no commit in part (each writes the same
// count to two records).
func TestBackupWhileWritingIsConsistent(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenBolt(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	commit := func(i int) error {
		return st.Update(func(tx Tx) error {
			if err := Save(tx, "pairs", fmt.Sprintf("a-%05d", i), record{"a", i}); err != nil {
				return err
			}
			return Save(tx, "pairs", fmt.Sprintf("b-%05d", i), record{"b", i})
		})
	}
	const before = 300
	for i := range before {
		if err := commit(i); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := before; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := commit(i); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	backup := filepath.Join(dir, "backup.db")
	records, err := WriteVerified(backup, func(w io.Writer) error { _, err := st.Backup(w); return err })
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(backup); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, mode %v; want 0600", err, info.Mode())
	}

	copied, err := OpenBolt(backup)
	if err != nil {
		t.Fatal(err)
	}
	defer copied.Close()
	var all []record
	if err := copied.View(func(tx Tx) (err error) { all, err = List[record](tx, "pairs"); return err }); err != nil {
		t.Fatal(err)
	}
	if records != len(all) {
		t.Errorf("WriteVerified counted %d records, the copy holds %d", records, len(all))
	}
	if len(all) < 2*before || len(all)%2 != 0 {
		t.Fatalf("the backup holds %d records; want an even number of at least %d", len(all), 2*before)
	}
	as, bs := all[:len(all)/2], all[len(all)/2:]
	for i := range as {
		if as[i].Count != i || bs[i].Count != i {
			t.Fatalf("commit %d is in the backup in part: %+v, %+v", i, as[i], bs[i])
		}
	}
	t.Logf("the backup holds %d commits, %d made while it was taken", len(as), len(as)-before)
}

func TestWriteVerifiedLeavesNoFileForABadCopy(t *testing.T) {
	dir := t.TempDir()
	good := writeStore(t, filepath.Join(dir, "good.db"), 100)
	dest := filepath.Join(dir, "backup.db")
	for name, fill := range map[string]func(io.Writer) error{
		"truncated": func(w io.Writer) error { _, err := w.Write(good[:len(good)/2]); return err },
		"failed":    func(w io.Writer) error { _, _ = w.Write(good[:100]); return errors.New("connection lost") },
	} {
		if _, err := WriteVerified(dest, fill); err == nil {
			t.Errorf("%s copy: WriteVerified succeeded", name)
		}
		if _, err := os.Stat(dest); err == nil {
			t.Errorf("%s copy: %s exists", name, dest)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

// FuzzOpenBolt opens damaged variants of a store file: each opens and reads, or is refused with an
// error, and never panics or faults. It opens read-only, which runs the same checks, and rewrites
// one file in place, so that no exec waits on fsync or on the file system freeing blocks.
func FuzzOpenBolt(f *testing.F) {
	good := writeStore(f, filepath.Join(f.TempDir(), "seed.db"), 40)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(good[:4096])
	path := filepath.Join(f.TempDir(), "state.db")
	file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		f.Fatal(err)
	}
	defer file.Close()
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := file.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		if err := file.Truncate(int64(len(data))); err != nil {
			t.Fatal(err)
		}
		st, err := OpenBoltReadOnly(path)
		if err != nil {
			return
		}
		defer st.Close()
		_ = st.View(func(tx Tx) error {
			_, _ = List[record](tx, "things")
			_, _ = Load[markedRecord](tx, "marked", "the-key")
			return nil
		})
	})
}
