//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// signedReads sends the same Describe calls as state.describe, each signed afresh with
// aws-sdk-go-v2's SigV4 signer, over plain keep-alive HTTP: a load generator, as wrk or hey would
// be, that costs a fraction of what the SDK's clients cost per call (their middleware stack and
// XML decoding). On a 2-core machine the SDK's clients use more CPU per Describe than moat lb
// does, so a run with them measures the pair; this one measures what moat lb itself can serve.
type signedReads struct {
	endpoint string
	creds    aws.Credentials
	signer   *v4.Signer
	client   *http.Client
}

func newSignedReads(ctx context.Context, m *moat) *signedReads {
	creds, err := m.creds.Retrieve(ctx)
	check(err)
	return &signedReads{endpoint: m.endpoint, creds: creds, signer: v4.NewSigner(),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}}}
}

// awsService is an API's signing name and the version its query protocol requests carry.
type awsService struct{ name, version string }

var (
	elbAPI = awsService{"elasticloadbalancing", "2015-12-01"}
	ec2API = awsService{"ec2", "2016-11-15"}
)

// describeSigned is state.describe's call i for a random load balancer, as a signed HTTP request;
// it fails unless moat lb answers 200 with a reply that names what was asked for.
func (s *state) describeSigned(ctx context.Context, _, i int) error {
	lb := s.lbs[rand.IntN(len(s.lbs))]
	tg := s.tgs[lb.tgs[rand.IntN(len(lb.tgs))]]
	var (
		service      awsService
		action, want string
		params       = url.Values{}
	)
	switch i % 7 {
	case 0:
		service, action, want = elbAPI, "DescribeLoadBalancers", lb.arn
		params.Set("Names.member.1", lb.name)
	case 1:
		service, action, want = elbAPI, "DescribeListeners", lb.arn
		params.Set("LoadBalancerArn", lb.arn)
	case 2:
		service, action, want = elbAPI, "DescribeTargetGroups", tg.arn
		params.Set("LoadBalancerArn", lb.arn)
	case 3:
		service, action, want = elbAPI, "DescribeTargetHealth", "<TargetHealthDescriptions>"
		params.Set("TargetGroupArn", tg.arn)
	case 4:
		service, action, want = elbAPI, "DescribeTags", tg.arn
		params.Set("ResourceArns.member.1", lb.arn)
		params.Set("ResourceArns.member.2", tg.arn)
	case 5:
		service, action, want = ec2API, "DescribeSecurityGroups", lb.frontSG
		params.Set("GroupId.1", lb.frontSG)
	case 6:
		service, action, want = ec2API, "DescribeSecurityGroups", lb.frontSG
		for i, f := range [][2]string{{"vpc-id", s.m.vpc}, {"tag:elbv2.k8s.aws/cluster", cluster}, {"tag:service.k8s.aws/stack", "default/" + lb.name}} {
			params.Set(fmt.Sprintf("Filter.%d.Name", i+1), f[0])
			params.Set(fmt.Sprintf("Filter.%d.Value.1", i+1), f[1])
		}
	}
	params.Set("Action", action)
	params.Set("Version", service.version)
	body, err := s.signed.call(ctx, service.name, params.Encode())
	if err != nil {
		return err
	}
	if !bytes.Contains(body, []byte(want)) {
		return fmt.Errorf("%s: the reply does not name %s: %.200s", action, want, body)
	}
	return nil
}

// call signs and sends a query-protocol request and returns the body of a 200 reply.
func (r *signedReads) call(ctx context.Context, service, query string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.endpoint, strings.NewReader(query))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	sum := sha256.Sum256([]byte(query))
	if err := r.signer.SignHTTP(ctx, r.creds, req, hex.EncodeToString(sum[:]), service, "us-east-1", time.Now()); err != nil {
		return nil, err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %.300s", service, resp.Status, body)
	}
	return body, nil
}
