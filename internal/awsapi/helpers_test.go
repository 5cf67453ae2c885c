package awsapi_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/resourcegroupstaggingapi"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatlb/moat/internal/awsapi"
	"github.com/moatlb/moat/internal/awsapi/sigv4"
	"github.com/moatlb/moat/internal/awsclient"
	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/storetest"
)

const (
	testAccessKey = "AKIAMOATTESTKEY00001"
	testSecret    = "moat-test-secret-0000000000000000000000"
)

// env is a running API server on loopback with SDK clients pointed at it.
type env struct {
	URL     string
	Handler http.Handler // the server behind URL, for benchmarks that call it directly
	Cloud   *cloud.Cloud
	EC2     *ec2.Client
	ELB     *elbv2.Client
	// Tagging speaks RPC v2 CBOR, as the client prefers since v1.42.0.
	Tagging *resourcegroupstaggingapi.Client
	ctx     context.Context
}

// newEnv starts moat's API over real HTTP on 127.0.0.1 with the default inventory and a fresh
// store, and returns aws-sdk-go-v2 clients configured as a user would: BaseEndpoint and static
// credentials, no retries so that error tests see the first answer. opts adjust the cloud's
// configuration (a clock, quotas).
func newEnv(t testing.TB, opts ...func(*cloud.Config)) *env {
	t.Helper()
	st := storetest.Open(t)
	cloudCfg := cloud.Config{Region: "us-east-1", AccountID: "123456789012"}
	for _, opt := range opts {
		opt(&cloudCfg)
	}
	c := cloud.New(st, cloudCfg)
	if err := c.ApplyInventory(cloud.DefaultInventory()); err != nil {
		t.Fatal(err)
	}
	verifier := &sigv4.Verifier{Credentials: sigv4.Static{testAccessKey: testSecret}}
	handler := awsapi.New(c, verifier, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	cfg := aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider(testAccessKey, testSecret, ""),
		Retryer:     func() aws.Retryer { return aws.NopRetryer{} },
		HTTPClient:  awsclient.HTTPClient(nil),
	}
	return &env{
		URL:     srv.URL,
		Handler: handler,
		Cloud:   c,
		EC2:     ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(srv.URL) }),
		ELB:     elbv2.NewFromConfig(cfg, func(o *elbv2.Options) { o.BaseEndpoint = aws.String(srv.URL) }),
		Tagging: resourcegroupstaggingapi.NewFromConfig(cfg, func(o *resourcegroupstaggingapi.Options) {
			o.BaseEndpoint = aws.String(srv.URL)
		}),
		ctx: context.Background(),
	}
}

// wantCode fails the test unless err is an API error with the given code.
func wantCode(t testing.TB, err error, code string) {
	t.Helper()
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("want API error %s, got %v", code, err)
	}
	if apiErr.ErrorCode() != code {
		t.Fatalf("want API error %s, got %s: %s", code, apiErr.ErrorCode(), apiErr.ErrorMessage())
	}
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// sendSigned sends req with its body signed for service with creds (unsigned when nil), as a
// client outside the SDKs would, and returns the reply.
func sendSigned(t *testing.T, req *http.Request, body []byte, creds *aws.Credentials, service string) (int, http.Header, []byte) {
	t.Helper()
	if creds != nil {
		sum := sha256.Sum256(body)
		if err := v4.NewSigner().SignHTTP(context.Background(), *creds, req, hex.EncodeToString(sum[:]), service, "us-east-1", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, out
}

// keyOf is the key of an access key ID and secret, nil for no access key.
func keyOf(accessKey, secret string) *aws.Credentials {
	if accessKey == "" {
		return nil
	}
	return &aws.Credentials{AccessKeyID: accessKey, SecretAccessKey: secret}
}
