package lb

import (
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatlb/moat/internal/awsapi/sigv4"
	"github.com/moatlb/moat/internal/lockfile"
	"github.com/moatlb/moat/internal/store"
)

// dump reads every record of buckets.
func dump(t *testing.T, st store.Store, buckets ...string) map[string]string {
	t.Helper()
	records := map[string]string{}
	err := st.View(func(tx store.Tx) error {
		for _, b := range buckets {
			if err := tx.ForEach(b, func(key string, value []byte) error {
				records[b+"/"+key] = string(value)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return records
}

// TestMigrateCopiesEveryBucketAndTheCredentials: every record of the state file, in buckets
// larger than one batch, and the credentials reach the etcd root, record for record; a second
// migrate into the same root, or one while a moat lb holds the data dir, is refused.
func TestMigrateCopiesEveryBucketAndTheCredentials(t *testing.T) {
	storeFlag := startEtcd(t, "/migrated")
	dataDir := t.TempDir()
	if _, _, err := sigv4.LoadOrCreateFile(filepath.Join(dataDir, CredentialsFile)); err != nil {
		t.Fatal(err)
	}
	bolt, err := store.OpenBolt(filepath.Join(dataDir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	buckets := map[string]int{"groups": 3, "load_balancers": 2*migrateBatchRecords + 7, "tags": 1}
	for bucket, n := range buckets {
		err := bolt.Update(func(tx store.Tx) error {
			for i := range n {
				if err := store.Save(tx, bucket, fmt.Sprintf("key-%04d", i), map[string]any{"bucket": bucket, "i": i}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	want := dump(t, bolt, "groups", "load_balancers", "tags")

	cfg := Config{DataDir: dataDir, Store: storeFlag}
	if _, err := Migrate(cfg); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("migrate while moat lb has the state file open: %v, want it refused as in use", err)
	}
	if err := bolt.Close(); err != nil {
		t.Fatal(err)
	}
	release, err := lockfile.Acquire(filepath.Join(dataDir, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Migrate(cfg); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("migrate while a moat lb --store holds the data dir: %v, want it refused as in use", err)
	}
	release()

	res, err := Migrate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Buckets != len(buckets) || res.Records != len(want) || !res.Credentials {
		t.Errorf("migrate: %+v, want %d buckets, %d records and the credentials", res, len(buckets), len(want))
	}
	etcd := openNode(t, storeFlag, t.TempDir())
	if got := dump(t, etcd, "groups", "load_balancers", "tags"); !maps.Equal(got, want) {
		t.Errorf("the etcd root holds %d records, want the state file's %d", len(got), len(want))
	}
	creds, err := loadSharedCredentials(etcd)
	if err != nil || creds.File != string(readCredentials(t, dataDir)) {
		t.Errorf("the store's credentials: %q, %v; want the data dir's file", creds.File, err)
	}

	if _, err := Migrate(cfg); err == nil || !strings.Contains(err.Error(), "holds state already") {
		t.Errorf("migrate into a root that holds state: %v, want it refused", err)
	}
}
