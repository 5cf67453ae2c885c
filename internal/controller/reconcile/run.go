package reconcile

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/moatlb/moat/internal/awsclient"
)

// Run runs the controller the flags describe until ctx ends: it resolves the AWS configuration
// (region, VPC, endpoints; no AWS call when --aws-region and --aws-vpc-id are set), connects to
// the cluster (--kubeconfig, else $KUBECONFIG, else in-cluster) and runs the manager with leader
// election, /metrics, /healthz and /readyz.
func Run(ctx context.Context, f *Flags, log logr.Logger) error {
	ctrl.SetLogger(log)
	for _, ign := range f.Ignored() {
		log.Info("ignoring a flag moat does not implement", "flag", ign)
	}
	if f.fs != nil && f.fs.Changed("aws-vpc-tag-key") {
		log.Info("flag --aws-vpc-tag-key is deprecated and has no effect: all of --aws-vpc-tags are used")
	}
	mcfg := f.ModelConfig()
	if f.ClusterName == "" {
		return errors.New("--cluster-name is required")
	}
	awsCfg, err := loadAWSConfig(ctx, f)
	if err != nil {
		return err
	}
	mcfg.Region = awsCfg.Region
	ep := Endpoints{EC2: f.APIEndpoints["EC2"], ELBV2: f.APIEndpoints["Elastic Load Balancing v2"],
		Tagging: f.APIEndpoints["Resource Groups Tagging API"]}
	if mcfg.VPCID == "" {
		if mcfg.VPCID, err = vpcByTags(ctx, awsCfg, ep, f.VPCTags); err != nil {
			return err
		}
	}
	if err := mcfg.Validate(); err != nil {
		return err
	}
	restCfg, err := restConfig(f)
	if err != nil {
		return err
	}
	opts := ctrl.Options{
		Scheme:                  NewScheme(),
		Logger:                  log,
		Metrics:                 metricsserver.Options{BindAddress: f.MetricsBindAddr},
		HealthProbeBindAddress:  f.HealthProbeBindAddr,
		LeaderElection:          f.EnableLeaderElection,
		LeaderElectionID:        f.LeaderElectionID,
		LeaderElectionNamespace: f.LeaderElectionNamespace,
		// The process exits once the manager stops: hand leadership over at once.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         cache.Options{SyncPeriod: &f.SyncPeriod},
		// One manager per process in production; a process that runs the controller more
		// than once (tests) must not trip over its own controller names.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	}
	if f.WatchNamespace != "" {
		opts.Cache.DefaultNamespaces = map[string]cache.Config{f.WatchNamespace: {}}
	}
	mgr, err := ctrl.NewManager(restCfg, opts)
	if err != nil {
		return fmt.Errorf("create controller manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	var synced atomic.Bool
	if err := mgr.Add(&cacheSyncedRunnable{mgr: mgr, synced: &synced}); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", func(*http.Request) error {
		if !synced.Load() {
			return errors.New("informer caches have not synced yet")
		}
		return nil
	}); err != nil {
		return err
	}
	err = Setup(ctx, mgr, Config{
		Model:                          mcfg,
		AWS:                            awsCfg,
		Endpoints:                      ep,
		ServiceTargetENISGTags:         f.ServiceTargetENISGTags,
		ServiceMaxConcurrentReconciles: f.ServiceMaxConcurrentReconciles,
		TargetGroupBindingMaxConcurrentReconciles: f.TargetGroupBindingMaxConcurrentReconciles,
		TargetGroupBindingMaxBackoff:              f.TargetGroupBindingMaxBackoff,
		DisableServiceController:                  !f.FeatureGates.Enabled(GateEnableServiceController),
	})
	if err != nil {
		return err
	}
	log.Info("starting controller", "cluster", mcfg.ClusterName, "region", mcfg.Region, "vpc", mcfg.VPCID,
		"loadBalancerClass", mcfg.LoadBalancerClass, "leaderElection", f.EnableLeaderElection)
	return mgr.Start(ctx)
}

// cacheSyncedRunnable marks the controller ready once its informers have synced, on every
// replica (leader or not).
type cacheSyncedRunnable struct {
	mgr    manager.Manager
	synced *atomic.Bool
}

func (r *cacheSyncedRunnable) Start(ctx context.Context) error {
	if r.mgr.GetCache().WaitForCacheSync(ctx) {
		r.synced.Store(true)
	}
	<-ctx.Done()
	return nil
}

func (r *cacheSyncedRunnable) NeedLeaderElection() bool { return false }

// loadAWSConfig loads the standard credential chain and configuration, with the region of
// --aws-region, else $AWS_REGION / $AWS_DEFAULT_REGION or the shared config.
func loadAWSConfig(ctx context.Context, f *Flags) (aws.Config, error) {
	var opts []func(*awsconfig.LoadOptions) error
	switch {
	case f.Region != "":
		opts = append(opts, awsconfig.WithRegion(f.Region))
	case os.Getenv("AWS_REGION") == "" && os.Getenv("AWS_DEFAULT_REGION") != "":
		opts = append(opts, awsconfig.WithRegion(os.Getenv("AWS_DEFAULT_REGION")))
	}
	if f.AWSMaxRetries >= 0 {
		opts = append(opts, awsconfig.WithRetryMaxAttempts(f.AWSMaxRetries+1))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	cfg.HTTPClient = awsclient.HTTPClient(cfg.HTTPClient)
	if cfg.Region == "" {
		return aws.Config{}, errors.New("no AWS region: specify --aws-region (moat does not read the region from EC2 instance metadata)")
	}
	return cfg, nil
}

// vpcByTags finds the one VPC carrying all the tags (--aws-vpc-tags).
func vpcByTags(ctx context.Context, cfg aws.Config, ep Endpoints, tags map[string]string) (string, error) {
	if len(tags) == 0 {
		return "", errors.New("no VPC: specify --aws-vpc-id or --aws-vpc-tags (moat does not read the VPC from EC2 instance metadata)")
	}
	ec2c := newClients(cfg, ep).ec2
	var filters []ec2types.Filter
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		filters = append(filters, ec2types.Filter{Name: aws.String("tag:" + k), Values: []string{tags[k]}})
	}
	out, err := ec2c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: filters})
	if err != nil {
		return "", fmt.Errorf("find the VPC by --aws-vpc-tags: %w", err)
	}
	if len(out.Vpcs) != 1 {
		return "", fmt.Errorf("--aws-vpc-tags %v match %d VPCs, want exactly one", tags, len(out.Vpcs))
	}
	return aws.ToString(out.Vpcs[0].VpcId), nil
}

// restConfig connects to the cluster named by --kubeconfig, else $KUBECONFIG, else the one the
// controller runs in.
func restConfig(f *Flags) (*rest.Config, error) {
	path := f.Kubeconfig
	if path == "" {
		path = os.Getenv("KUBECONFIG")
		if i := strings.IndexByte(path, os.PathListSeparator); i >= 0 {
			path = path[:i]
		}
	}
	var cfg *rest.Config
	var err error
	if path != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
	} else {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			err = fmt.Errorf("%w (outside a cluster, pass --kubeconfig)", err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	if f.KubeCAPEMFilepath != "" {
		cfg.TLSClientConfig.CAFile = f.KubeCAPEMFilepath
		cfg.TLSClientConfig.CAData = nil
	}
	// No client-side rate limit, as the AWS controller (QPS and burst 1e6) and controller-runtime's
	// own config loader (QPS -1) have it: the API server's priority and fairness paces clients.
	// client-go's default, 5 requests a second per resource, held the Service reconciles (a
	// finalizer patch and a status patch each) to about 2.5 Services a second.
	cfg.QPS = -1
	return cfg, nil
}
