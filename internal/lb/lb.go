// Package lb assembles the moat lb program: the durable store, the inventory, the AWS-compatible
// API, the DNS server for load balancer names and the metrics and health endpoints.
package lb

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/renameio/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moatlb/moat/internal/awsapi"
	"github.com/moatlb/moat/internal/awsapi/sigv4"
	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/console"
	"github.com/moatlb/moat/internal/dataplane"
	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/flowlog"
	"github.com/moatlb/moat/internal/store"
)

// Config is how moat lb runs; the flags of `moat lb` fill it.
type Config struct {
	APIAddr       string
	DataDir       string
	InventoryPath string // empty: the default inventory
	Region        string
	AccountID     string
	DNSAddr       string
	DNSSuffix     string
	MetricsAddr   string
	TLSCertFile   string
	TLSKeyFile    string
	FlowLog       io.Writer // denied flows (listeners' and instances') as JSON lines (package flowlog); nil: not logged
	FastPath      string    // FastPathAuto (""), FastPathKernel or FastPathOff
	// MaxFlowsPerListener caps each listener's flows through the userspace proxy (the kernel
	// fast path's cost no file descriptors); 0: a quarter of the open-file limit.
	MaxFlowsPerListener int
	Quotas              cloud.Quotas
	API                 APILimits // zero: DefaultAPILimits
	Log                 *slog.Logger
	// InstanceSGMode is --instance-sg-mode: enforce (""), audit or off.
	InstanceSGMode firewall.Mode
	// StartFresh lets moat lb start with empty state where state.db is missing or empty although
	// credentials show the data dir served before; without it that is refused as lost state.
	StartFresh bool
	// Store is --store: empty for the state in <DataDir>/state.db, or an etcd cluster
	// (etcd://host:port[,host:port…][/root]) that several moat lb nodes share.
	Store string
	// StoreCAFile, StoreCertFile and StoreKeyFile make the connections to etcd TLS, as etcdctl's
	// --cacert, --cert and --key do: the CA that signed the members' certificates (empty: the
	// system's), and this node's client certificate and key.
	StoreCAFile, StoreCertFile, StoreKeyFile string
	// Console serves the web console under /console on the metrics address (--console).
	Console bool
	// Zones are the zones whose load balancer addresses this node serves (--zones; empty: all
	// of the inventory's). With an etcd store, one node at a time serves each zone: the one
	// holding its lease, which lasts ZoneLeaseTTL (0: DefaultZoneLeaseTTL) unless renewed.
	Zones        []string
	ZoneLeaseTTL time.Duration
	// AnnounceInterface (--announce-interface), if set, is the interface on which this node puts
	// the IPv4 addresses it serves that are in the interface's networks, announcing each with a
	// gratuitous ARP.
	AnnounceInterface string
	// NodeName names this node in the zones' elections, their logs and metrics (--node-name).
	NodeName string
}

// Kernel fast path modes (--fast-path).
const (
	FastPathAuto   = "auto"   // on where the kernel allows it (CAP_NET_ADMIN, nftables)
	FastPathKernel = "kernel" // on, or moat lb does not start
	FastPathOff    = "off"    // every flow through the userspace proxy
)

// newEngine starts the data plane with the kernel fast path as mode asks.
func newEngine(mode string, opts dataplane.Options, log *slog.Logger) (*dataplane.Userspace, error) {
	switch mode {
	case FastPathOff:
		return dataplane.NewUserspace(opts)
	case FastPathKernel:
		opts.Kernel = true
		return dataplane.NewUserspace(opts)
	case FastPathAuto, "":
		opts.Kernel = true
		e, err := dataplane.NewUserspace(opts)
		if err == nil {
			return e, nil
		}
		log.Info("kernel fast path unavailable: every flow goes through the userspace proxy", "reason", err)
		opts.Kernel = false
		return dataplane.NewUserspace(opts)
	}
	return nil, fmt.Errorf("--fast-path %q: want %s, %s or %s", mode, FastPathAuto, FastPathKernel, FastPathOff)
}

// Endpoints are where a running moat lb serves, as bound (ports resolved). moat lb writes them to
// <data-dir>/endpoints.json once it serves, so scripts and moat up can find ports chosen with :0.
type Endpoints struct {
	API             string `json:"api"`               // URL
	DNS             string `json:"dns"`               // host:port, UDP and TCP
	Metrics         string `json:"metrics"`           // URL
	Console         string `json:"console,omitempty"` // URL; empty: --console=false
	CredentialsFile string `json:"credentialsFile"`
	// InstanceSecurityGroups says how instance groups are enforced on this host: enforce, audit,
	// off, or "not enforced: <why>".
	InstanceSecurityGroups string `json:"instanceSecurityGroups"`
}

// EndpointsFile is the name of the endpoints file in the data dir.
const EndpointsFile = "endpoints.json"

// ReadEndpoints reads the endpoints file of the moat lb running with dataDir.
func ReadEndpoints(dataDir string) (Endpoints, error) {
	var eps Endpoints
	data, err := os.ReadFile(filepath.Join(dataDir, EndpointsFile))
	if err != nil {
		return eps, err
	}
	if err := json.Unmarshal(data, &eps); err != nil {
		return eps, fmt.Errorf("%s: %w", filepath.Join(dataDir, EndpointsFile), err)
	}
	return eps, nil
}

func writeEndpoints(path string, eps Endpoints) error {
	data, err := json.MarshalIndent(eps, "", "  ")
	if err != nil {
		return err
	}
	return renameio.WriteFile(path, append(data, '\n'), 0o600)
}

// DefaultDataDir is where moat lb keeps its state unless told otherwise.
func DefaultDataDir() string {
	if dir := os.Getenv("XDG_STATE_HOME"); dir != "" {
		return filepath.Join(dir, "moat", "lb")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "moat", "lb")
	}
	return filepath.Join(home, ".local", "state", "moat", "lb")
}

// Run serves until ctx ends. ready, if not nil, is called once every endpoint is bound.
func Run(ctx context.Context, cfg Config, ready func(Endpoints)) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Log
	if cfg.NodeName == "" {
		cfg.NodeName, _ = os.Hostname()
	}
	maxFlows := cfg.MaxFlowsPerListener
	if n, err := raiseFileLimit(); err != nil {
		log.Warn("could not raise the open-file limit", "err", err)
	} else {
		if maxFlows == 0 {
			// A TCP flow holds two descriptors: one listener may use half of them, so that a
			// flood on one leaves the API and the other listeners theirs.
			maxFlows = int(min(n/4, math.MaxInt32))
		}
		log.Debug("open-file limit", "max", n, "max_flows_per_listener", maxFlows)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	st, closeStore, err := openStore(cfg, log)
	if err != nil {
		return err
	}
	defer closeStore()
	// A stale endpoints file from an earlier run would point waiters at dead ports.
	if err := os.Remove(filepath.Join(cfg.DataDir, EndpointsFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if etcd, ok := st.(*store.Etcd); ok {
		// Before the file is opened: it is the store's copy.
		stopSharing, err := shareCredentials(etcd, cfg.DataDir, log)
		if err != nil {
			return err
		}
		defer stopSharing()
	}
	credsPath := filepath.Join(cfg.DataDir, CredentialsFile)
	creds, created, err := sigv4.OpenFile(credsPath, log)
	if err != nil {
		return err
	}
	if created {
		log.Info("generated credentials", "file", credsPath)
	}
	if bolt, ok := st.(*store.Bolt); !ok {
		log.Info("no admin socket: moat lb backup reads the state file; back up an etcd store with etcdctl snapshot save")
	} else if stopAdmin, err := serveAdmin(cfg.DataDir, bolt, log); err != nil {
		log.Warn("no admin socket: moat lb backup works only while moat lb is stopped", "err", err)
	} else {
		defer stopAdmin()
	}

	c := cloud.New(st, cloud.Config{Region: cfg.Region, AccountID: cfg.AccountID, DNSSuffix: cfg.DNSSuffix, Quotas: cfg.Quotas})
	if err := applyInventory(c, cfg.InventoryPath); err != nil {
		return err
	}
	inventory, err := c.State()
	if err != nil {
		return err
	}
	zones, err := selectZones(cfg.Zones, inventory)
	if err != nil {
		return err
	}
	go reloadOnHangup(ctx, c, cfg.InventoryPath, creds, log)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if shared, ok := st.(interface{ Conflicts() uint64 }); ok {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "moat_store_conflicts_total",
			Help: "Store updates that ran again because another node's commit wrote what they had read (etcd store)."},
			func() float64 { return float64(shared.Conflicts()) }))
	}
	api := awsapi.New(c, &sigv4.Verifier{Credentials: creds}, log, reg)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 4)

	apiURL, err := serveAPI(ctx, cfg.APIAddr, api, cfg.API, cfg.TLSCertFile, cfg.TLSKeyFile, reg, log, errs)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	readyz := &readiness{store: st}
	mux.Handle("/readyz", readyz)
	metricsURL, err := serveHTTP(ctx, cfg.MetricsAddr, mux, "", "", errs)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	dnsAddr, err := serveDNS(ctx, c, cfg.DNSAddr, log)
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	kick := make(chan struct{}, 1)
	// One Log for the data plane and the firewall, so their lines never interleave; the console
	// follows it, with or without a file.
	flows := flowlog.New(cfg.FlowLog)
	if flows == nil && cfg.Console {
		flows = &flowlog.Log{}
	}
	if flows != nil {
		cfg.FlowLog = flows
	}
	engine, err := newEngine(cfg.FastPath, dataplane.Options{
		Log: log, Registerer: reg, FlowLog: cfg.FlowLog, MaxFlowsPerListener: maxFlows,
		OnListenerError: func(*dataplane.ListenerError) {
			select {
			case kick <- struct{}{}:
			default:
			}
		},
	}, log)
	if err != nil {
		return fmt.Errorf("data plane: %w", err)
	}
	readyz.engine.Store(engine)
	announce, err := newAnnouncer(cfg.AnnounceInterface, log)
	if err != nil {
		engine.Close()
		return err
	}
	gate := newZoneGate(engine, zones, cfg.NodeName, announce, reg, log)
	election, elected := startZones(ctx, cfg, st, zones, func() {
		gate.reapply()
		select {
		case kick <- struct{}{}:
		default:
		}
	}, log)
	gate.setElection(election)
	c.SetServedZones(election.Served)
	logPortableDataPlane(log)
	healthShared := func() {}
	if etcd, ok := st.(*store.Etcd); ok {
		shared := newSharedHealth(etcd, engine, gate.servedTargets, cfg.NodeName, cmp.Or(cfg.ZoneLeaseTTL, DefaultZoneLeaseTTL), log)
		healthShared = shared.start(ctx)
		c.SetHealthReporter(shared)
	} else {
		c.SetHealthReporter(healthReporter{engine})
	}
	routes := newSubnetRouter(log)
	c.SetPortChecker(canListen(func(a netip.Addr) error {
		if announce.covers(a) {
			return fmt.Errorf("%s goes on %s while this node serves its zone", a, cfg.AnnounceInterface)
		}
		return routes.Why(a)
	}))
	sgMode := cmp.Or(cfg.InstanceSGMode, firewall.Enforce)
	fw, sgStatus := startFirewall(sgMode, cfg.DataDir, cfg.FlowLog, reg, log)
	explainMode := sgMode
	if fw == nil {
		explainMode = firewall.Off
	}
	explain := explainer{c: c, engine: engine, firewall: explainMode}
	api.SetExplainer(explain)
	synced := make(chan struct{})
	go func() {
		defer close(synced)
		syncDataPlane(ctx, c, engine, gate, routes, fw, sgMode, kick, log)
	}()
	// Stop in order: no more syncs, the zones let go (before their leases are revoked), then the
	// engine, the subnets' routes and the firewall, then (deferred above) the store.
	defer func() {
		cancel()
		<-synced
		healthShared()
		elected()
		engine.Close()
		gate.close()
		routes.Close()
		if fw != nil {
			stopFirewall(fw, log)
		}
	}()

	eps := Endpoints{API: apiURL, DNS: dnsAddr, Metrics: metricsURL, CredentialsFile: credsPath, InstanceSecurityGroups: sgStatus}
	if cfg.Console {
		// Without the instance firewall, nothing names the clients that instances' groups or the
		// listeners' socket filters deny (see firewall.Listener).
		instanceFlowLog, listenerLog := "", ""
		if fw == nil {
			instanceFlowLog = "the instance firewall is " + sgStatus
			listenerLog = listenerFlowLog + ", and the instance firewall, which would name them, is " + sgStatus
		}
		con := console.New(console.Config{
			Credentials: creds, Snapshot: consoleSnapshot(c, reg, listenerLog, instanceFlowLog), Changes: st.Changes,
			FlowLog: flows, Explainer: consoleExplainer{explain}, Log: log,
		})
		go con.Run(ctx)
		mux.Handle(console.Path, con)
		mux.Handle(console.Path+"/", con)
		eps.Console = metricsURL + console.Path
	}
	if err := writeEndpoints(filepath.Join(cfg.DataDir, EndpointsFile), eps); err != nil {
		return err
	}
	log.Info("moat lb ready", "api", eps.API, "dns", eps.DNS, "metrics", eps.Metrics, "console", eps.Console, "credentials", eps.CredentialsFile, "region", c.Config().Region, "account", c.Config().AccountID, "data_dir", cfg.DataDir, "node", cfg.NodeName, "zones", strings.Join(zones, ","))
	if ready != nil {
		ready(eps)
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return err
	}
}

func applyInventory(c *cloud.Cloud, path string) error {
	inv := cloud.DefaultInventory()
	if path != "" {
		var err error
		if inv, err = cloud.LoadInventory(path); err != nil {
			return err
		}
	}
	return c.ApplyInventory(inv)
}

// reloadOnHangup re-applies the inventory on SIGHUP, so nodes can be added while running, and
// re-reads the credentials file (which is otherwise re-read when it changes, see sigv4.File).
func reloadOnHangup(ctx context.Context, c *cloud.Cloud, path string, creds *sigv4.File, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := creds.Reload(); err != nil {
				log.Error("credentials reload failed; keeping the previous keys", "file", creds.Path(), "err", err)
			}
			if err := applyInventory(c, path); err != nil {
				log.Error("inventory reload failed; keeping the previous one", "err", err)
				continue
			}
			log.Info("inventory reloaded", "file", path)
		}
	}
}
