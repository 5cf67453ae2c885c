package awsapi_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/moatlb/moat/internal/cloud"
)

// The state BenchmarkDescribe reads: load balancers, each with a tagged frontend group, a target
// group with a target and a listener, among other tagged groups with rules — what
// hack/apibench builds, smaller.
const (
	benchLoadBalancers = 100
	benchOtherGroups   = 400
)

// BenchmarkDescribe measures moat lb's side of the Describe calls a controller makes to
// reconcile a Service (those of hack/apibench's read clients): each sub-benchmark replays a
// request signed by aws-sdk-go-v2 straight into the handler, so the time per op is the server's
// CPU per call without the client's or the HTTP transport's.
func BenchmarkDescribe(b *testing.B) {
	e := newEnv(b, func(cfg *cloud.Config) {
		cfg.Quotas = cloud.DefaultQuotas()
		cfg.Quotas.LoadBalancers = benchLoadBalancers
	})
	rec := &recorder{next: http.DefaultClient}
	ec2c := ec2.New(e.EC2.Options(), func(o *ec2.Options) { o.HTTPClient = rec })
	elb := elbv2.New(e.ELB.Options(), func(o *elbv2.Options) { o.HTTPClient = rec })
	lb := buildDescribeState(b, e)

	calls := []struct {
		name string
		call func() error
	}{
		{"LoadBalancers", func() error {
			_, err := elb.DescribeLoadBalancers(e.ctx, &elbv2.DescribeLoadBalancersInput{Names: []string{lb.name}})
			return err
		}},
		{"Listeners", func() error {
			_, err := elb.DescribeListeners(e.ctx, &elbv2.DescribeListenersInput{LoadBalancerArn: aws.String(lb.arn)})
			return err
		}},
		{"TargetGroups", func() error {
			_, err := elb.DescribeTargetGroups(e.ctx, &elbv2.DescribeTargetGroupsInput{LoadBalancerArn: aws.String(lb.arn)})
			return err
		}},
		{"TargetHealth", func() error {
			_, err := elb.DescribeTargetHealth(e.ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(lb.tg)})
			return err
		}},
		{"Tags", func() error {
			_, err := elb.DescribeTags(e.ctx, &elbv2.DescribeTagsInput{ResourceArns: []string{lb.arn, lb.tg}})
			return err
		}},
		{"SecurityGroupsByID", func() error {
			_, err := ec2c.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{lb.frontSG}})
			return err
		}},
		{"SecurityGroupsByTags", func() error {
			out, err := ec2c.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{
				{Name: aws.String("vpc-id"), Values: []string{lb.vpc}},
				{Name: aws.String("tag:elbv2.k8s.aws/cluster"), Values: []string{"bench"}},
				{Name: aws.String("tag:service.k8s.aws/stack"), Values: []string{"default/" + lb.name}},
			}})
			if err == nil && len(out.SecurityGroups) != 1 {
				err = fmt.Errorf("found %d groups, want 1", len(out.SecurityGroups))
			}
			return err
		}},
	}
	for _, c := range calls {
		rec.last = nil
		if err := c.call(); err != nil {
			b.Fatalf("%s: %v", c.name, err)
		}
		req := rec.last
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			w := &discardWriter{header: http.Header{}}
			for b.Loop() {
				w.status = 0
				clear(w.header)
				e.Handler.ServeHTTP(w, req.replay())
				if w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
			}
		})
	}
}

// benchLB is the load balancer whose Service the benchmark reconciles.
type benchLB struct {
	name, arn, tg, frontSG, vpc string
}

func buildDescribeState(b *testing.B, e *env) benchLB {
	b.Helper()
	subnets, err := e.EC2.DescribeSubnets(e.ctx, &ec2.DescribeSubnetsInput{})
	if err != nil {
		b.Fatal(err)
	}
	vpc := *subnets.Subnets[0].VpcId
	target := netip.MustParsePrefix(*subnets.Subnets[0].CidrBlock).Addr().Next().Next()
	var subnetIDs []string
	for _, s := range subnets.Subnets {
		subnetIDs = append(subnetIDs, *s.SubnetId)
	}
	group := func(name, stack string, rules int) string {
		out, err := e.EC2.CreateSecurityGroup(e.ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(name), Description: aws.String(name),
			VpcId: aws.String(vpc), TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSecurityGroup, Tags: []ec2types.Tag{
				{Key: aws.String("elbv2.k8s.aws/cluster"), Value: aws.String("bench")},
				{Key: aws.String("service.k8s.aws/stack"), Value: aws.String(stack)},
			}}}})
		if err != nil {
			b.Fatal(err)
		}
		var ranges []ec2types.IpRange
		for i := range rules {
			ranges = append(ranges, ec2types.IpRange{CidrIp: aws.String(fmt.Sprintf("10.%d.0.0/24", i))})
		}
		if _, err := e.EC2.AuthorizeSecurityGroupIngress(e.ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: out.GroupId, IpPermissions: []ec2types.IpPermission{
			{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(443), IpRanges: ranges},
		}}); err != nil {
			b.Fatal(err)
		}
		return *out.GroupId
	}
	for i := range benchOtherGroups {
		group(fmt.Sprintf("other-%d", i), fmt.Sprintf("other/%d", i), 5)
	}
	var last benchLB
	for i := range benchLoadBalancers {
		name := fmt.Sprintf("svc%d", i)
		tags := []types.Tag{
			{Key: aws.String("elbv2.k8s.aws/cluster"), Value: aws.String("bench")},
			{Key: aws.String("service.k8s.aws/stack"), Value: aws.String("default/" + name)},
		}
		front := group("k8s-default-"+name, "default/"+name, 3)
		lb, err := e.ELB.CreateLoadBalancer(e.ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String(name),
			Type: types.LoadBalancerTypeEnumNetwork, Scheme: types.LoadBalancerSchemeEnumInternal,
			Subnets: subnetIDs, SecurityGroups: []string{front}, Tags: tags})
		if err != nil {
			b.Fatal(err)
		}
		lbARN := lb.LoadBalancers[0].LoadBalancerArn
		tg, err := e.ELB.CreateTargetGroup(e.ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("tg-" + name), Protocol: types.ProtocolEnumTcp,
			Port: aws.Int32(8080), VpcId: aws.String(vpc), TargetType: types.TargetTypeEnumIp, Tags: tags})
		if err != nil {
			b.Fatal(err)
		}
		tgARN := tg.TargetGroups[0].TargetGroupArn
		if _, err := e.ELB.RegisterTargets(e.ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: tgARN,
			Targets: []types.TargetDescription{{Id: aws.String(target.String()), Port: aws.Int32(8080)}}}); err != nil {
			b.Fatal(err)
		}
		if _, err := e.ELB.CreateListener(e.ctx, &elbv2.CreateListenerInput{LoadBalancerArn: lbARN, Protocol: types.ProtocolEnumTcp,
			Port: aws.Int32(80), DefaultActions: []types.Action{{Type: types.ActionTypeEnumForward, TargetGroupArn: tgARN}}}); err != nil {
			b.Fatal(err)
		}
		last = benchLB{name: name, arn: *lbARN, tg: *tgARN, frontSG: front, vpc: vpc}
	}
	return last
}

// recorder is an SDK HTTP client that keeps the last request it sent, signed, for replaying.
type recorder struct {
	next *http.Client
	last *recordedRequest
}

type recordedRequest struct {
	method, url string
	header      http.Header
	body        []byte
}

func (r *recorder) Do(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	r.last = &recordedRequest{method: req.Method, url: req.URL.String(), header: req.Header.Clone(), body: body}
	req.Body = io.NopCloser(bytes.NewReader(body))
	return r.next.Do(req)
}

func (r *recordedRequest) replay() *http.Request {
	req := httptest.NewRequest(r.method, r.url, bytes.NewReader(r.body))
	req.Header = r.header.Clone()
	return req
}

// discardWriter is a ResponseWriter that keeps only the status.
type discardWriter struct {
	header http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.header }

func (w *discardWriter) WriteHeader(status int) { w.status = status }

func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(p), nil
}
