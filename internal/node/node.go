// Package node is `moat node`: the agent that enforces the security groups of the instances
// on its host, for hosts where moat lb does not run. It reads the instances' interfaces and
// groups from moat lb's API (read actions only, so a read-only key suffices), resolves the
// rules with the code moat lb uses (sgresolve), and hands the program to the instance firewall
// (nftables), polling so that a rule change reaches the kernel within a second of the API's
// answer.
//
// It never flushes what it cannot replace: until it has read the API whole, and whenever moat
// lb is unreachable or refuses its key, the kernel keeps the last rules (a previous run's
// included), and logs and metrics say so.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/lockfile"
	"github.com/moatlb/moat/internal/nftutil"
)

// Table names the agent's nftables table (moat_fw_node). One agent per network namespace owns
// it, through the lock in its data dir.
const Table = "node"

// DefaultPollInterval is how often the agent reads the API: a rule change is promised to reach
// the kernel within a second of the API's answer.
const DefaultPollInterval = 500 * time.Millisecond

// readTimeout bounds one reading of the API (a few calls).
const readTimeout = 5 * time.Second

// Config is moat node's configuration, from its flags.
type Config struct {
	// Endpoint is moat lb's API URL; empty takes AWS_ENDPOINT_URL (the SDK's setting).
	Endpoint string
	Region   string
	// Profile and CredentialsFile pick the key; empty means the SDK's defaults (AWS_PROFILE,
	// AWS_SHARED_CREDENTIALS_FILE, the environment's keys, …).
	Profile         string
	CredentialsFile string
	// InstanceIDs are the instances to protect; empty means those with a private address on
	// this host (in its network namespace).
	InstanceIDs  []string
	Mode         firewall.Mode
	PollInterval time.Duration
	MetricsAddr  string
	DataDir      string
	Log          *slog.Logger
}

// DefaultDataDir holds the agent's lock.
func DefaultDataDir() string { return "/var/lib/moat/node" }

var instanceID = regexp.MustCompile(`^i-([0-9a-f]{8}|[0-9a-f]{17})$`)

// Validate checks the flags as moat lb would check the values, naming the one at fault.
func (c Config) Validate() error {
	if _, ok := firewall.ParseMode(string(c.Mode)); !ok {
		return fmt.Errorf("--instance-sg-mode %q: want enforce, audit or off", c.Mode)
	}
	if c.PollInterval <= 0 {
		return fmt.Errorf("--poll-interval %v: must be positive", c.PollInterval)
	}
	if c.Endpoint != "" {
		if u, err := url.Parse(c.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--endpoint-url %q: want moat lb's API URL, e.g. http://10.0.0.5:7080", c.Endpoint)
		}
	}
	for _, id := range c.InstanceIDs {
		if !instanceID.MatchString(id) {
			return fmt.Errorf("--instance-id %q: want an instance ID, i- and 8 or 17 hex digits", id)
		}
	}
	if c.DataDir == "" {
		return errors.New("--data-dir must not be empty")
	}
	return nil
}

// Run runs the agent until ctx ends. ready, if not nil, is called with the metrics address once
// it serves.
func Run(ctx context.Context, cfg Config, ready func(metricsAddr string)) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	release, err := lockfile.Acquire(filepath.Join(cfg.DataDir, "lock"))
	if errors.Is(err, lockfile.ErrHeld) {
		return fmt.Errorf("data dir %s is in use by another moat node (one agent per host owns table moat_fw_%s)", cfg.DataDir, Table)
	}
	if err != nil {
		return err
	}
	defer release()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a := newAgent(cfg, log, reg)
	if cfg.Mode != firewall.Off {
		fw, err := firewall.New(firewall.Options{Table: Table, Registerer: reg, Log: log})
		if err != nil {
			return fmt.Errorf("moat node cannot program the kernel's firewall (it needs root or CAP_NET_ADMIN, and nftables): %w", err)
		}
		// Close leaves the table: the instances stay protected while no agent runs.
		defer fw.Close()
		a.fw = fw
		// The agent's own connections (to moat lb's API, and its DNS lookups) carry moat's flow
		// mark, which the firewall admits: a revoked rule must never cut the agent off from
		// the rule that would restore it.
		a.dialer = markedDialer(nftutil.NewMarkID())
	}

	ln, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.Handle("/readyz", a)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	if ready != nil {
		ready(ln.Addr().String())
	}

	if cfg.Mode == firewall.Off {
		removeTable(ctx, log)
		<-ctx.Done()
		return nil
	}
	log.Info("moat node started", "mode", cfg.Mode, "endpoint", cfg.Endpoint, "instances", instancesArg(cfg.InstanceIDs), "poll_interval", cfg.PollInterval)
	a.run(ctx)
	return nil
}

func instancesArg(ids []string) any {
	if len(ids) == 0 {
		return "those with an address on this host"
	}
	return ids
}

// removeTable takes away the table a previous run left: --instance-sg-mode=off is how an
// operator lifts the agent's rules (stopping it keeps them).
func removeTable(ctx context.Context, log *slog.Logger) {
	fw, err := firewall.New(firewall.Options{Table: Table, Log: log})
	if err != nil {
		log.Warn("instance security groups off; a table a previous moat node left (moat_fw_"+Table+") could not be removed", "reason", err)
		return
	}
	defer fw.Close()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := fw.Wait(wctx, fw.Apply(firewall.Program{Mode: firewall.Off})); err != nil {
		log.Warn("instance security groups off; a table a previous moat node left could not be removed", "reason", err)
		return
	}
	log.Info("instance security groups off: nothing enforced on this host by moat node, and its table removed")
}
