package lb

import (
	"path/filepath"

	"github.com/moatlb/moat/internal/awsapi/sigv4"
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
