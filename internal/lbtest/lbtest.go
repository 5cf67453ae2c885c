// Package lbtest runs moat's AWS-compatible API in-process for tests of code that talks to AWS
// through aws-sdk-go-v2: a real HTTP server on 127.0.0.1, SigV4-verified, over a fresh durable
// store with the default inventory, and SDK clients pointed at it the way a user would point them
// (BaseEndpoint and static credentials). The server's keys come from a credentials file, as moat
// lb's do: a full-access [default] profile and a read-only [node] profile. It also reads the
// server's per-action request counter, so a test can assert that a step made no mutating call.
package lbtest

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/resourcegroupstaggingapi"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatlb/moat/internal/awsapi"
	"github.com/moatlb/moat/internal/awsapi/sigv4"
	"github.com/moatlb/moat/internal/awsclient"
	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/store"
)

// Static test credentials; the server accepts only these. The ReadOnly pair is profile
// ReadOnlyProfile, marked moat_read_only: it may call read actions only.
const (
	AccessKey         = "AKIAMOATLBTEST000001"
	SecretKey         = "moat-lbtest-secret-00000000000000000000"
	ReadOnlyProfile   = "node"
	ReadOnlyAccessKey = "AKIAMOATLBTESTRO0001"
	ReadOnlySecretKey = "moat-lbtest-read-only-secret-0000000000"
	Region            = "us-east-1"
	AccountID         = "123456789012"
)

// credentialsFile is the server's credentials file: the two key pairs above.
const credentialsFile = "[default]\naws_access_key_id = " + AccessKey + "\naws_secret_access_key = " + SecretKey +
	"\n\n[" + ReadOnlyProfile + "]\naws_access_key_id = " + ReadOnlyAccessKey + "\naws_secret_access_key = " + ReadOnlySecretKey +
	"\nmoat_read_only = true\n"

// Env is a running moat API with SDK clients for it.
type Env struct {
	// URL is the API endpoint (http://127.0.0.1:port).
	URL       string
	AccessKey string
	SecretKey string
	Region    string
	// Cloud is the server's control plane, for assertions and set-up the API does not offer.
	Cloud *cloud.Cloud
	// Registry holds moat_api_requests_total{service,action,code}.
	Registry *prometheus.Registry
	// Config is an aws.Config for the endpoint: static credentials, BaseEndpoint, and the retry
	// setting of the options (default: the SDK's standard retryer).
	Config aws.Config
	EC2    *ec2.Client
	ELB    *elbv2.Client
	// Tagging is the Resource Groups Tagging API client (GetResources).
	Tagging *resourcegroupstaggingapi.Client
	// ReadOnlyConfig is Config with the read-only key.
	ReadOnlyConfig aws.Config
	// CredentialsFile is the server's credentials file, followed as moat lb follows its own: a
	// profile added to it is accepted at the next request.
	CredentialsFile string
}

type options struct {
	cloud      []func(*cloud.Config)
	inventory  *cloud.Inventory
	maxRetries int
	apiOptions []func(*aws.Config)
}

// Option adjusts Start.
type Option func(*options)

// WithCloudConfig changes the cloud's configuration (quotas, clock, DNS suffix).
func WithCloudConfig(f func(*cloud.Config)) Option {
	return func(o *options) { o.cloud = append(o.cloud, f) }
}

// WithInventory applies inv instead of cloud.DefaultInventory().
func WithInventory(inv cloud.Inventory) Option {
	return func(o *options) { o.inventory = &inv }
}

// WithMaxAttempts sets the SDK clients' RetryMaxAttempts (1: no retries, so a test sees the
// first answer).
func WithMaxAttempts(n int) Option {
	return func(o *options) { o.maxRetries = n }
}

// WithAWSConfig changes the aws.Config the clients are built from (e.g. to add APIOptions
// middleware).
func WithAWSConfig(f func(*aws.Config)) Option {
	return func(o *options) { o.apiOptions = append(o.apiOptions, f) }
}

// Start runs the API until the test ends.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cloudCfg := cloud.Config{Region: Region, AccountID: AccountID}
	for _, f := range o.cloud {
		f(&cloudCfg)
	}
	c := cloud.New(st, cloudCfg)
	inv := cloud.DefaultInventory()
	if o.inventory != nil {
		inv = *o.inventory
	}
	if err := c.ApplyInventory(inv); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	credsPath := filepath.Join(dir, "credentials")
	if err := os.WriteFile(credsPath, []byte(credentialsFile), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	creds, _, err := sigv4.OpenFile(credsPath, log)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(awsapi.New(c, &sigv4.Verifier{Credentials: creds}, log, reg))
	t.Cleanup(srv.Close)
	cfg := aws.Config{
		Region:           Region,
		Credentials:      credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
		BaseEndpoint:     aws.String(srv.URL),
		RetryMaxAttempts: o.maxRetries,
		HTTPClient:       awsclient.HTTPClient(nil),
	}
	for _, f := range o.apiOptions {
		f(&cfg)
	}
	roCfg := cfg.Copy()
	roCfg.Credentials = credentials.NewStaticCredentialsProvider(ReadOnlyAccessKey, ReadOnlySecretKey, "")
	return &Env{
		URL:       srv.URL,
		AccessKey: AccessKey,
		SecretKey: SecretKey,
		Region:    Region,
		Cloud:     c,
		Registry:  reg,
		Config:    cfg,
		EC2:       ec2.NewFromConfig(cfg),
		ELB:       elbv2.NewFromConfig(cfg),
		Tagging:   resourcegroupstaggingapi.NewFromConfig(cfg),

		ReadOnlyConfig:  roCfg,
		CredentialsFile: credsPath,
	}
}

// VPCID returns the ID of the inventory's default VPC.
func (e *Env) VPCID(t testing.TB) string {
	t.Helper()
	out, err := e.EC2.DescribeVpcs(context.Background(), &ec2.DescribeVpcsInput{
		Filters: []ec2types.Filter{{Name: aws.String("is-default"), Values: []string{"true"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Vpcs) != 1 {
		t.Fatalf("want one default VPC, got %d", len(out.Vpcs))
	}
	return aws.ToString(out.Vpcs[0].VpcId)
}

// Call is one series of moat_api_requests_total.
type Call struct {
	Service string // "ec2" or "elasticloadbalancing"
	Action  string
	Code    string // "OK" or the error code
}

// Calls counts API requests per series.
type Calls map[Call]int

// Calls returns the request counts so far.
func (e *Env) Calls(t testing.TB) Calls {
	t.Helper()
	families, err := e.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := Calls{}
	for _, f := range families {
		if f.GetName() != "moat_api_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			var c Call
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "service":
					c.Service = l.GetValue()
				case "action":
					c.Action = l.GetValue()
				case "code":
					c.Code = l.GetValue()
				}
			}
			out[c] = int(m.GetCounter().GetValue())
		}
	}
	return out
}

// Since returns the calls made after before was taken.
func (c Calls) Since(before Calls) Calls {
	out := Calls{}
	for k, n := range c {
		if d := n - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// Mutating returns the calls whose action changes state: any action that does not start with
// Describe, Get or List.
func (c Calls) Mutating() Calls {
	out := Calls{}
	for k, n := range c {
		if IsMutating(k.Action) {
			out[k] = n
		}
	}
	return out
}

// Total is the number of calls.
func (c Calls) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// Count returns how many calls of action there were, whatever their service and result.
func (c Calls) Count(action string) int {
	n := 0
	for k, v := range c {
		if k.Action == action {
			n += v
		}
	}
	return n
}

// String lists the calls, sorted, as "service:Action:code×n".
func (c Calls) String() string {
	var parts []string
	for k, n := range c {
		parts = append(parts, k.Service+":"+k.Action+":"+k.Code+"×"+strconv.Itoa(n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// IsMutating reports whether an API action changes state: everything but Describe*, Get* and
// List* (ACM's reads). Requests the server could not route count under action "-" and are not
// mutating.
func IsMutating(action string) bool {
	return action != "-" && !strings.HasPrefix(action, "Describe") && !strings.HasPrefix(action, "Get") && !strings.HasPrefix(action, "List")
}

// MutatingCalls returns the number of mutating requests the server has received.
func (e *Env) MutatingCalls(t testing.TB) int {
	t.Helper()
	return e.Calls(t).Mutating().Total()
}
