package lbtest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/resourcegroupstaggingapi"
	"github.com/aws/smithy-go"

	"github.com/moatlb/moat/internal/lbtest"
)

func TestStartCountsCalls(t *testing.T) {
	env := lbtest.Start(t, lbtest.WithMaxAttempts(1))
	ctx := context.Background()
	vpc := env.VPCID(t)
	before := env.Calls(t)
	if _, err := env.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
		GroupName: aws.String("g"), Description: aws.String("d"), VpcId: aws.String(vpc)}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.ELB.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Tagging.GetResources(ctx, &resourcegroupstaggingapi.GetResourcesInput{}); err != nil {
		t.Fatal(err)
	}
	// A refused request counts under its error code.
	_, err := env.ELB.DeleteTargetGroup(ctx, &elbv2.DeleteTargetGroupInput{TargetGroupArn: aws.String("not-an-arn")})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("deleting a target group by a malformed ARN: %v, want an API error", err)
	}
	calls := env.Calls(t).Since(before)
	if got := calls[lbtest.Call{Service: "elasticloadbalancing", Action: "DeleteTargetGroup", Code: apiErr.ErrorCode()}]; got != 1 {
		t.Errorf("the refused DeleteTargetGroup counted %d times under %s: %s", got, apiErr.ErrorCode(), calls)
	}
	if got := calls.Count("CreateSecurityGroup"); got != 1 {
		t.Errorf("CreateSecurityGroup counted %d times: %s", got, calls)
	}
	if got := calls.Count("DescribeLoadBalancers"); got != 1 {
		t.Errorf("DescribeLoadBalancers counted %d times: %s", got, calls)
	}
	if got := calls[lbtest.Call{Service: "tagging", Action: "GetResources", Code: "OK"}]; got != 1 {
		t.Errorf("GetResources counted %d times: %s", got, calls)
	}
	if got := calls.Mutating().Total(); got != 2 {
		t.Errorf("%d mutating calls, want 2 (CreateSecurityGroup, DeleteTargetGroup): %s", got, calls)
	}
	if got := env.MutatingCalls(t); got != 2 {
		t.Errorf("MutatingCalls = %d, want 2", got)
	}
}

func TestIsMutating(t *testing.T) {
	for action, want := range map[string]bool{
		"DescribeSecurityGroups": false, "GetManagedPrefixListEntries": false, "GetResources": false, "ListCertificates": false, "-": false,
		"CreateTags": true, "AuthorizeSecurityGroupIngress": true, "SetSecurityGroups": true, "RegisterTargets": true, "ImportCertificate": true,
	} {
		if got := lbtest.IsMutating(action); got != want {
			t.Errorf("IsMutating(%s) = %v", action, got)
		}
	}
}
