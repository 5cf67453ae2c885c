package reconcile_test

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/moatlb/moat/internal/controller/model"
	"github.com/moatlb/moat/internal/controller/reconcile"
)

// TestFlagsAcceptEveryAWSControllerFlag: every flag in the AWS Load Balancer Controller's help
// (testdata/lbc-help.txt, v3.5.0) parses, with a value of its type; those moat does not
// implement are reported as ignored, and the others configure the stack.
func TestFlagsAcceptEveryAWSControllerFlag(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "lbc-help.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line := regexp.MustCompile(`^\s+--([a-z0-9-]+)(?: ([A-Za-z]+))?\s`)
	values := map[string]string{
		"int": "5", "string": "x", "strings": "a,b", "stringToString": "k=v,k2=v2", "duration": "1s",
		"mapStringBool":                   "NLBSecurityGroup=false,EnableTCPUDPListener=true,ALBGatewayAPI=false",
		"serviceOperationsThrottleConfig": "Elastic Load Balancing v2:^Describe.*=5:10",
	}
	var args, names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		names = append(names, m[1])
		if m[2] == "" {
			args = append(args, "--"+m[1]+"=false")
			continue
		}
		v, ok := values[m[2]]
		if !ok {
			t.Fatalf("no sample value for type %s of --%s", m[2], m[1])
		}
		args = append(args, "--"+m[1]+"="+v)
	}
	if len(names) < 50 {
		t.Fatalf("read only %d flags from lbc-help.txt", len(names))
	}
	var fl reconcile.Flags
	fs := pflag.NewFlagSet("controller", pflag.ContinueOnError)
	fl.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse the AWS controller's flags: %v", err)
	}
	ignored := strings.Join(fl.Ignored(), " ")
	for _, n := range []string{"enable-shield", "webhook-bind-port", "aws-api-throttle", "ingress-class", "enable-pod-readiness-gate-inject"} {
		if !strings.Contains(ignored, "--"+n+"=") {
			t.Errorf("--%s not reported as ignored: %s", n, ignored)
		}
	}
	for _, n := range []string{"cluster-name", "aws-region", "feature-gates=", "default-tags", "watch-namespace", "sync-period"} {
		if strings.Contains(ignored, "--"+n) {
			t.Errorf("--%s reported as ignored: %s", n, ignored)
		}
	}
	if !strings.Contains(ignored, "--feature-gates ALBGatewayAPI=false") {
		t.Errorf("unknown gate not reported as ignored: %s", ignored)
	}
	cfg := fl.ModelConfig()
	if cfg.FeatureGates.Enabled(model.GateNLBSecurityGroup) || !cfg.FeatureGates.Enabled(model.GateEnableTCPUDPListener) {
		t.Errorf("feature gates %v", cfg.FeatureGates)
	}
	if cfg.ClusterName != "x" || cfg.DefaultTags["k2"] != "v2" || !slices.Equal(cfg.ExternalManagedTags, []string{"a", "b"}) {
		t.Errorf("config %+v", cfg)
	}
}

// TestFlagDefaults: the AWS controller's defaults, except metrics and probes on 127.0.0.1.
func TestFlagDefaults(t *testing.T) {
	var fl reconcile.Flags
	fs := pflag.NewFlagSet("controller", pflag.ContinueOnError)
	fl.AddFlags(fs)
	if err := fs.Parse([]string{"--cluster-name=c", "--feature-gates", "NLBSecurityGroup=true", "--feature-gates=EnableServiceController=false"}); err != nil {
		t.Fatal(err)
	}
	if fl.MetricsBindAddr != "127.0.0.1:8080" || fl.HealthProbeBindAddr != "127.0.0.1:61779" || !fl.EnableLeaderElection ||
		fl.LeaderElectionID != "aws-load-balancer-controller-leader" || fl.LoadBalancerClass != "service.k8s.aws/nlb" {
		t.Errorf("defaults %+v", fl)
	}
	if len(fl.Ignored()) != 0 {
		t.Errorf("ignored %v", fl.Ignored())
	}
	if fl.FeatureGates.Enabled(reconcile.GateEnableServiceController) || !fl.FeatureGates.Enabled(model.GateNLBSecurityGroup) {
		t.Errorf("gates %s", fl.FeatureGates.String())
	}
	cfg := fl.ModelConfig()
	cfg.VPCID = "vpc-1"
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
	if err := fs.Parse([]string{"--feature-gates=NLBSecurityGroup"}); err == nil {
		t.Error("a gate without a value parsed")
	}
}
