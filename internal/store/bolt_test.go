package store

import (
	"errors"
	"path/filepath"
	"testing"
	"time"
)

type record struct {
	Name  string
	Count int
}

func TestBoltUpdateIsAllOrNothingAndDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update(func(tx Tx) error { return Save(tx, "things", "a", record{"a", 1}) }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err = st.Update(func(tx Tx) error {
		if err := Save(tx, "things", "b", record{"b", 2}); err != nil {
			return err
		}
		if err := tx.Delete("things", "a"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("update error %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = st.View(func(tx Tx) error {
		all, err := List[record](tx, "things")
		if err != nil {
			return err
		}
		if len(all) != 1 || all[0] != (record{"a", 1}) {
			t.Errorf("after a failed update and a reopen: %+v, want only a", all)
		}
		if _, err := Load[record](tx, "things", "b"); !errors.Is(err, ErrNotFound) {
			t.Errorf("b: %v, want ErrNotFound", err)
		}
		if _, err := Load[record](tx, "nothing", "x"); !errors.Is(err, ErrNotFound) {
			t.Errorf("missing bucket: %v, want ErrNotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBoltChangesSignalsEveryCommit(t *testing.T) {
	st, err := OpenBolt(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	changes, stop := st.Changes()
	defer stop()
	for i := range 3 { // coalesced: three commits, at least one signal pending
		if err := st.Update(func(tx Tx) error { return Save(tx, "things", "a", record{"a", i}) }); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("no change signalled")
	}
	_ = st.Update(func(tx Tx) error { return errors.New("no") })
	_ = st.Update(func(tx Tx) error { _, _ = tx.Get("things", "a"); return nil })
	select {
	case <-changes:
		t.Fatal("a failed or read-only update signalled a change")
	default:
	}
}
