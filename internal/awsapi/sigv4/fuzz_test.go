package sigv4

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary headers ("Name: value" lines, Host included), raw
// query strings and bodies to Verify. It must never panic, must fail only with
// an *Error that has a known Reason and a message, and can only succeed for the
// one configured key. The seed corpus in testdata/fuzz/FuzzVerify holds valid
// CLI, SDK and presigned requests and malformed variants of them.
func FuzzVerify(f *testing.F) {
	v := capturedVerifier(time.Date(2026, 11, 26, 11, 24, 40, 0, time.UTC))
	f.Fuzz(func(t *testing.T, headers, rawQuery string, body []byte) {
		r := &http.Request{
			Method:        http.MethodPost,
			URL:           &url.URL{Path: "/", RawQuery: rawQuery},
			Header:        http.Header{},
			ContentLength: int64(len(body)),
		}
		for line := range strings.SplitSeq(headers, "\n") {
			name, value, _ := strings.Cut(line, ":")
			value = strings.TrimSpace(value)
			if strings.EqualFold(name, "Host") {
				r.Host = value
				continue
			}
			r.Header.Add(name, value)
		}
		id, err := v.Verify(r, body)
		if err == nil {
			if id.AccessKeyID != capturedKey {
				t.Fatalf("verified an unknown key: %+v", id)
			}
			return
		}
		e, ok := err.(*Error)
		if !ok {
			t.Fatalf("error of type %T: %v", err, err)
		}
		if _, known := reasonNames[e.Reason]; !known || e.Message == "" {
			t.Fatalf("error without a known reason or message: %#v", e)
		}
	})
}
