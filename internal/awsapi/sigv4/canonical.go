package sigv4

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// param is one decoded query-string parameter, in the order the client sent it.
type param struct{ key, value string }

// parseQuery decodes a raw query string the way the SDKs read it before signing
// (url.ParseQuery's rules: "+" is a space, empty pieces are skipped), keeping
// repeated keys. It does not reject ";" as url.ParseQuery does: a client that
// sent one signed it percent-encoded, as it will be re-encoded here.
func parseQuery(raw string) ([]param, *Error) {
	var params []param
	for raw != "" {
		var piece string
		piece, raw, _ = strings.Cut(raw, "&")
		if piece == "" {
			continue
		}
		k, v, _ := strings.Cut(piece, "=")
		key, errK := url.QueryUnescape(k)
		value, errV := url.QueryUnescape(v)
		if errK != nil || errV != nil {
			return nil, newError(ReasonIncompleteSignature, "The query string is not validly percent-encoded")
		}
		params = append(params, param{key, value})
	}
	return params, nil
}

func hasParam(query []param, key string) bool {
	return slices.ContainsFunc(query, func(p param) bool { return p.key == key })
}

// canonicalRequest builds the SigV4 canonical request from the request as it
// arrived, using exactly the headers the client listed in SignedHeaders: the
// CLI and the Go SDK sign different sets, and unsigned headers may be added or
// changed by proxies.
func canonicalRequest(r *http.Request, u *url.URL, query []param, c *claim, payloadHash string) string {
	var b strings.Builder
	method := r.Method
	if method == "" {
		method = http.MethodGet // net/http's meaning of an empty method
	}
	b.WriteString(method)
	b.WriteByte('\n')
	b.WriteString(canonicalURI(u))
	b.WriteByte('\n')
	b.WriteString(canonicalQuery(query, c.presigned))
	b.WriteByte('\n')
	for _, name := range c.signedHeaders {
		b.WriteString(name)
		b.WriteByte(':')
		for i, v := range headerValues(r, u, name) {
			if i > 0 {
				b.WriteByte(',')
			}
			writeTrimmed(&b, v)
		}
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(c.signedHeaders, ";"))
	b.WriteByte('\n')
	b.WriteString(payloadHash)
	return b.String()
}

// canonicalURI encodes the path as sent once more, as botocore and the Go SDK do
// for every service but S3. For ELB and EC2 it is "/".
func canonicalURI(u *url.URL) string {
	p := u.EscapedPath()
	if p == "" {
		return "/"
	}
	return uriEncode(p, true)
}

// canonicalQuery sorts the parameters by encoded key, then encoded value: the
// SigV4 specification sorts after encoding, and the two orders can differ. A
// presigned request's own signature is not part of what it signs.
func canonicalQuery(query []param, presigned bool) string {
	encoded := make([]param, 0, len(query))
	for _, p := range query {
		if presigned && p.key == "X-Amz-Signature" {
			continue
		}
		encoded = append(encoded, param{uriEncode(p.key, false), uriEncode(p.value, false)})
	}
	slices.SortFunc(encoded, func(a, b param) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		return strings.Compare(a.value, b.value)
	})
	var b strings.Builder
	for i, p := range encoded {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.key)
		b.WriteByte('=')
		b.WriteString(p.value)
	}
	return b.String()
}

// headerValues returns the values of a signed header. net/http moves Host out of
// the header map into r.Host, and the Go SDK signs content-length, which may be
// known only as r.ContentLength. A signed header that is absent canonicalises as
// empty, so the signature check fails rather than the request being refused as
// malformed.
func headerValues(r *http.Request, u *url.URL, name string) []string {
	switch name {
	case "host":
		if r.Host != "" {
			return []string{r.Host}
		}
		return []string{u.Host}
	case "content-length":
		if v := r.Header.Values(name); len(v) > 0 {
			return v
		}
		if r.ContentLength >= 0 {
			return []string{strconv.FormatInt(r.ContentLength, 10)}
		}
		return nil
	default:
		return r.Header.Values(name)
	}
}

// writeTrimmed writes v without leading and trailing blanks and with each inner
// run of spaces and tabs collapsed to one space (SigV4's "Trimall").
func writeTrimmed(b *strings.Builder, v string) {
	v = strings.Trim(v, " \t")
	blank := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == ' ' || c == '\t' {
			blank = true
			continue
		}
		if blank {
			b.WriteByte(' ')
			blank = false
		}
		b.WriteByte(c)
	}
}

// uriEncode percent-encodes every byte outside RFC 3986's unreserved set
// (A-Z a-z 0-9 - . _ ~) with uppercase hex, keeping "/" when keepSlash is set.
func uriEncode(s string, keepSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) || (keepSlash && c == '/') {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0xF])
	}
	return b.String()
}

func isUnreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}
