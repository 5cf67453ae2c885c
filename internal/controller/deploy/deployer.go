// Package deploy is the second stage of moat's Service controller, structured as the AWS Load
// Balancer Controller's stack deployer: it makes AWS (or moat lb) match a desired model.Stack.
// Every resource is found again by its tracking tags (elbv2.k8s.aws/cluster,
// service.k8s.aws/stack, service.k8s.aws/resource), so a deploy is idempotent, changes only what
// differs — a resync that finds nothing to change makes no mutating call — and converges after a
// crash at any point: names and tags are deterministic, and nothing is rolled back.
//
// The flow, per Service:
//
//	resolved, err := d.Resolve(ctx, svc)            // what model.Prepare asks for: existing LB, subnets, SGs…
//	stack, err := model.Build(svc, cfg, resolved)   // pure
//	result, err := d.Deploy(ctx, stack, targets)    // SGs → TGs → LB → listeners → bindings → deletions
//	svc.Status.LoadBalancer.Ingress[0].Hostname = result.DNSName
//
// and Delete(ctx, stackID) (or Deploy of an empty stack) when the Service goes away.
//
// It has no Kubernetes client: the reconciler gives it the Service and the targets of each
// TargetGroupBinding.
package deploy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	rgt "github.com/aws/aws-sdk-go-v2/service/resourcegroupstaggingapi"
	"github.com/aws/smithy-go"
	"k8s.io/utils/clock"

	"github.com/moatlb/moat/internal/controller/model"
)

// Options configure a Deployer.
type Options struct {
	// Model is the controller configuration the stacks are built with (cluster name, VPC,
	// backend group flags, default and external-managed tags).
	Model model.Config
	// ServiceTargetENISGTags is --service-target-eni-security-group-tags: when a target's
	// interface has several groups, the one to write rules on must carry these tags (besides
	// kubernetes.io/cluster/<cluster>).
	ServiceTargetENISGTags map[string]string
	// Bindings lists the keys ("<namespace>/<name>") of every TargetGroupBinding in the cluster
	// that has networking rules and whose Service is not being deleted. Rules on target groups
	// are revoked only when the Deployer has computed the permissions of all of them (as the AWS
	// controller's networking manager does), so that a freshly started controller never revokes
	// what another Service it has not seen yet needs. Nil means the Deployer is the only writer
	// and the bindings it has seen are all there are (tests, single-shot tools).
	Bindings func(context.Context) ([]string, error)
	// DeleteRetry bounds the retries of deletions that AWS refuses while a dependency is going
	// away (DependencyViolation on security groups, ResourceInUse on target groups). Zero means
	// every 2 s for 20 s.
	DeleteRetry Backoff
	// Tagging finds load balancers and target groups by their tags when the EnableRGTAPI gate
	// is on (required then); with the gate off, every one in the region is described instead.
	Tagging Tagging
	// Clock times the entries of the ELBv2 tag cache (tests advance a fake one). Nil means the
	// real clock.
	Clock clock.Clock
}

// Backoff is a bounded retry schedule.
type Backoff struct {
	Interval time.Duration
	Timeout  time.Duration
}

// Deployer deploys the stacks of one cluster. It is safe for concurrent use by the reconcilers
// of different Services; calls for the same Service must not overlap.
type Deployer struct {
	ec2  EC2
	elb  ELBV2
	rgt  Tagging // nil: find load balancers and target groups by describing them all
	opts Options

	backend backendProvider
	net     *networking
	tags    *tagCache
}

// New returns a Deployer calling AWS with the given clients.
func New(ec2 EC2, elb ELBV2, opts Options) (*Deployer, error) {
	if err := opts.Model.Validate(); err != nil {
		return nil, err
	}
	if opts.Model.VPCID == "" {
		return nil, errors.New("deploy: the VPC ID (--aws-vpc-id) must be set")
	}
	if opts.DeleteRetry.Interval <= 0 {
		opts.DeleteRetry.Interval = 2 * time.Second
	}
	if opts.DeleteRetry.Timeout <= 0 {
		opts.DeleteRetry.Timeout = 20 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	d := &Deployer{ec2: ec2, elb: elb, opts: opts, tags: newTagCache(opts.Clock)}
	if opts.Model.FeatureGates.Enabled(model.GateEnableRGTAPI) {
		if opts.Tagging == nil {
			return nil, errors.New("deploy: the EnableRGTAPI feature gate is on but there is no Resource Groups Tagging API client")
		}
		d.rgt = opts.Tagging
	}
	d.backend.claims = map[string]bool{}
	d.net = newNetworking()
	return d, nil
}

// NewFromConfig returns a Deployer with SDK clients built from cfg.
func NewFromConfig(cfg aws.Config, opts Options) (*Deployer, error) {
	ec2, elb := NewClients(cfg)
	if opts.Tagging == nil {
		opts.Tagging = rgt.NewFromConfig(cfg)
	}
	return New(ec2, elb, opts)
}

// Target is one target to register in a target group: an instance ID or an IP address, its port,
// and, for IP addresses outside the VPC, the zone ("all").
type Target struct {
	ID   string
	Port int32
	AZ   string
}

// Targets are the desired targets of each TargetGroupBinding of a stack, by the binding's
// resource ID (the target group's resource ID, "<ns>/<name>:<port>"). A binding without an entry
// has no targets.
type Targets map[string][]Target

// Result is what a deploy made.
type Result struct {
	// DNSName is the load balancer's DNS name, lower-cased, for
	// status.loadBalancer.ingress[].hostname. Empty for an empty stack.
	DNSName         string
	LoadBalancerARN string
	// SecurityGroups are the load balancer's groups, in the stack's order.
	SecurityGroups []string
	// TargetGroupARNs by target group resource ID.
	TargetGroupARNs map[string]string
	// Conditions report what was skipped without failing the deploy.
	Conditions []Condition
}

// Condition is something the deploy skipped or could not do fully, without an error: for
// example ip targets whose address no network interface carries (moat's local targets), on
// which no security-group rule can be written.
type Condition struct {
	// Binding is the TargetGroupBinding's resource ID.
	Binding string
	Reason  string
	Message string
}

// Condition reasons.
const (
	ReasonTargetInterfaceNotFound = "TargetInterfaceNotFound"
)

// Error wraps a deploy failure with the step and resource it happened at. The reconciler emits
// it as a FailedDeployModel Event and requeues; nothing is rolled back.
type Error struct {
	Step     string
	Resource string
	Err      error
}

// EventReasonFailedDeployModel is the AWS controller's Event reason for a failed deploy.
const EventReasonFailedDeployModel = "FailedDeployModel"

func (e *Error) Error() string {
	if e.Resource == "" {
		return e.Step + ": " + e.Err.Error()
	}
	return e.Step + " " + e.Resource + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

func fail(step, resource string, err error) error {
	if err == nil {
		return nil
	}
	var de *Error
	if errors.As(err, &de) {
		return err
	}
	return &Error{Step: step, Resource: resource, Err: err}
}

// errorCode returns the AWS error code of err, or "".
func errorCode(err error) string {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode()
	}
	return ""
}

// retryOn calls f until it succeeds, fails with an error whose code is not in codes, or the
// backoff runs out.
func retryOn(ctx context.Context, b Backoff, f func() error, codes ...string) error {
	deadline := time.Now().Add(b.Timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		code := errorCode(err)
		retryable := false
		for _, c := range codes {
			retryable = retryable || code == c
		}
		if !retryable || time.Now().Add(b.Interval).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(b.Interval):
		}
	}
}

// backendProvider finds or creates the cluster's shared backend group and tracks which stacks
// use it, as the AWS controller's BackendSGProvider does.
type backendProvider struct {
	mu     sync.Mutex
	id     string          // memoized ID of the auto-created group
	claims map[string]bool // stacks that use the group in this process
}
