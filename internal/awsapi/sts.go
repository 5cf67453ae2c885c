package awsapi

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"net/url"

	"github.com/moatlb/moat/internal/awsapi/sigv4"
)

// identityKey carries the verified caller (sigv4.Identity) in a handler's context.
type identityKey struct{}

func (s *Server) stsHandlers() map[string]handler {
	return map[string]handler{
		"GetCallerIdentity": func(ctx context.Context, _ url.Values) (any, error) {
			return s.callerIdentity(ctx.Value(identityKey{}).(sigv4.Identity)), nil
		},
	}
}

type getCallerIdentityResult struct {
	Arn     string
	UserId  string
	Account string
}

// callerIdentity is the only part of STS moat pretends: tools such as Terraform's AWS provider
// check their credentials with it before anything else. A profile of the credentials file stands
// for an IAM user of that name (as read-only errors word it); a key from no profile is the
// account's root. The user ID is an IAM user ID's shape (AIDA + 17 characters), derived from the
// access key so that it is stable across restarts and distinct per key.
func (s *Server) callerIdentity(id sigv4.Identity) getCallerIdentityResult {
	account := s.cloud.Config().AccountID
	if id.Profile == "" {
		return getCallerIdentityResult{Arn: "arn:aws:iam::" + account + ":root", UserId: account, Account: account}
	}
	sum := sha256.Sum256([]byte(id.AccessKeyID))
	return getCallerIdentityResult{
		Arn:     "arn:aws:iam::" + account + ":user/" + id.Profile,
		UserId:  "AIDA" + base32.StdEncoding.EncodeToString(sum[:])[:17],
		Account: account,
	}
}
