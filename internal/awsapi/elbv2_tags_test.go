package awsapi_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/moatlb/moat/internal/cloud"
)

func elbTags(kv ...string) []types.Tag {
	var out []types.Tag
	for i := 0; i < len(kv); i += 2 {
		out = append(out, types.Tag{Key: aws.String(kv[i]), Value: aws.String(kv[i+1])})
	}
	return out
}

// tagsOf returns each resource's tags as "k=v,k=v", in the order asked.
func (e *env) tagsOf(t *testing.T, arns ...string) []string {
	t.Helper()
	out := must[*elbv2.DescribeTagsOutput](t)(e.ELB.DescribeTags(e.ctx, &elbv2.DescribeTagsInput{ResourceArns: arns}))
	var res []string
	for i, d := range out.TagDescriptions {
		if aws.ToString(d.ResourceArn) != arns[i] {
			t.Errorf("tag description %d is for %s, want %s", i, aws.ToString(d.ResourceArn), arns[i])
		}
		var kv []string
		for _, tag := range d.Tags {
			kv = append(kv, aws.ToString(tag.Key)+"="+aws.ToString(tag.Value))
		}
		res = append(res, strings.Join(kv, ","))
	}
	return res
}

func TestELBTags(t *testing.T) {
	e := newEnv(t)
	lb := aws.ToString(e.createLB(t, "web", func(in *elbv2.CreateLoadBalancerInput) { in.Tags = elbTags("a", "1") }).LoadBalancerArn)
	tg := aws.ToString(e.createTG(t, "web", func(in *elbv2.CreateTargetGroupInput) { in.Tags = elbTags("b", "2") }).TargetGroupArn)
	out := must[*elbv2.CreateListenerOutput](t)(e.ELB.CreateListener(e.ctx, &elbv2.CreateListenerInput{
		LoadBalancerArn: aws.String(lb), Protocol: types.ProtocolEnumTcp, Port: aws.Int32(80), DefaultActions: forward(tg), Tags: elbTags("c", "3"),
	}))
	l := aws.ToString(out.Listeners[0].ListenerArn)
	rule := aws.ToString(must[*elbv2.DescribeRulesOutput](t)(e.ELB.DescribeRules(e.ctx, &elbv2.DescribeRulesInput{ListenerArn: aws.String(l)})).Rules[0].RuleArn)

	if got, want := e.tagsOf(t, tg, lb, l, rule), []string{"b=2", "a=1", "c=3", ""}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("tags at create\n got %v\nwant %v", got, want)
	}
	must[*elbv2.AddTagsOutput](t)(e.ELB.AddTags(e.ctx, &elbv2.AddTagsInput{ResourceArns: []string{lb, tg, l, rule}, Tags: elbTags("a", "9", "z", "")}))
	if got, want := e.tagsOf(t, lb, tg, l, rule), []string{"a=9,z=", "a=9,b=2,z=", "a=9,c=3,z=", "a=9,z="}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after AddTags\n got %v\nwant %v", got, want)
	}
	must[*elbv2.RemoveTagsOutput](t)(e.ELB.RemoveTags(e.ctx, &elbv2.RemoveTagsInput{ResourceArns: []string{lb, tg}, TagKeys: []string{"a", "nope"}}))
	if got, want := e.tagsOf(t, lb, tg), []string{"z=", "b=2,z="}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after RemoveTags\n got %v\nwant %v", got, want)
	}

	missingLB := strings.Replace(lb, "/web/", "/gone/", 1)
	missingTG := strings.Replace(tg, "/web/", "/gone/", 1)
	missingL := l + "0"
	missingRule := rule[:len(rule)-1] + "x"
	var many []types.Tag
	for i := range 50 {
		many = append(many, types.Tag{Key: aws.String(fmt.Sprintf("k%02d", i)), Value: aws.String("v")})
	}
	cases := []struct {
		name string
		arns []string
		tags []types.Tag
		code string
	}{
		{"missing load balancer (with one that exists)", []string{lb, missingLB}, elbTags("x", "1"), "LoadBalancerNotFound"},
		{"missing target group", []string{missingTG}, elbTags("x", "1"), "TargetGroupNotFound"},
		{"missing listener", []string{missingL}, elbTags("x", "1"), "ListenerNotFound"},
		{"missing rule", []string{missingRule}, elbTags("x", "1"), "RuleNotFound"},
		{"not an ARN", []string{"web"}, elbTags("x", "1"), "ValidationError"},
		{"duplicate keys", []string{lb}, elbTags("x", "1", "x", "2"), "DuplicateTagKeys"},
		{"too many", []string{lb}, many, "TooManyTags"},
		{"key too long", []string{lb}, elbTags(strings.Repeat("k", 129), ""), "ValidationError"},
		{"value too long", []string{lb}, elbTags("k", strings.Repeat("v", 257)), "ValidationError"},
		{"bad character", []string{lb}, elbTags("k!", ""), "ValidationError"},
		{"aws prefix", []string{lb}, elbTags("aws:k", ""), "ValidationError"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.ELB.AddTags(e.ctx, &elbv2.AddTagsInput{ResourceArns: tc.arns, Tags: tc.tags})
			wantCode(t, err, tc.code)
		})
	}
	if got, want := e.tagsOf(t, lb), []string{"z="}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("failed AddTags changed tags: %v", got)
	}
	_, err := e.ELB.RemoveTags(e.ctx, &elbv2.RemoveTagsInput{ResourceArns: []string{missingTG}, TagKeys: []string{"b"}})
	wantCode(t, err, "TargetGroupNotFound")
	_, err = e.ELB.DescribeTags(e.ctx, &elbv2.DescribeTagsInput{ResourceArns: []string{missingL}})
	wantCode(t, err, "ListenerNotFound")
	var arns []string
	for range 21 {
		arns = append(arns, lb)
	}
	_, err = e.ELB.DescribeTags(e.ctx, &elbv2.DescribeTagsInput{ResourceArns: arns})
	wantCode(t, err, "ValidationError")
	if got := e.tagsOf(t, arns[:20]...); len(got) != 20 {
		t.Errorf("DescribeTags of 20 ARNs answered %d descriptions", len(got))
	}

	q := newEnv(t, withQuotas(func(q *cloud.Quotas) { q.TagsPerResource = 2 }))
	qtg := aws.ToString(q.createTG(t, "web", func(in *elbv2.CreateTargetGroupInput) { in.Tags = elbTags("a", "1") }).TargetGroupArn)
	must[*elbv2.AddTagsOutput](t)(q.ELB.AddTags(q.ctx, &elbv2.AddTagsInput{ResourceArns: []string{qtg}, Tags: elbTags("a", "2", "b", "1")}))
	_, err = q.ELB.AddTags(q.ctx, &elbv2.AddTagsInput{ResourceArns: []string{qtg}, Tags: elbTags("c", "1")})
	wantCode(t, err, "TooManyTags")
}
