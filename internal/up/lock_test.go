package up

import (
	"strings"
	"testing"
)

// One moat up per state dir: a second is refused with what to do, until the first lets go.
func TestLockStateDir(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockStateDir(dir); err == nil || !strings.Contains(err.Error(), "another moat up is using "+dir) {
		t.Fatalf("second lock: %v, want a refusal naming the state dir", err)
	}
	unlock()
	again, err := lockStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	again()
}
