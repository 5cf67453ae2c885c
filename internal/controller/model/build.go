// Package model is the pure first stage of moat's Service controller, structured as the AWS
// Load Balancer Controller's model builder: a Service, its annotations and the cluster
// configuration (plus the few facts resolved in AWS beforehand) become a typed desired Stack
// — load balancer, managed frontend security group, listeners, target groups and
// TargetGroupBindings — with the AWS controller's names, defaults and tags. It makes no API
// call; everything that can be validated before touching AWS is validated here, so that a bad
// Service builds nothing.
package model

import (
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/moatlb/moat/internal/controller/annotations"
)

// Plan says what the deploy stage must look up in AWS before calling Build.
type Plan struct {
	// Selected is false when the controller does not own the Service (Build then returns an
	// empty stack); the other fields are then unset.
	Selected          bool              `json:"selected"`
	Scheme            Scheme            `json:"scheme,omitempty"`
	IPAddressType     IPAddressType     `json:"ipAddressType,omitempty"`
	Subnets           SubnetSelection   `json:"subnets"`
	SecurityGroupMode SecurityGroupMode `json:"securityGroupMode,omitempty"`
	// SecurityGroupNames are the entries of the security-groups annotation that are Name tags
	// (not sg- IDs): resolve each to its group IDs in Resolved.SecurityGroupsByName.
	SecurityGroupNames []string `json:"securityGroupNames,omitempty"`
	// BackendSecurityGroup is non-nil when the load balancer uses the shared backend group:
	// its GroupID is set when it comes from --backend-security-group; otherwise find it by its
	// Tags in the VPC (or create it with GroupName, Description and Tags) and pass its ID in
	// Resolved.BackendSecurityGroupID.
	BackendSecurityGroup *BackendSecurityGroup `json:"backendSecurityGroup,omitempty"`
}

// SubnetSelection says how the load balancer's subnets are chosen, as the AWS controller
// does: the annotation's IDs or Name tags; else the existing load balancer's subnets when the
// scheme is unchanged; else discovery by role tag, one subnet per zone.
type SubnetSelection struct {
	NamesOrIDs               []string `json:"namesOrIDs,omitempty"`
	FromExistingLoadBalancer []string `json:"fromExistingLoadBalancer,omitempty"`
	Discover                 bool     `json:"discover,omitempty"`
	// RoleTag is the discovery tag: kubernetes.io/role/elb (internet-facing) or
	// kubernetes.io/role/internal-elb (internal).
	RoleTag string `json:"roleTag,omitempty"`
	// MinAvailableIPAddressCount is the least free addresses a discovered subnet must have.
	MinAvailableIPAddressCount int `json:"minAvailableIPAddressCount,omitempty"`
}

// Prepare validates the Service's annotations as far as possible without AWS and says what
// the deploy stage must resolve before Build. existing is the load balancer already tagged for
// the Service, or nil.
func Prepare(svc *corev1.Service, cfg Config, existing *ExistingLoadBalancer) (Plan, error) {
	if err := cfg.Validate(); err != nil {
		return Plan{}, err
	}
	if !Selected(svc, cfg) {
		return Plan{}, nil
	}
	t := newTask(svc, cfg, Resolved{ExistingLoadBalancer: existing})
	if err := t.prepare(); err != nil {
		return Plan{}, err
	}
	plan := Plan{
		Selected:          true,
		Scheme:            t.scheme,
		IPAddressType:     t.ipType,
		Subnets:           t.subnetSelection(),
		SecurityGroupMode: t.sg.mode,
	}
	for _, g := range t.sg.userGroups {
		if !isSecurityGroupID(g) && !slices.Contains(plan.SecurityGroupNames, g) {
			plan.SecurityGroupNames = append(plan.SecurityGroupNames, g)
		}
	}
	if t.sg.backend {
		plan.BackendSecurityGroup = backendSecurityGroup(cfg, cfg.BackendSecurityGroup)
	}
	return plan, nil
}

// Build returns the desired stack for a Service. A Service the controller does not own (see
// Selected), or one being deleted, gives an empty stack: everything it owned must go. Errors
// are *Error values naming the annotation or field to fix.
func Build(svc *corev1.Service, cfg Config, in Resolved) (Stack, error) {
	if err := cfg.Validate(); err != nil {
		return Stack{}, err
	}
	if svc == nil {
		return Stack{}, missing("no Service")
	}
	if !Selected(svc, cfg) {
		if slices.Contains(svc.Finalizers, ServiceFinalizer) {
			if err := checkDeletionProtection(annotations.New(svc.Annotations), svc); err != nil {
				return Stack{}, err
			}
		}
		return Stack{ID: stackID(svc)}, nil
	}
	t := newTask(svc, cfg, in)
	if err := t.run(); err != nil {
		return Stack{}, err
	}
	return t.stack, nil
}

// BackendSecurityGroupSpec returns the shared backend group the controller would use: the
// --backend-security-group ID, or the auto-created group's name, description and tags (by
// which it is found again).
func BackendSecurityGroupSpec(cfg Config) BackendSecurityGroup {
	return *backendSecurityGroup(cfg, cfg.BackendSecurityGroup)
}

func backendSecurityGroup(cfg Config, id string) *BackendSecurityGroup {
	if cfg.BackendSecurityGroup != "" {
		return &BackendSecurityGroup{GroupID: cfg.BackendSecurityGroup}
	}
	tags := maps.Clone(cfg.DefaultTags)
	if tags == nil {
		tags = map[string]string{}
	}
	tags[TagCluster] = cfg.ClusterName
	tags[TagBackendSGResource] = BackendSGResourceValue
	return &BackendSecurityGroup{
		GroupID:     id,
		AutoCreated: true,
		GroupName:   BackendSecurityGroupName(cfg.ClusterName),
		Description: "[k8s] Shared Backend SecurityGroup for LoadBalancer",
		Tags:        tags,
	}
}

func stackID(svc *corev1.Service) string { return svc.Namespace + "/" + svc.Name }

// task holds one build's inputs and the results of its steps, as the AWS controller's
// defaultModelBuildTask does.
type task struct {
	svc *corev1.Service
	cfg Config
	in  Resolved
	p   annotations.Parser

	scheme       Scheme
	ipType       IPAddressType
	sourceRanges []string // canonical; from spec.loadBalancerSourceRanges or the annotation
	rangesFrom   string   // where sourceRanges came from, for errors
	sg           sgDecision
	tags         map[string]string // default + additional-resource-tags, without tracking tags

	backendSource *Token // source of backend rules in security-group mode; nil: no rules
	stack         Stack
}

func newTask(svc *corev1.Service, cfg Config, in Resolved) *task {
	return &task{svc: svc, cfg: cfg, in: in, p: annotations.New(svc.Annotations)}
}

// prepare runs the steps that need no resolved input.
func (t *task) prepare() error {
	steps := []func() error{
		t.checkUnsupported,
		t.buildScheme,
		t.buildIPAddressType,
		t.buildSourceRanges,
		t.decideSecurityGroups,
		t.buildTags,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

func (t *task) run() error {
	if err := t.prepare(); err != nil {
		return err
	}
	t.stack = Stack{ID: stackID(t.svc), SecurityGroupMode: t.sg.mode}
	if err := t.buildLoadBalancer(); err != nil {
		return err
	}
	return t.buildListeners()
}

// checkUnsupported refuses what moat does not implement yet, naming the annotation, rather
// than building something different from what the AWS controller would.
func (t *task) checkUnsupported() error {
	if actions := t.p.Suffixes(annotations.ActionsPrefix); len(actions) > 0 {
		return kindError(KindUnsupported, actions[0], "listener actions (weighted target groups) are not implemented")
	}
	return nil
}

// buildScheme: the scheme annotation, else the deprecated internal annotation, else the
// existing load balancer's scheme, else --default-load-balancer-scheme.
func (t *task) buildScheme() error {
	if raw, ok := t.p.String(annotations.Scheme); ok {
		switch Scheme(raw) {
		case SchemeInternal, SchemeInternetFacing:
			t.scheme = Scheme(raw)
			return nil
		}
		return invalid(t.p, annotations.Scheme, "must be %q or %q", SchemeInternal, SchemeInternetFacing)
	}
	internal, ok, err := t.p.Bool(annotations.Internal)
	if err != nil {
		return fromAnnotation(err)
	}
	if ok {
		t.scheme = SchemeInternetFacing
		if internal {
			t.scheme = SchemeInternal
		}
		return nil
	}
	if lb := t.in.ExistingLoadBalancer; lb != nil {
		switch lb.Scheme {
		case SchemeInternal, SchemeInternetFacing:
			t.scheme = lb.Scheme
			return nil
		}
		return missing("existing load balancer has invalid scheme %q", lb.Scheme)
	}
	t.scheme = t.cfg.DefaultScheme
	return nil
}

func (t *task) buildIPAddressType() error {
	raw, ok, err := t.p.Enum(annotations.IPAddressType, string(IPAddressTypeIPv4), string(IPAddressTypeDualStack))
	if err != nil {
		return fromAnnotation(err)
	}
	t.ipType = IPAddressTypeIPv4
	if ok {
		t.ipType = IPAddressType(raw)
	}
	return nil
}

// buildSourceRanges: spec.loadBalancerSourceRanges wins; the annotation is read only when the
// field is empty.
func (t *task) buildSourceRanges() error {
	if len(t.svc.Spec.LoadBalancerSourceRanges) > 0 {
		t.rangesFrom = "spec.loadBalancerSourceRanges"
		for i, raw := range t.svc.Spec.LoadBalancerSourceRanges {
			c, err := annotations.CanonicalCIDR(raw)
			if err != nil {
				return fieldError(fmt.Sprintf("spec.loadBalancerSourceRanges[%d]", i), "%q is not a CIDR", raw)
			}
			t.sourceRanges = append(t.sourceRanges, c)
		}
		return nil
	}
	ranges, ok, err := t.p.CIDRList(annotations.SourceRanges)
	if err != nil {
		return fromAnnotation(err)
	}
	if ok {
		t.rangesFrom = annotations.Key(annotations.SourceRanges)
	}
	t.sourceRanges = ranges
	return nil
}

// subnetSelection mirrors the AWS controller's choice of subnets.
func (t *task) subnetSelection() SubnetSelection {
	if names, ok := t.p.StringList(annotations.Subnets); ok {
		return SubnetSelection{NamesOrIDs: names}
	}
	if lb := t.in.ExistingLoadBalancer; lb != nil && lb.Scheme == t.scheme && len(lb.SubnetIDs) > 0 {
		return SubnetSelection{FromExistingLoadBalancer: slices.Clone(lb.SubnetIDs)}
	}
	sel := SubnetSelection{Discover: true, RoleTag: "kubernetes.io/role/internal-elb"}
	if t.scheme == SchemeInternetFacing {
		sel.RoleTag = "kubernetes.io/role/elb"
	}
	// Internet-facing load balancers need 8 free addresses per subnet; internal ones too,
	// unless their addresses are given.
	if _, fixed := t.p.StringList(annotations.PrivateIPv4Addresses); t.scheme == SchemeInternetFacing || !fixed {
		sel.MinAvailableIPAddressCount = 8
	}
	return sel
}

// buildTags merges --default-tags with the additional-resource-tags annotation. Default tags
// win on a conflict unless gate EnableDefaultTagsLowPriority; keys in --external-managed-tags
// are refused.
func (t *task) buildTags() error {
	extra, _, err := t.p.StringMap(annotations.AdditionalResourceTags)
	if err != nil {
		return fromAnnotation(err)
	}
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		if slices.Contains(t.cfg.ExternalManagedTags, k) {
			return invalid(t.p, annotations.AdditionalResourceTags, "tag key %q is managed externally (--external-managed-tags) and cannot be set on a Service", k)
		}
		if err := validateTag(k, extra[k]); err != nil {
			return invalid(t.p, annotations.AdditionalResourceTags, "%s", err)
		}
	}
	t.tags = map[string]string{}
	low, high := extra, t.cfg.DefaultTags
	if t.cfg.FeatureGates.Enabled(GateEnableDefaultTagsLowPriority) {
		low, high = t.cfg.DefaultTags, extra
	}
	maps.Copy(t.tags, low)
	maps.Copy(t.tags, high)
	// The tracking tags and the tags themselves must fit AWS's 50 tags per resource.
	if n := len(t.resourceTags("x")); n > 50 {
		return invalid(t.p, annotations.AdditionalResourceTags, "%d tags with the controller's own; AWS allows 50 per resource", n)
	}
	return nil
}

// resourceTags are the tags a resource is created with: the tracking tags (which win) over the
// merged tags.
func (t *task) resourceTags(resourceID string) map[string]string {
	tags := maps.Clone(t.tags)
	if tags == nil {
		tags = map[string]string{}
	}
	tags[TagCluster] = t.cfg.ClusterName
	tags[TagStack] = stackID(t.svc)
	tags[TagResource] = resourceID
	return tags
}

func checkDeletionProtection(p annotations.Parser, svc *corev1.Service) error {
	attrs, _, err := p.StringMap(annotations.LoadBalancerAttributes)
	if err != nil {
		return fromAnnotation(err)
	}
	raw, ok := attrs[lbAttrDeletionProtection]
	if !ok {
		return nil
	}
	on, err := parseBool(raw)
	if err != nil {
		return invalid(p, annotations.LoadBalancerAttributes, "%s must be true or false", lbAttrDeletionProtection)
	}
	if on {
		return &Error{Kind: KindConflict, Annotation: annotations.Key(annotations.LoadBalancerAttributes),
			Reason: fmt.Sprintf("deletion_protection is enabled, cannot delete the service: %s", svc.Name)}
	}
	return nil
}
