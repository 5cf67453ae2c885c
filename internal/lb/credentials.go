package lb

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/moatlb/moat/internal/awsapi/sigv4"
	"github.com/moatlb/moat/internal/store"
)

// CredentialsFile is the name of the credentials file in the data dir: AWS's shared-credentials
// format, every profile's key accepted, profiles with moat_read_only = true for read actions only.
const CredentialsFile = "credentials"

// AddReadOnlyProfile adds profile name with a fresh read-only key to the credentials file of the
// moat lb whose data dir is dataDir, and returns the file and the new access key ID. A running
// moat lb accepts the key from its next request on (it follows the file). A data dir without a
// credentials file gets one first, as moat lb's first start writes it.
func AddReadOnlyProfile(dataDir, name string) (path, accessKeyID string, err error) {
	path = filepath.Join(dataDir, CredentialsFile)
	accessKeyID, err = sigv4.AddProfile(path, name, true)
	return path, accessKeyID, err
}

// AddReadOnlyProfileToStore is AddReadOnlyProfile for the deployment whose store cfg.Store names
// (etcd): the profile is added to the store's credentials, which every running node writes to
// its own data dir's credentials file and accepts from then on. The store must hold credentials
// already (a moat lb --store started on it, or moat lb migrate filled it).
func AddReadOnlyProfileToStore(cfg Config, name string) (accessKeyID string, err error) {
	if err := cfg.validateStore(); err != nil {
		return "", err
	}
	st, err := openEtcd(cfg)
	if err != nil {
		return "", err
	}
	defer st.Close()
	err = st.Update(func(tx store.Tx) error {
		creds, err := store.Load[sharedCredentials](tx, credentialsBucket, credentialsKey)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%s holds no credentials yet: start moat lb --store on it, or fill it with moat lb migrate", cfg.Store)
		}
		if err != nil {
			return err
		}
		content, id, err := sigv4.AppendProfile("the store's credentials", []byte(creds.File), name, true)
		if err != nil {
			return err
		}
		accessKeyID = id // the last run's: an update that ran again wrote only its own key
		return store.Save(tx, credentialsBucket, credentialsKey, sharedCredentials{File: string(content)})
	})
	return accessKeyID, err
}
