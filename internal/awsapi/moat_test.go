package awsapi_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatlb/moat/internal/awsapi"
	"github.com/moatlb/moat/internal/awsapi/sigv4"
	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/explain"
	"github.com/moatlb/moat/internal/storetest"
)

type fakeExplainer struct{}

func (fakeExplainer) Explain(_ context.Context, in awsapi.ExplainInput) (any, error) {
	if in.From != "127.0.0.2" {
		return nil, &cloud.Error{Code: "ValidationException", Message: "from " + in.From}
	}
	return explain.Answer{Query: explain.Query{From: in.From, To: in.To, Protocol: in.Protocol}, Paths: []explain.Path{{To: in.To, Verdict: explain.Allowed}}}, nil
}

// TestMoatExplain: MoatService.Explain is a JSON 1.1 operation signed for the service "moat":
// unavailable until moat lb has a data plane, then the explainer's answer, or its error with
// AWS's JSON error shape; a wrong key is refused before.
func TestMoatExplain(t *testing.T) {
	st := storetest.Open(t)
	srv := awsapi.New(cloud.New(st, cloud.Config{Region: "us-east-1", AccountID: "123456789012"}),
		&sigv4.Verifier{Credentials: sigv4.Static{testAccessKey: testSecret}}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	client := explain.Client{Endpoint: hs.URL, Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(testAccessKey, testSecret, "")}
	q := explain.Query{From: "127.0.0.2", To: "127.1.0.100:80", Protocol: "tcp"}
	ctx := context.Background()

	if _, err := client.Ask(ctx, q); err == nil || !strings.HasPrefix(err.Error(), "ServiceUnavailableException:") {
		t.Errorf("before the data plane runs: %v, want ServiceUnavailableException", err)
	}
	srv.SetExplainer(fakeExplainer{})
	a, err := client.Ask(ctx, q)
	if err != nil || a.Query != q || len(a.Paths) != 1 || a.Paths[0].Verdict != explain.Allowed {
		t.Errorf("got %+v, %v", a, err)
	}
	if _, err := client.Ask(ctx, explain.Query{From: "nowhere", To: q.To}); err == nil || err.Error() != "ValidationException: from nowhere" {
		t.Errorf("a bad query: %v, want ValidationException", err)
	}
	wrong := client
	wrong.Credentials = credentials.NewStaticCredentialsProvider(testAccessKey, "not-the-secret", "")
	if _, err := wrong.Ask(ctx, q); err == nil || !strings.HasPrefix(err.Error(), "InvalidSignatureException:") {
		t.Errorf("a wrong secret: %v, want InvalidSignatureException", err)
	}
}
