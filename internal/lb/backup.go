package lb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/moatlb/moat/internal/store"
)

// AdminSocket is the name of moat lb's admin socket in the data dir (mode 0600): it serves what
// only the user running moat lb may ask for, a backup of the state.
const AdminSocket = "admin.sock"

// serveAdmin serves the admin socket until the returned stop is called. The caller holds the
// store, and so the data dir's lock: a socket file already there is a dead moat lb's.
func serveAdmin(dataDir string, st *store.Bolt, log *slog.Logger) (stop func(), err error) {
	path := filepath.Join(dataDir, AdminSocket)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /backup", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		n, err := st.Backup(w)
		switch {
		case err != nil && n == 0:
			log.Error("backup failed", "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
		case err != nil:
			log.Error("backup failed", "err", err, "bytes_sent", n)
			panic(http.ErrAbortHandler) // a broken stream, never a short copy that ends cleanly
		default:
			log.Info("backup sent", "bytes", n)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin socket failed", "err", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx) // closing the listener removes the socket file
		<-done
	}, nil
}

// BackupResult says what Backup copied.
type BackupResult struct {
	Records int
	Online  bool // from a running moat lb, through its admin socket; else from the state file
}

// Backup writes a consistent, verified copy of the state of the moat lb in dataDir to dest: asked
// of the running moat lb through its admin socket, or read from the state file when none runs.
// dest appears only once the copy is whole, synced and opens as a store (mode 0600).
func Backup(ctx context.Context, dataDir, dest string) (BackupResult, error) {
	statePath := filepath.Join(dataDir, StateFile)
	if a, b := absPath(dest), absPath(statePath); a == b {
		return BackupResult{}, fmt.Errorf("%s is the state file itself: back it up to another file", dest)
	}
	sock := filepath.Join(dataDir, AdminSocket)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://moat-lb/backup", nil)
	if err != nil {
		return BackupResult{}, err
	}
	resp, err := hc.Do(req)
	if err == nil {
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return BackupResult{}, fmt.Errorf("the moat lb serving %s could not make a backup: %s", dataDir, strings.TrimSpace(string(msg)))
		}
		records, err := store.WriteVerified(dest, func(w io.Writer) error {
			_, err := io.Copy(w, resp.Body)
			return err
		})
		if err != nil {
			return BackupResult{}, fmt.Errorf("back up the moat lb serving %s to %s: %w", dataDir, dest, err)
		}
		return BackupResult{Records: records, Online: true}, nil
	}
	if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ECONNREFUSED) {
		return BackupResult{}, fmt.Errorf("ask moat lb for a backup through %s: %w", sock, err)
	}

	// No moat lb answers: copy the file, under a shared lock that keeps one from starting meanwhile.
	st, err := store.OpenBoltReadOnly(statePath)
	switch {
	case errors.Is(err, store.ErrLocked):
		return BackupResult{}, fmt.Errorf("a moat lb holds %s but does not answer on %s (its log says why it has no admin socket)", statePath, sock)
	case errors.Is(err, fs.ErrNotExist):
		return BackupResult{}, fmt.Errorf("no state file %s: is %s moat lb's data dir?", statePath, dataDir)
	case err != nil:
		return BackupResult{}, err
	}
	defer st.Close()
	records, err := store.WriteVerified(dest, func(w io.Writer) error {
		_, err := st.Backup(w)
		return err
	})
	if err != nil {
		return BackupResult{}, fmt.Errorf("back up %s to %s: %w", statePath, dest, err)
	}
	return BackupResult{Records: records}, nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		p = a
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}
