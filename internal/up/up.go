// Package up runs the whole of moat on one machine (SPEC §3): moat lb with its embedded store and
// default inventory, a local Kubernetes API server (etcd and kube-apiserver, built from the Go
// module proxy and cached), and moat controller against both — and, with --demo, the walkthrough
// of the AWS blog post that introduced security groups for NLBs.
//
// Everything lives under a state directory, so a second moat up finds the cluster and the load
// balancers as the first left them. Children run in their own process groups and die with moat up
// (Pdeathsig on Linux, a watchdog process elsewhere); Ctrl-C stops them in order: demo backends,
// controller, API server, etcd, moat lb.
package up

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/renameio/v2"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/lb"
	"github.com/moatlb/moat/internal/lockfile"
)

// Options configure moat up; the flags of `moat up` fill them.
type Options struct {
	StateDir string // everything moat up keeps between runs

	// moat lb
	APIAddr string
	DNSAddr string
	Metrics string
	// Inventory is moat lb's inventory file. Empty: the default inventory with moat up's own
	// cluster, or one derived from the Nodes of an existing cluster (see nodeInventory).
	Inventory string
	Quotas    cloud.Quotas // the --quota-… flags; zero: AWS's defaults
	// InstanceSGMode is --instance-sg-mode for moat lb: enforce (""), audit or off.
	InstanceSGMode firewall.Mode
	// StartFresh is moat lb's --start-fresh: begin with empty state where the state file is
	// missing or empty although credentials exist (otherwise refused as lost state).
	StartFresh bool

	// The local cluster (not used with Kubeconfig/Context).
	KubeAPIAddr  string
	EtcdAddr     string
	EtcdPeerAddr string
	KubeAssets   string // directory with kube-apiserver, etcd, kubectl; empty: hack/kube-assets.sh
	// KubeAssetsSource is how hack/kube-assets.sh fills a missing cache: download, build or
	// auto; empty leaves it to the script ($MOAT_KUBE_ASSETS_SOURCE, else auto).
	KubeAssetsSource string

	// An existing cluster, named explicitly.
	Kubeconfig string
	Context    string

	// moat controller
	Controller            bool
	ControllerMetricsAddr string
	ControllerProbeAddr   string

	Demo     bool
	DemoPort int // the demo Service's port (the load balancer's listener)

	LogFormat string // text or json, for the logs under <state-dir>/logs
	Verbose   bool
	Out       io.Writer // progress and instructions
}

// lbConfig is how moat up runs moat lb: in the state dir, with the inventory of o (empty: the
// default one), AWS's defaults and the quotas of the flags.
func (o Options) lbConfig(log *slog.Logger) lb.Config {
	quotas := o.Quotas
	if quotas == (cloud.Quotas{}) {
		quotas = cloud.DefaultQuotas()
	}
	return lb.Config{
		APIAddr: o.APIAddr, DataDir: filepath.Join(o.StateDir, "lb"), InventoryPath: o.Inventory, Region: region, AccountID: "000000000000",
		DNSAddr: o.DNSAddr, DNSSuffix: "moat.internal", MetricsAddr: o.Metrics, Quotas: quotas,
		API: lb.DefaultAPILimits(), InstanceSGMode: o.InstanceSGMode, StartFresh: o.StartFresh, Log: log,
		Console: true,
	}
}

// DefaultStateDir is moat up's state directory, reused by the next run.
func DefaultStateDir() string {
	return filepath.Join(filepath.Dir(lb.DefaultDataDir()), "up")
}

// StateFile is the name of the file, in the state directory, where a running moat up says where
// everything is (see State). It exists only while moat up runs and everything it started is ready.
const StateFile = "up.json"

// State is what moat up writes to <state-dir>/up.json once everything is ready, for scripts and
// tests.
type State struct {
	LB                lb.Endpoints `json:"lb"`
	Kubeconfig        string       `json:"kubeconfig"`
	KubeAPI           string       `json:"kubeAPI"`
	Kubectl           string       `json:"kubectl,omitempty"` // the v1.37 kubectl built with the API server
	LocalCluster      bool         `json:"localCluster"`
	VPCID             string       `json:"vpcID"`
	ClusterName       string       `json:"clusterName"`
	ControllerMetrics string       `json:"controllerMetrics,omitempty"`
	ControllerProbes  string       `json:"controllerProbes,omitempty"`
	PID               int          `json:"pid"`
}

// Run starts everything, serves until ctx ends (Ctrl-C), then stops what it started, in order.
func Run(ctx context.Context, o Options) (err error) {
	defer func() {
		// Ctrl-C while starting is a stop, not a failure.
		if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
			err = nil
		}
	}()
	if err := o.lbConfig(nil).Validate(); err != nil {
		return err
	}
	switch o.KubeAssetsSource {
	case "", "download", "build", "auto":
	default:
		return fmt.Errorf("--kube-assets-source=%s: want download, build or auto", o.KubeAssetsSource)
	}
	p := &progress{out: o.Out, start: time.Now()}
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return err
	}
	unlock, err := lockStateDir(o.StateDir)
	if err != nil {
		return err
	}
	defer unlock()
	stateFile := filepath.Join(o.StateDir, StateFile)
	_ = os.Remove(stateFile)
	defer os.Remove(stateFile)
	logDir := filepath.Join(o.StateDir, "logs")
	existing := o.Kubeconfig != "" || o.Context != ""
	if existing && o.Demo {
		return errors.New("--demo needs moat up's own cluster (it creates Node objects standing in for moat lb's instances): leave out --kubeconfig/--context")
	}
	p.step("moat up: state in %s, logs in %s", o.StateDir, logDir)

	// Check every fixed address first: a port in use should fail now, not as a child's log line.
	var kubeAPIAddr, etcdAddr, etcdPeer, ctrlMetrics, ctrlProbe string
	var held []net.Listener // the children's addresses, held until moat lb has bound its own
	releaseHeld := func() {
		for _, ln := range held {
			ln.Close()
		}
		held = nil
	}
	defer releaseHeld()
	resolve := func(dst *string, flag, addr string) {
		if err == nil {
			var ln net.Listener
			if *dst, ln, err = resolveAddr(flag, addr); ln != nil {
				held = append(held, ln)
			}
		}
	}
	if !existing {
		resolve(&kubeAPIAddr, "kube-api-addr", o.KubeAPIAddr)
		resolve(&etcdAddr, "etcd-addr", o.EtcdAddr)
		resolve(&etcdPeer, "etcd-peer-addr", o.EtcdPeerAddr)
	}
	if o.Controller {
		resolve(&ctrlMetrics, "controller-metrics-addr", o.ControllerMetricsAddr)
		resolve(&ctrlProbe, "controller-probe-addr", o.ControllerProbeAddr)
	}
	if err != nil {
		return err
	}

	// moat lb runs in this process; it stops last.
	lbLog, closeLBLog, err := o.fileLogger(filepath.Join(logDir, "lb.log"))
	if err != nil {
		return err
	}
	defer closeLBLog()
	// The Kubernetes client libraries log through controller-runtime's and klog's loggers:
	// to the same file, not over the progress lines.
	ctrllog.SetLogger(logr.FromSlogHandler(lbLog.Handler()))
	klog.SetSlogLogger(lbLog)

	// An existing cluster is checked before moat lb starts, which serves the instances derived
	// from its Nodes unless an inventory was given.
	var ec *existingCluster
	var kube client.Client
	var cluster string
	if existing {
		if ec, err = openExistingCluster(o.Kubeconfig, o.Context, o.StateDir); err != nil {
			return err
		}
		if kube, err = newKubeClient(ec.rest); err != nil {
			return err
		}
		cluster = ec.description
		p.step("checking %s for the AWS Load Balancer Controller", cluster)
		found, err := findAWSController(ctx, kube)
		if err != nil {
			return fmt.Errorf("cannot check %s for the AWS Load Balancer Controller, so refusing to drive it: %w", cluster, err)
		}
		if len(found) > 0 {
			return refuseAWSController(cluster, found)
		}
		if o.Inventory == "" {
			if o.Inventory, err = deriveInventory(ctx, kube, o.StateDir, p); err != nil {
				return err
			}
		}
	}

	lbCtx, stopLB := context.WithCancel(context.WithoutCancel(ctx))
	lbReady := make(chan lb.Endpoints, 1)
	lbDone := make(chan error, 1)
	go func() {
		lbDone <- lb.Run(lbCtx, o.lbConfig(lbLog), func(eps lb.Endpoints) { lbReady <- eps })
	}()
	defer func() {
		stopLB()
		if lbErr := <-lbDone; lbErr != nil && err == nil {
			err = fmt.Errorf("moat lb: %w", lbErr)
		}
		p.step("moat lb stopped")
	}()
	var eps lb.Endpoints
	select {
	case eps = <-lbReady:
	case err := <-lbDone:
		lbDone <- err // for the deferred stop
		return fmt.Errorf("moat lb: %w (log: %s)", err, filepath.Join(logDir, "lb.log"))
	case <-ctx.Done():
		return nil
	}
	p.step("moat lb serving: API %s, DNS %s", eps.API, eps.DNS)
	releaseHeld()

	st := State{LB: eps, ClusterName: clusterName, PID: os.Getpid()}
	var kc *localCluster
	var ctrlKubeconfig string
	var children []*child // what to watch; stopped in reverse order of start
	defer func() {
		for i := len(children) - 1; i >= 0; i-- {
			children[i].stop(15 * time.Second)
			p.step("%s stopped", children[i].name)
		}
	}()
	if existing {
		ctrlKubeconfig = ec.kubeconfig
		st.Kubeconfig, st.KubeAPI = ec.kubeconfig, ec.rest.Host
	} else {
		p.step("locating kube-apiserver, etcd and kubectl (hack/kube-assets.sh; the first start downloads them, seconds, or builds them, minutes)")
		assets, err := kubeAssets(ctx, o.KubeAssets, o.KubeAssetsSource, p)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		p.step("kube assets in %s", assets)
		kc, err = startLocalCluster(clusterConfig{
			stateDir: o.StateDir, assets: assets, apiAddr: kubeAPIAddr, etcdAddr: etcdAddr, etcdPeer: etcdPeer,
			logDir: logDir, serviceIP: "10.96.0.0/16",
		}, p)
		if err != nil {
			return err
		}
		children = append(children, kc.etcd, kc.apiserver)
		if err := kc.waitReady(ctx, 3*time.Minute, p); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if kube, err = newKubeClient(kc.rest); err != nil {
			return err
		}
		cluster = kc.url
		ctrlKubeconfig = kc.kubeconfig
		st.Kubeconfig, st.KubeAPI, st.Kubectl, st.LocalCluster = kc.kubeconfig, kc.url, filepath.Join(assets, "kubectl"), true
	}

	if !existing || o.Controller {
		if err := installCRDs(ctx, kube, !existing, p); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}

	aws, err := newAWSClients(ctx, eps)
	if err != nil {
		return err
	}
	if st.VPCID, err = aws.vpcID(ctx); err != nil {
		return err
	}

	if o.Controller {
		cc := controllerConfig{
			kubeconfig: ctrlKubeconfig, vpcID: st.VPCID, apiURL: eps.API, credsFile: eps.CredentialsFile,
			metricsAddr: ctrlMetrics, probeAddr: ctrlProbe, logDir: logDir, stateDir: o.StateDir,
			verbose: o.Verbose,
		}
		ctrl, err := startController(cc)
		if err != nil {
			return err
		}
		children = append(children, ctrl)
		p.step("moat controller started (cluster %s, VPC %s, log %s)", clusterName, st.VPCID, ctrl.logPath)
		if err := waitControllerReady(ctx, ctrl, ctrlProbe, 2*time.Minute, p); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		st.ControllerMetrics, st.ControllerProbes = "http://"+ctrlMetrics+"/metrics", "http://"+ctrlProbe
	} else {
		p.step("moat controller not started (--controller=false): run your own against %s", st.Kubeconfig)
	}

	if err := writeState(stateFile, st); err != nil {
		return err
	}
	printSummary(o, st, cluster)

	// Watch what runs; the demo runs beside it and stays until Ctrl-C.
	failed := make(chan error, len(children)+2)
	for _, ch := range children {
		go func() {
			<-ch.done
			failed <- ch.failure()
		}()
	}
	var demoWG sync.WaitGroup
	demoCtx, stopDemo := context.WithCancel(ctx)
	defer func() {
		stopDemo()
		demoWG.Wait()
	}()
	if o.Demo {
		demoWG.Add(1)
		go func() {
			defer demoWG.Done()
			d := &demo{kube: kube, aws: aws, eps: eps, p: p, port: o.DemoPort, controller: o.Controller, state: st, stateDir: o.StateDir, out: o.Out}
			if err := d.run(demoCtx); err != nil && demoCtx.Err() == nil {
				failed <- fmt.Errorf("demo: %w", err)
			}
		}()
	}
	select {
	case <-ctx.Done():
		fmt.Fprintln(o.Out)
		p.step("stopping")
		return nil
	case err := <-lbDone:
		lbDone <- err
		if err == nil {
			err = errors.New("stopped")
		}
		return fmt.Errorf("moat lb: %w", err)
	case err := <-failed:
		return err
	}
}

func newKubeClient(cfg *rest.Config) (client.Client, error) {
	c, err := client.New(cfg, client.Options{Scheme: schemeForUp()})
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}

// schemeForUp has the built-in types moat up reads and writes.
func schemeForUp() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = apiextensionsv1.AddToScheme(s)
	return s
}

func writeState(path string, st State) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return renameio.WriteFile(path, append(data, '\n'), 0o600)
}

// lockStateDir makes sure one moat up at a time uses a state directory: two would share etcd's
// and moat lb's data.
func lockStateDir(dir string) (func(), error) {
	release, err := lockfile.Acquire(filepath.Join(dir, "lock"))
	if errors.Is(err, lockfile.ErrHeld) {
		return nil, fmt.Errorf("another moat up is using %s: stop it, or give this one another --state-dir", dir)
	}
	return release, err
}

// fileLogger is a logger writing to path in the configured format.
func (o Options) fileLogger(path string) (*slog.Logger, func(), error) {
	f, err := openLog(path)
	if err != nil {
		return nil, nil, err
	}
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if o.Verbose {
		opts.Level = slog.LevelDebug
	}
	var h slog.Handler = slog.NewTextHandler(f, opts)
	if o.LogFormat == "json" {
		h = slog.NewJSONHandler(f, opts)
	}
	return slog.New(h), func() { f.Close() }, nil
}

// progress prints timestamped steps while moat up starts.
type progress struct {
	mu    sync.Mutex
	out   io.Writer
	start time.Time
}

func (p *progress) step(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, "[%6.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// detail prints a line under the current step (a child's progress, a wait).
func (p *progress) detail(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, "          %s\n", line)
}
