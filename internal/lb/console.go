package lb

import (
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/console"
	"github.com/moatlb/moat/internal/dataplane"
)

// listenerFlowLog is why clients denied at a listener are not in the flow log: the console says
// it beside the listeners' counts.
const listenerFlowLog = "the listener's socket filter drops them in the kernel, which counts their packets but does not say who sent them"

// consoleSnapshot reads what the web console shows: the state, the targets' health as
// DescribeTargetHealth reports it (from the data plane), and each listener's flow counters from
// the data plane's metrics in reg. listenerLog and instanceFlowLog are empty where denials at
// listeners and at instances are logged one by one, or say why not.
func consoleSnapshot(c *cloud.Cloud, reg prometheus.Gatherer, listenerLog, instanceFlowLog string) func() (console.Snapshot, error) {
	return func() (console.Snapshot, error) {
		st, err := c.State()
		if err != nil {
			return console.Snapshot{}, err
		}
		flows, err := listenerFlows(reg)
		if err != nil {
			return console.Snapshot{}, err
		}
		snap := console.Snapshot{ListenerFlowLog: listenerLog, InstanceFlowLog: instanceFlowLog}
		tgs := map[string]*console.TargetGroup{}
		for _, tg := range st.TargetGroups {
			view, err := consoleTargetGroup(c, tg, st.Instances)
			if err != nil {
				return console.Snapshot{}, err
			}
			tgs[tg.ARN] = view
		}
		usedBy := map[string][]string{}
		for _, lb := range st.LoadBalancers {
			view := console.LoadBalancer{ARN: lb.ARN, Name: lb.Name, DNSName: lb.DNSName, Scheme: lb.Scheme, State: lb.State,
				StateReason: lb.StateReason, SecurityGroups: nonNil(lb.SecurityGroups), Addresses: []string{}, Listeners: []console.Listener{}}
			for _, z := range lb.Zones {
				for _, a := range []string{z.Address, z.IPv6Address} {
					if a != "" {
						view.Addresses = append(view.Addresses, a)
					}
				}
			}
			for _, l := range st.Listeners {
				if l.LoadBalancerARN == lb.ARN {
					view.Listeners = append(view.Listeners, console.Listener{ARN: l.ARN, Protocol: l.Protocol, Port: l.Port, TargetGroup: tgs[l.TargetGroupARN], Flows: flows[l.ARN]})
				}
			}
			slices.SortFunc(view.Listeners, func(a, b console.Listener) int { return a.Port - b.Port })
			for _, g := range lb.SecurityGroups {
				usedBy[g] = append(usedBy[g], lb.Name)
			}
			snap.LoadBalancers = append(snap.LoadBalancers, view)
		}
		for _, eni := range st.Interfaces {
			snap.Interfaces = append(snap.Interfaces, console.Interface{ID: eni.ID, Instance: eni.InstanceID, Addresses: nonNil(eni.PrivateIPs), Groups: nonNil(eni.Groups)})
			for _, g := range eni.Groups {
				usedBy[g] = append(usedBy[g], eni.ID)
			}
		}
		referencedBy := map[string][]string{}
		for _, g := range st.SecurityGroups {
			for _, r := range slices.Concat(g.Ingress, g.Egress) {
				if r.GroupID != "" && !slices.Contains(referencedBy[r.GroupID], g.ID) {
					referencedBy[r.GroupID] = append(referencedBy[r.GroupID], g.ID)
				}
			}
		}
		for _, g := range st.SecurityGroups {
			snap.SecurityGroups = append(snap.SecurityGroups, console.SecurityGroup{ID: g.ID, Name: g.Name, Description: g.Description, VPCID: g.VPCID,
				Inbound: consoleRules(g.Ingress), Outbound: consoleRules(g.Egress), ReferencedBy: nonNil(referencedBy[g.ID]), UsedBy: nonNil(usedBy[g.ID])})
		}
		return snap, nil
	}
}

// consoleTargetGroup is tg with its targets' health.
func consoleTargetGroup(c *cloud.Cloud, tg cloud.TargetGroup, instances []cloud.Instance) (*console.TargetGroup, error) {
	health, err := c.DescribeTargetHealth(tg.ARN, nil)
	if err != nil {
		return nil, fmt.Errorf("describe target health %s: %w", tg.ARN, err)
	}
	view := &console.TargetGroup{ARN: tg.ARN, Name: tg.Name, Protocol: tg.Protocol, Port: tg.Port, TargetType: tg.TargetType, Targets: []console.Target{}}
	for _, h := range health {
		t := console.Target{ID: h.Target.ID, Port: h.Target.Port, Zone: h.Target.AvailabilityZone, State: h.Health.State, Reason: h.Health.Reason, Description: h.Health.Description}
		if tg.TargetType == "instance" {
			if i := slices.IndexFunc(instances, func(i cloud.Instance) bool { return i.ID == t.ID }); i >= 0 {
				t.Address = instances[i].PrivateIP
			}
		} else {
			t.Address = t.ID
		}
		view.Targets = append(view.Targets, t)
	}
	return view, nil
}

func consoleRules(rules []cloud.Rule) []console.Rule {
	out := []console.Rule{}
	for _, r := range rules {
		view := console.Rule{ID: r.ID, Protocol: r.Protocol, Ports: "all", Description: r.Description}
		switch r.Protocol {
		case "-1":
			view.Protocol = "all"
		case "icmp", "icmpv6":
			if r.FromPort != -1 {
				view.Ports = fmt.Sprintf("type %d code %d", r.FromPort, r.ToPort)
			}
		default:
			if r.FromPort == r.ToPort && r.FromPort != -1 {
				view.Ports = fmt.Sprint(r.FromPort)
			} else if r.FromPort != -1 && !(r.FromPort == 0 && r.ToPort == 65535) {
				view.Ports = fmt.Sprintf("%d-%d", r.FromPort, r.ToPort)
			}
		}
		for _, peer := range []string{r.CIDRv4, r.CIDRv6, r.GroupID, r.PrefixListID} {
			if peer != "" {
				view.Peer = peer
			}
		}
		out = append(out, view)
	}
	return out
}

// listenerFlows sums the data plane's per-listener counters (over protocols) by listener ARN.
func listenerFlows(reg prometheus.Gatherer) (map[string]console.ListenerFlows, error) {
	families, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]console.ListenerFlows{}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			var count *uint64
			f := out[labelValue(m, "listener")]
			switch mf.GetName() {
			case "moat_dataplane_new_flows_total":
				count = &f.Admitted
			case "moat_dataplane_listener_dropped_packets_total":
				count = &f.KernelDropped
			case "moat_dataplane_denied_flows_total":
				count = map[string]*uint64{dataplane.DenySecurityGroup: &f.DeniedSecurityGroup, dataplane.DenyNoTarget: &f.DeniedNoTarget, dataplane.DenyFlowLimit: &f.DeniedFlowLimit}[labelValue(m, "reason")]
			}
			if count != nil {
				*count += uint64(m.GetCounter().GetValue())
				out[labelValue(m, "listener")] = f
			}
		}
	}
	return out, nil
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// nonNil makes a missing list an empty one, so the console's JSON has [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
