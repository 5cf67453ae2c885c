package awsapi_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/smithy-go"

	"github.com/moatlb/moat/internal/awsapi"
	"github.com/moatlb/moat/internal/awsapi/sigv4"
	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/lbtest"
)

// authWorld is a moat API whose credentials file has a full-access and a read-only profile, with
// a few resources made by the full-access key for the read-only one to read and try to change.
type authWorld struct {
	*lbtest.Env
	roEC2 *ec2.Client
	roELB *elbv2.Client

	vpc, group, iface string
	subnets           []string
	lbARN, tgARN      string
	instance          string
}

func newAuthWorld(t *testing.T) *authWorld {
	t.Helper()
	e := lbtest.Start(t, lbtest.WithMaxAttempts(1))
	w := &authWorld{Env: e, roEC2: ec2.NewFromConfig(e.ReadOnlyConfig), roELB: elbv2.NewFromConfig(e.ReadOnlyConfig)}
	ctx := context.Background()
	w.vpc = e.VPCID(t)
	subnets, err := e.EC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range subnets.Subnets {
		w.subnets = append(w.subnets, aws.ToString(s.SubnetId))
	}
	sg, err := e.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("web"), Description: aws.String("web"), VpcId: aws.String(w.vpc)})
	if err != nil {
		t.Fatal(err)
	}
	w.group = aws.ToString(sg.GroupId)
	lb, err := e.ELB.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("web"), Type: elbtypes.LoadBalancerTypeEnumNetwork, Subnets: w.subnets[:1], SecurityGroups: []string{w.group}})
	if err != nil {
		t.Fatal(err)
	}
	w.lbARN = aws.ToString(lb.LoadBalancers[0].LoadBalancerArn)
	tg, err := e.ELB.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("web"), Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(80), VpcId: aws.String(w.vpc), TargetType: elbtypes.TargetTypeEnumInstance})
	if err != nil {
		t.Fatal(err)
	}
	w.tgARN = aws.ToString(tg.TargetGroups[0].TargetGroupArn)
	w.instance = e.InstanceIDs(t)[0]
	if _, err := e.ELB.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: aws.String(w.tgARN), Targets: []elbtypes.TargetDescription{{Id: aws.String(w.instance)}}}); err != nil {
		t.Fatal(err)
	}
	ifaces, err := e.EC2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{lbtest.Filter("attachment.instance-id", w.instance)}})
	if err != nil {
		t.Fatal(err)
	}
	w.iface = aws.ToString(ifaces.NetworkInterfaces[0].NetworkInterfaceId)
	return w
}

func (w *authWorld) state(t *testing.T) cloud.State {
	t.Helper()
	st, err := w.Cloud.State()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// wantRefused fails the test unless err is the authorization error code with HTTP 403 and a
// message naming the read-only profile as the user and the refused action.
func wantRefused(t *testing.T, err error, code, permission string) {
	t.Helper()
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != code {
		t.Fatalf("want %s for %s, got %v", code, permission, err)
	}
	var respErr *awshttp.ResponseError
	if !errors.As(err, &respErr) || respErr.HTTPStatusCode() != http.StatusForbidden {
		t.Errorf("%s: want HTTP 403, got %v", permission, err)
	}
	user := "User: arn:aws:iam::" + lbtest.AccountID + ":user/" + lbtest.ReadOnlyProfile + " is not authorized to perform: " + permission
	if !strings.Contains(apiErr.ErrorMessage(), user) {
		t.Errorf("%s: message %q does not say %q", permission, apiErr.ErrorMessage(), user)
	}
}

func TestReadOnlyKeyReads(t *testing.T) {
	w := newAuthWorld(t)
	ctx := context.Background()
	groups, err := w.roEC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{w.group}})
	if err != nil || len(groups.SecurityGroups) != 1 {
		t.Fatalf("DescribeSecurityGroups = %v, %v", groups, err)
	}
	lbs, err := w.roELB.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{})
	if err != nil || len(lbs.LoadBalancers) != 1 {
		t.Fatalf("DescribeLoadBalancers = %v, %v", lbs, err)
	}
	health, err := w.roELB.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(w.tgARN)})
	if err != nil || len(health.TargetHealthDescriptions) != 1 {
		t.Fatalf("DescribeTargetHealth = %v, %v", health, err)
	}
	if _, err := w.roEC2.GetManagedPrefixListEntries(ctx, &ec2.GetManagedPrefixListEntriesInput{PrefixListId: aws.String("pl-missing")}); err == nil {
		t.Error("GetManagedPrefixListEntries of a missing list succeeded")
	} else if code := errorCode(err); code == "UnauthorizedOperation" {
		t.Errorf("a read-only key may not call GetManagedPrefixListEntries: %v", err)
	}
	calls := w.Calls(t)
	for _, c := range []lbtest.Call{
		{Service: "ec2", Action: "DescribeSecurityGroups", Code: "OK"},
		{Service: "elasticloadbalancing", Action: "DescribeLoadBalancers", Code: "OK"},
		{Service: "elasticloadbalancing", Action: "DescribeTargetHealth", Code: "OK"},
	} {
		if calls[c] < 1 {
			t.Errorf("%v not counted: %s", c, calls)
		}
	}
}

func TestReadOnlyKeyRefusedMutations(t *testing.T) {
	w := newAuthWorld(t)
	ctx := context.Background()
	before := w.state(t)
	calls := w.Calls(t)
	tag := []ec2types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}
	refusals := []struct {
		permission, code string
		call             func() error
	}{
		{"ec2:CreateSecurityGroup", "UnauthorizedOperation", func() error {
			_, err := w.roEC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("other"), Description: aws.String("d"), VpcId: aws.String(w.vpc)})
			return err
		}},
		{"ec2:AuthorizeSecurityGroupIngress", "UnauthorizedOperation", func() error {
			_, err := w.roEC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(w.group), IpPermissions: []ec2types.IpPermission{{
				IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("127.0.0.2/32")}}}}})
			return err
		}},
		{"ec2:ModifyNetworkInterfaceAttribute", "UnauthorizedOperation", func() error {
			_, err := w.roEC2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(w.iface), Groups: []string{w.group}})
			return err
		}},
		{"ec2:CreateTags", "UnauthorizedOperation", func() error {
			_, err := w.roEC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{w.group}, Tags: tag})
			return err
		}},
		{"elasticloadbalancing:CreateLoadBalancer", "AccessDenied", func() error {
			_, err := w.roELB.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("other"), Type: elbtypes.LoadBalancerTypeEnumNetwork, Subnets: w.subnets[:1]})
			return err
		}},
		{"elasticloadbalancing:RegisterTargets", "AccessDenied", func() error {
			_, err := w.roELB.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: aws.String(w.tgARN), Targets: []elbtypes.TargetDescription{{Id: aws.String(w.InstanceIDs(t)[1])}}})
			return err
		}},
		{"elasticloadbalancing:AddTags", "AccessDenied", func() error {
			_, err := w.roELB.AddTags(ctx, &elbv2.AddTagsInput{ResourceArns: []string{w.lbARN}, Tags: []elbtypes.Tag{{Key: aws.String("k"), Value: aws.String("v")}}})
			return err
		}},
	}
	for _, r := range refusals {
		wantRefused(t, r.call(), r.code, r.permission)
	}
	if after := w.state(t); !reflect.DeepEqual(before, after) {
		t.Errorf("refused requests changed the state:\nbefore %+v\nafter  %+v", before, after)
	}
	// Each refusal is counted under its action and code.
	since := w.Calls(t).Since(calls)
	for _, r := range refusals {
		service, action, _ := strings.Cut(r.permission, ":")
		if n := since[lbtest.Call{Service: service, Action: action, Code: r.code}]; n != 1 {
			t.Errorf("%s counted %d times with %s: %s", r.permission, n, r.code, since)
		}
	}

	// The full-access key of the same file still may.
	if _, err := w.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{w.group}, Tags: tag}); err != nil {
		t.Fatalf("full-access CreateTags: %v", err)
	}
	if _, err := w.ELB.AddTags(ctx, &elbv2.AddTagsInput{ResourceArns: []string{w.lbARN}, Tags: []elbtypes.Tag{{Key: aws.String("k"), Value: aws.String("v")}}}); err != nil {
		t.Fatalf("full-access AddTags: %v", err)
	}
	if got := w.Group(t, w.group).Tags; len(got) != 1 {
		t.Errorf("tags after the full-access CreateTags: %+v", got)
	}
}

// TestReadOnlyDryRun: a dry run of a mutating action that the key may not make answers
// UnauthorizedOperation, as AWS does; a dry run the key may make answers DryRunOperation.
func TestReadOnlyDryRun(t *testing.T) {
	w := newAuthWorld(t)
	ctx := context.Background()
	before := w.state(t)
	_, err := w.roEC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{DryRun: aws.Bool(true), GroupName: aws.String("other"), Description: aws.String("d"), VpcId: aws.String(w.vpc)})
	wantRefused(t, err, "UnauthorizedOperation", "ec2:CreateSecurityGroup")
	_, err = w.roEC2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{DryRun: aws.Bool(true), NetworkInterfaceId: aws.String(w.iface), Groups: []string{w.group}})
	wantRefused(t, err, "UnauthorizedOperation", "ec2:ModifyNetworkInterfaceAttribute")

	_, err = w.roEC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{DryRun: aws.Bool(true)})
	wantCode(t, err, "DryRunOperation")
	_, err = w.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{DryRun: aws.Bool(true), GroupName: aws.String("other"), Description: aws.String("d"), VpcId: aws.String(w.vpc)})
	wantCode(t, err, "DryRunOperation")
	if after := w.state(t); !reflect.DeepEqual(before, after) {
		t.Error("dry runs changed the state")
	}
}

// TestEveryActionIsClassified walks the dispatch tables: every action the endpoint serves must be
// listed in the access table, as a read exactly when its name says so (Describe*, Get*, List*,
// AWS's read actions), and a read-only key must get each answer that the classification promises
// over HTTP. A new action fails here until it is classified.
func TestEveryActionIsClassified(t *testing.T) {
	w := newAuthWorld(t)
	served := awsapi.New(nil, &sigv4.Verifier{}, slog.New(slog.DiscardHandler), nil).ServedActions()
	if len(served["ec2"]) == 0 || len(served["elasticloadbalancing"]) == 0 || len(served["acm"]) == 0 {
		t.Fatalf("served actions: %v", served)
	}
	isRead := func(action string) bool {
		return strings.HasPrefix(action, "Describe") || strings.HasPrefix(action, "Get") || strings.HasPrefix(action, "List") || action == "Explain"
	}
	refusal := map[string]string{"ec2": "UnauthorizedOperation", "elasticloadbalancing": "AccessDenied", "sts": "AccessDenied"}
	version := map[string]string{"ec2": "2016-11-15", "elasticloadbalancing": "2015-12-01", "sts": "2011-06-15"}
	jsonTarget := map[string]string{"acm": "CertificateManager", "shield": "AWSShield_20160616", "moat": "MoatService", "tagging": "ResourceGroupsTaggingAPI_20170126"}
	for service, actions := range served {
		for _, action := range actions {
			class := awsapi.Classification(service, action)
			want := "write"
			if isRead(action) {
				want = "read"
			}
			if class != want {
				t.Errorf("%s:%s is classified %q, want %q: list it in actionAccess", service, action, class, want)
				continue
			}
			// Without parameters: a read answers anything but the refusal, a write the refusal.
			var status int
			var body string
			var refused bool
			if target, isJSON := jsonTarget[service]; isJSON {
				status, _, body = postJSON(t, w.URL, lbtest.ReadOnlyAccessKey, lbtest.ReadOnlySecretKey, service, target+"."+action, "{}")
				refused = status == http.StatusBadRequest && strings.Contains(body, `"__type":"AccessDeniedException"`)
			} else {
				status, body = postAs(t, w.URL, lbtest.ReadOnlyAccessKey, lbtest.ReadOnlySecretKey, service, "Action="+action+"&Version="+version[service])
				refused = status == http.StatusForbidden && strings.Contains(body, "<Code>"+refusal[service]+"</Code>")
			}
			if refused != (class == "write") {
				t.Errorf("read-only %s:%s answered %d %s", service, action, status, body)
			}
		}
	}
	for service, actions := range awsapi.ClassifiedActions() {
		for _, action := range actions {
			if !slices.Contains(served[service], action) {
				t.Errorf("actionAccess lists %s:%s, which is not served", service, action)
			}
		}
	}
}

// postAs sends a form body signed with the given key, as a client outside the SDKs would.
func postAs(t *testing.T, url, accessKey, secret, service, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	status, _, out := sendSigned(t, req, []byte(body), keyOf(accessKey, secret), service)
	return status, string(out)
}

func errorCode(err error) string {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode()
	}
	return ""
}
