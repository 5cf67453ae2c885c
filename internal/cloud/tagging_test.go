package cloud

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moatlb/moat/internal/store"
)

// TestTagIndexNarrowsToTheStack: of 1,000 load balancers of one cluster, a query by the cluster's
// and a stack's tags (as the AWS Load Balancer Controller asks, in either order) reads the stack's
// records only, and a first pass bounded by fewTagged reads no more than that of the cluster's tag.
func TestTagIndexNarrowsToTheStack(t *testing.T) {
	idx := newLBIndex()
	for i := range 1000 {
		idx.add(LoadBalancer{
			ARN:  fmt.Sprintf("arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/lb%04d/%016x", i, i),
			Name: fmt.Sprintf("lb%04d", i),
			Tags: Tags{"elbv2.k8s.aws/cluster": "moat", "service.k8s.aws/stack": fmt.Sprintf("ns/svc%d", i/2)},
		})
	}
	cluster := TagFilter{Key: "elbv2.k8s.aws/cluster", Values: []string{"moat"}}
	stack := TagFilter{Key: "service.k8s.aws/stack", Values: []string{"ns/svc7"}}
	for _, filters := range [][]TagFilter{{cluster, stack}, {stack, cluster}, {{Key: stack.Key, Values: []string{"ns/svc7", "ns/svc8"}}, {Key: cluster.Key}}} {
		got := taggedRecords(idx.tags, idx.byARN, filters)
		want := 2 * len(filters[0].Values)
		if filters[0].Key == cluster.Key {
			want = 2
		}
		if len(got) != want {
			t.Errorf("filters %v: %d candidates, want the stack's %d", filters, len(got), want)
		}
		for _, lb := range got {
			if !matchesTagFilters(lb.Tags, filters) {
				t.Errorf("filters %v: candidate %s tagged %v", filters, lb.Name, lb.Tags)
			}
		}
	}
	if keys, narrower := idx.tags.taggedAny(cluster, fewTagged); narrower || keys != nil {
		t.Errorf("the cluster's tag within %d records: %d keys, narrower %v", fewTagged, len(keys), narrower)
	}
	if got := taggedRecords(idx.tags, idx.byARN, []TagFilter{cluster}); len(got) != 1000 {
		t.Errorf("by the cluster's tag alone: %d, want 1000", len(got))
	}
	if got := taggedRecords(idx.tags, idx.byARN, nil); len(got) != 1000 {
		t.Errorf("without filters: %d, want all 1000", len(got))
	}
}

// TestGetResourcesPages: GetResources pages by ResourcesPerPage and by TagsPerPage, never
// splitting a resource, and each page's token leads to the next resource in ARN order.
func TestGetResourcesPages(t *testing.T) {
	resources := make([]TaggedResource, 7)
	for i := range resources {
		tags := Tags{}
		for j := range 40 {
			tags[fmt.Sprint(j)] = "v"
		}
		resources[i] = TaggedResource{ARN: fmt.Sprint("arn:", i), Tags: tags}
	}
	per := func(n int) *int { return &n }
	if got := pageOfTagged(resources, per(3), nil); len(got) != 3 {
		t.Errorf("3 per page: %d", len(got))
	}
	if got := pageOfTagged(resources, nil, per(100)); len(got) != 2 {
		t.Errorf("100 tags per page of resources with 40 each: %d resources, want 2", len(got))
	}
	if got := pageOfTagged(resources, per(1), per(500)); len(got) != 1 {
		t.Errorf("1 resource and 500 tags per page: %d", len(got))
	}
	if got := pageOfTagged(resources[:0], nil, nil); len(got) != 0 {
		t.Errorf("no resources: %d", len(got))
	}
	wide := slices.Clone(resources)
	wide[0].Tags = Tags{}
	for j := range 120 {
		wide[0].Tags[fmt.Sprint(j)] = "v"
	}
	if got := pageOfTagged(wide, nil, per(100)); len(got) != 1 {
		t.Errorf("a resource of more tags than a page holds, first: %d resources, want it alone", len(got))
	}
}

// TestGetResourcesFollowsTagCommits: the target group index's tags follow AddTags, RemoveTags and
// DeleteTargetGroup by reading the records they wrote, never the whole bucket, and GetResources
// answers as the records say after each commit.
func TestGetResourcesFollowsTagCommits(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, vpc := inventoryCloud(t, st)
	var arns []string
	for i := range 20 {
		port := 80
		tg, err := c.CreateTargetGroup(CreateTargetGroupInput{Name: fmt.Sprint("tg", i), Protocol: "TCP", Port: &port, VPCID: vpc, TargetType: "ip"})
		if err != nil {
			t.Fatal(err)
		}
		arns = append(arns, tg.ARN)
	}
	stack := func(v string) []string {
		t.Helper()
		page, next, err := c.GetResources(GetResourcesInput{
			TagFilters: []TagFilter{{Key: "stack", Values: []string{v}}}, ResourceTypeFilters: []string{"elasticloadbalancing:targetgroup"},
		})
		if err != nil || next != "" {
			t.Fatalf("GetResources: %v, next %q", err, next)
		}
		var out []string
		for _, r := range page {
			out = append(out, r.ARN)
		}
		return out
	}
	stack("a")
	before := c.idx.tgs.wholeReads.Load()
	var want []string
	for i, arn := range arns {
		if err := c.AddTags([]string{arn}, []Tag{{"stack", []string{"a", "b"}[i%2]}}); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			want = append(want, arn)
		}
		if got := stack("a"); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
			t.Fatalf("after tagging %d groups: %v, want %v", i+1, got, want)
		}
	}
	if err := c.RemoveTags([]string{arns[0]}, []string{"stack"}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteTargetGroup(arns[2]); err != nil {
		t.Fatal(err)
	}
	want = slices.DeleteFunc(want, func(arn string) bool { return arn == arns[0] || arn == arns[2] })
	if got := stack("a"); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Fatalf("after untagging one and deleting another: %v, want %v", got, want)
	}
	if n := c.idx.tgs.wholeReads.Load() - before; n != 0 {
		t.Errorf("the target group index read the whole bucket %d times, want 0", n)
	}
}
