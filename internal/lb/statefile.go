package lb

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/moatlb/moat/internal/store"
)

// StateFile is the name of the store in the data dir.
const StateFile = "state.db"

// openState opens the data dir's store, first of everything in the data dir: it holds the data
// dir's lock, so nothing else there is touched by a second moat lb.
//
// A data dir that has credentials has served before, so a missing or empty state file there means
// the state was lost, not that this is a first start: it is refused unless startFresh. A damaged
// file is always refused, with what is wrong and how to restore; a locked one names the data dir
// as in use.
func openState(dataDir string, startFresh bool, log *slog.Logger) (*store.Bolt, error) {
	path := filepath.Join(dataDir, StateFile)
	info, err := os.Stat(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err != nil || info.Size() == 0 {
		what := "is missing"
		if err == nil {
			what = "is empty (0 bytes)"
		}
		_, credsErr := os.Stat(filepath.Join(dataDir, CredentialsFile))
		switch {
		case credsErr == nil && !startFresh:
			return nil, fmt.Errorf("%s %s, but %s holds credentials from an earlier run: its state (every load balancer, target group and security group) is lost. "+
				"Restore a backup (made with `moat lb backup FILE`) by copying it to %s, or start with --start-fresh to begin with empty state", path, what, dataDir, path)
		case credsErr == nil:
			log.Warn("state file missing or empty: starting with empty state, as --start-fresh asks", "file", path, "state", what)
		}
	}
	st, err := store.OpenBolt(path)
	switch {
	case errors.Is(err, store.ErrLocked):
		return nil, fmt.Errorf("data dir %s is in use by another moat lb (%s is locked)", dataDir, path)
	case errors.Is(err, store.ErrCorrupt):
		return nil, fmt.Errorf("%w. moat lb does not start on a damaged state file. "+
			"To restore a backup (made with `moat lb backup FILE`), copy it to %s and start moat lb again; "+
			"to begin with empty state instead (losing every resource), move %s away and start with --start-fresh", err, path, path)
	case err != nil:
		return nil, err
	}
	return st, nil
}
