package up

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/store"
)

// testNode is a Node as a kubelet registers it: providerID, zone label ("" for none) and
// InternalIPs.
func testNode(name, providerID, zone string, ips ...string) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}}}
	n.Spec.ProviderID = providerID
	if zone != "" {
		n.Labels[zoneLabel] = zone
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}}
	for _, ip := range ips {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	return n
}

// derivedIDPattern is the form of a hashed instance ID; summaries show such IDs as "derived".
var derivedIDPattern = regexp.MustCompile(`^i-[0-9a-f]{17}$`)

// summary is an inventory in a few lines: the VPC's blocks, every subnet (name zone cidr
// [lb]) and every instance (name id subnet ip).
func summary(inv cloud.Inventory) []string {
	var out []string
	for _, v := range inv.VPCs {
		out = append(out, "vpc "+strings.Join(append([]string{v.CIDR}, v.SecondaryCIDRs...), " "))
	}
	for _, s := range inv.Subnets {
		line := fmt.Sprintf("subnet %s %s %s", s.Name, s.Zone, s.CIDR)
		if s.Tags["kubernetes.io/role/internal-elb"] == "1" {
			line += " lb"
		}
		out = append(out, line)
	}
	for _, in := range inv.Instances {
		id := in.ID
		if derivedIDPattern.MatchString(id) && id == nodeInstanceID(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: in.Name}}) {
			id = "derived"
		}
		out = append(out, fmt.Sprintf("instance %s %s %s %s", in.Name, id, in.Subnet, in.PrivateIP))
	}
	return out
}

func TestNodeInventory(t *testing.T) {
	for _, tc := range []struct {
		name    string
		nodes   []corev1.Node
		want    []string
		skipped []string // "node: reason fragment"
		err     string
	}{{
		name: "AWS nodes in two zones",
		nodes: []corev1.Node{
			testNode("ip-10-0-2-7", "aws:///us-east-1b/i-0bbbbbbbbbbbbbbbb", "us-east-1b", "10.0.2.7"),
			testNode("ip-10-0-1-5", "aws:///us-east-1a/i-0aaaaaaaaaaaaaaaa", "us-east-1a", "10.0.1.5"),
		},
		want: []string{
			"vpc 10.0.0.0/16 127.0.0.0/8",
			"subnet moat-a us-east-1a 127.1.0.0/16 lb",
			"subnet moat-nodes-a us-east-1a 10.0.1.0/24",
			"subnet moat-b us-east-1b 127.2.0.0/16 lb",
			"subnet moat-nodes-b us-east-1b 10.0.2.0/24",
			"instance ip-10-0-1-5 i-0aaaaaaaaaaaaaaaa moat-nodes-a 10.0.1.5",
			"instance ip-10-0-2-7 i-0bbbbbbbbbbbbbbbb moat-nodes-b 10.0.2.7",
		},
	}, {
		name: "kind: no zones, kind providerIDs, dualstack addresses",
		nodes: []corev1.Node{
			testNode("kind-worker", "kind://docker/kind/kind-worker", "", "fc00:f853:ccd:e793::3", "172.18.0.3"),
			testNode("kind-control-plane", "kind://docker/kind/kind-control-plane", "", "172.18.0.2"),
			testNode("kind-worker2", "kind://docker/kind/kind-worker2", "", "172.18.1.9"),
		},
		want: []string{
			"vpc 172.18.0.0/16 127.0.0.0/8",
			"subnet moat-a us-east-1a 127.1.0.0/16 lb",
			"subnet moat-nodes-a us-east-1a 172.18.0.0/23",
			"instance kind-control-plane derived moat-nodes-a 172.18.0.2",
			"instance kind-worker derived moat-nodes-a 172.18.0.3",
			"instance kind-worker2 derived moat-nodes-a 172.18.1.9",
		},
	}, {
		name: "zones of another region on one network: renamed, a subnet per node",
		nodes: []corev1.Node{
			testNode("n1", "", "eu-west-1a", "172.19.0.2"),
			testNode("n2", "", "eu-west-1b", "172.19.0.3"),
			testNode("n3", "", "eu-west-1a", "172.19.0.4"),
			testNode("n4", "aws://eu-west-1a/i-0ccccccccccccccc1", "", "172.19.0.5"), // the old form is not AWS's providerID
		},
		want: []string{
			"vpc 172.19.0.0/16 127.0.0.0/8",
			"subnet moat-a us-east-1a 127.1.0.0/16 lb",
			"subnet moat-node-n4 us-east-1a 172.19.0.5/32",
			"subnet moat-b us-east-1b 127.2.0.0/16 lb",
			"subnet moat-node-n1 us-east-1b 172.19.0.2/32",
			"subnet moat-node-n3 us-east-1b 172.19.0.4/32",
			"subnet moat-c us-east-1c 127.3.0.0/16 lb",
			"subnet moat-node-n2 us-east-1c 172.19.0.3/32",
			"instance n4 derived moat-node-n4 172.19.0.5",
			"instance n1 derived moat-node-n1 172.19.0.2",
			"instance n3 derived moat-node-n3 172.19.0.4",
			"instance n2 derived moat-node-n2 172.19.0.3",
		},
	}, {
		name: "one zone over two /16s, a labelled node beside unlabelled ones",
		nodes: []corev1.Node{
			testNode("a", "", "", "10.0.1.5"),
			testNode("b", "", "us-east-1a", "10.1.1.5"),
			testNode("c", "", "us-east-1c", "192.168.7.1"),
		},
		want: []string{
			"vpc 10.0.0.0/16 10.1.0.0/16 192.168.0.0/16 127.0.0.0/8",
			"subnet moat-a us-east-1a 127.1.0.0/16 lb",
			"subnet moat-node-a us-east-1a 10.0.1.5/32",
			"subnet moat-node-b us-east-1a 10.1.1.5/32",
			"subnet moat-c us-east-1c 127.3.0.0/16 lb",
			"subnet moat-nodes-c us-east-1c 192.168.7.0/24",
			"instance a derived moat-node-a 10.0.1.5",
			"instance b derived moat-node-b 10.1.1.5",
			"instance c derived moat-nodes-c 192.168.7.1",
		},
	}, {
		name: "an IPv6-only node and one without addresses are skipped",
		nodes: []corev1.Node{
			testNode("v6", "", "", "fd00::5"),
			testNode("bare", "", ""),
			testNode("v4", "", "", "10.77.1.2"),
		},
		want: []string{
			"vpc 10.77.0.0/16 127.0.0.0/8",
			"subnet moat-a us-east-1a 127.1.0.0/16 lb",
			"subnet moat-nodes-a us-east-1a 10.77.1.0/24",
			"instance v4 derived moat-nodes-a 10.77.1.2",
		},
		skipped: []string{"bare: no InternalIP", "v6: no IPv4 InternalIP (has fd00::5)"},
	}, {
		name:    "no node usable",
		nodes:   []corev1.Node{testNode("v6", "", "", "fd00::5"), testNode("lo", "", "", "127.0.0.1")},
		skipped: []string{"lo: on loopback", "v6: no IPv4 InternalIP"},
		err:     "no Node can be an instance of moat lb (lo: its InternalIP 127.0.0.1 is on loopback",
	}, {
		name: "no nodes",
		err:  "the cluster has no Nodes",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			inv, skipped, err := nodeInventory(tc.nodes, "us-east-1")
			if len(skipped) != len(tc.skipped) {
				t.Errorf("skipped %+v, want %q", skipped, tc.skipped)
			}
			for i := range min(len(skipped), len(tc.skipped)) {
				name, reason, _ := strings.Cut(tc.skipped[i], ": ")
				if skipped[i].name != name || !strings.Contains(skipped[i].reason, reason) {
					t.Errorf("skipped %s (%s), want %s", skipped[i].name, skipped[i].reason, tc.skipped[i])
				}
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(inv); !slices.Equal(got, tc.want) {
				t.Errorf("inventory:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
			applyInventoryFile(t, inv)
		})
	}
}

// applyInventoryFile writes the inventory as moat up does and has a moat lb cloud read and apply
// it, so that every derived inventory is one moat lb takes.
func applyInventoryFile(t *testing.T, inv cloud.Inventory) {
	t.Helper()
	data, err := yaml.Marshal(inv)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := cloud.ParseInventory(data)
	if err != nil {
		t.Fatalf("moat lb cannot read the derived inventory: %v\n%s", err, data)
	}
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := cloud.New(st, cloud.Config{Region: "us-east-1", AccountID: "000000000000"}).ApplyInventory(parsed); err != nil {
		t.Fatalf("moat lb refuses the derived inventory: %v\n%s", err, data)
	}
}

// Derived instance IDs have AWS's format, differ between nodes and stay the same across runs.
func TestNodeInstanceIDStable(t *testing.T) {
	a := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "kind-worker"}}
	b := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "kind-worker2"}}
	ida, idb := nodeInstanceID(a), nodeInstanceID(b)
	if !derivedIDPattern.MatchString(ida) || !derivedIDPattern.MatchString(idb) || ida == idb || nodeInstanceID(a.DeepCopy()) != ida {
		t.Errorf("IDs %s, %s", ida, idb)
	}
}
