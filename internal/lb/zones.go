package lb

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/dataplane"
	"github.com/moatlb/moat/internal/store"
	"github.com/moatlb/moat/internal/zonelease"
)

// DefaultZoneLeaseTTL is --zone-lease-ttl's default: how long a zone may go unserved after its
// active node dies, and how long a node cut off from etcd may keep serving (less the margin).
const DefaultZoneLeaseTTL = 4 * time.Second

// validateZoneLeaseTTL checks --zone-lease-ttl: etcd grants leases in whole seconds, and not
// shorter than about 2 s with its default election timeout.
func validateZoneLeaseTTL(ttl time.Duration) error {
	if ttl != 0 && (ttl < 2*time.Second || ttl%time.Second != 0) {
		return fmt.Errorf("--zone-lease-ttl %s: want whole seconds, at least 2s", ttl)
	}
	return nil
}

// zoneElection says which zones this node serves now, whether any node serves a zone, and who
// serves each.
type zoneElection interface {
	Active(zone string) bool
	Served(zone string) bool
	Holders() map[string]string // zone -> node
}

// staticZones is the zone election of a node alone on its store (the state file): it serves
// every zone it runs for.
type staticZones struct {
	node  string
	zones map[string]bool // nil: every zone
}

func (s staticZones) Active(zone string) bool { return s.zones == nil || s.zones[zone] }

// Served: the node is alone, so it serves what it serves.
func (s staticZones) Served(zone string) bool { return s.Active(zone) }

func (s staticZones) Holders() map[string]string {
	out := map[string]string{}
	for z := range s.zones {
		out[z] = s.node
	}
	return out
}

// selectZones checks --zones against the zones of the inventory's subnets: nil runs for all.
func selectZones(asked []string, st cloud.State) ([]string, error) {
	known := map[string]bool{}
	for _, s := range st.Subnets {
		known[s.Zone] = true
	}
	if len(asked) == 0 {
		return slices.Sorted(maps.Keys(known)), nil
	}
	for _, z := range asked {
		if !known[z] {
			return nil, fmt.Errorf("--zones: %q is not a zone of the inventory's subnets (%s)", z, strings.Join(slices.Sorted(maps.Keys(known)), ", "))
		}
	}
	return slices.Compact(slices.Sorted(slices.Values(asked))), nil
}

// startZones starts this node's zone election: with an etcd store, one election per zone it runs
// for, under <root>/quiet/zones/ (an election wakes no node's full sync; onChange reapplies);
// alone on a state file, it serves them all. onChange is called whenever what the node serves
// may have changed; wait returns when the election has let go.
func startZones(ctx context.Context, cfg Config, st store.Store, zones []string, onChange func(), log *slog.Logger) (election zoneElection, wait func()) {
	etcd, ok := st.(*store.Etcd)
	if !ok {
		s := staticZones{node: cfg.NodeName}
		if len(cfg.Zones) > 0 {
			s.zones = map[string]bool{}
			for _, z := range zones {
				s.zones[z] = true
			}
		}
		return s, func() {}
	}
	e := zonelease.New(zonelease.Config{
		Client: etcd.Client(), Prefix: etcd.QuietPrefix() + "zones/", Zones: zones, Node: cfg.NodeName,
		TTL: cmp.Or(cfg.ZoneLeaseTTL, DefaultZoneLeaseTTL), Log: log, OnChange: onChange,
	})
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	return e, func() { <-done }
}

// servedConfig keeps of cfg what this node serves: each load balancer's addresses in the zones
// active says it holds, and no load balancer without one (no listeners, no health checks).
func servedConfig(cfg dataplane.Config, active func(zone string) bool) dataplane.Config {
	var out dataplane.Config
	for _, lb := range cfg.LoadBalancers {
		var zones []dataplane.Zone
		for _, z := range lb.Zones {
			if active(z.Name) {
				zones = append(zones, z)
			}
		}
		if len(zones) == 0 {
			continue
		}
		lb.Zones = zones
		out.LoadBalancers = append(out.LoadBalancers, lb)
	}
	return out
}

// zoneGate applies the desired configuration to the engine for the zones this node holds, and
// again whenever that changes, from the last desired configuration: a node that must stop serving
// (its lease fenced) does so at once, without reading the store it may no longer reach. It logs
// each zone's serving interval ("zone active", "zone standby") as the engine applied it.
type zoneGate struct {
	engine   dataplane.Engine
	election zoneElection
	zones    []string // the zones this node runs for
	node     string
	active   *prometheus.GaugeVec
	announce *announcer // nil: addresses are local already (loopback, routes)
	log      *slog.Logger

	mu      sync.Mutex
	desired dataplane.Config
	applied dataplane.Config     // what the engine serves: desired, for the zones held
	serving map[string]time.Time // zone -> when this node began serving it
}

func newZoneGate(engine dataplane.Engine, zones []string, node string, announce *announcer, reg prometheus.Registerer, log *slog.Logger) *zoneGate {
	g := &zoneGate{engine: engine, zones: zones, node: node, announce: announce, log: log, serving: map[string]time.Time{},
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moat_lb_zone_active",
			Help: "1 while this node serves the zone's load balancer addresses (holds the zone's lease), else 0."}, []string{"zone"})}
	for _, z := range zones {
		g.active.WithLabelValues(z).Set(0)
	}
	reg.MustRegister(g.active, &zoneHolders{g})
	return g
}

// setElection starts gating by election: until then nothing is applied.
func (g *zoneGate) setElection(e zoneElection) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.election = e
}

// Apply applies cfg, all zones', for the zones this node holds.
func (g *zoneGate) Apply(cfg dataplane.Config) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.desired = cfg
	return g.applyLocked()
}

// reapply applies the last desired configuration again, for the zones this node holds now.
func (g *zoneGate) reapply() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.election == nil {
		return
	}
	if err := g.applyLocked(); err != nil {
		g.log.Warn("some listeners cannot be served", "err", err)
	}
}

// serves says whether this node serves any of lb's zones.
func (g *zoneGate) serves(lb cloud.LoadBalancer) bool {
	return slices.ContainsFunc(lb.Zones, func(z cloud.LoadBalancerZone) bool { return g.election.Active(z.Zone) })
}

func (g *zoneGate) applyLocked() error {
	held := map[string]bool{}
	active := func(z string) bool {
		if _, ok := held[z]; !ok {
			held[z] = g.election.Active(z)
		}
		return held[z]
	}
	for _, z := range g.zones {
		active(z)
	}
	served := servedConfig(g.desired, active)
	addrs := map[netip.Addr]bool{}
	for _, lb := range served.LoadBalancers {
		for _, z := range lb.Zones {
			addrs[z.Addr] = true
		}
	}
	// An address goes on the interface before its listeners bind, and is announced once they
	// serve (and the serving interval is recorded); it comes off after they are closed.
	added := g.announce.add(addrs)
	err := g.engine.Apply(served)
	g.applied = served
	g.recordServing(held, time.Now())
	g.announce.removeExcept(addrs)
	g.announce.announce(added)
	return err
}

// recordServing logs and exports the zones whose serving began or ended at now.
func (g *zoneGate) recordServing(held map[string]bool, now time.Time) {
	for _, z := range g.zones {
		since, was := g.serving[z]
		switch {
		case held[z] && !was:
			g.serving[z] = now
			g.active.WithLabelValues(z).Set(1)
			g.log.Info("zone active", "zone", z, "node", g.node, "since", now.Format(time.RFC3339Nano))
		case !held[z] && was:
			delete(g.serving, z)
			g.active.WithLabelValues(z).Set(0)
			g.log.Info("zone standby", "zone", z, "node", g.node, "served_from", since.Format(time.RFC3339Nano), "served_until", now.Format(time.RFC3339Nano))
		}
	}
}

// servedTargets are the targets of the target groups the engine serves, each once: those whose
// health it reports.
func (g *zoneGate) servedTargets() []targetKey {
	g.mu.Lock()
	defer g.mu.Unlock()
	seen := map[targetKey]bool{}
	var out []targetKey
	for _, lb := range g.applied.LoadBalancers {
		for _, l := range lb.Listeners {
			for _, t := range l.TargetGroup.Targets {
				k := targetKey{Group: l.TargetGroup.ID, ID: t.ID, Port: t.Port}
				if !seen[k] {
					seen[k] = true
					out = append(out, k)
				}
			}
		}
	}
	return out
}

// close takes the addresses it announced off the interface, once the engine has stopped.
func (g *zoneGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.announce.removeExcept(nil)
}

// zoneHolders exports moat_lb_zone_holder{zone,node}: 1 for the node that holds each zone, as
// this node last saw the elections.
type zoneHolders struct{ g *zoneGate }

var zoneHolderDesc = prometheus.NewDesc("moat_lb_zone_holder",
	"1 for the node that holds the zone's lease (serves its load balancer addresses), as this node last saw the election.",
	[]string{"zone", "node"}, nil)

func (h *zoneHolders) Describe(ch chan<- *prometheus.Desc) { ch <- zoneHolderDesc }

func (h *zoneHolders) Collect(ch chan<- prometheus.Metric) {
	h.g.mu.Lock()
	election := h.g.election
	h.g.mu.Unlock()
	if election == nil {
		return
	}
	for zone, node := range election.Holders() {
		ch <- prometheus.MustNewConstMetric(zoneHolderDesc, prometheus.GaugeValue, 1, zone, node)
	}
}
