package up

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// controllerConfig is how moat up runs `moat controller`: as a child process of its own binary,
// with the AWS Load Balancer Controller's flags, so moat up depends on nothing but those flags.
type controllerConfig struct {
	kubeconfig  string
	vpcID       string
	apiURL      string // moat lb
	credsFile   string
	metricsAddr string
	probeAddr   string
	logDir      string
	stateDir    string
	verbose     bool
}

// controllerArgs are the flags moat up gives the controller.
func controllerArgs(c controllerConfig) []string {
	args := []string{
		"controller",
		"--cluster-name=" + clusterName,
		"--aws-region=" + region,
		"--aws-vpc-id=" + c.vpcID,
		"--aws-api-endpoints=EC2=" + c.apiURL + ",Elastic Load Balancing v2=" + c.apiURL + ",Resource Groups Tagging API=" + c.apiURL,
		// moat lb answers GetResources from its tag indexes: a reconcile finds its stack's load
		// balancer and target groups without describing every one.
		"--feature-gates=EnableRGTAPI=true",
		// A reconcile mostly waits for moat lb's commits (an fsync each, shared by those that
		// arrive together): more at once use the machine that the AWS controller's default of 3
		// leaves idle while hundreds of Services are created.
		"--service-max-concurrent-reconciles=" + strconv.Itoa(upConcurrentReconciles),
		"--targetgroupbinding-max-concurrent-reconciles=" + strconv.Itoa(upConcurrentReconciles),
		"--kubeconfig=" + c.kubeconfig,
		// One controller, on this machine: nobody to elect.
		"--enable-leader-election=false",
		"--metrics-bind-addr=" + c.metricsAddr,
		"--health-probe-bind-addr=" + c.probeAddr,
	}
	if c.verbose {
		args = append(args, "--log-level=debug")
	}
	return args
}

// upConcurrentReconciles is how many Services, and how many TargetGroupBindings, the controller
// reconciles at once.
const upConcurrentReconciles = 8

// clusterName is the --cluster-name moat up gives the controller: it names the backend
// security group (k8s-traffic-moat-…) and tags every resource (elbv2.k8s.aws/cluster=moat).
const clusterName = "moat"

func startController(c controllerConfig) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find moat's own binary: %w", err)
	}
	awsConfig := filepath.Join(c.stateDir, "aws-config")
	if err := os.WriteFile(awsConfig, []byte("[default]\nregion = "+region+"\n"), 0o600); err != nil {
		return nil, err
	}
	return startChild("moat controller", filepath.Join(c.logDir, "controller.log"), controllerEnv(c.credsFile, awsConfig), self, controllerArgs(c)...)
}

// waitControllerReady polls the controller's /readyz.
func waitControllerReady(ctx context.Context, ch *child, probeAddr string, timeout time.Duration, p *progress) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	start := time.Now()
	lastShown := start
	return poll(ctx, 200*time.Millisecond, func() (bool, error) {
		if ch.exited() {
			if data, _ := os.ReadFile(ch.logPath); strings.Contains(string(data), `unknown command "controller"`) {
				return false, fmt.Errorf("this moat binary has no controller subcommand yet: run moat up --controller=false for moat lb and the API server alone")
			}
			return false, ch.failure()
		}
		resp, err := hc.Get("http://" + probeAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				p.step("moat controller ready (%s)", time.Since(start).Round(100*time.Millisecond))
				return true, nil
			}
		}
		if time.Since(start) > timeout {
			return false, fmt.Errorf("moat controller not ready after %s; the end of its log (%s):\n%s", timeout, ch.logPath, logTail(ch.logPath, 20))
		}
		if time.Since(lastShown) >= 3*time.Second {
			lastShown = time.Now()
			p.detail(fmt.Sprintf("waiting for moat controller /readyz (%s)", time.Since(start).Round(time.Second)))
		}
		return false, nil
	})
}
