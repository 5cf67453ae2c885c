package lockfile

import (
	"errors"
	"path/filepath"
	"testing"
)

// A second Acquire fails with ErrHeld while the first holds the lock, and succeeds once it is
// released.
func TestAcquire(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	release, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire(path); !errors.Is(err, ErrHeld) {
		t.Fatalf("second Acquire: %v, want ErrHeld", err)
	}
	release()
	again, err := Acquire(path)
	if err != nil {
		t.Fatalf("Acquire after release: %v", err)
	}
	again()
}
