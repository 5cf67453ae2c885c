package sigv4

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
)

// TestRealClient sends a request from the SDK's ELBv2 client through a real
// net/http server, so Host, Content-Length and body handling are exactly the
// server's, not a test's idea of them. The EC2 client signs with the same code
// and is covered by its captured requests; importing it here would make every
// fuzzing build instrument its very large package.
func TestRealClient(t *testing.T) {
	type result struct {
		id  Identity
		err error
	}
	results := make(chan result, 1)
	verifier := &Verifier{Credentials: Static{capturedKey: capturedSecret}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read body: %v", err)
		}
		id, err := verifier.Verify(r, body)
		results <- result{id, err}
		w.Header().Set("Content-Type", "text/xml")
		io.WriteString(w, `<DescribeLoadBalancersResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><DescribeLoadBalancersResult><LoadBalancers/></DescribeLoadBalancersResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></DescribeLoadBalancersResponse>`)
	}))
	defer srv.Close()

	cfg := aws.Config{
		Region:           "eu-west-3",
		Credentials:      credentials.NewStaticCredentialsProvider(capturedKey, capturedSecret, ""),
		BaseEndpoint:     aws.String(srv.URL),
		RetryMaxAttempts: 1,
	}
	_, err := elbv2.NewFromConfig(cfg).DescribeLoadBalancers(context.Background(),
		&elbv2.DescribeLoadBalancersInput{Names: []string{"my nlb/with+odd&chars"}})
	if err != nil {
		t.Fatalf("DescribeLoadBalancers: %v", err)
	}
	res := <-results
	if res.err != nil {
		t.Fatalf("Verify: %v", res.err)
	}
	want := Identity{AccessKeyID: capturedKey, Region: "eu-west-3", Service: "elasticloadbalancing"}
	if res.id != want {
		t.Errorf("identity = %+v, want %+v", res.id, want)
	}
}
