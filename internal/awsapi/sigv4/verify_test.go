package sigv4

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

var (
	signTime = time.Date(2026, 11, 26, 11, 24, 36, 0, time.UTC)
	goodKey  = aws.Credentials{AccessKeyID: capturedKey, SecretAccessKey: capturedSecret}
	formBody = []byte("Action=DescribeLoadBalancers&Version=2015-12-01&Names.member.1=my-nlb")
)

// sdkRequest builds a form POST the way the ELBv2 client does and signs it with
// aws-sdk-go-v2's own signer. http.NewRequest leaves Content-Length out of the
// header map, so these requests also exercise the r.ContentLength fallback.
func sdkRequest(t testing.TB, creds aws.Credentials, at time.Time, prepare func(*http.Request)) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, "http://127.0.0.1:18555/", bytes.NewReader(formBody))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Amz-Sdk-Request", "attempt=1; max=3")
	if prepare != nil {
		prepare(r)
	}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, sha256Hex(formBody), "elasticloadbalancing", "us-east-1", at); err != nil {
		t.Fatal(err)
	}
	return r
}

func verifierAt(now time.Time) *Verifier {
	return &Verifier{Credentials: Static{capturedKey: capturedSecret}, Now: func() time.Time { return now }}
}

// editAuth rewrites part of the Authorization header.
func editAuth(old, replacement string) func(*http.Request) {
	return func(r *http.Request) {
		r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), old, replacement, 1))
	}
}

func TestVerifySDKSigned(t *testing.T) {
	tests := []struct {
		name    string
		creds   aws.Credentials
		signAt  time.Time                 // zero = signTime
		prepare func(*http.Request)       // before signing
		tamper  func(*http.Request)       // after signing
		body    []byte                    // nil = formBody
		want    Reason                    // 0 = success
		wantMsg string                    // substring of Message, when set
		now     func(time.Time) time.Time // nil = signTime
	}{
		{name: "valid", creds: goodKey},
		{name: "valid 14 min later", creds: goodKey, now: func(t time.Time) time.Time { return t.Add(14 * time.Minute) }},
		{name: "valid 14 min early", creds: goodKey, now: func(t time.Time) time.Time { return t.Add(-14 * time.Minute) }},
		{
			name: "wrong secret", want: ReasonSignatureMismatch, wantMsg: msgSignatureMismatch,
			creds: aws.Credentials{AccessKeyID: capturedKey, SecretAccessKey: "not-the-secret"},
		},
		{name: "tampered body", creds: goodKey, body: []byte("Action=DeleteLoadBalancer&Version=2015-12-01"), want: ReasonSignatureMismatch},
		{name: "empty body", creds: goodKey, body: []byte{}, want: ReasonSignatureMismatch},
		{
			name: "unknown key", want: ReasonUnknownKey, wantMsg: msgInvalidToken,
			creds: aws.Credentials{AccessKeyID: "AKIAUNKNOWN000000000", SecretAccessKey: capturedSecret},
		},
		{
			name: "session token", want: ReasonUnknownKey,
			creds: aws.Credentials{AccessKeyID: capturedKey, SecretAccessKey: capturedSecret, SessionToken: "FwoGZXIvYXdzEXAMPLE"},
		},
		{
			name: "missing Authorization", creds: goodKey, want: ReasonMissingAuth,
			tamper: func(r *http.Request) { r.Header.Del("Authorization") },
		},
		{
			name: "blank Authorization", creds: goodKey, want: ReasonMissingAuth,
			tamper: func(r *http.Request) { r.Header.Set("Authorization", "  ") },
		},
		{
			name: "signed 16 min in the past", creds: goodKey, signAt: signTime.Add(-16 * time.Minute), want: ReasonExpired,
			wantMsg: "Signature expired: 20261126T110836Z is now earlier than 20261126T110936Z (20261126T112436Z - 15 min.)",
		},
		{
			name: "signed 16 min in the future", creds: goodKey, signAt: signTime.Add(16 * time.Minute), want: ReasonExpired,
			wantMsg: "Signature not yet current: 20261126T114036Z is still later than 20261126T113936Z (20261126T112436Z + 15 min.)",
		},
		{
			name: "scope date differs from X-Amz-Date", creds: goodKey, want: ReasonSignatureMismatch,
			tamper:  editAuth("/20261126/", "/20261125/"),
			wantMsg: "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '20261125' != '20261126', from '20261126T112436Z'.",
		},
		{
			name: "removed signed header", creds: goodKey, want: ReasonSignatureMismatch,
			prepare: func(r *http.Request) { r.Header.Set("X-Moat-Test", "1") },
			tamper:  func(r *http.Request) { r.Header.Del("X-Moat-Test") },
		},
		{
			name: "changed signed header", creds: goodKey, want: ReasonSignatureMismatch,
			tamper: func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") },
		},
		{
			name: "changed host", creds: goodKey, want: ReasonSignatureMismatch,
			tamper: func(r *http.Request) { r.Host = "127.0.0.1:18556" },
		},
		{
			name: "changed region", creds: goodKey, want: ReasonSignatureMismatch,
			tamper: editAuth("/us-east-1/", "/eu-west-1/"),
		},
		{
			name: "unsigned header added", creds: goodKey,
			tamper: func(r *http.Request) {
				r.Header.Set("User-Agent", "proxy/1.0")
				r.Header.Add("X-Forwarded-For", "10.0.0.1")
			},
		},
		{
			name: "whitespace in a signed value re-spaced", creds: goodKey,
			prepare: func(r *http.Request) { r.Header.Set("X-Moat-Test", "a   b c") },
			tamper:  func(r *http.Request) { r.Header.Set("X-Moat-Test", " \ta b\t \tc  ") },
		},
		{
			name: "repeated signed header", creds: goodKey,
			prepare: func(r *http.Request) { r.Header.Add("X-Moat-Test", "a"); r.Header.Add("X-Moat-Test", " b ") },
		},
		{
			name: "X-Amz-Date removed", creds: goodKey, want: ReasonIncompleteSignature,
			tamper: func(r *http.Request) { r.Header.Del("X-Amz-Date") },
		},
		{
			name: "X-Amz-Date malformed", creds: goodKey, want: ReasonIncompleteSignature,
			tamper: func(r *http.Request) { r.Header.Set("X-Amz-Date", "2026-11-26T11:24:36Z") },
		},
		{
			name: "host not signed", creds: goodKey, want: ReasonIncompleteSignature,
			tamper: editAuth("content-type;host;", "content-type;"),
		},
		{
			name: "payload hash header matches", creds: goodKey,
			prepare: func(r *http.Request) { r.Header.Set("X-Amz-Content-Sha256", sha256Hex(formBody)) },
		},
		{
			name: "payload hash header differs", creds: goodKey, want: ReasonSignatureMismatch,
			prepare: func(r *http.Request) { r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD") },
		},
		{
			name: "query reordered and re-encoded", creds: goodKey,
			prepare: func(r *http.Request) { r.URL.RawQuery = "b=2&a=x%2Fy&a=x-y&c=d%20e" },
			tamper:  func(r *http.Request) { r.URL.RawQuery = "c=d+e&a=x-y&b=2&a=x%2fy" },
		},
		{
			name: "query changed", creds: goodKey, want: ReasonSignatureMismatch,
			prepare: func(r *http.Request) { r.URL.RawQuery = "a=1" },
			tamper:  func(r *http.Request) { r.URL.RawQuery = "a=2" },
		},
		{
			name: "path with reserved characters", creds: goodKey,
			prepare: func(r *http.Request) { r.URL.Path = "/a b/c%d" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := tt.signAt
			if at.IsZero() {
				at = signTime
			}
			r := sdkRequest(t, tt.creds, at, tt.prepare)
			if tt.tamper != nil {
				tt.tamper(r)
			}
			body := formBody
			if tt.body != nil {
				body = tt.body
			}
			now := signTime
			if tt.now != nil {
				now = tt.now(signTime)
			}
			id, err := verifierAt(now).Verify(r, body)
			if got := reasonOf(err); got != tt.want {
				t.Fatalf("Verify: err = %v, want reason %v", err, tt.want)
			}
			if err != nil {
				if msg := err.(*Error).Message; !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("message = %q, want it to contain %q", msg, tt.wantMsg)
				}
				return
			}
			want := Identity{AccessKeyID: capturedKey, Region: "us-east-1", Service: "elasticloadbalancing"}
			if id != want {
				t.Errorf("identity = %+v, want %+v", id, want)
			}
		})
	}
}

// TestVerifyMalformedAuthorization replaces the header of a validly signed request.
func TestVerifyMalformedAuthorization(t *testing.T) {
	const (
		cred = "Credential=AKIDEXAMPLE/20261126/us-east-1/elasticloadbalancing/aws4_request"
		sh   = "SignedHeaders=content-type;host;x-amz-date"
		sig  = "Signature=765b65967ca086d46795103d1fe2a878e587c4f5a6e5c974164072ff9b37ca75"
	)
	tests := []struct {
		name, auth string
		want       Reason
	}{
		{"algorithm only", "AWS4-HMAC-SHA256", ReasonIncompleteSignature},
		{"no Signature", "AWS4-HMAC-SHA256 " + cred + ", " + sh, ReasonIncompleteSignature},
		{"no Credential", "AWS4-HMAC-SHA256 " + sh + ", " + sig, ReasonIncompleteSignature},
		{"no SignedHeaders", "AWS4-HMAC-SHA256 " + cred + ", " + sig, ReasonIncompleteSignature},
		{"parameter without value", "AWS4-HMAC-SHA256 " + cred + ", " + sh + ", Signature", ReasonIncompleteSignature},
		{"unknown parameter", "AWS4-HMAC-SHA256 " + cred + ", " + sh + ", " + sig + ", Foo=bar", ReasonIncompleteSignature},
		{"duplicate parameter", "AWS4-HMAC-SHA256 " + cred + ", " + cred + ", " + sh + ", " + sig, ReasonIncompleteSignature},
		{"short credential", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261126, " + sh + ", " + sig, ReasonIncompleteSignature},
		{"long credential", "AWS4-HMAC-SHA256 " + cred + "/x, " + sh + ", " + sig, ReasonIncompleteSignature},
		{"empty access key", "AWS4-HMAC-SHA256 Credential=/20261126/us-east-1/ec2/aws4_request, " + sh + ", " + sig, ReasonIncompleteSignature},
		{"wrong terminator", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261126/us-east-1/ec2/aws5_request, " + sh + ", " + sig, ReasonSignatureMismatch},
		{"empty SignedHeaders", "AWS4-HMAC-SHA256 " + cred + ", SignedHeaders=, " + sig, ReasonIncompleteSignature},
		{"uppercase signed header", "AWS4-HMAC-SHA256 " + cred + ", SignedHeaders=Content-Type;host;x-amz-date, " + sig, ReasonIncompleteSignature},
		{"duplicate signed header", "AWS4-HMAC-SHA256 " + cred + ", SignedHeaders=host;host, " + sig, ReasonIncompleteSignature},
		{"empty signed header", "AWS4-HMAC-SHA256 " + cred + ", SignedHeaders=host;;x-amz-date, " + sig, ReasonIncompleteSignature},
		{"SigV4a", "AWS4-ECDSA-P256-SHA256 " + cred + ", " + sh + ", " + sig, ReasonUnsupportedAlgorithm},
		{"SigV2", "AWS AKIDEXAMPLE:c2lnbmF0dXJl", ReasonUnsupportedAlgorithm},
		{"lowercase algorithm", "aws4-hmac-sha256 " + cred + ", " + sh + ", " + sig, ReasonUnsupportedAlgorithm},
		{"bad signature hex", "AWS4-HMAC-SHA256 " + cred + ", " + sh + ", Signature=zz", ReasonSignatureMismatch},
		{"uppercase signature hex", "AWS4-HMAC-SHA256 " + cred + ", " + sh + ", Signature=" + strings.ToUpper(strings.TrimPrefix(sig, "Signature=")), ReasonSignatureMismatch},
		{"no spaces after commas", "AWS4-HMAC-SHA256 " + cred + "," + sh + "," + sig, 0},
		{"the original", "AWS4-HMAC-SHA256 " + cred + ", " + sh + ", " + sig, 0},
	}
	v := loadVectors(t)[0] // the CLI's CreateLoadBalancer, signed by sig above
	now := v.signedAt(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := v.request()
			r.Header.Set("Authorization", tt.auth)
			_, err := capturedVerifier(now).Verify(r, []byte(v.Body))
			if got := reasonOf(err); got != tt.want {
				t.Fatalf("Verify: err = %v, want reason %v", err, tt.want)
			}
		})
	}

	t.Run("two Authorization headers", func(t *testing.T) {
		r := v.request()
		r.Header.Add("Authorization", r.Header.Get("Authorization"))
		if _, err := capturedVerifier(now).Verify(r, []byte(v.Body)); reasonOf(err) != ReasonIncompleteSignature {
			t.Fatalf("Verify: err = %v, want %v", err, ReasonIncompleteSignature)
		}
	})
}

func TestVerifyPresigned(t *testing.T) {
	presign := func(t *testing.T, creds aws.Credentials, query string) *http.Request {
		t.Helper()
		u := "http://127.0.0.1:18556/?Action=DescribeVpcs&Version=2016-11-15"
		if query != "" {
			u += "&" + query
		}
		signReq, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		signed, headers, err := v4.NewSigner().PresignHTTP(context.Background(), creds, signReq, sha256Hex(nil), "ec2", "us-east-1", signTime)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := url.Parse(signed)
		if err != nil {
			t.Fatal(err)
		}
		// As the server sees it: origin-form URL, Host in r.Host.
		r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: parsed.Path, RawQuery: parsed.RawQuery}, Host: parsed.Host, Header: http.Header{}}
		for name, values := range headers {
			if !strings.EqualFold(name, "Host") {
				r.Header[name] = values
			}
		}
		return r
	}
	tests := []struct {
		name   string
		creds  aws.Credentials
		query  string
		after  time.Duration
		tamper func(*http.Request)
		want   Reason
	}{
		{name: "valid", creds: goodKey},
		{name: "valid with expiry", creds: goodKey, query: "X-Amz-Expires=60", after: 59 * time.Second},
		{name: "past its expiry", creds: goodKey, query: "X-Amz-Expires=60", after: 61 * time.Second, want: ReasonExpired},
		{name: "expiry outlasts the skew", creds: goodKey, query: "X-Amz-Expires=3600", after: 50 * time.Minute},
		{name: "no expiry, skewed", creds: goodKey, after: 16 * time.Minute, want: ReasonExpired},
		{name: "expiry too long", creds: goodKey, query: "X-Amz-Expires=604801", want: ReasonIncompleteSignature},
		{name: "expiry not a number", creds: goodKey, query: "X-Amz-Expires=soon", want: ReasonIncompleteSignature},
		{name: "wrong secret", creds: aws.Credentials{AccessKeyID: capturedKey, SecretAccessKey: "x"}, want: ReasonSignatureMismatch},
		{name: "session token", creds: aws.Credentials{AccessKeyID: capturedKey, SecretAccessKey: capturedSecret, SessionToken: "tok"}, want: ReasonUnknownKey},
		{
			name: "parameter changed", creds: goodKey, want: ReasonSignatureMismatch,
			tamper: func(r *http.Request) {
				r.URL.RawQuery = strings.Replace(r.URL.RawQuery, "DescribeVpcs", "DeleteVpc", 1)
			},
		},
		{
			name: "parameter missing", creds: goodKey, want: ReasonIncompleteSignature,
			tamper: func(r *http.Request) { r.URL.RawQuery = removeParam(r.URL.RawQuery, "X-Amz-Signature") },
		},
		{
			name: "parameter repeated", creds: goodKey, want: ReasonIncompleteSignature,
			tamper: func(r *http.Request) { r.URL.RawQuery += "&X-Amz-Date=20261126T112436Z" },
		},
		{
			name: "other algorithm", creds: goodKey, want: ReasonUnsupportedAlgorithm,
			tamper: func(r *http.Request) {
				r.URL.RawQuery = strings.Replace(r.URL.RawQuery, "X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=AWS4-ECDSA-P256-SHA256", 1)
			},
		},
		{
			name: "with an Authorization header too", creds: goodKey, want: ReasonIncompleteSignature,
			tamper: func(r *http.Request) { r.Header.Set("Authorization", "AWS4-HMAC-SHA256 x") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := presign(t, tt.creds, tt.query)
			if tt.tamper != nil {
				tt.tamper(r)
			}
			id, err := verifierAt(signTime.Add(tt.after)).Verify(r, nil)
			if got := reasonOf(err); got != tt.want {
				t.Fatalf("Verify: err = %v, want reason %v (query %s)", err, tt.want, r.URL.RawQuery)
			}
			if err == nil && id != (Identity{AccessKeyID: capturedKey, Region: "us-east-1", Service: "ec2"}) {
				t.Errorf("identity = %+v", id)
			}
		})
	}
}

func removeParam(rawQuery, key string) string {
	var kept []string
	for _, p := range strings.Split(rawQuery, "&") {
		if !strings.HasPrefix(p, key+"=") {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, "&")
}

func TestVerifierDefaults(t *testing.T) {
	t.Run("nil clock is the real clock", func(t *testing.T) {
		r := sdkRequest(t, goodKey, time.Now(), nil)
		v := &Verifier{Credentials: Static{capturedKey: capturedSecret}}
		if _, err := v.Verify(r, formBody); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	})
	t.Run("MaxSkew narrows the window", func(t *testing.T) {
		r := sdkRequest(t, goodKey, signTime, nil)
		v := verifierAt(signTime.Add(2 * time.Minute))
		v.MaxSkew = time.Minute
		_, err := v.Verify(r, formBody)
		if reasonOf(err) != ReasonExpired || !strings.Contains(err.Error(), "- 1 min.)") {
			t.Fatalf("Verify: err = %v, want %v with a 1 min window", err, ReasonExpired)
		}
	})
	t.Run("nil credential store knows no key", func(t *testing.T) {
		r := sdkRequest(t, goodKey, signTime, nil)
		v := &Verifier{Now: func() time.Time { return signTime }}
		if _, err := v.Verify(r, formBody); reasonOf(err) != ReasonUnknownKey {
			t.Fatalf("Verify: err = %v, want %v", err, ReasonUnknownKey)
		}
	})
}

func TestErrorFaults(t *testing.T) {
	tests := []struct {
		reason    Reason
		elb, ec2  string
		elbStatus int
		ec2Status int
	}{
		{ReasonMissingAuth, "MissingAuthenticationToken", "AuthFailure", 403, 401},
		{ReasonIncompleteSignature, "IncompleteSignature", "IncompleteSignature", 400, 400},
		{ReasonUnsupportedAlgorithm, "IncompleteSignature", "IncompleteSignature", 400, 400},
		{ReasonUnknownKey, "InvalidClientTokenId", "AuthFailure", 403, 401},
		{ReasonSignatureMismatch, "SignatureDoesNotMatch", "AuthFailure", 403, 401},
		{ReasonExpired, "RequestExpired", "RequestExpired", 400, 400},
	}
	for _, tt := range tests {
		t.Run(tt.reason.String(), func(t *testing.T) {
			e := &Error{Reason: tt.reason, Message: "m"}
			if f := e.ELBv2(); f.Code != tt.elb || f.Status != tt.elbStatus || f.Message != "m" {
				t.Errorf("ELBv2() = %+v, want %s %d", f, tt.elb, tt.elbStatus)
			}
			f := e.EC2()
			if f.Code != tt.ec2 || f.Status != tt.ec2Status {
				t.Errorf("EC2() = %+v, want %s %d", f, tt.ec2, tt.ec2Status)
			}
			if f.Code == "AuthFailure" && f.Message != msgEC2AuthFailure {
				t.Errorf("EC2 AuthFailure message = %q, want AWS's", f.Message)
			}
			var target *Error
			if !errors.As(error(e), &target) || !strings.Contains(e.Error(), tt.reason.String()) {
				t.Errorf("Error() = %q", e.Error())
			}
		})
	}
}

// A verifier keeps the signing keys of verified scopes; the key it keeps must still let only a
// correct signature through, and a secret that changed must not be served the old one's key.
func TestVerifyWithKeptSigningKey(t *testing.T) {
	creds := Static{capturedKey: capturedSecret}
	v := &Verifier{Credentials: creds, Now: func() time.Time { return signTime }}
	for i := range 2 {
		if _, err := v.Verify(sdkRequest(t, goodKey, signTime, nil), formBody); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if len(v.keys.keys) != 1 {
		t.Fatalf("kept %d signing keys, want 1", len(v.keys.keys))
	}
	if _, err := v.Verify(sdkRequest(t, goodKey, signTime, nil), []byte("Action=DeleteLoadBalancer&Version=2015-12-01")); reasonOf(err) != ReasonSignatureMismatch {
		t.Fatalf("tampered body with a kept key: got %v, want a signature mismatch", err)
	}
	creds[capturedKey] = "the-rotated-secret"
	if _, err := v.Verify(sdkRequest(t, goodKey, signTime, nil), formBody); reasonOf(err) != ReasonSignatureMismatch {
		t.Fatalf("old secret after rotation: got %v, want a signature mismatch", err)
	}
	rotated := aws.Credentials{AccessKeyID: capturedKey, SecretAccessKey: "the-rotated-secret"}
	if _, err := v.Verify(sdkRequest(t, rotated, signTime, nil), formBody); err != nil {
		t.Fatalf("new secret after rotation: %v", err)
	}
}

// BenchmarkVerify is the verification of one SDK-signed request, as every API call pays it.
func BenchmarkVerify(b *testing.B) {
	r := sdkRequest(b, goodKey, signTime, nil)
	v := verifierAt(signTime)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(r, formBody); err != nil {
			b.Fatal(err)
		}
	}
}
