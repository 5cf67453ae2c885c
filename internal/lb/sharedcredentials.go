package lb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"

	"github.com/moatlb/moat/internal/awsapi/sigv4"
	"github.com/moatlb/moat/internal/store"
)

// Credentials with --store etcd. Every node of a deployment must accept the same keys, so the
// credentials file's content is a record of the store, put by whichever node starts first, and
// each node keeps a copy of it in <data-dir>/credentials: the file it verifies signatures with
// (sigv4.File, as with bolt) and that clients on the node read. The store is the truth: a copy
// that differs is replaced, at start and whenever the record changes.
const (
	credentialsBucket = "credentials"
	credentialsKey    = "file"
)

// sharedCredentials is the record: the credentials file's content.
type sharedCredentials struct {
	File string `json:"file"`
}

// shareCredentials makes sure the store holds the deployment's credentials, writes this node's
// copy, and keeps it following the record (woken only by commits to its bucket) until stop is
// called. The record is created in one transaction, so nodes starting together end with the
// same keys: from the data dir's own credentials file if it has one (a node that served alone
// before), else a fresh key pair.
func shareCredentials(st *store.Etcd, dataDir string, log *slog.Logger) (stop func(), err error) {
	path := filepath.Join(dataDir, CredentialsFile)
	var creds sharedCredentials
	var created bool
	err = st.Update(func(tx store.Tx) error {
		created = false
		var err error
		creds, err = store.Load[sharedCredentials](tx, credentialsBucket, credentialsKey)
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		content, err := os.ReadFile(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if content, _, err = sigv4.NewCredentials(); err != nil {
				return err
			}
		case err != nil:
			return fmt.Errorf("read credentials: %w", err)
		default:
			if _, err := sigv4.ParseKeys(path, content); err != nil {
				return err
			}
		}
		creds, created = sharedCredentials{File: string(content)}, true
		return store.Save(tx, credentialsBucket, credentialsKey, creds)
	})
	if err != nil {
		return nil, fmt.Errorf("credentials in the store: %w", err)
	}
	if created {
		log.Info("put this node's credentials in the store for every node", "file", path)
	}
	if err := writeCredentialsCopy(path, creds, log); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	changes, stopChanges := st.BucketChanges(credentialsBucket)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-changes:
			}
			creds, err := loadSharedCredentials(st)
			if err == nil {
				err = writeCredentialsCopy(path, creds, log)
			}
			if err != nil && ctx.Err() == nil {
				log.Error("following the store's credentials; keeping the previous copy", "file", path, "err", err)
			}
		}
	}()
	return func() { cancel(); stopChanges(); <-done }, nil
}

func loadSharedCredentials(st store.Store) (creds sharedCredentials, err error) {
	err = st.View(func(tx store.Tx) error {
		creds, err = store.Load[sharedCredentials](tx, credentialsBucket, credentialsKey)
		return err
	})
	return creds, err
}

// writeCredentialsCopy replaces the file at path with the store's credentials unless it holds
// them already. The replacement is atomic (sigv4.File reads the old file or the new one) and
// checked first: a record moat cannot read must not lock the node's clients out.
func writeCredentialsCopy(path string, creds sharedCredentials, log *slog.Logger) error {
	content := []byte(creds.File)
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, content) {
		return nil
	}
	if _, err := sigv4.ParseKeys("the store's credentials", content); err != nil {
		return err
	}
	if err := renameio.WriteFile(path, content, 0o600); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	if old != nil {
		log.Info("replaced the credentials file with the store's", "file", path)
	}
	return nil
}
