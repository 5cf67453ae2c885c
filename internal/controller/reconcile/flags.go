package reconcile

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/moatlb/moat/internal/controller/model"
)

// Flags are the command-line flags of `moat controller`: every flag of the AWS Load Balancer
// Controller, with its name, syntax and default (except that metrics and probes bind to
// 127.0.0.1 by default), so that a manifest written for it runs unchanged. Flags moat does not
// implement are accepted and logged once as ignored (Ignored).
type Flags struct {
	ClusterName       string
	Region            string
	VPCID             string
	VPCTags           map[string]string
	VPCTagKey         string
	APIEndpoints      map[string]string
	AWSMaxRetries     int
	FeatureGates      FeatureGatesFlag
	LoadBalancerClass string

	DefaultTargetType                     string
	DefaultScheme                         string
	DefaultSSLPolicy                      string
	EnableBackendSecurityGroup            bool
	BackendSecurityGroup                  string
	EnableManageBackendSecurityGroupRules bool
	DisableRestrictedSGRules              bool
	ServiceTargetENISGTags                map[string]string
	DefaultTags                           map[string]string
	ExternalManagedTags                   []string

	Kubeconfig              string
	KubeCAPEMFilepath       string
	EnableLeaderElection    bool
	LeaderElectionID        string
	LeaderElectionNamespace string
	MetricsBindAddr         string
	HealthProbeBindAddr     string
	SyncPeriod              time.Duration
	WatchNamespace          string
	LogLevel                string

	ServiceMaxConcurrentReconciles            int
	TargetGroupBindingMaxConcurrentReconciles int
	TargetGroupBindingMaxBackoff              time.Duration
	EnableEndpointSlices                      bool

	// EnableServiceMutatorWebhook is the opt-in of the AWS controller's Service mutating
	// webhook (its Helm value enableServiceMutatorWebhook), which defaults loadBalancerClass on
	// new LoadBalancer Services. Accepted; not implemented yet.
	EnableServiceMutatorWebhook bool

	fs *pflag.FlagSet
}

// implementedFlags are the flags moat acts on; every other flag of the set is accepted and
// ignored.
var implementedFlags = []string{
	"cluster-name", "aws-region", "aws-vpc-id", "aws-vpc-tags", "aws-vpc-tag-key", "aws-api-endpoints", "aws-max-retries",
	"feature-gates", "load-balancer-class", "default-target-type", "default-load-balancer-scheme", "default-ssl-policy",
	"enable-backend-security-group", "backend-security-group", "enable-manage-backend-security-group-rules",
	"disable-restricted-sg-rules", "service-target-eni-security-group-tags", "default-tags", "external-managed-tags",
	"kubeconfig", "kube-ca-pem-filepath", "enable-leader-election", "leader-election-id", "leader-election-namespace",
	"metrics-bind-addr", "health-probe-bind-addr", "sync-period", "watch-namespace", "log-level",
	"service-max-concurrent-reconciles", "targetgroupbinding-max-concurrent-reconciles",
	"targetgroupbinding-max-exponential-backoff-delay",
}

// AddFlags registers every flag on fs.
func (f *Flags) AddFlags(fs *pflag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.ClusterName, "cluster-name", "", "Kubernetes cluster name")
	fs.StringVar(&f.Region, "aws-region", "", "AWS Region for the kubernetes cluster")
	fs.StringVar(&f.VPCID, "aws-vpc-id", "", "AWS VpcID for the LoadBalancer resources")
	fs.StringToStringVar(&f.VPCTags, "aws-vpc-tags", nil, "AWS VPC tags List,format: tagkey1=tagvalue1,tagkey2=tagvalue2")
	fs.StringVar(&f.VPCTagKey, "aws-vpc-tag-key", "Name", "[DEPRECATED] Previously used to select a single tag from --aws-vpc-tags. All tags are now always used for VPC lookup.")
	fs.StringToStringVar(&f.APIEndpoints, "aws-api-endpoints", nil, "Custom AWS endpoint configuration, format: serviceID1=URL1,serviceID2=URL2 (moat uses EC2, Elastic Load Balancing v2 and, with the EnableRGTAPI gate, Resource Groups Tagging API)")
	fs.IntVar(&f.AWSMaxRetries, "aws-max-retries", 10, "Maximum retries for AWS APIs")
	fs.Var(&f.FeatureGates, "feature-gates", "A set of key=bool pairs enable/disable features (e.g. NLBSecurityGroup=true,EnableTCPUDPListener=false)")
	fs.StringVar(&f.LoadBalancerClass, "load-balancer-class", model.DefaultLoadBalancerClass, "Name of the load balancer class reconciled by this controller")

	fs.StringVar(&f.DefaultTargetType, "default-target-type", string(model.TargetTypeInstance), "Default target type for Ingresses and Services - ip, instance")
	fs.StringVar(&f.DefaultScheme, "default-load-balancer-scheme", string(model.SchemeInternal), "Default scheme for ELBs")
	fs.StringVar(&f.DefaultSSLPolicy, "default-ssl-policy", model.DefaultSSLPolicy, "Default SSL policy for load balancers listeners")
	fs.BoolVar(&f.EnableBackendSecurityGroup, "enable-backend-security-group", true, "Enable sharing of security groups for backend traffic")
	fs.StringVar(&f.BackendSecurityGroup, "backend-security-group", "", "Backend security group id to use for the ingress rules on the worker node SG")
	fs.BoolVar(&f.EnableManageBackendSecurityGroupRules, "enable-manage-backend-security-group-rules", false, "Enable managing of backend security group rules by controller")
	fs.BoolVar(&f.DisableRestrictedSGRules, "disable-restricted-sg-rules", false, "Disable the usage of restricted security group rules")
	fs.StringToStringVar(&f.ServiceTargetENISGTags, "service-target-eni-security-group-tags", nil, "AWS Tags, in addition to cluster tags, for finding the target ENI security group to which to add inbound rules from NLBs")
	fs.StringToStringVar(&f.DefaultTags, "default-tags", nil, "Default AWS Tags that will be applied to all AWS resources managed by this controller")
	fs.StringSliceVar(&f.ExternalManagedTags, "external-managed-tags", nil, "List of Tag keys on AWS resources that will be managed externally")

	fs.StringVar(&f.Kubeconfig, "kubeconfig", "", "Path to the kubeconfig file containing authorization and API server information.")
	fs.StringVar(&f.KubeCAPEMFilepath, "kube-ca-pem-filepath", "", "Location of Kubernetes CA file on disk.")
	fs.BoolVar(&f.EnableLeaderElection, "enable-leader-election", true, "Enable leader election for controller manager. Enabling this will ensure there is only one active controller manager.")
	fs.StringVar(&f.LeaderElectionID, "leader-election-id", "aws-load-balancer-controller-leader", "Name of the leader election ID to use for this controller")
	fs.StringVar(&f.LeaderElectionNamespace, "leader-election-namespace", "", "Name of the leader election ID to use for this controller")
	fs.StringVar(&f.MetricsBindAddr, "metrics-bind-addr", "127.0.0.1:8080", "The address the metric endpoint binds to (\"0\" disables it).")
	fs.StringVar(&f.HealthProbeBindAddr, "health-probe-bind-addr", "127.0.0.1:61779", "The address the health probes binds to (\"0\" disables them).")
	fs.DurationVar(&f.SyncPeriod, "sync-period", 10*time.Hour, "Period at which the controller forces the repopulation of its local object stores.")
	fs.StringVar(&f.WatchNamespace, "watch-namespace", "", "Namespace the controller watches for updates to Kubernetes objects, If empty, all namespaces are watched.")
	fs.StringVar(&f.LogLevel, "log-level", "info", "Set the controller log level - info(default), debug")

	fs.IntVar(&f.ServiceMaxConcurrentReconciles, "service-max-concurrent-reconciles", 3, "Maximum number of concurrently running reconcile loops for service")
	fs.IntVar(&f.TargetGroupBindingMaxConcurrentReconciles, "targetgroupbinding-max-concurrent-reconciles", 3, "Maximum number of concurrently running reconcile loops for targetGroupBinding")
	fs.DurationVar(&f.TargetGroupBindingMaxBackoff, "targetgroupbinding-max-exponential-backoff-delay", 1000*time.Second, "Maximum duration of exponential backoff for targetGroupBinding reconcile failures")
	fs.BoolVar(&f.EnableEndpointSlices, "enable-endpoint-slices", true, "Enable EndpointSlices for IP targets instead of Endpoints (moat always uses EndpointSlices)")
	fs.BoolVar(&f.EnableServiceMutatorWebhook, "enable-service-mutator-webhook", false, "Default spec.loadBalancerClass of new LoadBalancer Services with a mutating webhook (not implemented yet)")

	// Accepted for compatibility with the AWS controller's manifests; moat does not implement
	// them (Ingress, Gateway API, ALB add-ons, webhooks, throttling, readiness gates).
	var (
		s  string
		ss []string
		b  bool
		i  int
		d  time.Duration
	)
	fs.IntVar(&i, "alb-gateway-max-concurrent-reconciles", 3, "Maximum number of concurrently running reconcile loops for alb gateway (ignored)")
	fs.StringSliceVar(&ss, "allowed-certificate-authority-arns", nil, "Specify an optional list of CA ARNs to filter on in cert discovery (ignored)")
	fs.StringVar(&s, "aws-api-throttle", "", "throttle settings for AWS APIs, format: serviceID1:operationRegex1=rate:burst,... (ignored)")
	fs.StringVar(&s, "default-pca-arn", "", "Default PCA ARN to use for creating ACM certificates (ignored)")
	fs.BoolVar(&b, "disable-ingress-class-annotation", false, "Disable new usage of kubernetes.io/ingress.class annotation (ignored)")
	fs.BoolVar(&b, "disable-ingress-group-name-annotation", false, "Disable new usage of alb.ingress.kubernetes.io/group.name annotation (ignored)")
	fs.BoolVar(&b, "enable-pod-readiness-gate-inject", true, "If enabled, targetHealth readiness gate will get injected to the pod spec for the matching endpoint pods (ignored)")
	fs.BoolVar(&b, "enable-shield", true, "Enable Shield addon for ALB (ignored)")
	fs.BoolVar(&b, "enable-waf", true, "Enable WAF addon for ALB (ignored)")
	fs.BoolVar(&b, "enable-wafv2", true, "Enable WAF V2 addon for ALB (ignored)")
	fs.IntVar(&i, "gateway-class-max-concurrent-reconciles", 3, "Maximum number of concurrently running reconcile loops for gateway class changes (ignored)")
	fs.IntVar(&i, "globalaccelerator-max-concurrent-reconciles", 1, "Maximum number of concurrently running reconcile loops for globalAccelerator (ignored)")
	fs.DurationVar(&d, "globalaccelerator-max-exponential-backoff-delay", 1000*time.Second, "Maximum duration of exponential backoff for globalAccelerator reconcile failures (ignored)")
	fs.StringVar(&s, "ingress-class", "alb", "Name of the ingress class this controller satisfies (ignored)")
	fs.IntVar(&i, "ingress-max-concurrent-reconciles", 3, "Maximum number of concurrently running reconcile loops for ingress (ignored)")
	fs.DurationVar(&d, "lb-stabilization-monitor-interval", 2*time.Minute, "Duration of interval to monitor the load balancer state for stabilization (ignored)")
	fs.IntVar(&i, "max-targets-per-target-group", 0, "Maximum number of targets that can be added to an ELB instance (ignored)")
	fs.IntVar(&i, "nlb-gateway-max-concurrent-reconciles", 3, "Maximum number of concurrently running reconcile loops for nlb gateway (ignored)")
	fs.StringVar(&s, "quic-environment-variable-name", "AWS_LBC_QUIC_SERVER_ID", "The environment variable to find the generated QUIC Server ID (ignored)")
	fs.StringVar(&s, "required-secrets-label", "", "Required label (key=value) that Secrets must have to be read by the controller (ignored)")
	fs.DurationVar(&d, "targetgroupbinding-requeue-duration", 15*time.Second, "Duration after which TargetGroupBinding will be requeued for reconciliation when it's waiting for AWS resources to update (ignored)")
	fs.BoolVar(&b, "tolerate-non-existent-backend-action", true, "Tolerate rules that specify a non-existent backend action (ignored)")
	fs.BoolVar(&b, "tolerate-non-existent-backend-service", true, "Tolerate rules that specify a non-existent backend service (ignored)")
	fs.IntVar(&i, "webhook-bind-port", 9443, "The TCP port the Webhook server binds to (ignored: moat runs no webhook)")
	fs.StringVar(&s, "webhook-cert-dir", "", "WebhookCertDir is the directory that contains the webhook server key and certificate (ignored)")
	fs.StringVar(&s, "webhook-cert-file", "", "WebhookCertName is the webhook server certificate name (ignored)")
	fs.StringVar(&s, "webhook-key-file", "", "WebhookKeyName is the webhook server key name (ignored)")
}

// Ignored returns the flags set on the command line that moat does not act on, with their
// values, and the feature gates it does not know, sorted.
func (f *Flags) Ignored() []string {
	var out []string
	if f.fs != nil {
		f.fs.Visit(func(fl *pflag.Flag) {
			switch {
			case fl.Name == "enable-endpoint-slices" && f.EnableEndpointSlices:
			case fl.Name == "enable-service-mutator-webhook" && !f.EnableServiceMutatorWebhook:
			case !slices.Contains(implementedFlags, fl.Name):
				out = append(out, "--"+fl.Name+"="+fl.Value.String())
			}
		})
	}
	for _, g := range slices.Sorted(maps.Keys(f.FeatureGates.Gates)) {
		if !slices.Contains(implementedGates, g) {
			out = append(out, "--feature-gates "+g+"="+strconv.FormatBool(f.FeatureGates.Gates[g]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(f.APIEndpoints)) {
		if k != "EC2" && k != "Elastic Load Balancing v2" && k != "Resource Groups Tagging API" {
			out = append(out, "--aws-api-endpoints "+k+"="+f.APIEndpoints[k])
		}
	}
	slices.Sort(out)
	return out
}

// implementedGates are the feature gates moat honours.
var implementedGates = []string{
	model.GateNLBSecurityGroup, model.GateEnableTCPUDPListener, model.GateEnableIPTargetType,
	model.GateNLBHealthCheckAdvancedConfig, model.GateServiceTypeLoadBalancerOnly,
	model.GateEnableDefaultTagsLowPriority, model.GateLBCapacityReservation, model.GateEnableRGTAPI, GateEnableServiceController,
}

// GateEnableServiceController turns the Service controller on (default) or off.
const GateEnableServiceController = "EnableServiceController"

// ModelConfig returns the stack configuration the flags describe (VPCID may still be empty:
// --aws-vpc-tags is resolved at start).
func (f *Flags) ModelConfig() model.Config {
	cfg := model.DefaultConfig(f.ClusterName, f.VPCID)
	cfg.Region = f.Region
	cfg.LoadBalancerClass = f.LoadBalancerClass
	cfg.FeatureGates = model.FeatureGates(maps.Clone(f.FeatureGates.Gates))
	cfg.DefaultTargetType = model.TargetType(f.DefaultTargetType)
	cfg.DefaultScheme = model.Scheme(f.DefaultScheme)
	cfg.DefaultSSLPolicy = f.DefaultSSLPolicy
	cfg.EnableBackendSecurityGroup = f.EnableBackendSecurityGroup
	cfg.BackendSecurityGroup = f.BackendSecurityGroup
	cfg.EnableManageBackendSecurityGroupRules = f.EnableManageBackendSecurityGroupRules
	cfg.DisableRestrictedSGRules = f.DisableRestrictedSGRules
	cfg.DefaultTags = maps.Clone(f.DefaultTags)
	cfg.ExternalManagedTags = slices.Clone(f.ExternalManagedTags)
	return cfg
}

// FeatureGatesFlag is the AWS controller's mapStringBool flag: "A=true,B=false".
type FeatureGatesFlag struct {
	Gates map[string]bool
}

func (g *FeatureGatesFlag) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(g.Gates)) {
		parts = append(parts, k+"="+strconv.FormatBool(g.Gates[k]))
	}
	return strings.Join(parts, ",")
}

// Set parses "A=true,B=false"; repeated flags add up.
func (g *FeatureGatesFlag) Set(v string) error {
	if g.Gates == nil {
		g.Gates = map[string]bool{}
	}
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, val, ok := strings.Cut(item, "=")
		if !ok {
			return fmt.Errorf("missing bool value for %s", item)
		}
		b, err := strconv.ParseBool(strings.TrimSpace(val))
		if err != nil {
			return fmt.Errorf("invalid value of %s: %s, err: %w", k, val, err)
		}
		g.Gates[strings.TrimSpace(k)] = b
	}
	return nil
}

// Type is the flag's type in help output, as the AWS controller's.
func (g *FeatureGatesFlag) Type() string { return "mapStringBool" }

// Enabled reports whether a gate is on, with the AWS controller's defaults.
func (g *FeatureGatesFlag) Enabled(gate string) bool {
	if v, ok := g.Gates[gate]; ok {
		return v
	}
	if gate == GateEnableServiceController {
		return true
	}
	return model.FeatureGates(nil).Enabled(gate)
}
