package model

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json from the current builder")

// goldenCase is one testdata/<name>.yaml file: a Service, the controller configuration (laid
// over DefaultConfig("my-cluster", "vpc-0123456789abcdef0")) and the resolved inputs (the
// defaults below when absent).
type goldenCase struct {
	Description string          `json:"description"`
	Config      json.RawMessage `json:"config,omitempty"`
	Resolved    *Resolved       `json:"resolved,omitempty"`
	Service     corev1.Service  `json:"service"`
}

// goldenResult is what testdata/<name>.golden.json pins.
type goldenResult struct {
	Plan  *Plan  `json:"plan,omitempty"`
	Stack *Stack `json:"stack,omitempty"`
	Error *struct {
		*Error
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

func defaultResolved() Resolved {
	return Resolved{
		Subnets: []Subnet{
			{ID: "subnet-0a1b2c3d4e5f60001", AvailabilityZone: "us-east-1a", IPv4CIDR: "192.168.0.0/19"},
			{ID: "subnet-0a1b2c3d4e5f60002", AvailabilityZone: "us-east-1b", IPv4CIDR: "192.168.32.0/19"},
		},
		VPC:                    &VPC{IPv4CIDRs: []string{"192.168.0.0/16"}},
		BackendSecurityGroupID: "sg-0b4c1e2d3f4a5b6c7",
	}
}

func loadCase(t *testing.T, path string) (goldenCase, Config, Resolved) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c goldenCase
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	cfg := DefaultConfig("my-cluster", "vpc-0123456789abcdef0")
	cfg.Region = "us-east-1"
	if len(c.Config) > 0 {
		dec := json.NewDecoder(bytes.NewReader(c.Config))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			t.Fatalf("%s: config: %v", path, err)
		}
	}
	in := defaultResolved()
	if c.Resolved != nil {
		in = *c.Resolved
	}
	return c, cfg, in
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			c, cfg, in := loadCase(t, file)
			if c.Description == "" {
				t.Errorf("%s has no description", file)
			}
			got := runCase(t, &c.Service, cfg, in)
			if wantErr := strings.HasPrefix(name, "error-"); wantErr != (got.Error != nil) {
				t.Errorf("case %s: error-* cases must fail and the others must build; got error %v", name, got.Error != nil)
			}
			out, err := json.MarshalIndent(got, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, '\n')
			goldenPath := strings.TrimSuffix(file, ".yaml") + ".golden.json"
			if *update {
				if err := os.WriteFile(goldenPath, out, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(goldenPath)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
			}
			if !bytes.Equal(want, out) {
				t.Errorf("%s differs from the builder's output (go test -run TestGolden -update rewrites it):\n%s", goldenPath, lineDiff(string(want), string(out)))
			}
		})
	}
}

// runCase runs Prepare and Build and checks what must hold for every case.
func runCase(t *testing.T, svc *corev1.Service, cfg Config, in Resolved) goldenResult {
	t.Helper()
	plan, perr := Prepare(svc, cfg, in.ExistingLoadBalancer)
	stack, err := Build(svc, cfg, in)
	if perr != nil {
		if err == nil || err.Error() != perr.Error() {
			t.Errorf("Prepare failed with %q but Build gave %v", perr, err)
		}
	}
	var res goldenResult
	if perr == nil {
		res.Plan = &plan
	}
	if err != nil {
		e, ok := AsError(err)
		if !ok {
			t.Fatalf("Build returned an untyped error: %v", err)
		}
		if e.EventReason() != EventReasonFailedBuildModel {
			t.Errorf("event reason %q", e.EventReason())
		}
		res.Error = &struct {
			*Error
			Message string `json:"message"`
		}{e, e.Error()}
		return res
	}
	again, err2 := Build(svc, cfg, in)
	if err2 != nil || !jsonEqual(t, stack, again) {
		t.Errorf("Build is not deterministic")
	}
	checkInvariants(t, plan, stack)
	res.Stack = &stack
	return res
}

func checkInvariants(t *testing.T, plan Plan, s Stack) {
	t.Helper()
	if s.LoadBalancer == nil {
		if len(s.Listeners)+len(s.TargetGroups)+len(s.TargetGroupBindings) > 0 || s.ManagedSecurityGroup != nil {
			t.Errorf("empty stack with resources")
		}
		return
	}
	if plan.SecurityGroupMode != s.SecurityGroupMode {
		t.Errorf("plan mode %s, stack mode %s", plan.SecurityGroupMode, s.SecurityGroupMode)
	}
	if (plan.BackendSecurityGroup != nil) != (s.BackendSecurityGroup != nil) {
		t.Errorf("plan and stack disagree on the backend group")
	}
	groups := s.LoadBalancer.SecurityGroups
	if b := s.BackendSecurityGroup; b != nil && (len(groups) == 0 || groups[len(groups)-1] != Literal(b.GroupID)) {
		t.Errorf("backend group %s is not last in %v", b.GroupID, groups)
	}
	if (s.ManagedSecurityGroup != nil) != (len(groups) > 0 && groups[0] == ManagedSecurityGroupIDRef) {
		t.Errorf("managed group and load balancer groups disagree")
	}
	if (s.SecurityGroupMode == SecurityGroupsNone) != (len(groups) == 0) {
		t.Errorf("mode %s with groups %v", s.SecurityGroupMode, groups)
	}
	if len(s.TargetGroups) != len(s.TargetGroupBindings) || len(s.TargetGroups) != len(s.Listeners) {
		t.Errorf("%d listeners, %d target groups, %d bindings", len(s.Listeners), len(s.TargetGroups), len(s.TargetGroupBindings))
	}
	for _, l := range s.Listeners {
		tg := l.DefaultActions[0].ForwardConfig.TargetGroups[0].TargetGroupARN
		if !slices.ContainsFunc(s.TargetGroups, func(g TargetGroup) bool { return TargetGroupARNRef(g.ResourceID) == tg }) {
			t.Errorf("listener %s forwards to unknown %v", l.ResourceID, tg)
		}
	}
	type taggedResource struct {
		id   string
		tags map[string]string
	}
	tagged := []taggedResource{{s.LoadBalancer.ResourceID, s.LoadBalancer.Tags}}
	if s.ManagedSecurityGroup != nil {
		tagged = append(tagged, taggedResource{s.ManagedSecurityGroup.ResourceID, s.ManagedSecurityGroup.Tags})
	}
	for _, l := range s.Listeners {
		tagged = append(tagged, taggedResource{l.ResourceID, l.Tags})
	}
	for i, g := range s.TargetGroups {
		tagged = append(tagged, taggedResource{g.ResourceID, g.Tags})
		if b := s.TargetGroupBindings[i]; b.Name != g.Name || b.Spec.TargetGroupARN != TargetGroupARNRef(g.ResourceID) {
			t.Errorf("binding %s does not match target group %s", b.ResourceID, g.ResourceID)
		}
	}
	for _, r := range tagged {
		if r.tags[TagCluster] == "" || r.tags[TagStack] != s.ID || r.tags[TagResource] != r.id {
			t.Errorf("resource %s lacks tracking tags: %v", r.id, r.tags)
		}
	}
}

func jsonEqual(t *testing.T, a, b any) bool {
	t.Helper()
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	return bytes.Equal(x, y)
}

// lineDiff shows where two texts start to differ, with a few lines of each from there.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(w) && i < len(g) && w[i] == g[i] {
		i++
	}
	excerpt := func(lines []string) string {
		end := min(i+8, len(lines))
		if i >= end {
			return "  (end of file)\n"
		}
		return "  " + strings.Join(lines[i:end], "\n  ") + "\n"
	}
	return "first difference at line " + strconv.Itoa(i+1) + "\nwant:\n" + excerpt(w) + "got:\n" + excerpt(g)
}
