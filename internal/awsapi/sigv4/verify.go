// Package sigv4 verifies AWS Signature Version 4 on requests to moat's
// AWS-compatible API, and manages the credentials file that says which keys are
// valid.
//
// It authenticates only. Verify reports which key signed a request for which
// region and service, and the key's profile and whether it is read-only; checking
// that the service is the one the endpoint serves, and what the key may do, is
// the caller's job.
package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	algorithm       = "AWS4-HMAC-SHA256"
	scopeTerminator = "aws4_request"
	amzDateLayout   = "20060102T150405Z"
	defaultMaxSkew  = 15 * time.Minute
	// maxPresignExpires is AWS's limit on X-Amz-Expires: one week.
	maxPresignExpires = 604800
)

// Verifier checks AWS Signature Version 4 on incoming requests.
//
// It accepts the Authorization header form that the AWS CLI and the SDKs use, and
// the presigned form whose parameters travel in the query string. Session tokens
// (X-Amz-Security-Token) are rejected as ReasonUnknownKey: moat has no STS, so no
// temporary credential can be valid. The payload hash is always computed over the
// body; an X-Amz-Content-Sha256 header that disagrees with it (including
// UNSIGNED-PAYLOAD) is a ReasonSignatureMismatch.
//
// Stricter than the specification where both clients allow it: the signing time
// must come from X-Amz-Date (the Date header is not accepted), and SignedHeaders
// must list lowercase names, each once, host among them. A presigned request
// with X-Amz-Expires (at most a week) stays valid until then, beyond MaxSkew.
//
// A Verifier is safe for concurrent use if its CredentialStore is.
type Verifier struct {
	Credentials CredentialStore  // access key -> secret and profile
	Now         func() time.Time // injectable clock; nil = time.Now
	MaxSkew     time.Duration    // 0 = 15 minutes

	keys signingKeys
}

// signingKeys keeps the signing keys of scopes that verified: deriving one takes four HMACs, a
// third of a verification, and a client signs with the same key all day. Only a signature that
// verified adds a key, so only a holder of the secret can fill the cache, and it is emptied when
// full (a few keys a day per secret in use is the normal load).
type signingKeys struct {
	mu   sync.Mutex
	keys map[string][]byte // by secret and scope
}

const maxSigningKeys = 256

func (k *signingKeys) get(id string) []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys[id]
}

func (k *signingKeys) put(id string, key []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys == nil || len(k.keys) >= maxSigningKeys {
		k.keys = make(map[string][]byte)
	}
	k.keys[id] = key
}

// CredentialStore looks up an access key.
type CredentialStore interface {
	Lookup(accessKeyID string) (key Key, ok bool)
}

// Identity is what a verified signature proves: who signed, and for which
// region and service. The caller checks that Service and Region are its own,
// and that a ReadOnly key calls only read actions.
type Identity struct {
	AccessKeyID, Region, Service string
	Profile                      string // the key's profile; "" for keys not from a file
	ReadOnly                     bool
}

// claim is what a request says about its own signature, none of it trusted yet.
type claim struct {
	accessKey     string
	scopeDate     string
	region        string
	service       string
	signedHeaders []string
	signature     string
	amzDate       string
	date          time.Time
	presigned     bool
	expires       time.Duration // presigned only; 0 when X-Amz-Expires is absent
}

func (c *claim) scope() string {
	return c.scopeDate + "/" + c.region + "/" + c.service + "/" + scopeTerminator
}

// Verify checks r, whose body has already been read into body (the caller reads
// the raw bytes before any form parsing, because parsing consumes them). Every
// failure is an *Error.
func (v *Verifier) Verify(r *http.Request, body []byte) (Identity, error) {
	u := r.URL
	if u == nil {
		u = &url.URL{}
	}
	query, err := parseQuery(u.RawQuery)
	if err != nil {
		return Identity{}, err
	}
	c, err := parseClaim(r.Header, query)
	if err != nil {
		return Identity{}, err
	}
	if len(r.Header.Values("X-Amz-Security-Token")) > 0 || hasParam(query, "X-Amz-Security-Token") {
		return Identity{}, newError(ReasonUnknownKey, msgInvalidToken)
	}
	key, ok := Key{}, false
	if v.Credentials != nil {
		key, ok = v.Credentials.Lookup(c.accessKey)
	}
	if !ok {
		return Identity{}, newError(ReasonUnknownKey, msgInvalidToken)
	}
	if c.scopeDate != c.amzDate[:8] {
		return Identity{}, newError(ReasonSignatureMismatch,
			"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s', from '%s'.",
			clip(c.scopeDate), c.amzDate[:8], c.amzDate)
	}
	if err := v.checkTime(c); err != nil {
		return Identity{}, err
	}

	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	if declared := r.Header.Values("X-Amz-Content-Sha256"); len(declared) > 0 &&
		(len(declared) > 1 || declared[0] != payloadHash) {
		return Identity{}, newError(ReasonSignatureMismatch,
			"The provided 'x-amz-content-sha256' header does not match what was computed.")
	}

	canonical := canonicalRequest(r, u, query, c, payloadHash)
	keyID := key.Secret + "\x00" + c.scope()
	signingKey := v.keys.get(keyID)
	cached := signingKey != nil
	if !cached {
		signingKey = deriveSigningKey(key.Secret, c)
	}
	want := signature(signingKey, c, canonical)
	if !hmac.Equal([]byte(want), []byte(c.signature)) {
		return Identity{}, newError(ReasonSignatureMismatch, msgSignatureMismatch)
	}
	if !cached {
		v.keys.put(keyID, signingKey)
	}
	return Identity{AccessKeyID: c.accessKey, Region: c.region, Service: c.service, Profile: key.Profile, ReadOnly: key.ReadOnly}, nil
}

// checkTime rejects a request signed too far from the server clock, in either
// direction, so that a captured request cannot be replayed later. A presigned
// request with X-Amz-Expires is valid until it expires instead.
func (v *Verifier) checkTime(c *claim) *Error {
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	t := now().UTC()
	skew := v.MaxSkew
	if skew <= 0 {
		skew = defaultMaxSkew
	}
	if c.presigned && c.expires > 0 {
		if t.After(c.date.Add(c.expires)) {
			return newError(ReasonExpired, "Request has expired")
		}
	} else if t.Sub(c.date) > skew {
		return newError(ReasonExpired, "Signature expired: %s is now earlier than %s (%s - %s.)",
			c.amzDate, t.Add(-skew).Format(amzDateLayout), t.Format(amzDateLayout), formatSkew(skew))
	}
	if c.date.Sub(t) > skew {
		return newError(ReasonExpired, "Signature not yet current: %s is still later than %s (%s + %s.)",
			c.amzDate, t.Add(skew).Format(amzDateLayout), t.Format(amzDateLayout), formatSkew(skew))
	}
	return nil
}

// formatSkew writes the skew as AWS does ("15 min") when it is whole minutes.
func formatSkew(d time.Duration) string {
	if d%time.Minute == 0 {
		return fmt.Sprintf("%d min", d/time.Minute)
	}
	return d.String()
}

// parseClaim finds the signature parameters in the Authorization header or, for
// a presigned request, in the query string. AWS refuses requests that use both.
func parseClaim(h http.Header, query []param) (*claim, *Error) {
	auth := h.Values("Authorization")
	presigned := hasParam(query, "X-Amz-Algorithm")
	switch {
	case len(auth) > 0 && presigned:
		return nil, newError(ReasonIncompleteSignature,
			"Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified")
	case presigned:
		return parsePresigned(query)
	case len(auth) == 0 || (len(auth) == 1 && strings.TrimSpace(auth[0]) == ""):
		return nil, newError(ReasonMissingAuth, msgMissingAuth)
	case len(auth) > 1:
		return nil, newError(ReasonIncompleteSignature, "Request carries more than one Authorization header")
	}
	return parseAuthorization(auth[0], h.Values("X-Amz-Date"))
}

// parseAuthorization parses
// "AWS4-HMAC-SHA256 Credential=AK/date/region/service/aws4_request, SignedHeaders=a;b, Signature=hex".
func parseAuthorization(auth string, amzDates []string) (*claim, *Error) {
	alg, rest, _ := strings.Cut(strings.TrimSpace(auth), " ")
	if alg != algorithm {
		return nil, unsupportedAlgorithm(alg)
	}
	params := map[string]string{}
	for part := range strings.SplitSeq(rest, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		key, value, ok := strings.Cut(part, "=")
		switch {
		case !ok:
			return nil, newError(ReasonIncompleteSignature,
				"Authorization header requires each component to be of the form key=value, got '%s'", clip(part))
		case key != "Credential" && key != "SignedHeaders" && key != "Signature":
			return nil, newError(ReasonIncompleteSignature, "Authorization header has an unknown parameter '%s'", clip(key))
		}
		if _, dup := params[key]; dup {
			return nil, newError(ReasonIncompleteSignature, "Authorization header has more than one '%s' parameter", key)
		}
		params[key] = value
	}
	var missing []string
	for _, key := range []string{"Credential", "Signature", "SignedHeaders"} {
		if _, ok := params[key]; !ok {
			missing = append(missing, "Authorization header requires '"+key+"' parameter.")
		}
	}
	if len(missing) > 0 {
		return nil, newError(ReasonIncompleteSignature, "%s", strings.Join(missing, " "))
	}
	switch len(amzDates) {
	case 0:
		return nil, newError(ReasonIncompleteSignature, "Authorization header requires existence of a 'X-Amz-Date' header.")
	case 1:
	default:
		return nil, newError(ReasonIncompleteSignature, "Request carries more than one X-Amz-Date header")
	}
	return newClaim(params["Credential"], params["SignedHeaders"], params["Signature"], amzDates[0])
}

// parsePresigned reads the X-Amz-* query parameters of a presigned request.
func parsePresigned(query []param) (*claim, *Error) {
	values := map[string]string{}
	for _, name := range []string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Expires"} {
		var n int
		for _, p := range query {
			if p.key == name {
				values[name] = p.value
				n++
			}
		}
		if n > 1 {
			return nil, newError(ReasonIncompleteSignature, "Query string has more than one '%s' parameter", name)
		}
	}
	if alg := values["X-Amz-Algorithm"]; alg != algorithm {
		return nil, unsupportedAlgorithm(alg)
	}
	var missing []string
	for _, name := range []string{"X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature"} {
		if _, ok := values[name]; !ok {
			missing = append(missing, "'"+name+"'")
		}
	}
	if len(missing) > 0 {
		return nil, newError(ReasonIncompleteSignature, "AWS query-string parameters must include %s.", strings.Join(missing, ", "))
	}
	c, err := newClaim(values["X-Amz-Credential"], values["X-Amz-SignedHeaders"], values["X-Amz-Signature"], values["X-Amz-Date"])
	if err != nil {
		return nil, err
	}
	c.presigned = true
	if raw, ok := values["X-Amz-Expires"]; ok {
		secs, convErr := strconv.Atoi(raw)
		if convErr != nil || secs <= 0 || secs > maxPresignExpires {
			return nil, newError(ReasonIncompleteSignature,
				"X-Amz-Expires must be a positive number of seconds, at most a week (604800), got '%s'", clip(raw))
		}
		c.expires = time.Duration(secs) * time.Second
	}
	return c, nil
}

// newClaim validates the parts that both forms share.
func newClaim(credential, signedHeaders, sig, amzDate string) (*claim, *Error) {
	parts := strings.SplitN(credential, "/", 6)
	if len(parts) != 5 || parts[0] == "" || parts[1] == "" || parts[2] == "" || parts[3] == "" {
		return nil, newError(ReasonIncompleteSignature,
			"Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '%s'", clip(credential))
	}
	if parts[4] != scopeTerminator {
		return nil, newError(ReasonSignatureMismatch,
			"Credential should be scoped with a valid terminator: 'aws4_request', not '%s'.", clip(parts[4]))
	}
	headers, err := parseSignedHeaders(signedHeaders)
	if err != nil {
		return nil, err
	}
	date, err := parseAmzDate(amzDate)
	if err != nil {
		return nil, err
	}
	return &claim{
		accessKey:     parts[0],
		scopeDate:     parts[1],
		region:        parts[2],
		service:       parts[3],
		signedHeaders: headers,
		signature:     sig,
		amzDate:       amzDate,
		date:          date,
	}, nil
}

// parseSignedHeaders requires lowercase header names, each listed once, including
// host. Listing each name once also bounds the canonical request to the size of
// the request's headers, whatever SignedHeaders says.
func parseSignedHeaders(s string) ([]string, *Error) {
	if s == "" {
		return nil, newError(ReasonIncompleteSignature, "SignedHeaders must not be empty")
	}
	names := strings.Split(s, ";")
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		if !isLowerToken(name) {
			return nil, newError(ReasonIncompleteSignature, "SignedHeaders contains an invalid header name '%s'", clip(name))
		}
		if seen[name] {
			return nil, newError(ReasonIncompleteSignature, "SignedHeaders lists '%s' more than once", name)
		}
		seen[name] = true
	}
	if !seen["host"] {
		return nil, newError(ReasonIncompleteSignature, "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
	}
	return names, nil
}

// isLowerToken reports whether s is an RFC 9110 token without uppercase letters.
func isLowerToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// parseAmzDate accepts only the basic ISO 8601 form, checked character by
// character because time.Parse tolerates one-digit hours.
func parseAmzDate(s string) (time.Time, *Error) {
	bad := newError(ReasonIncompleteSignature,
		"X-Amz-Date must be in the ISO8601 basic format YYYYMMDD'T'HHMMSS'Z', got '%s'", clip(s))
	if len(s) != len(amzDateLayout) || s[8] != 'T' || s[15] != 'Z' {
		return time.Time{}, bad
	}
	for i := 0; i < 15; i++ {
		if i != 8 && (s[i] < '0' || s[i] > '9') {
			return time.Time{}, bad
		}
	}
	t, err := time.Parse(amzDateLayout, s)
	if err != nil {
		return time.Time{}, bad
	}
	return t, nil
}

func unsupportedAlgorithm(alg string) *Error {
	return newError(ReasonUnsupportedAlgorithm,
		"Unsupported AWS 'algorithm': '%s'; only AWS4-HMAC-SHA256 is accepted", clip(alg))
}

// clip bounds client-supplied text echoed in error messages.
func clip(s string) string {
	const limit = 128
	if len(s) > limit {
		return s[:limit] + "..."
	}
	return s
}

func stringToSign(c *claim, canonicalRequest string) string {
	sum := sha256.Sum256([]byte(canonicalRequest))
	return algorithm + "\n" + c.amzDate + "\n" + c.scope() + "\n" + hex.EncodeToString(sum[:])
}

// deriveSigningKey derives the signing key of the claimed scope from the secret.
func deriveSigningKey(secret string, c *claim) []byte {
	key := hmacSHA256([]byte("AWS4"+secret), c.scopeDate)
	key = hmacSHA256(key, c.region)
	key = hmacSHA256(key, c.service)
	return hmacSHA256(key, scopeTerminator)
}

// signature computes the hex signature of a canonical request with the scope's signing key.
func signature(signingKey []byte, c *claim, canonicalRequest string) string {
	return hex.EncodeToString(hmacSHA256(signingKey, stringToSign(c, canonicalRequest)))
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}
