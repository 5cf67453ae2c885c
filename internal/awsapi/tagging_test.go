package awsapi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	rgt "github.com/aws/aws-sdk-go-v2/service/resourcegroupstaggingapi"
	"github.com/aws/aws-sdk-go-v2/service/resourcegroupstaggingapi/schemas"
	rgttypes "github.com/aws/aws-sdk-go-v2/service/resourcegroupstaggingapi/types"
	"github.com/aws/smithy-go/encoding/cbor"
	"github.com/aws/smithy-go/transport/http/protocol/awsjson"

	"github.com/moatlb/moat/internal/awsapi"
	"github.com/moatlb/moat/internal/awsapi/sigv4"
	"github.com/moatlb/moat/internal/lbtest"
)

// taggingWorld is a set of tagged resources of two stacks of one cluster, a resource of another
// cluster and an untagged one.
type taggingWorld struct {
	*env
	// inventory are the resources the inventory tags (its default security groups).
	inventory                                            []string
	lbA, lbB, lbOther, tgA, tgUntagged, listenerA, group string
}

const (
	clusterKey = "elbv2.k8s.aws/cluster"
	stackKey   = "service.k8s.aws/stack"
)

func newTaggingWorld(t *testing.T) *taggingWorld {
	t.Helper()
	e := newEnv(t)
	w := &taggingWorld{env: e}
	w.inventory = w.getAll(t, e.Tagging, &rgt.GetResourcesInput{})
	tagged := func(kv ...string) func(*elbv2.CreateLoadBalancerInput) {
		return func(in *elbv2.CreateLoadBalancerInput) { in.Tags = elbTags(kv...) }
	}
	w.lbA = aws.ToString(e.createLB(t, "a", tagged(clusterKey, "moat", stackKey, "ns/a")).LoadBalancerArn)
	w.lbB = aws.ToString(e.createLB(t, "b", tagged(clusterKey, "moat", stackKey, "ns/b")).LoadBalancerArn)
	w.lbOther = aws.ToString(e.createLB(t, "other", tagged(clusterKey, "other", stackKey, "ns/a")).LoadBalancerArn)
	w.tgA = aws.ToString(e.createTG(t, "a", func(in *elbv2.CreateTargetGroupInput) { in.Tags = elbTags(clusterKey, "moat", stackKey, "ns/a") }).TargetGroupArn)
	w.tgUntagged = aws.ToString(e.createTG(t, "untagged").TargetGroupArn)
	w.listenerA = aws.ToString(e.createListener(t, w.lbA, w.tgA, 80, "TCP").ListenerArn)
	must[*elbv2.AddTagsOutput](t)(e.ELB.AddTags(e.ctx, &elbv2.AddTagsInput{ResourceArns: []string{w.listenerA}, Tags: elbTags(clusterKey, "moat", stackKey, "ns/a")}))
	sg := must[*ec2.CreateSecurityGroupOutput](t)(e.EC2.CreateSecurityGroup(e.ctx, &ec2.CreateSecurityGroupInput{
		GroupName: aws.String("k8s-ns-a"), Description: aws.String("d"), VpcId: aws.String(e.vpcID(t)),
	}))
	must[*ec2.CreateTagsOutput](t)(e.EC2.CreateTags(e.ctx, &ec2.CreateTagsInput{
		Resources: []string{aws.ToString(sg.GroupId)}, Tags: []ec2types.Tag{{Key: aws.String(clusterKey), Value: aws.String("moat")}, {Key: aws.String(stackKey), Value: aws.String("ns/a")}},
	}))
	w.group = "arn:aws:ec2:us-east-1:123456789012:security-group/" + aws.ToString(sg.GroupId)
	return w
}

// getAll pages through GetResources with the SDK's paginator and returns the ARNs in the order
// answered, checking that each resource's tags are its own.
func (w *taggingWorld) getAll(t *testing.T, client *rgt.Client, in *rgt.GetResourcesInput) []string {
	t.Helper()
	var out []string
	p := rgt.NewGetResourcesPaginator(client, in)
	for p.HasMorePages() {
		page, err := p.NextPage(w.ctx)
		if err != nil {
			t.Fatalf("GetResources %+v: %v", in, err)
		}
		for _, m := range page.ResourceTagMappingList {
			arn := aws.ToString(m.ResourceARN)
			out = append(out, arn)
			if strings.Contains(arn, ":elasticloadbalancing:") {
				var got []string
				for _, tag := range m.Tags {
					got = append(got, aws.ToString(tag.Key)+"="+aws.ToString(tag.Value))
				}
				if want := w.tagsOf(t, arn); strings.Join(got, ",") != want[0] {
					t.Errorf("tags of %s: %v, DescribeTags %v", arn, got, want)
				}
			}
		}
	}
	return out
}

func filter(key string, values ...string) rgttypes.TagFilter {
	return rgttypes.TagFilter{Key: aws.String(key), Values: values}
}

// sortedARNs sorts the ARNs of lists, as GetResources orders its answer.
func sortedARNs(lists ...[]string) []string {
	return slices.Sorted(slices.Values(slices.Concat(lists...)))
}

// arns is a list of ARNs, for sortedARNs.
func arns(arns ...string) []string { return arns }

// jsonTagging is the Tagging client speaking awsJson1_1, as clients before v1.42.0 (and the CLI)
// do.
func jsonTagging(c *rgt.Client) *rgt.Client {
	return rgt.New(c.Options(), func(o *rgt.Options) { o.Protocol = awsjson.New11(schemas.ResourceGroupsTaggingAPI_20170126) })
}

// TestGetResourcesFilters: tag filters (AND across filters, OR across a filter's values, any value
// without values) and resource type filters (service, service:type, case-sensitive, unknown)
// select the tagged resources, in ARN order, over both protocols; untagged resources never come.
func TestGetResourcesFilters(t *testing.T) {
	w := newTaggingWorld(t)
	for name, client := range map[string]*rgt.Client{"cbor": w.Tagging, "json": jsonTagging(w.Tagging)} {
		t.Run(name, func(t *testing.T) {
			cases := []struct {
				name  string
				in    rgt.GetResourcesInput
				wantR []string
			}{
				{"everything tagged", rgt.GetResourcesInput{}, sortedARNs(w.inventory, arns(w.lbA, w.lbB, w.lbOther, w.tgA, w.listenerA, w.group))},
				{"stack and cluster", rgt.GetResourcesInput{TagFilters: []rgttypes.TagFilter{filter(stackKey, "ns/a"), filter(clusterKey, "moat")}},
					sortedARNs(arns(w.lbA, w.tgA, w.listenerA, w.group))},
				{"either stack", rgt.GetResourcesInput{TagFilters: []rgttypes.TagFilter{filter(stackKey, "ns/a", "ns/b")}},
					sortedARNs(arns(w.lbA, w.lbB, w.lbOther, w.tgA, w.listenerA, w.group))},
				{"key alone", rgt.GetResourcesInput{TagFilters: []rgttypes.TagFilter{filter(clusterKey), filter(stackKey, "ns/b")}}, []string{w.lbB}},
				{"no such value", rgt.GetResourcesInput{TagFilters: []rgttypes.TagFilter{filter(stackKey, "ns/z")}}, nil},
				{"load balancers", rgt.GetResourcesInput{TagFilters: []rgttypes.TagFilter{filter(clusterKey, "moat")}, ResourceTypeFilters: []string{"elasticloadbalancing:loadbalancer"}},
					sortedARNs(arns(w.lbA, w.lbB))},
				{"load balancers and target groups", rgt.GetResourcesInput{TagFilters: []rgttypes.TagFilter{filter(stackKey, "ns/a")},
					ResourceTypeFilters: []string{"elasticloadbalancing:loadbalancer", "elasticloadbalancing:targetgroup"}}, sortedARNs(arns(w.lbA, w.lbOther, w.tgA))},
				{"listeners", rgt.GetResourcesInput{ResourceTypeFilters: []string{"elasticloadbalancing:listener"}}, []string{w.listenerA}},
				{"the ELB service", rgt.GetResourcesInput{TagFilters: []rgttypes.TagFilter{filter(clusterKey, "moat")}, ResourceTypeFilters: []string{"elasticloadbalancing"}},
					sortedARNs(arns(w.lbA, w.lbB, w.tgA, w.listenerA))},
				{"the EC2 service", rgt.GetResourcesInput{ResourceTypeFilters: []string{"ec2"}}, sortedARNs(w.inventory, arns(w.group))},
				{"security groups", rgt.GetResourcesInput{ResourceTypeFilters: []string{"ec2:security-group"}}, sortedARNs(w.inventory, arns(w.group))},
				{"types are case-sensitive", rgt.GetResourcesInput{ResourceTypeFilters: []string{"elasticloadbalancing:LoadBalancer", "EC2"}}, nil},
				{"unknown types", rgt.GetResourcesInput{ResourceTypeFilters: []string{"s3", "ec2:instance", "elasticloadbalancing:listener-rule"}}, nil},
			}
			for _, tc := range cases {
				if got := w.getAll(t, client, &tc.in); !slices.Equal(got, tc.wantR) {
					t.Errorf("%s:\n got %v\nwant %v", tc.name, got, tc.wantR)
				}
			}
		})
	}
}

// TestGetResourcesPagination: the SDK's paginator, a few resources a page, gets every resource
// once, in ARN order, and the last page's token is empty; TagsPerPage pages too.
func TestGetResourcesPagination(t *testing.T) {
	e := newEnv(t)
	w := &taggingWorld{env: e}
	want := w.getAll(t, e.Tagging, &rgt.GetResourcesInput{}) // the inventory's
	for i := range 7 {
		tg := e.createTG(t, fmt.Sprint("tg", i), func(in *elbv2.CreateTargetGroupInput) { in.Tags = elbTags("n", fmt.Sprint(i)) })
		want = append(want, aws.ToString(tg.TargetGroupArn))
	}
	e.createTG(t, "untagged")
	slices.Sort(want)
	for _, in := range []rgt.GetResourcesInput{{ResourcesPerPage: aws.Int32(2)}, {ResourcesPerPage: aws.Int32(1)}, {TagsPerPage: aws.Int32(100)}, {}} {
		if got := w.getAll(t, e.Tagging, &in); !slices.Equal(got, want) {
			t.Errorf("%+v:\n got %v\nwant %v", in, got, want)
		}
	}
	pages := 0
	p := rgt.NewGetResourcesPaginator(e.Tagging, &rgt.GetResourcesInput{ResourcesPerPage: aws.Int32(3), ResourceTypeFilters: []string{"elasticloadbalancing:targetgroup"}})
	for p.HasMorePages() {
		page := must[*rgt.GetResourcesOutput](t)(p.NextPage(e.ctx))
		pages++
		last := pages == 3
		if n := len(page.ResourceTagMappingList); n != 3 && !(last && n == 1) {
			t.Errorf("page %d has %d resources", pages, n)
		}
		if token := aws.ToString(page.PaginationToken); (token == "") != last {
			t.Errorf("page %d: token %q", pages, token)
		}
		if pages > 3 {
			t.Fatal("more than 3 pages of 3 for 7 resources")
		}
	}
}

// TestGetResourcesByARN: ResourceARNList answers the tagged resources asked, in ARN order, each
// once, leaving out unknown, untagged and foreign ARNs.
func TestGetResourcesByARN(t *testing.T) {
	w := newTaggingWorld(t)
	out := must[*rgt.GetResourcesOutput](t)(w.Tagging.GetResources(w.ctx, &rgt.GetResourcesInput{ResourceARNList: []string{
		w.group, w.lbB, w.tgUntagged, w.lbB + "0", "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/net/b/0123456789abcdef",
		"arn:aws:s3:::bucket", "not an ARN", w.lbA, w.group,
	}}))
	var got []string
	for _, m := range out.ResourceTagMappingList {
		got = append(got, aws.ToString(m.ResourceARN))
	}
	if want := sortedARNs(arns(w.group, w.lbB, w.lbA)); !slices.Equal(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	if aws.ToString(out.PaginationToken) != "" {
		t.Errorf("token %q", aws.ToString(out.PaginationToken))
	}
}

// TestGetResourcesInvalidParameters: parameters out of their documented ranges, and the
// combinations the documentation excludes, are InvalidParameterException.
func TestGetResourcesInvalidParameters(t *testing.T) {
	e := newEnv(t)
	many := func(n int, f func(i int) rgttypes.TagFilter) []rgttypes.TagFilter {
		var out []rgttypes.TagFilter
		for i := range n {
			out = append(out, f(i))
		}
		return out
	}
	values := make([]string, 21)
	for i := range values {
		values[i] = fmt.Sprint(i)
	}
	arn := "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/a/0123456789abcdef"
	cases := map[string]rgt.GetResourcesInput{
		"ResourcesPerPage 0":       {ResourcesPerPage: aws.Int32(0)},
		"ResourcesPerPage 101":     {ResourcesPerPage: aws.Int32(101)},
		"TagsPerPage 99":           {TagsPerPage: aws.Int32(99)},
		"TagsPerPage 501":          {TagsPerPage: aws.Int32(501)},
		"bad token":                {PaginationToken: aws.String("not a token!")},
		"token of no ARN":          {PaginationToken: aws.String("YQ")},
		"token too long":           {PaginationToken: aws.String(strings.Repeat("A", 2049))},
		"51 filters":               {TagFilters: many(51, func(i int) rgttypes.TagFilter { return filter(fmt.Sprint("k", i)) })},
		"21 values":                {TagFilters: []rgttypes.TagFilter{filter("k", values...)}},
		"empty key":                {TagFilters: []rgttypes.TagFilter{filter("")}},
		"key too long":             {TagFilters: []rgttypes.TagFilter{filter(strings.Repeat("k", 129))}},
		"value too long":           {TagFilters: []rgttypes.TagFilter{filter("k", strings.Repeat("v", 257))}},
		"101 ARNs":                 {ResourceARNList: slices.Repeat([]string{arn}, 101)},
		"ARNs and tag filters":     {ResourceARNList: []string{arn}, TagFilters: []rgttypes.TagFilter{filter("k")}},
		"ARNs and type filters":    {ResourceARNList: []string{arn}, ResourceTypeFilters: []string{"ec2"}},
		"ARNs and a page size":     {ResourceARNList: []string{arn}, ResourcesPerPage: aws.Int32(5)},
		"ARNs and a token":         {ResourceARNList: []string{arn}, PaginationToken: aws.String("YQ")},
		"exclude without include":  {ExcludeCompliantResources: aws.Bool(true)},
		"101 resource type filter": {ResourceTypeFilters: slices.Repeat([]string{"ec2"}, 101)},
	}
	for name, in := range cases {
		for protocol, client := range map[string]*rgt.Client{"cbor": e.Tagging, "json": jsonTagging(e.Tagging)} {
			_, err := client.GetResources(e.ctx, &in)
			var invalid *rgttypes.InvalidParameterException
			if !errors.As(err, &invalid) || invalid.ErrorMessage() == "" {
				t.Errorf("%s (%s): %v, want InvalidParameterException with a message", name, protocol, err)
			}
		}
	}
	if _, err := e.Tagging.GetResources(e.ctx, &rgt.GetResourcesInput{IncludeComplianceDetails: aws.Bool(true), ExcludeCompliantResources: aws.Bool(true)}); err != nil {
		t.Errorf("compliance details: %v", err)
	}
}

// TestGetResourcesFollowsChanges: tags added and removed through ELBv2 and EC2, and deleted
// resources, show in the next GetResources.
func TestGetResourcesFollowsChanges(t *testing.T) {
	w := newTaggingWorld(t)
	stackA := &rgt.GetResourcesInput{TagFilters: []rgttypes.TagFilter{filter(clusterKey, "moat"), filter(stackKey, "ns/a")}}
	step := func(what string, want ...string) {
		t.Helper()
		if got := w.getAll(t, w.Tagging, stackA); !slices.Equal(got, sortedARNs(want)) {
			t.Errorf("after %s:\n got %v\nwant %v", what, got, sortedARNs(want))
		}
	}
	step("creating", w.lbA, w.tgA, w.listenerA, w.group)
	must[*elbv2.AddTagsOutput](t)(w.ELB.AddTags(w.ctx, &elbv2.AddTagsInput{ResourceArns: []string{w.lbB, w.tgUntagged}, Tags: elbTags(stackKey, "ns/a", clusterKey, "moat")}))
	step("AddTags", w.lbA, w.lbB, w.tgA, w.tgUntagged, w.listenerA, w.group)
	must[*elbv2.RemoveTagsOutput](t)(w.ELB.RemoveTags(w.ctx, &elbv2.RemoveTagsInput{ResourceArns: []string{w.tgUntagged}, TagKeys: []string{stackKey, clusterKey}}))
	must[*elbv2.RemoveTagsOutput](t)(w.ELB.RemoveTags(w.ctx, &elbv2.RemoveTagsInput{ResourceArns: []string{w.lbB}, TagKeys: []string{clusterKey}}))
	step("RemoveTags", w.lbA, w.tgA, w.listenerA, w.group)
	if got := w.getAll(t, w.Tagging, &rgt.GetResourcesInput{ResourceARNList: []string{w.tgUntagged}}); len(got) != 0 {
		t.Errorf("a target group whose tags were all removed: %v", got)
	}
	groupID := w.group[strings.LastIndex(w.group, "/")+1:]
	must[*ec2.DeleteTagsOutput](t)(w.EC2.DeleteTags(w.ctx, &ec2.DeleteTagsInput{Resources: []string{groupID}, Tags: []ec2types.Tag{{Key: aws.String(stackKey)}}}))
	step("DeleteTags", w.lbA, w.tgA, w.listenerA)
	must[*elbv2.DeleteListenerOutput](t)(w.ELB.DeleteListener(w.ctx, &elbv2.DeleteListenerInput{ListenerArn: aws.String(w.listenerA)}))
	must[*elbv2.DeleteLoadBalancerOutput](t)(w.ELB.DeleteLoadBalancer(w.ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: aws.String(w.lbA)}))
	step("deleting the listener and load balancer", w.tgA)
	must[*elbv2.DeleteTargetGroupOutput](t)(w.ELB.DeleteTargetGroup(w.ctx, &elbv2.DeleteTargetGroupInput{TargetGroupArn: aws.String(w.tgA)}))
	step("deleting the target group")
}

// contentTypes records the Content-Type of each request a client sends.
type contentTypes struct {
	mu   sync.Mutex
	seen []string
}

func (c *contentTypes) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.seen = append(c.seen, r.Header.Get("Content-Type"))
	c.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

// TestTaggingAccessAndProtocols: the SDK client speaks CBOR by default and JSON when told, and
// both are answered; a read-only key may call GetResources; a wrong secret, an unknown key and an
// unsigned request are refused with the JSON services' codes, in CBOR to a CBOR request.
func TestTaggingAccessAndProtocols(t *testing.T) {
	e := lbtest.Start(t, lbtest.WithMaxAttempts(1))
	ctx := context.Background()
	seen := &contentTypes{}
	cfg := e.Config.Copy()
	cfg.HTTPClient = &http.Client{Transport: seen}
	for _, c := range []*rgt.Client{rgt.NewFromConfig(cfg), jsonTagging(rgt.NewFromConfig(cfg)), rgt.NewFromConfig(e.ReadOnlyConfig)} {
		if _, err := c.GetResources(ctx, &rgt.GetResourcesInput{ResourceTypeFilters: []string{"elasticloadbalancing:loadbalancer"}}); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"application/cbor", "application/x-amz-json-1.1"}; !slices.Equal(seen.seen, want) {
		t.Errorf("content types %v, want %v", seen.seen, want)
	}
	if n := e.Calls(t)[lbtest.Call{Service: "tagging", Action: "GetResources", Code: "OK"}]; n != 3 {
		t.Errorf("counted %d GetResources, want 3", n)
	}
	wrongSecret := e.Config.Copy()
	wrongSecret.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: lbtest.AccessKey, SecretAccessKey: "not-the-secret"}, nil
	})
	unknownKey := e.Config.Copy()
	unknownKey.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKIANOTAKEY000000000", SecretAccessKey: "x"}, nil
	})
	for name, c := range map[string]*rgt.Client{"cbor": rgt.NewFromConfig(wrongSecret), "json": jsonTagging(rgt.NewFromConfig(wrongSecret))} {
		_, err := c.GetResources(ctx, &rgt.GetResourcesInput{})
		if errorCode(err) != "InvalidSignatureException" {
			t.Errorf("wrong secret (%s): %v", name, err)
		}
	}
	_, err := rgt.NewFromConfig(unknownKey).GetResources(ctx, &rgt.GetResourcesInput{})
	wantCode(t, err, "UnrecognizedClientException")

	for _, tc := range []struct {
		name, operation string
		body            []byte
		signed          bool
		code            string
	}{
		{"unsigned", "GetResources", nil, false, "MissingAuthenticationTokenException"},
		{"body that is no CBOR", "GetResources", []byte{0xff}, true, "SerializationException"},
		{"member of the wrong type", "GetResources", cbor.Encode(cbor.Map{"ResourcesPerPage": cbor.String("5")}), true, "SerializationException"},
		{"unknown operation", "TagResources", nil, true, "UnknownOperationException"},
	} {
		creds := &aws.Credentials{AccessKeyID: lbtest.AccessKey, SecretAccessKey: lbtest.SecretKey}
		if !tc.signed {
			creds = nil
		}
		status, header, reply := postCBOR(t, e.URL, tc.operation, tc.body, creds)
		if m, _ := reply.(cbor.Map); status != 400 || m["__type"] != cbor.String(tc.code) || m["message"] == nil || header.Get("Smithy-Protocol") != "rpc-v2-cbor" {
			t.Errorf("%s: %d %v %v", tc.name, status, reply, header)
		}
	}
	status, _, jsonBody := postJSON(t, e.URL, lbtest.AccessKey, lbtest.SecretKey, "tagging", "ResourceGroupsTaggingAPI_20170126.TagResources", "{}")
	if status != 400 || !strings.Contains(jsonBody, "UnknownOperationException") {
		t.Errorf("TagResources: %d %s", status, jsonBody)
	}
}

// TestTaggingBusy: a request the endpoint has no room for is answered throttled in its own
// protocol, CBOR to a CBOR request.
func TestTaggingBusy(t *testing.T) {
	srv := awsapi.New(nil, &sigv4.Verifier{}, slog.New(slog.DiscardHandler), nil)
	cborReq := httptest.NewRequest(http.MethodPost, "/service/ResourceGroupsTaggingAPI_20170126/operation/GetResources", nil)
	cborReq.Header.Set("Smithy-Protocol", "rpc-v2-cbor")
	rec := httptest.NewRecorder()
	srv.Busy(rec, cborReq)
	reply, err := cbor.Decode(rec.Body.Bytes())
	if m, _ := reply.(cbor.Map); err != nil || rec.Code != 400 || m["__type"] != cbor.String("ThrottlingException") {
		t.Errorf("CBOR: %d %v %v", rec.Code, reply, err)
	}
	jsonReq := httptest.NewRequest(http.MethodPost, "/", nil)
	jsonReq.Header.Set("X-Amz-Target", "ResourceGroupsTaggingAPI_20170126.GetResources")
	rec = httptest.NewRecorder()
	srv.Busy(rec, jsonReq)
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), `"__type":"ThrottlingException"`) {
		t.Errorf("JSON: %d %s", rec.Code, rec.Body)
	}
}

// postCBOR sends an RPC v2 CBOR request for a Tagging operation, signed with creds (unsigned if
// nil), and returns the decoded reply.
func postCBOR(t *testing.T, url, operation string, body []byte, creds *aws.Credentials) (int, http.Header, cbor.Value) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/service/ResourceGroupsTaggingAPI_20170126/operation/"+operation, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Smithy-Protocol", "rpc-v2-cbor")
	req.Header.Set("Content-Type", "application/cbor")
	status, header, out := sendSigned(t, req, body, creds, "tagging")
	reply, err := cbor.Decode(out)
	if err != nil {
		t.Fatalf("reply %d is not CBOR: %q", status, out)
	}
	return status, header, reply
}

// FuzzTaggingCBOR sends correctly signed GetResources requests with arbitrary CBOR bodies: the
// answer must be CBOR, and never a 500 (a 500 for client input is a bug).
func FuzzTaggingCBOR(f *testing.F) {
	for _, seed := range []cbor.Value{
		cbor.Map{},
		cbor.Map{"TagFilters": cbor.List{cbor.Map{"Key": cbor.String(stackKey), "Values": cbor.List{cbor.String("ns/a")}}}, "ResourcesPerPage": cbor.Uint(2)},
		cbor.Map{"ResourceTypeFilters": cbor.List{cbor.String("ec2:security-group")}, "PaginationToken": cbor.String("YQ")},
		cbor.Map{"ResourceARNList": cbor.List{cbor.String("arn:aws:ec2:us-east-1:123456789012:security-group/sg-1")}},
		cbor.Map{"TagsPerPage": cbor.NegInt(5), "IncludeComplianceDetails": cbor.Bool(true), "PaginationToken": &cbor.Nil{}},
	} {
		f.Add(cbor.Encode(seed))
	}
	e := newEnv(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		status, _, _ := postCBOR(t, e.URL, "GetResources", body, &aws.Credentials{AccessKeyID: testAccessKey, SecretAccessKey: testSecret})
		if status >= 500 {
			t.Errorf("status %d for body %x", status, body)
		}
	})
}
