package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatlb/moat/internal/awsclient"
	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/sgresolve"
)

// programmer is the firewall as the agent uses it (*firewall.Firewall).
type programmer interface {
	Apply(firewall.Program) uint64
	Status() error
}

// agent polls the API and programs the firewall.
type agent struct {
	cfg    Config
	log    *slog.Logger
	fw     programmer
	dialer func(*net.Dialer) // sets up the agent's sockets (marks them), nil for none

	// The poll loop's own.
	reader   *reader
	last     *firewall.Program // the last program applied
	problem  string            // what the last failure was, "" after a good read: logged once per change
	since    time.Time         // when the current failure began
	warned   string            // what the last line about what this host protects said
	reported bool              // whether that line was logged yet

	apiUp, lastSync, interfaces prometheus.Gauge
	failures                    *prometheus.CounterVec

	mu    sync.Mutex
	ready error // for /readyz
}

func newAgent(cfg Config, log *slog.Logger, reg prometheus.Registerer) *agent {
	a := &agent{cfg: cfg, log: log, ready: errors.New("moat lb's API not read yet"),
		apiUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "moat_node_api_up",
			Help: "1 when the last reading of moat lb's API succeeded; 0 while it is unreachable or refuses the agent's key (the kernel keeps the last rules)."}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "moat_node_last_sync_timestamp_seconds",
			Help: "When the agent last read moat lb's API whole and handed the rules to the kernel (Unix time); 0 before the first time."}),
		interfaces: prometheus.NewGauge(prometheus.GaugeOpts{Name: "moat_node_interfaces",
			Help: "Instance interfaces whose security groups the agent enforces on this host."}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_node_api_failures_total",
			Help: "Readings of moat lb's API that failed, by reason: unreachable, credentials (the key was refused) or error (any other answer)."}, []string{"reason"}),
	}
	reg.MustRegister(a.apiUp, a.lastSync, a.interfaces, a.failures)
	for _, r := range []string{"unreachable", "credentials", "error"} {
		a.failures.WithLabelValues(r)
	}
	return a
}

// ServeHTTP answers /readyz: ready once the kernel enforces rules read from the API, while the
// API answers.
func (a *agent) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	err := a.ready
	a.mu.Unlock()
	if err == nil && a.fw != nil {
		err = a.fw.Status()
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (a *agent) setReady(err error) {
	a.mu.Lock()
	a.ready = err
	a.mu.Unlock()
}

func (a *agent) run(ctx context.Context) {
	tick := time.NewTicker(a.cfg.PollInterval)
	defer tick.Stop()
	for {
		a.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// poll reads the API once and, if the read is whole, applies the program it gives. A failed
// read changes nothing in the kernel.
func (a *agent) poll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	if a.reader == nil {
		cfg, err := a.awsConfig(ctx)
		if err != nil {
			a.failed(ctx, "error", "config: "+err.Error(), err)
			return
		}
		a.reader = newReader(cfg)
	}
	protect := a.protect()
	st, err := a.reader.read(ctx, protect)
	if err != nil {
		reason, key := classify(err)
		if reason == "credentials" {
			// Read the key again next time: a fixed credentials file needs no restart.
			a.reader = nil
		}
		a.failed(ctx, reason, key, err)
		return
	}
	p := sgresolve.Firewall(st, sgresolve.New(st), a.cfg.Mode, protect)
	p.SkipLoopback = true
	if a.last == nil || !reflect.DeepEqual(*a.last, p) {
		a.fw.Apply(p)
		a.last = &p
	}
	a.interfaces.Set(float64(len(p.Interfaces)))
	a.apiUp.Set(1)
	a.lastSync.Set(float64(time.Now().UnixNano()) / 1e9)
	a.setReady(nil)
	if a.problem != "" {
		a.log.Info("moat lb answers again; the kernel has the current rules", "endpoint", a.endpoint(), "after", time.Since(a.since).Round(time.Millisecond))
		a.problem = ""
	}
	a.warnCoverage(st, p)
}

// failed records a failed read: one log line per kind of failure (key), not one per poll.
func (a *agent) failed(ctx context.Context, reason, key string, err error) {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return // stopping
	}
	a.failures.WithLabelValues(reason).Inc()
	a.apiUp.Set(0)
	problem := map[string]string{
		"unreachable": "moat lb's API is unreachable",
		"credentials": "moat lb refused the agent's key",
		"error":       "moat lb's API answered with an error",
	}[reason]
	rules := "the last ones read"
	if a.last == nil {
		rules = "none read yet: a previous run's table, or none; nothing is programmed before a whole answer"
	}
	a.setReady(fmt.Errorf("%s: %v", problem, err))
	if key == a.problem {
		return
	}
	if a.problem == "" {
		a.since = time.Now()
	}
	a.problem = key
	a.log.Error("cannot read moat lb's API; the kernel keeps the rules it has; retrying every poll",
		"problem", problem, "rules", rules, "endpoint", a.endpoint(), "error", err)
}

// warnCoverage says once when the agent protects nothing, or fewer instances than named, and
// once what it enforces otherwise.
func (a *agent) warnCoverage(st cloud.State, p firewall.Program) {
	var missing []string
	if len(a.cfg.InstanceIDs) > 0 {
		found := map[string]bool{}
		for _, ifc := range p.Interfaces {
			found[ifc.Instance] = true
		}
		for _, id := range a.cfg.InstanceIDs {
			if !found[id] {
				missing = append(missing, id)
			}
		}
	}
	key := fmt.Sprint(missing, len(p.Interfaces) == 0)
	if a.reported && key == a.warned {
		return
	}
	a.warned, a.reported = key, true
	switch {
	case len(missing) > 0:
		a.log.Warn("moat lb knows no interface of some --instance-id: nothing enforced for them", "instances", missing)
	case len(p.Interfaces) == 0:
		a.log.Warn("no instance interface of moat lb has an address on this host: nothing to enforce here (or name instances with --instance-id)",
			"interfaces_known", len(st.Interfaces))
	default:
		a.log.Info("enforcing instance security groups", "interfaces", len(p.Interfaces), "mode", p.Mode)
	}
}

// protect selects what this host protects: the named instances, or the interfaces with an
// address on this host (read again at every poll: addresses come and go).
func (a *agent) protect() func(cloud.NetworkInterface, netip.Addr) bool {
	if len(a.cfg.InstanceIDs) > 0 {
		ids := map[string]bool{}
		for _, id := range a.cfg.InstanceIDs {
			ids[id] = true
		}
		return func(eni cloud.NetworkInterface, _ netip.Addr) bool { return ids[eni.InstanceID] }
	}
	local := sgresolve.HostAddrs()
	return func(_ cloud.NetworkInterface, a netip.Addr) bool { return local(a) }
}

// awsConfig loads the SDK's configuration (region, key, endpoint) with the agent's HTTP
// client, and no retries: the next poll is the retry.
func (a *agent) awsConfig(ctx context.Context) (aws.Config, error) {
	client := awshttp.NewBuildableClient().WithTimeout(readTimeout)
	if a.dialer != nil {
		client = client.WithDialerOptions(a.dialer)
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRegion(a.cfg.Region),
		config.WithHTTPClient(client),
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
	}
	if a.cfg.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(a.cfg.Profile))
	}
	if a.cfg.CredentialsFile != "" {
		opts = append(opts, config.WithSharedCredentialsFiles([]string{a.cfg.CredentialsFile}))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return cfg, fmt.Errorf("load the AWS configuration: %w", err)
	}
	cfg.HTTPClient = awsclient.HTTPClient(cfg.HTTPClient)
	if a.cfg.Endpoint != "" {
		cfg.BaseEndpoint = aws.String(a.cfg.Endpoint)
	}
	if aws.ToString(cfg.BaseEndpoint) == "" {
		return cfg, errors.New("no endpoint: give --endpoint-url (or AWS_ENDPOINT_URL) with moat lb's API URL")
	}
	return cfg, nil
}

func (a *agent) endpoint() string {
	if a.cfg.Endpoint != "" {
		return a.cfg.Endpoint
	}
	return "AWS_ENDPOINT_URL"
}

// classify sorts a failed read: moat lb refused the key, could not be reached, or answered
// with another error. key tells one failure from another for the log; it leaves out what
// changes with every attempt (request IDs, ports, timings).
func classify(err error) (reason, key string) {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "UnauthorizedOperation", "AccessDenied",
			"MissingAuthenticationToken", "IncompleteSignature", "RequestExpired", "UnrecognizedClientException":
			reason = "credentials"
		default:
			reason = "error"
		}
		return reason, reason + ": " + apiErr.ErrorCode()
	}
	var sendErr *smithyhttp.RequestSendError
	if errors.As(err, &sendErr) || errors.Is(err, context.DeadlineExceeded) {
		return "unreachable", "unreachable"
	}
	return "error", "error: " + err.Error()
}
