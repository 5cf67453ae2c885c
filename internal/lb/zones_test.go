package lb

import (
	"bytes"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/dataplane"
)

func zone(name, addr string) dataplane.Zone {
	return dataplane.Zone{Name: name, Addr: netip.MustParseAddr(addr)}
}

// twoZoneConfig has a load balancer in zones a and b (dualstack in a) and one in b only.
func twoZoneConfig() dataplane.Config {
	return dataplane.Config{LoadBalancers: []dataplane.LoadBalancer{
		{ID: "both", Zones: []dataplane.Zone{zone("a", "127.1.0.10"), zone("a", "::1"), zone("b", "127.2.0.10")},
			Listeners: []dataplane.Listener{{ID: "l1", Protocol: "TCP", Port: 80}}},
		{ID: "b-only", Zones: []dataplane.Zone{zone("b", "127.2.0.11")}},
	}}
}

func TestServedConfigKeepsTheActiveZones(t *testing.T) {
	for _, tc := range []struct {
		active []string
		want   map[string][]string // load balancer -> zones kept
	}{
		{nil, map[string][]string{}},
		{[]string{"a"}, map[string][]string{"both": {"a", "a"}}},
		{[]string{"b"}, map[string][]string{"both": {"b"}, "b-only": {"b"}}},
		{[]string{"a", "b"}, map[string][]string{"both": {"a", "a", "b"}, "b-only": {"b"}}},
	} {
		set := map[string]bool{}
		for _, z := range tc.active {
			set[z] = true
		}
		got := map[string][]string{}
		for _, lb := range servedConfig(twoZoneConfig(), func(z string) bool { return set[z] }).LoadBalancers {
			for _, z := range lb.Zones {
				got[lb.ID] = append(got[lb.ID], z.Name)
			}
			if lb.ID == "both" && len(lb.Listeners) != 1 {
				t.Errorf("active %v: listeners of %s dropped", tc.active, lb.ID)
			}
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("active %v: served %v, want %v", tc.active, got, tc.want)
		}
	}
}

func TestSelectZones(t *testing.T) {
	st := cloud.State{Subnets: []cloud.Subnet{{Zone: "us-east-1b"}, {Zone: "us-east-1a"}, {Zone: "us-east-1a"}}}
	if got, err := selectZones(nil, st); err != nil || !reflect.DeepEqual(got, []string{"us-east-1a", "us-east-1b"}) {
		t.Errorf("default = %v, %v; want every zone of the inventory", got, err)
	}
	if got, err := selectZones([]string{"us-east-1b", "us-east-1b"}, st); err != nil || !reflect.DeepEqual(got, []string{"us-east-1b"}) {
		t.Errorf("--zones us-east-1b,us-east-1b = %v, %v", got, err)
	}
	_, err := selectZones([]string{"a"}, st)
	if err == nil || !strings.Contains(err.Error(), `"a" is not a zone`) || !strings.Contains(err.Error(), "us-east-1a, us-east-1b") {
		t.Errorf("--zones a = %v, want an error naming the inventory's zones", err)
	}
}

func TestValidateZoneLeaseTTL(t *testing.T) {
	for ttl, ok := range map[time.Duration]bool{0: true, 2 * time.Second: true, 4 * time.Second: true, time.Second: false, 2500 * time.Millisecond: false} {
		if err := validateZoneLeaseTTL(ttl); (err == nil) != ok {
			t.Errorf("--zone-lease-ttl %s: %v", ttl, err)
		}
	}
}

// recordingEngine keeps the last applied configuration.
type recordingEngine struct {
	dataplane.Engine
	applied dataplane.Config
}

func (e *recordingEngine) Apply(cfg dataplane.Config) error { e.applied = cfg; return nil }

type setElection map[string]bool

func (s setElection) Active(zone string) bool    { return s[zone] }
func (s setElection) Served(zone string) bool    { return s[zone] }
func (s setElection) Holders() map[string]string { return nil }

// The gate serves only the zones held, again from the last desired configuration when the
// election changes, and logs and exports each zone's serving interval.
func TestZoneGateFollowsTheElection(t *testing.T) {
	engine := &recordingEngine{}
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	gate := newZoneGate(engine, []string{"a", "b"}, "node-1", nil, reg, slog.New(slog.NewTextHandler(&logs, nil)))
	held := setElection{"b": true}
	gate.setElection(held)
	if err := gate.Apply(twoZoneConfig()); err != nil {
		t.Fatal(err)
	}
	if n := len(engine.applied.LoadBalancers); n != 2 {
		t.Fatalf("holding b: %d load balancers applied, want 2", n)
	}
	if !gate.serves(cloud.LoadBalancer{Zones: []cloud.LoadBalancerZone{{Zone: "b"}}}) || gate.serves(cloud.LoadBalancer{Zones: []cloud.LoadBalancerZone{{Zone: "a"}}}) {
		t.Error("serves does not follow the election")
	}
	held["b"] = false
	gate.reapply()
	if n := len(engine.applied.LoadBalancers); n != 0 {
		t.Errorf("holding nothing: %d load balancers applied, want none", n)
	}
	held["a"] = true
	gate.reapply()
	if got := engine.applied.LoadBalancers; len(got) != 1 || got[0].ID != "both" || len(got[0].Zones) != 2 {
		t.Errorf("holding a: applied %+v, want load balancer both's addresses in a", got)
	}
	for zone, want := range map[string]float64{"a": 1, "b": 0} {
		if got := testutil.ToFloat64(gate.active.WithLabelValues(zone)); got != want {
			t.Errorf("moat_lb_zone_active{zone=%q} = %v, want %v", zone, got, want)
		}
	}
	for _, line := range []string{`msg="zone active" zone=b node=node-1`, `msg="zone standby" zone=b node=node-1 served_from=`, `msg="zone active" zone=a`} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("log lacks %s:\n%s", line, logs.String())
		}
	}
}
