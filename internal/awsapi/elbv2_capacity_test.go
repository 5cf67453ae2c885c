package awsapi_test

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

func TestCapacityReservation(t *testing.T) {
	e := newEnv(t)
	lb := e.createLB(t, "reserved")
	arn := lb.LoadBalancerArn

	got := must[*elbv2.DescribeCapacityReservationOutput](t)(e.ELB.DescribeCapacityReservation(e.ctx, &elbv2.DescribeCapacityReservationInput{LoadBalancerArn: arn}))
	if got.MinimumLoadBalancerCapacity != nil || len(got.CapacityReservationState) != 0 {
		t.Errorf("a new load balancer has a reservation: %+v", got)
	}
	set := must[*elbv2.ModifyCapacityReservationOutput](t)(e.ELB.ModifyCapacityReservation(e.ctx, &elbv2.ModifyCapacityReservationInput{
		LoadBalancerArn: arn, MinimumLoadBalancerCapacity: &types.MinimumLoadBalancerCapacity{CapacityUnits: aws.Int32(3000)},
	}))
	if aws.ToInt32(set.MinimumLoadBalancerCapacity.CapacityUnits) != 3000 || len(set.CapacityReservationState) != 2 ||
		set.CapacityReservationState[0].State.Code != types.CapacityReservationStateEnumProvisioned || set.LastModifiedTime == nil {
		t.Errorf("after modify: %+v", set)
	}
	got = must[*elbv2.DescribeCapacityReservationOutput](t)(e.ELB.DescribeCapacityReservation(e.ctx, &elbv2.DescribeCapacityReservationInput{LoadBalancerArn: arn}))
	if aws.ToInt32(got.MinimumLoadBalancerCapacity.CapacityUnits) != 3000 {
		t.Errorf("described %+v", got)
	}
	must[*elbv2.ModifyCapacityReservationOutput](t)(e.ELB.ModifyCapacityReservation(e.ctx, &elbv2.ModifyCapacityReservationInput{LoadBalancerArn: arn, ResetCapacityReservation: aws.Bool(true)}))
	got = must[*elbv2.DescribeCapacityReservationOutput](t)(e.ELB.DescribeCapacityReservation(e.ctx, &elbv2.DescribeCapacityReservationInput{LoadBalancerArn: arn}))
	if got.MinimumLoadBalancerCapacity != nil {
		t.Errorf("after reset: %+v", got)
	}

	_, err := e.ELB.ModifyCapacityReservation(e.ctx, &elbv2.ModifyCapacityReservationInput{LoadBalancerArn: arn})
	wantCode(t, err, "ValidationError")
	_, err = e.ELB.ModifyCapacityReservation(e.ctx, &elbv2.ModifyCapacityReservationInput{LoadBalancerArn: arn, ResetCapacityReservation: aws.Bool(true),
		MinimumLoadBalancerCapacity: &types.MinimumLoadBalancerCapacity{CapacityUnits: aws.Int32(1)}})
	wantCode(t, err, "ValidationError")
	_, err = e.ELB.DescribeCapacityReservation(e.ctx, &elbv2.DescribeCapacityReservationInput{LoadBalancerArn: aws.String("arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/gone/0123456789abcdef")})
	wantCode(t, err, "LoadBalancerNotFound")
}
