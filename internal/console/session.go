package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/moatlb/moat/internal/awsapi/sigv4"
)

// sessions issues and checks the console's session cookies. A cookie holds an access key ID
// and an expiry, with an HMAC over both and the key's current secret under a key drawn at
// random when the console starts: it cannot be forged or extended, it stops working when the
// key leaves the credentials file or its secret changes, and every session ends when moat lb
// restarts.
type sessions struct {
	key   []byte
	creds sigv4.CredentialStore
	ttl   time.Duration
	now   func() time.Time
}

// signIn checks an access key pair against the credentials and returns a cookie value for it.
func (s *sessions) signIn(accessKeyID, secret string) (value string, expires time.Time, ok bool) {
	key, found := s.creds.Lookup(accessKeyID)
	// Compare even for an unknown key, so that the time taken does not tell which keys exist.
	match := subtle.ConstantTimeCompare([]byte(key.Secret), []byte(secret)) == 1
	if !found || !match || secret == "" {
		return "", time.Time{}, false
	}
	expires = s.now().Add(s.ttl)
	return s.value(accessKeyID, key.Secret, expires), expires, true
}

// value is the cookie for accessKeyID, whose secret is secret, until expires.
func (s *sessions) value(accessKeyID, secret string, expires time.Time) string {
	payload := accessKeyID + "\n" + strconv.FormatInt(expires.Unix(), 10)
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(s.mac(payload, secret))
}

func (s *sessions) mac(payload, secret string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(payload))
	m.Write([]byte{0})
	m.Write([]byte(secret))
	return m.Sum(nil)
}

// check returns the access key ID of a valid, unexpired cookie value whose key is still in
// the credentials with the same secret.
func (s *sessions) check(value string) (accessKeyID string, ok bool) {
	encPayload, encMAC, found := strings.Cut(value, ".")
	if !found {
		return "", false
	}
	payload, err := base64.RawURLEncoding.DecodeString(encPayload)
	if err != nil {
		return "", false
	}
	sum, err := base64.RawURLEncoding.DecodeString(encMAC)
	if err != nil {
		return "", false
	}
	id, expiry, found := strings.Cut(string(payload), "\n")
	if !found {
		return "", false
	}
	unix, err := strconv.ParseInt(expiry, 10, 64)
	if err != nil || !s.now().Before(time.Unix(unix, 0)) {
		return "", false
	}
	key, found := s.creds.Lookup(id)
	if !found || !hmac.Equal(sum, s.mac(string(payload), key.Secret)) {
		return "", false
	}
	return id, true
}
