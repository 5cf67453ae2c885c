//go:build linux

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/go-logr/logr"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// existingNode is a Node of the test's cluster: a network namespace with the Node's InternalIP,
// joined to the test's namespace by a veth pair, as a kind node is a container on a Docker
// bridge that the host routes to.
type existingNode struct {
	name, zone, providerID string
	ip, hostEnd            string
}

// TestUpExistingClusterNodes: `moat up --kubeconfig` on a cluster of its own (envtest's
// kube-apiserver and etcd, no kubelet) with no inventory derives moat lb's instances from the
// cluster's Nodes, whose InternalIPs are network namespaces each running a NodePort server, and
// serves a Service of type LoadBalancer end to end: each zone's load balancer address, on the
// host's loopback, reaches the node of its zone.
func TestUpExistingClusterNodes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the nodes are network namespaces: needs root")
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = ensureKubeAssets(t)
	}
	ctrllog.SetLogger(logr.Discard())
	ctx := context.Background()

	// The nodes: one with a kind-style providerID (found by its InternalIP), one with AWS's (found
	// by its instance ID), in two zones, on networks of their own.
	octet := 2 * (os.Getpid() % 100) // apart from the leftovers of a killed run
	id := fmt.Sprint(os.Getpid() % 10000)
	nodes := []existingNode{
		{name: "moat-node-a", zone: "us-east-1a", providerID: "kind://docker/moat/moat-node-a", ip: fmt.Sprintf("10.77.%d.2", octet), hostEnd: fmt.Sprintf("10.77.%d.1", octet)},
		{name: "moat-node-b", zone: "us-east-1b", providerID: "aws:///us-east-1b/i-0e2e0000000000b0b", ip: fmt.Sprintf("10.77.%d.2", octet+1), hostEnd: fmt.Sprintf("10.77.%d.1", octet+1)},
	}
	nodePort := int32(30000 + os.Getpid()%2000)
	for i, n := range nodes {
		ns := fmt.Sprintf("moatn%s%c", id, 'a'+i)
		addNetns(t, ns)
		host, peer := fmt.Sprintf("xh%s%c", id, 'a'+i), fmt.Sprintf("xn%s%c", id, 'a'+i)
		ip(t, "link", "add", host, "type", "veth", "peer", "name", peer)
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", host).Run() })
		ip(t, "link", "set", peer, "netns", ns)
		ip(t, "addr", "add", n.hostEnd+"/24", "dev", host)
		ip(t, "link", "set", host, "up")
		ip(t, "-n", ns, "addr", "add", n.ip+"/24", "dev", peer)
		ip(t, "-n", ns, "link", "set", peer, "up")
		ip(t, "-n", ns, "route", "add", "default", "via", n.hostEnd)
		server := exec.Command("ip", "netns", "exec", ns, echoBin, net.JoinHostPort(n.ip, fmt.Sprint(nodePort)))
		server.SysProcAttr = dieWithTest()
		if err := server.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = server.Process.Kill(); _ = server.Wait() })
	}

	// The cluster: envtest's API server, its kubeconfig in a file, the Nodes as kubelets would
	// register them (no kubelet runs: the test sets their status).
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	kube, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: map[string]string{
			"kubernetes.io/hostname": n.name, corev1.LabelTopologyZone: n.zone,
		}}, Spec: corev1.NodeSpec{ProviderID: n.providerID}}
		if err := kube.Create(ctx, node); err != nil {
			t.Fatal(err)
		}
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.ip}, {Type: corev1.NodeHostName, Address: n.name}}
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now()}}
		if err := kube.Status().Update(ctx, node); err != nil {
			t.Fatal(err)
		}
	}

	up := startUp(t, t.TempDir(), "--kubeconfig", kubeconfig)
	if up.st.LocalCluster {
		t.Fatalf("moat up started a cluster of its own: %+v", up.st)
	}
	if !strings.Contains(up.out.String(), "derived moat lb's inventory from 2 Nodes") {
		t.Fatalf("moat up did not derive its inventory from the Nodes:\n%s", up.out)
	}

	port := upPort(t)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default", Annotations: map[string]string{
			"service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "instance",
		}},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: aws.String("service.k8s.aws/nlb"),
			Ports:             []corev1.ServicePort{{Name: "echo", Protocol: corev1.ProtocolTCP, Port: int32(port), TargetPort: intstr.FromInt32(8080), NodePort: nodePort}},
		},
	}
	if err := kube.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	var host string
	eventually(t, 2*time.Minute, "the Service gets a load balancer", func() error {
		if err := kube.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			return err
		}
		if len(svc.Status.LoadBalancer.Ingress) == 0 || svc.Status.LoadBalancer.Ingress[0].Hostname == "" {
			return fmt.Errorf("no ingress hostname")
		}
		host = svc.Status.LoadBalancer.Ingress[0].Hostname
		return nil
	})

	// Both Nodes are targets: the kind one by the instance its InternalIP found, the AWS one by
	// the instance ID of its providerID; health checks from the host reach them.
	_, elbc := up.aws()
	eventually(t, 2*time.Minute, "both nodes healthy targets", func() error {
		lbs, err := elbc.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{})
		if err != nil || len(lbs.LoadBalancers) != 1 {
			return fmt.Errorf("load balancers: %v %d", err, len(lbs.LoadBalancers))
		}
		tgs, err := elbc.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{LoadBalancerArn: lbs.LoadBalancers[0].LoadBalancerArn})
		if err != nil || len(tgs.TargetGroups) != 1 {
			return fmt.Errorf("target groups: %v", err)
		}
		th, err := elbc.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: tgs.TargetGroups[0].TargetGroupArn})
		if err != nil {
			return err
		}
		var healthy []string
		for _, d := range th.TargetHealthDescriptions {
			if d.TargetHealth.State == "healthy" && aws.ToInt32(d.Target.Port) == nodePort {
				healthy = append(healthy, aws.ToString(d.Target.Id))
			}
		}
		if len(healthy) != 2 || !slices.Contains(healthy, "i-0e2e0000000000b0b") {
			return fmt.Errorf("healthy targets %v of %d", healthy, len(th.TargetHealthDescriptions))
		}
		return nil
	})

	// Each zone's address, on the host's loopback, reaches the node of its zone (cross-zone is
	// off), whose NodePort server sees the host's end of its network as the client.
	for _, n := range nodes {
		addrs := lookup(t, up.st.LB.DNS, n.zone+"."+host, dns.TypeA)
		if len(addrs) != 1 || !net.ParseIP(addrs[0]).IsLoopback() {
			t.Fatalf("%s.%s resolves to %v, want one loopback address", n.zone, host, addrs)
		}
		addr := net.JoinHostPort(addrs[0], fmt.Sprint(port))
		want := fmt.Sprintf("hello from %s:%d, you are %s:", n.ip, nodePort, n.hostEnd)
		eventually(t, 30*time.Second, "traffic through "+addr+" to "+n.name, func() error {
			greeting, err := greet(addr)
			if err != nil || !strings.HasPrefix(greeting, want) {
				return fmt.Errorf("%q %v, want %q…", greeting, err, want)
			}
			return nil
		})
	}
}

// greet connects to addr and reads an echoserver's greeting.
func greet(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	return bufio.NewReader(c).ReadString('\n')
}
