package reconcile

import (
	"context"
	"strings"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	rgt "github.com/aws/aws-sdk-go-v2/service/resourcegroupstaggingapi"
	"github.com/aws/smithy-go/middleware"

	"github.com/moatlb/moat/internal/controller/deploy"
)

// Endpoints override the AWS API endpoint per service (--aws-api-endpoints); empty means the
// SDK's resolution (BaseEndpoint of the config, or AWS).
type Endpoints struct {
	EC2     string
	ELBV2   string
	Tagging string // the Resource Groups Tagging API
}

// awsClients are the SDK clients the controller uses.
type awsClients struct {
	ec2     *ec2.Client
	elb     *elbv2.Client
	tagging *rgt.Client
}

// newClients builds the SDK clients the controller uses, with the endpoint overrides and a
// middleware that counts each reconcile's mutating calls (see withMutationCounter).
func newClients(cfg aws.Config, ep Endpoints) awsClients {
	cfg = cfg.Copy()
	cfg.APIOptions = append(cfg.APIOptions, countMutations)
	ec2c := ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		if ep.EC2 != "" {
			o.BaseEndpoint = aws.String(ep.EC2)
		}
	})
	elbc := elbv2.NewFromConfig(cfg, func(o *elbv2.Options) {
		if ep.ELBV2 != "" {
			o.BaseEndpoint = aws.String(ep.ELBV2)
		}
	})
	tagging := rgt.NewFromConfig(cfg, func(o *rgt.Options) {
		if ep.Tagging != "" {
			o.BaseEndpoint = aws.String(ep.Tagging)
		}
	})
	return awsClients{ec2c, elbc, tagging}
}

var (
	_ deploy.EC2     = (*ec2.Client)(nil)
	_ deploy.ELBV2   = (*elbv2.Client)(nil)
	_ deploy.Tagging = (*rgt.Client)(nil)
)

type mutationCounterKey struct{}

// withMutationCounter returns a context under which every mutating AWS call (any operation
// but Describe* and Get*) is counted, so that a reconcile knows whether it changed anything.
func withMutationCounter(ctx context.Context) (context.Context, *atomic.Int64) {
	n := new(atomic.Int64)
	return context.WithValue(ctx, mutationCounterKey{}, n), n
}

// isMutating reports whether an API operation changes state.
func isMutating(op string) bool {
	return op != "" && !strings.HasPrefix(op, "Describe") && !strings.HasPrefix(op, "Get")
}

func countMutations(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("moatCountMutations",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			if n, ok := ctx.Value(mutationCounterKey{}).(*atomic.Int64); ok && isMutating(middleware.GetOperationName(ctx)) {
				n.Add(1)
			}
			return next.HandleInitialize(ctx, in)
		}), middleware.After)
}
