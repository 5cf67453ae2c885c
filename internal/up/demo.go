package up

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/moatlb/moat/internal/lb"
	"github.com/moatlb/moat/internal/secgroup"
)

// The demo's objects: the AWS blog post's sample web application, exposed by a Service of type
// LoadBalancer (instance targets, as in the post) that only 127.0.0.2 may reach.
const (
	DemoNamespace = "moat-demo"
	DemoService   = "webserver"
	DemoAllowed   = "127.0.0.2"
	DemoDenied    = "127.0.0.3"
)

// demoBackends stand in for the sample app's four pods, two per zone.
//
// Why instance targets and not ip targets: Kubernetes rejects loopback addresses in
// EndpointSlices ("may not be in the loopback range"), and loopback is the only network a demo
// without privileges has. Node addresses may be loopback, so the demo does what the blog post
// does — target type instance — with Node objects for moat lb's instances and a stand-in for
// kube-proxy on each node's NodePort, forwarding to these backends.
var demoBackends = []struct{ name, ip, zone string }{
	{"web-1", "127.1.0.21", region + "a"},
	{"web-2", "127.1.0.22", region + "a"},
	{"web-3", "127.2.0.21", region + "b"},
	{"web-4", "127.2.0.22", region + "b"},
}

type demo struct {
	kube       client.Client
	aws        *awsClients
	eps        lb.Endpoints
	p          *progress
	out        io.Writer
	port       int // the Service's (and so the listener's) port
	controller bool
	state      State
	stateDir   string
}

// run reproduces the blog post's walkthrough, then serves the backends until ctx ends.
func (d *demo) run(ctx context.Context) error {
	d.p.step("demo: the AWS blog post's walkthrough — a web app behind an NLB whose security group admits only %s", DemoAllowed)
	servers, backendPort, err := startBackends()
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	d.p.step("demo: 4 backends standing in for the app's pods: %s", backendList(backendPort))

	nodes, err := d.applyNodes(ctx)
	if err != nil {
		return err
	}
	var names []string
	for _, n := range nodes {
		names = append(names, fmt.Sprintf("%s (%s, %s)", n.name, n.ip, n.providerID))
	}
	d.p.step("demo: Node objects for moat lb's instances: %s", strings.Join(names, ", "))

	nodePort, err := d.applyService(ctx, backendPort)
	if err != nil {
		return err
	}
	d.p.step("demo: created namespace %s and Service %s (type LoadBalancer, class service.k8s.aws/nlb, target type instance, scheme internal, loadBalancerSourceRanges [%s/32], port %d, nodePort %d)",
		DemoNamespace, DemoService, DemoAllowed, d.port, nodePort)
	var backendAddrs []string
	for _, b := range demoBackends {
		backendAddrs = append(backendAddrs, net.JoinHostPort(b.ip, fmt.Sprint(backendPort)))
	}
	for _, n := range nodes {
		fwd, err := startForwarder(net.JoinHostPort(n.ip, fmt.Sprint(nodePort)), backendAddrs)
		if err != nil {
			return fmt.Errorf("kube-proxy stand-in on %s: %w", n.name, err)
		}
		defer fwd.Close()
	}
	d.p.step("demo: kube-proxy stand-ins on every node's NodePort (%s:%d, …) forward to the backends", nodes[0].ip, nodePort)

	host, err := d.waitHostname(ctx)
	if err != nil {
		return err
	}
	d.p.step("demo: status.loadBalancer.ingress[0].hostname = %s", host)
	addrs, err := d.resolve(ctx, host)
	if err != nil {
		return err
	}
	d.p.step("demo: resolved through moat's DNS (%s): %s", d.eps.DNS, strings.Join(addrs, ", "))
	target := net.JoinHostPort(addrs[0], fmt.Sprint(d.port))

	// The allowed client: retried until the listener is up (within a second of the API call).
	var page string
	var last error
	start := time.Now()
	err = poll(ctx, 250*time.Millisecond, func() (bool, error) {
		page, last = httpGet(ctx, DemoAllowed, target, host, 3*time.Second)
		if last != nil && time.Since(start) > time.Minute {
			return false, fmt.Errorf("%s gets no page from %s after a minute: %w", DemoAllowed, target, last)
		}
		return last == nil, nil
	})
	if err != nil {
		return err
	}
	d.p.step("demo: allowed client %s → http://%s:%d/ answered:", DemoAllowed, host, d.port)
	for l := range strings.SplitSeq(strings.TrimSpace(page), "\n") {
		d.p.detail(l)
	}
	_, err = httpGet(ctx, DemoDenied, target, host, 3*time.Second)
	d.p.step("demo: denied client %s → http://%s:%d/: %s", DemoDenied, host, d.port, describeDenial(err))

	groups, err := d.printSecurityGroups(ctx, host)
	if err != nil {
		return err
	}
	d.showDirectAccess(ctx, nodes[0], nodePort, groups)
	if err := d.showBackendRule(ctx, groups, host, target); err != nil {
		return err
	}
	d.printTryIt(host, addrs[0], net.JoinHostPort(nodes[0].ip, fmt.Sprint(nodePort)))
	<-ctx.Done()
	return nil
}

// startBackends starts the four HTTP backends on one port free on all their addresses: 8080 if
// it can, any other otherwise.
func startBackends() ([]*http.Server, int, error) {
	tryPort := func(port int) ([]net.Listener, error) {
		var lns []net.Listener
		for _, b := range demoBackends {
			ln, err := net.Listen("tcp", net.JoinHostPort(b.ip, fmt.Sprint(port)))
			if err != nil {
				for _, l := range lns {
					l.Close()
				}
				return nil, err
			}
			lns = append(lns, ln)
			port = ln.Addr().(*net.TCPAddr).Port
		}
		return lns, nil
	}
	lns, err := tryPort(8080)
	for i := 0; err != nil && i < 20; i++ {
		lns, err = tryPort(0)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("demo backends: %w", err)
	}
	port := lns[0].Addr().(*net.TCPAddr).Port
	var servers []*http.Server
	for i, b := range demoBackends {
		body := samplePage(b.name, net.JoinHostPort(b.ip, fmt.Sprint(port)), b.zone)
		s := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				io.WriteString(w, body)
			}),
			ReadHeaderTimeout: 10 * time.Second,
		}
		go s.Serve(lns[i])
		servers = append(servers, s)
	}
	return servers, port, nil
}

// samplePage is the blog post's sample app page, naming the backend that served it.
func samplePage(name, addr, zone string) string {
	return fmt.Sprintf(`<html><head><title>moat Sample App</title></head><body>
<h1>moat Sample App</h1><h2>Congratulations!</h2>
<p>Your application is now running behind a Network Load Balancer with security groups.</p>
<p>Served by %s (%s, %s).</p>
</body></html>
`, html.EscapeString(name), html.EscapeString(addr), html.EscapeString(zone))
}

func backendList(port int) string {
	var parts []string
	for _, b := range demoBackends {
		parts = append(parts, fmt.Sprintf("%s %s:%d (%s)", b.name, b.ip, port, b.zone))
	}
	return strings.Join(parts, ", ")
}

type demoNode struct {
	name, ip, zone, providerID string
	groups                     []string // "<id> (<name>)" of the instance's security groups
}

// applyNodes creates (or refreshes) a Node object for every running instance of moat lb's
// inventory, as a kubelet would register it: providerID aws:///<zone>/<instance id>, InternalIP
// the instance's private IP, Ready. Nothing runs on them; no node lifecycle controller runs here
// to mark them NotReady either.
func (d *demo) applyNodes(ctx context.Context) ([]demoNode, error) {
	out, err := d.aws.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil {
		return nil, fmt.Errorf("describe instances: %w", err)
	}
	var nodes []demoNode
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			if in.State != nil && in.State.Name != ec2types.InstanceStateNameRunning {
				continue
			}
			n := demoNode{name: aws.ToString(in.InstanceId), ip: aws.ToString(in.PrivateIpAddress)}
			if in.Placement != nil {
				n.zone = aws.ToString(in.Placement.AvailabilityZone)
			}
			for _, t := range in.Tags {
				if aws.ToString(t.Key) == "Name" && aws.ToString(t.Value) != "" {
					n.name = aws.ToString(t.Value)
				}
			}
			n.providerID = fmt.Sprintf("aws:///%s/%s", n.zone, aws.ToString(in.InstanceId))
			for _, g := range in.SecurityGroups {
				n.groups = append(n.groups, fmt.Sprintf("%s (%s)", aws.ToString(g.GroupId), aws.ToString(g.GroupName)))
			}
			nodes = append(nodes, n)
		}
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("moat lb's inventory has no running instance to stand in for a node")
	}
	slices.SortFunc(nodes, func(a, b demoNode) int { return strings.Compare(a.name, b.name) })
	for _, n := range nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name}}
		err := d.kube.Get(ctx, client.ObjectKeyFromObject(node), node)
		switch {
		case apierrors.IsNotFound(err):
			node.Labels = map[string]string{
				"kubernetes.io/hostname":        n.name,
				"kubernetes.io/os":              "linux",
				"topology.kubernetes.io/zone":   n.zone,
				"topology.kubernetes.io/region": region,
			}
			node.Spec.ProviderID = n.providerID
			if err := d.kube.Create(ctx, node); err != nil {
				return nil, fmt.Errorf("create Node %s: %w", n.name, err)
			}
		case err != nil:
			return nil, fmt.Errorf("get Node %s: %w", n.name, err)
		}
		now := metav1.Now()
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.ip}, {Type: corev1.NodeHostName, Address: n.name}}
		node.Status.Conditions = []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "MoatUpStandIn",
			Message: "moat up stands in for this node's kubelet", LastHeartbeatTime: now, LastTransitionTime: now,
		}}
		if err := d.kube.Status().Update(ctx, node); err != nil {
			return nil, fmt.Errorf("update Node %s status: %w", n.name, err)
		}
	}
	return nodes, nil
}

// applyService creates or updates the namespace and the Service, as the blog post's kubectl apply
// does, and returns the Service's NodePort. A second run resets the Service to the demo's
// settings (source ranges included).
func (d *demo) applyService(ctx context.Context, backendPort int) (int, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: DemoNamespace}}
	if err := d.kube.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return 0, fmt.Errorf("create namespace %s: %w", DemoNamespace, err)
	}

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: DemoService, Namespace: DemoNamespace}}
	err := d.kube.Get(ctx, client.ObjectKeyFromObject(svc), svc)
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return 0, fmt.Errorf("get Service %s/%s: %w", DemoNamespace, DemoService, err)
	}
	if svc.Labels == nil {
		svc.Labels = map[string]string{}
	}
	svc.Labels["role"] = "webserver"
	if svc.Annotations == nil {
		svc.Annotations = map[string]string{}
	}
	svc.Annotations["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"] = "instance"
	svc.Annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] = "internal"
	// The fastest health checks NLB allows, so that the demo's revoke shows within seconds.
	svc.Annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval"] = "5"
	svc.Annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-healthy-threshold"] = "2"
	svc.Annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-unhealthy-threshold"] = "2"
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	if svc.Spec.LoadBalancerClass == nil { // immutable once set
		svc.Spec.LoadBalancerClass = aws.String("service.k8s.aws/nlb")
	}
	svc.Spec.Selector = map[string]string{"role": "webserver"}
	var nodePort int32
	if len(svc.Spec.Ports) == 1 {
		nodePort = svc.Spec.Ports[0].NodePort // keep it: a new one would change the stack for nothing
	}
	svc.Spec.Ports = []corev1.ServicePort{{
		Name: "http", Protocol: corev1.ProtocolTCP, Port: int32(d.port),
		TargetPort: intstr.FromInt32(int32(backendPort)), NodePort: nodePort,
	}}
	svc.Spec.LoadBalancerSourceRanges = []string{DemoAllowed + "/32"}
	if exists {
		err = d.kube.Update(ctx, svc)
	} else {
		err = d.kube.Create(ctx, svc)
	}
	if err != nil {
		return 0, fmt.Errorf("apply Service %s/%s: %w", DemoNamespace, DemoService, err)
	}
	return int(svc.Spec.Ports[0].NodePort), nil
}

// forwarder stands in for kube-proxy on one node: it accepts on the node's IP and NodePort and
// forwards every connection to one of the Service's backends, round robin.
type forwarder struct {
	ln net.Listener
}

func startForwarder(addr string, backends []string) (*forwarder, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	go func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.DialTimeout("tcp", backends[i%len(backends)], 5*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
				go func() { io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
				<-done
				<-done
			}()
		}
	}()
	return &forwarder{ln: ln}, nil
}

func (f *forwarder) Close() error { return f.ln.Close() }

// waitHostname waits for the controller to provision the load balancer and report its name.
func (d *demo) waitHostname(ctx context.Context) (string, error) {
	if d.controller {
		d.p.step("demo: waiting for moat controller to provision the load balancer…")
	} else {
		d.p.step("demo: waiting for a controller to provision the load balancer (moat up started none: --controller=false)…")
	}
	start := time.Now()
	lastShown := start
	var host string
	err := poll(ctx, 250*time.Millisecond, func() (bool, error) {
		var svc corev1.Service
		if err := d.kube.Get(ctx, client.ObjectKey{Namespace: DemoNamespace, Name: DemoService}, &svc); err != nil {
			return false, fmt.Errorf("get Service: %w", err)
		}
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if in.Hostname != "" {
				host = in.Hostname
				return true, nil
			}
		}
		if d.controller && time.Since(start) > 2*time.Minute {
			return false, fmt.Errorf("the Service has no load balancer after 2 minutes; its events: %s (controller log: %s)", d.events(ctx), filepath.Join(d.stateDir, "logs", "controller.log"))
		}
		every := 5 * time.Second
		if !d.controller {
			every = 30 * time.Second
		}
		if time.Since(lastShown) >= every {
			lastShown = time.Now()
			d.p.detail(fmt.Sprintf("still waiting (%s); events: %s", time.Since(start).Round(time.Second), d.events(ctx)))
		}
		return false, nil
	})
	return host, err
}

// events summarises the Service's events (the controller's reasons and messages).
func (d *demo) events(ctx context.Context) string {
	var list corev1.EventList
	if err := d.kube.List(ctx, &list, client.InNamespace(DemoNamespace)); err != nil {
		return err.Error()
	}
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == "Service" && e.InvolvedObject.Name == DemoService {
			out = append(out, fmt.Sprintf("%s %s: %s", e.Type, e.Reason, e.Message))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, "; ")
}

// resolve asks moat lb's DNS server (never the host's resolver) for the name's addresses.
func (d *demo) resolve(ctx context.Context, host string) ([]string, error) {
	var addrs []string
	var last error
	err := poll(ctx, 250*time.Millisecond, func() (bool, error) {
		addrs, last = lookupA(ctx, d.eps.DNS, host)
		return len(addrs) > 0, nil
	})
	if err != nil {
		return nil, fmt.Errorf("resolve %s at %s: %w (last: %v)", host, d.eps.DNS, err, last)
	}
	return addrs, nil
}

// lookupA queries server (host:port) for the A records of name.
func lookupA(ctx context.Context, server, name string) ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.ExchangeContext(ctx, m, server)
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("%s", dns.RcodeToString[r.Rcode])
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return out, nil
}

// httpGet fetches http://host/ from addr with the client socket bound to src: on loopback,
// 127.0.0.2 and 127.0.0.3 are two different clients.
func httpGet(ctx context.Context, src, addr, host string, timeout time.Duration) (string, error) {
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: timeout}
	hc := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, "tcp", addr)
			},
		},
	}
	_, port, _ := net.SplitHostPort(addr)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("HTTP %s", resp.Status)
	}
	return string(body), nil
}

// describeDenial says what a denied client observed.
func describeDenial(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return "answered — it was NOT denied (is another rule admitting it?)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused by the load balancer: its security groups admit no rule for this client"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by the load balancer: its security groups admit no rule for this client"
	case errors.As(err, &ne) && ne.Timeout():
		return "no answer (timed out): the load balancer dropped the connection silently, as AWS does, because no rule of its security groups admits this client"
	}
	return "failed: " + err.Error()
}

// demoGroups are what the rest of the demo needs from printSecurityGroups: the load balancer,
// the cluster's backend group and the groups (the nodes') that admit it.
type demoGroups struct {
	lbARN   string
	backend string
	nodes   []ec2types.SecurityGroup
}

// printSecurityGroups shows the load balancer's groups and the rules that made the difference.
func (d *demo) printSecurityGroups(ctx context.Context, host string) (demoGroups, error) {
	var g demoGroups
	lbs, err := d.aws.elbv2.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{})
	if err != nil {
		return g, fmt.Errorf("describe load balancers: %w", err)
	}
	var nlb *elbtypes.LoadBalancer
	for i, l := range lbs.LoadBalancers {
		if strings.EqualFold(aws.ToString(l.DNSName), host) {
			nlb = &lbs.LoadBalancers[i]
		}
	}
	if nlb == nil {
		return g, fmt.Errorf("moat lb has no load balancer named %s", host)
	}
	g.lbARN = aws.ToString(nlb.LoadBalancerArn)
	d.p.step("demo: load balancer %s (%s, %s), security groups %s", aws.ToString(nlb.LoadBalancerName), nlb.Scheme, nlb.State.Code, strings.Join(nlb.SecurityGroups, ", "))
	if len(nlb.SecurityGroups) == 0 {
		return g, nil
	}
	sgs, err := d.aws.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: nlb.SecurityGroups})
	if err != nil {
		return g, fmt.Errorf("describe security groups: %w", err)
	}
	for _, id := range nlb.SecurityGroups { // in the load balancer's order: frontend first, backend last
		for _, sg := range sgs.SecurityGroups {
			if aws.ToString(sg.GroupId) != id {
				continue
			}
			role := "frontend: created for this Service; its inbound rules come from loadBalancerSourceRanges × the Service's ports"
			if strings.HasPrefix(aws.ToString(sg.GroupName), "k8s-traffic-") {
				role = "backend: shared by every load balancer of the cluster; targets admit traffic from it"
				g.backend = id
			}
			d.p.detail(fmt.Sprintf("%s %s — %s", id, aws.ToString(sg.GroupName), role))
			d.p.detail("  inbound:  " + formatRules(sg.IpPermissions, "from"))
			d.p.detail("  outbound: " + formatRules(sg.IpPermissionsEgress, "to"))
		}
	}
	if g.backend != "" {
		refs, err := d.aws.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{
			Filters: []ec2types.Filter{{Name: aws.String("ip-permission.group-id"), Values: []string{g.backend}}},
		})
		if err != nil {
			return g, fmt.Errorf("describe security groups: %w", err)
		}
		g.nodes = refs.SecurityGroups
		for _, sg := range refs.SecurityGroups {
			d.p.detail(fmt.Sprintf("%s %s — the nodes' group; the controller lets the backend group in: %s", aws.ToString(sg.GroupId), aws.ToString(sg.GroupName), formatRules(sg.IpPermissions, "from")))
		}
		if len(refs.SecurityGroups) == 0 {
			d.p.detail("(no instance group admits the backend group yet: the targets are unreachable until the controller adds that rule)")
		}
	}
	return g, nil
}

// showDirectAccess shows that the denied client cannot go around the load balancer either: the
// node's group admits only the load balancer's backend group, and moat lb enforces it on the
// node's address. Where enforcement is not on, it says so and claims nothing.
func (d *demo) showDirectAccess(ctx context.Context, node demoNode, nodePort int, g demoGroups) {
	addr := net.JoinHostPort(node.ip, fmt.Sprint(nodePort))
	_, err := httpGet(ctx, DemoDenied, addr, node.ip, 3*time.Second)
	what := fmt.Sprintf("demo: denied client %s → %s %s directly", DemoDenied, node.name, addr)
	status := d.eps.InstanceSecurityGroups
	if status != "enforce" {
		why := "--instance-sg-mode=" + status
		switch {
		case status == "audit":
			why += ": moat lb counts the flows a group would drop (moat_instance_sg_denied_flows_total) and lets them through"
		case strings.HasPrefix(status, "not enforced: "):
			why = strings.TrimPrefix(status, "not enforced: ")
		}
		d.p.step("%s: %s — instance security groups are not enforced on this host (%s), so nothing keeps a client from a node's NodePort here", what, directOutcome(err), why)
		return
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		d.p.step("%s: dropped (timed out): %s's security group %s admits only the load balancer's backend group %s, and moat lb enforces it on this host",
			what, node.name, strings.Join(node.groups, ", "), g.backend)
	default:
		d.p.step("%s: %s — expected a drop (is a rule of the node's groups admitting it?)", what, directOutcome(err))
	}
}

// directOutcome says in a few words what a client observed.
func directOutcome(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return "answered"
	case errors.As(err, &ne) && ne.Timeout():
		return "no answer (timed out)"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	}
	return "failed: " + err.Error()
}

// showBackendRule takes away the nodes' rule for the backend group, as an operator tightening
// the nodes' group by mistake would: the targets turn unhealthy and the allowed client gets no
// page. Then it puts the rule back, as the controller wrote it, and waits for the page again.
func (d *demo) showBackendRule(ctx context.Context, g demoGroups, host, target string) error {
	type grant struct {
		group string
		perms []ec2types.IpPermission
	}
	var grants []grant
	var shown []string
	for _, sg := range g.nodes {
		gr := grant{group: aws.ToString(sg.GroupId)}
		for _, p := range sg.IpPermissions {
			var pairs []ec2types.UserIdGroupPair
			for _, pair := range p.UserIdGroupPairs {
				if aws.ToString(pair.GroupId) == g.backend {
					pairs = append(pairs, ec2types.UserIdGroupPair{GroupId: pair.GroupId, Description: pair.Description})
				}
			}
			if len(pairs) > 0 {
				gr.perms = append(gr.perms, ec2types.IpPermission{IpProtocol: p.IpProtocol, FromPort: p.FromPort, ToPort: p.ToPort, UserIdGroupPairs: pairs})
			}
		}
		if len(gr.perms) > 0 {
			grants = append(grants, gr)
			shown = append(shown, fmt.Sprintf("%s: %s", gr.group, formatRules(gr.perms, "from")))
		}
	}
	if g.backend == "" || len(grants) == 0 {
		d.p.step("demo: no node group admits a backend group: nothing to take away")
		return nil
	}
	tgs, err := d.aws.elbv2.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{LoadBalancerArn: aws.String(g.lbARN)})
	if err != nil {
		return fmt.Errorf("describe target groups: %w", err)
	}
	var hc time.Duration
	for _, tg := range tgs.TargetGroups {
		n := max(aws.ToInt32(tg.HealthyThresholdCount), aws.ToInt32(tg.UnhealthyThresholdCount))
		hc = max(hc, time.Duration(n)*time.Duration(aws.ToInt32(tg.HealthCheckIntervalSeconds))*time.Second)
	}
	bound := hc + 30*time.Second

	d.p.step("demo: revoking the nodes' rule for the backend group (RevokeSecurityGroupIngress): %s", strings.Join(shown, "; "))
	for _, gr := range grants {
		if _, err := d.aws.ec2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(gr.group), IpPermissions: gr.perms}); err != nil {
			return fmt.Errorf("revoke the backend group's rule on %s: %w", gr.group, err)
		}
	}
	if ok, states := d.waitTargets(ctx, tgs.TargetGroups, elbtypes.TargetHealthStateEnumUnhealthy, bound); ok {
		d.p.step("demo: targets unhealthy: %s — the nodes' group no longer admits the load balancer's health checks", states)
	} else {
		d.p.step("demo: targets not all unhealthy within %s: %s", bound.Round(time.Second), states)
	}
	_, err = httpGet(ctx, DemoAllowed, target, host, 3*time.Second)
	if err != nil {
		d.p.step("demo: allowed client %s → http://%s:%d/: no page (%s): no target admits the load balancer any more", DemoAllowed, host, d.port, directOutcome(err))
	} else {
		d.p.step("demo: allowed client %s → http://%s:%d/: still answered — the revoke did not cut it off", DemoAllowed, host, d.port)
	}

	d.p.step("demo: putting the rule back (AuthorizeSecurityGroupIngress, with the controller's description)")
	for _, gr := range grants {
		_, err := d.aws.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(gr.group), IpPermissions: gr.perms})
		var apiErr interface{ ErrorCode() string }
		switch {
		case errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidPermission.Duplicate":
			d.p.detail(fmt.Sprintf("%s has it already: the controller put it back on a reconcile of its own", gr.group))
		case err != nil:
			return fmt.Errorf("authorize the backend group's rule on %s again: %w", gr.group, err)
		}
	}
	if ok, states := d.waitTargets(ctx, tgs.TargetGroups, elbtypes.TargetHealthStateEnumHealthy, bound); ok {
		d.p.step("demo: targets healthy again: %s", states)
	} else {
		d.p.step("demo: targets not all healthy within %s: %s", bound.Round(time.Second), states)
	}
	var page string
	start := time.Now()
	err = poll(ctx, 250*time.Millisecond, func() (bool, error) {
		var last error
		page, last = httpGet(ctx, DemoAllowed, target, host, 3*time.Second)
		if last != nil && time.Since(start) > bound {
			return false, fmt.Errorf("%s gets no page from %s %s after the rule is back: %w", DemoAllowed, target, bound.Round(time.Second), last)
		}
		return last == nil, nil
	})
	if err != nil {
		return err
	}
	served := "the page"
	for l := range strings.SplitSeq(page, "\n") {
		if strings.Contains(l, "Served by ") {
			served = strings.TrimSuffix(strings.TrimPrefix(l, "<p>"), "</p>")
		}
	}
	d.p.step("demo: allowed client %s → http://%s:%d/ answered again: recovered (%s)", DemoAllowed, host, d.port, served)
	return nil
}

// waitTargets polls DescribeTargetHealth until every target of the groups is in state, for at
// most bound, showing the states every 5 s. It reports whether they got there, and the states.
func (d *demo) waitTargets(ctx context.Context, tgs []elbtypes.TargetGroup, state elbtypes.TargetHealthStateEnum, bound time.Duration) (bool, string) {
	start := time.Now()
	lastShown := start
	var states string
	reached := false
	_ = poll(ctx, 500*time.Millisecond, func() (bool, error) {
		var parts []string
		all := true
		for _, tg := range tgs {
			out, err := d.aws.elbv2.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: tg.TargetGroupArn})
			if err != nil {
				parts = append(parts, "DescribeTargetHealth: "+err.Error())
				all = false
				continue
			}
			for _, t := range out.TargetHealthDescriptions {
				s := fmt.Sprintf("%s:%d %s", aws.ToString(t.Target.Id), aws.ToInt32(t.Target.Port), t.TargetHealth.State)
				if t.TargetHealth.Reason != "" {
					s += fmt.Sprintf(" (%s)", t.TargetHealth.Reason)
				}
				parts = append(parts, s)
				all = all && t.TargetHealth.State == state
			}
		}
		states = strings.Join(parts, ", ")
		if all && len(parts) > 0 {
			reached = true
			return true, nil
		}
		if time.Since(start) > bound {
			return true, nil
		}
		if time.Since(lastShown) >= 5*time.Second {
			lastShown = time.Now()
			d.p.detail(fmt.Sprintf("waiting for %s (%s of at most %s): %s", state, time.Since(start).Round(time.Second), bound.Round(time.Second), states))
		}
		return false, nil
	})
	return reached, states
}

// formatRules renders rules as "tcp 8080 from 127.0.0.2/32; …" (dir: from or to).
func formatRules(perms []ec2types.IpPermission, dir string) string {
	var out []string
	for _, p := range perms {
		proto := aws.ToString(p.IpProtocol)
		ports := ""
		if proto != "-1" {
			ports = fmt.Sprintf(" %d", aws.ToInt32(p.FromPort))
			if aws.ToInt32(p.ToPort) != aws.ToInt32(p.FromPort) {
				ports += fmt.Sprintf("-%d", aws.ToInt32(p.ToPort))
			}
		} else {
			proto = "all"
		}
		var srcs []string
		for _, r := range p.IpRanges {
			srcs = append(srcs, aws.ToString(r.CidrIp))
		}
		for _, r := range p.Ipv6Ranges {
			srcs = append(srcs, aws.ToString(r.CidrIpv6))
		}
		for _, g := range p.UserIdGroupPairs {
			srcs = append(srcs, aws.ToString(g.GroupId))
		}
		for _, pl := range p.PrefixListIds {
			srcs = append(srcs, aws.ToString(pl.PrefixListId))
		}
		out = append(out, fmt.Sprintf("%s%s %s %s", proto, ports, dir, strings.Join(srcs, ", ")))
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, "; ")
}

func (d *demo) printTryIt(host, addr, nodeAddr string) {
	dnsHost, dnsPort := hostOf(d.eps.DNS), portOf(d.eps.DNS)
	url := fmt.Sprintf("--max-time 3 --resolve %s:%d:%s http://%s:%d/", host, d.port, addr, host, d.port)
	var b strings.Builder
	fmt.Fprintf(&b, "\nThe demo is running; Ctrl-C stops everything. Explore:\n\n")
	fmt.Fprintf(&b, "  export KUBECONFIG=%s AWS_SHARED_CREDENTIALS_FILE=%s AWS_REGION=%s\n", d.state.Kubeconfig, d.eps.CredentialsFile, region)
	if d.state.Kubectl != "" {
		fmt.Fprintf(&b, "  alias kubectl=%s    # v1.37, built with the API server\n", d.state.Kubectl)
	}
	fmt.Fprintf(&b, "  dig @%s -p %s +short %s\n", dnsHost, dnsPort, host)
	fmt.Fprintf(&b, "  curl --interface %s %s    # allowed\n", DemoAllowed, url)
	denied := "times out"
	if !secgroup.SocketFilters {
		denied = "reset (no socket filters on this system)"
	}
	fmt.Fprintf(&b, "  curl --interface %s %s    # denied: %s\n", DemoDenied, url, denied)
	if d.eps.InstanceSecurityGroups == "enforce" {
		fmt.Fprintf(&b, "  curl --interface %s --max-time 3 http://%s/    # straight to a node: times out too\n", DemoDenied, nodeAddr)
	}
	moat, err := os.Executable()
	if err != nil {
		moat = "moat"
	}
	fmt.Fprintf(&b, "  %s explain --endpoint-url %s --from %s --to %s:%d    # why, and the rule that would admit it\n", moat, d.eps.API, DemoDenied, host, d.port)
	fmt.Fprintf(&b, "  kubectl get nodes -o wide\n")
	fmt.Fprintf(&b, "  kubectl -n %s get service %s\n", DemoNamespace, DemoService)
	fmt.Fprintf(&b, "  kubectl -n %s patch service %s -p '{\"spec\":{\"loadBalancerSourceRanges\":[\"%s/32\"]}}'    # now %s gets in, %s not\n",
		DemoNamespace, DemoService, DemoDenied, DemoDenied, DemoAllowed)
	fmt.Fprintf(&b, "  aws --endpoint-url %s ec2 describe-security-groups --filters Name=tag:elbv2.k8s.aws/cluster,Values=%s\n", d.eps.API, clusterName)
	fmt.Fprintf(&b, "  aws --endpoint-url %s elbv2 describe-load-balancers\n", d.eps.API)
	fmt.Fprintf(&b, "  kubectl -n %s delete service %s    # the controller removes the load balancer and its groups\n\n", DemoNamespace, DemoService)
	fmt.Fprint(d.out, b.String())
}
