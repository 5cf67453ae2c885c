package node

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/lbtest"
	"github.com/moatlb/moat/internal/secgroup"
	"github.com/moatlb/moat/internal/sgresolve"
)

// inventory: node-a and node-b carry the nodes' group; m1 and m2 carry the peers' group; an
// office prefix list.
const inventory = `
vpcs:
  - {name: v, cidr: 198.18.0.0/16, default: true}
subnets:
  - {name: a, vpc: v, zone: a, cidr: 198.18.1.0/24, tags: {kubernetes.io/role/internal-elb: "1"}}
  - {name: b, vpc: v, zone: b, cidr: 198.18.2.0/24, tags: {kubernetes.io/role/internal-elb: "1"}}
securityGroups:
  - {name: nodes, vpc: v, description: nodes}
  - {name: peers, vpc: v, description: peers}
instances:
  - {name: node-a, id: i-0000000000000000a, subnet: a, privateIp: 198.18.1.10, securityGroups: [nodes]}
  - {name: node-b, id: i-0000000000000000b, subnet: b, privateIp: 198.18.2.10, securityGroups: [nodes]}
  - {name: m1, subnet: a, privateIp: 198.18.1.11, securityGroups: [peers]}
  - {name: m2, subnet: a, privateIp: 198.18.1.12, securityGroups: [peers]}
prefixLists:
  - {name: office, maxEntries: 5, entries: [{cidr: 198.18.0.4/31}, {cidr: 198.18.0.16/28}]}
`

const nodeA = "i-0000000000000000a"

type world struct {
	env   *lbtest.Env
	nodes string // the nodes' group ID
}

func startWorld(t *testing.T) world {
	t.Helper()
	inv, err := cloud.ParseInventory([]byte(inventory))
	if err != nil {
		t.Fatal(err)
	}
	w := world{env: lbtest.Start(t, lbtest.WithInventory(inv), lbtest.WithMaxAttempts(1))}
	w.nodes = w.groupID(t, "nodes")
	return w
}

func (w world) groupID(t *testing.T, name string) string {
	t.Helper()
	out, err := w.env.EC2.DescribeSecurityGroups(context.Background(), &ec2.DescribeSecurityGroupsInput{
		Filters: []ec2types.Filter{{Name: aws.String("group-name"), Values: []string{name}}}})
	if err != nil || len(out.SecurityGroups) != 1 {
		t.Fatalf("group %s: %v", name, err)
	}
	return aws.ToString(out.SecurityGroups[0].GroupId)
}

func (w world) authorize(t *testing.T, group string, perms ...ec2types.IpPermission) {
	t.Helper()
	if _, err := w.env.EC2.AuthorizeSecurityGroupIngress(context.Background(), &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(group), IpPermissions: perms}); err != nil {
		t.Fatal(err)
	}
}

func tcp(from, to int32) ec2types.IpPermission {
	return ec2types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(from), ToPort: aws.Int32(to)}
}

// populate gives the nodes' group a rule of every kind and a load balancer carrying a group the
// nodes' group references.
func (w world) populate(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	peers, pl := w.groupID(t, "peers"), ""
	lists, err := w.env.EC2.DescribeManagedPrefixLists(ctx, &ec2.DescribeManagedPrefixListsInput{})
	if err != nil || len(lists.PrefixLists) != 1 {
		t.Fatalf("prefix lists: %v", err)
	}
	pl = aws.ToString(lists.PrefixLists[0].PrefixListId)
	front, err := w.env.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("front"), Description: aws.String("front")})
	if err != nil {
		t.Fatal(err)
	}
	cidr, ref, list, icmp := tcp(22, 22), tcp(30000, 32767), tcp(443, 443), ec2types.IpPermission{IpProtocol: aws.String("icmp"), FromPort: aws.Int32(8), ToPort: aws.Int32(-1)}
	cidr.IpRanges = []ec2types.IpRange{{CidrIp: aws.String("198.18.0.2/32")}}
	cidr.Ipv6Ranges = []ec2types.Ipv6Range{{CidrIpv6: aws.String("2001:db8::/64")}}
	ref.UserIdGroupPairs = []ec2types.UserIdGroupPair{{GroupId: front.GroupId}, {GroupId: aws.String(peers)}}
	list.PrefixListIds = []ec2types.PrefixListId{{PrefixListId: aws.String(pl)}}
	icmp.IpRanges = []ec2types.IpRange{{CidrIp: aws.String("198.18.0.0/24")}}
	w.authorize(t, w.nodes, cidr, ref, list, icmp)
	all := ec2types.IpPermission{IpProtocol: aws.String("-1"), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}
	if _, err := w.env.EC2.RevokeSecurityGroupEgress(ctx, &ec2.RevokeSecurityGroupEgressInput{GroupId: aws.String(w.nodes), IpPermissions: []ec2types.IpPermission{all}}); err != nil {
		t.Fatal(err)
	}
	udp := ec2types.IpPermission{IpProtocol: aws.String("udp"), FromPort: aws.Int32(53), ToPort: aws.Int32(53), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("198.18.0.53/32")}}}
	if _, err := w.env.EC2.AuthorizeSecurityGroupEgress(ctx, &ec2.AuthorizeSecurityGroupEgressInput{GroupId: aws.String(w.nodes), IpPermissions: []ec2types.IpPermission{udp}}); err != nil {
		t.Fatal(err)
	}
	subnets, err := w.env.EC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range subnets.Subnets {
		ids = append(ids, aws.ToString(s.SubnetId))
	}
	if _, err := w.env.ELB.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("web"), Type: elbtypes.LoadBalancerTypeEnumNetwork,
		Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: ids, SecurityGroups: []string{aws.ToString(front.GroupId)}}); err != nil {
		t.Fatal(err)
	}
}

// canonical sorts each rule's sources, so that two programs that admit the same are equal
// whatever order their answers listed members in.
func canonical(p firewall.Program) firewall.Program {
	for _, ifc := range p.Interfaces {
		for _, rules := range [][]secgroup.Rule{ifc.Inbound, ifc.Outbound} {
			for _, r := range rules {
				slices.SortFunc(r.Sources, netip.Prefix.Compare)
			}
		}
	}
	return p
}

// TestReadMatchesStore: what moat node reads through the API, with the read-only key, resolves
// to the very program moat lb builds from its store for the same instance — every kind of peer
// (CIDRs of both families, groups carried by instances and by a load balancer, a prefix list,
// ICMP, outbound rules).
func TestReadMatchesStore(t *testing.T) {
	w := startWorld(t)
	w.populate(t)
	before := w.env.Calls(t)
	r := newReader(w.env.ReadOnlyConfig)
	protect := func(eni cloud.NetworkInterface, _ netip.Addr) bool { return eni.InstanceID == nodeA }
	st, err := r.read(context.Background(), protect)
	if err != nil {
		t.Fatal(err)
	}
	got := canonical(sgresolve.Firewall(st, sgresolve.New(st), firewall.Enforce, protect))
	full, err := w.env.Cloud.State()
	if err != nil {
		t.Fatal(err)
	}
	want := canonical(sgresolve.Firewall(full, sgresolve.New(full), firewall.Enforce, protect))
	if len(want.Interfaces) != 1 || len(want.Interfaces[0].Inbound) != 6 || len(want.Interfaces[0].Outbound) != 1 {
		t.Fatalf("the store's program is not the one this test sets up: %+v", want)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("from the API:\n%+v\nfrom the store:\n%+v", got, want)
	}
	calls := w.env.Calls(t).Since(before)
	for _, action := range []string{"DescribeNetworkInterfaces", "DescribeSecurityGroups", "DescribeManagedPrefixLists", "GetManagedPrefixListEntries"} {
		if calls.Count(action) != 1 {
			t.Errorf("%d %s calls in one reading, want 1 (calls: %v)", calls.Count(action), action, calls)
		}
	}
	if n := calls.Mutating().Total(); n != 0 {
		t.Errorf("%d mutating calls: %v", n, calls)
	}
}

// programs records what the agent applies, in place of the kernel.
type programs struct {
	mu  sync.Mutex
	got []firewall.Program
}

func (p *programs) Apply(prog firewall.Program) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, prog)
	return uint64(len(p.got))
}

func (p *programs) Status() error { return nil }

func (p *programs) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.got)
}

func (p *programs) last() firewall.Program {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got[len(p.got)-1]
}

type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) lines(level string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		if strings.Contains(l, "level="+level) {
			out = append(out, l)
		}
	}
	return out
}

// credentials writes a credentials file with one profile, node.
func credentials(t *testing.T, path, key, secret string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "[node]\naws_access_key_id = %s\naws_secret_access_key = %s\n", key, secret), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func newTestAgent(t *testing.T, endpoint, creds string) (*agent, *programs, *logBuffer, *prometheus.Registry) {
	t.Helper()
	logs := &logBuffer{}
	reg := prometheus.NewRegistry()
	cfg := Config{Endpoint: endpoint, Region: lbtest.Region, Profile: "node", CredentialsFile: creds, InstanceIDs: []string{nodeA},
		Mode: firewall.Enforce, PollInterval: DefaultPollInterval, DataDir: t.TempDir()}
	a := newAgent(cfg, slog.New(slog.NewTextHandler(logs, nil)), reg)
	fw := &programs{}
	a.fw = fw
	return a, fw, logs, reg
}

// The agent applies a program after a whole reading, and again only when a rule changed.
func TestAgentAppliesChanges(t *testing.T) {
	w := startWorld(t)
	creds := filepath.Join(t.TempDir(), "credentials")
	credentials(t, creds, lbtest.ReadOnlyAccessKey, lbtest.ReadOnlySecretKey)
	a, fw, logs, reg := newTestAgent(t, w.env.URL, creds)
	ctx := context.Background()
	a.poll(ctx)
	if fw.count() != 1 {
		t.Fatalf("%d programs after the first poll, want 1", fw.count())
	}
	a.poll(ctx)
	if infos := logs.lines("INFO"); len(infos) != 1 || !strings.Contains(infos[0], "enforcing instance security groups") {
		t.Errorf("info lines %q, want one saying what is enforced", infos)
	}
	p := fw.last()
	if !p.SkipLoopback || p.Mode != firewall.Enforce || len(p.Interfaces) != 1 || p.Interfaces[0].Instance != nodeA || len(p.Interfaces[0].Inbound) != 0 {
		t.Fatalf("first program %+v, want node-a with no inbound rule, loopback skipped", p)
	}
	if fw.count() != 1 {
		t.Errorf("a poll that found no change applied a program")
	}
	perm := tcp(8080, 8080)
	perm.IpRanges = []ec2types.IpRange{{CidrIp: aws.String("198.18.0.2/32")}}
	w.authorize(t, w.nodes, perm)
	a.poll(ctx)
	if fw.count() != 2 || len(fw.last().Interfaces[0].Inbound) != 1 {
		t.Errorf("after an authorize: %d programs, last %+v", fw.count(), fw.last())
	}
	if v := testutil.ToFloat64(a.apiUp); v != 1 {
		t.Errorf("moat_node_api_up %v, want 1", v)
	}
	if v := testutil.ToFloat64(a.lastSync); v == 0 {
		t.Error("moat_node_last_sync_timestamp_seconds not set")
	}
	if n, err := testutil.GatherAndCount(reg, "moat_node_interfaces"); err != nil || n != 1 || testutil.ToFloat64(a.interfaces) != 1 {
		t.Errorf("moat_node_interfaces: %v %v", n, err)
	}
}

// A key moat lb does not know applies nothing, says so in one line however many polls fail, and a fixed credentials file
// is read at the next poll, without a restart.
func TestAgentBadCredentials(t *testing.T) {
	w := startWorld(t)
	creds := filepath.Join(t.TempDir(), "credentials")
	credentials(t, creds, "AKIAUNKNOWNKEY000000", "wrong")
	a, fw, logs, _ := newTestAgent(t, w.env.URL, creds)
	ctx := context.Background()
	for range 5 {
		a.poll(ctx)
	}
	if fw.count() != 0 {
		t.Fatalf("applied %d programs with a refused key", fw.count())
	}
	errs := logs.lines("ERROR")
	if len(errs) != 1 || !strings.Contains(errs[0], "moat lb refused the agent's key") || !strings.Contains(errs[0], "AuthFailure") || !strings.Contains(errs[0], "none read yet") {
		t.Errorf("error lines %q, want one naming the refused key", errs)
	}
	if v := testutil.ToFloat64(a.failures.WithLabelValues("credentials")); v != 5 {
		t.Errorf("credential failures %v, want 5", v)
	}
	if v := testutil.ToFloat64(a.apiUp); v != 0 {
		t.Errorf("moat_node_api_up %v, want 0", v)
	}
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, nil)
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d with a refused key", rec.Code)
	}
	credentials(t, creds, lbtest.ReadOnlyAccessKey, lbtest.ReadOnlySecretKey)
	a.poll(ctx)
	if fw.count() != 1 {
		t.Fatal("the fixed credentials file was not read")
	}
	if infos := logs.lines("INFO"); !slices.ContainsFunc(infos, func(l string) bool { return strings.Contains(l, "moat lb answers again") }) {
		t.Errorf("no line says moat lb answers again: %q", infos)
	}
	rec = httptest.NewRecorder()
	a.ServeHTTP(rec, nil)
	if rec.Code != http.StatusOK {
		t.Errorf("/readyz %d after a good read", rec.Code)
	}
}

// When moat lb becomes unreachable the agent applies nothing (the kernel keeps the last
// rules), says so once, and picks up what changed meanwhile when it answers again.
func TestAgentUnreachable(t *testing.T) {
	w := startWorld(t)
	target, err := url.Parse(w.env.URL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	proxy := &http.Server{Handler: httputil.NewSingleHostReverseProxy(target)}
	go proxy.Serve(ln)
	creds := filepath.Join(t.TempDir(), "credentials")
	credentials(t, creds, lbtest.ReadOnlyAccessKey, lbtest.ReadOnlySecretKey)
	a, fw, logs, _ := newTestAgent(t, "http://"+addr, creds)
	ctx := context.Background()
	a.poll(ctx)
	if fw.count() != 1 {
		t.Fatal("no program through the proxy")
	}
	proxy.Close()
	for range 5 {
		a.poll(ctx)
	}
	if fw.count() != 1 {
		t.Errorf("applied a program while moat lb was unreachable")
	}
	errs := logs.lines("ERROR")
	if len(errs) != 1 || !strings.Contains(errs[0], "unreachable") || !strings.Contains(errs[0], "the kernel keeps the rules it has") || !strings.Contains(errs[0], "the last ones read") {
		t.Errorf("error lines %q, want one saying moat lb is unreachable and the rules are kept", errs)
	}
	if v := testutil.ToFloat64(a.failures.WithLabelValues("unreachable")); v != 5 {
		t.Errorf("unreachable failures %v, want 5", v)
	}
	perm := tcp(9000, 9000)
	perm.IpRanges = []ec2types.IpRange{{CidrIp: aws.String("198.18.0.9/32")}}
	w.authorize(t, w.nodes, perm)
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the proxy's port was taken meanwhile: %v", err)
	}
	proxy = &http.Server{Handler: httputil.NewSingleHostReverseProxy(target)}
	go proxy.Serve(ln)
	defer proxy.Close()
	a.poll(ctx)
	if fw.count() != 2 || len(fw.last().Interfaces[0].Inbound) != 1 {
		t.Errorf("after moat lb came back: %d programs", fw.count())
	}
}

// Bad flags are refused at once, naming the flag.
func TestValidate(t *testing.T) {
	good := Config{Mode: firewall.Audit, PollInterval: DefaultPollInterval, DataDir: "/tmp/x", Endpoint: "http://10.0.0.5:7080", InstanceIDs: []string{nodeA, "i-0123abcd"}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for flag, change := range map[string]func(*Config){
		"--instance-sg-mode": func(c *Config) { c.Mode = "on" },
		"--poll-interval":    func(c *Config) { c.PollInterval = 0 },
		"--endpoint-url":     func(c *Config) { c.Endpoint = "10.0.0.5:7080" },
		"--instance-id":      func(c *Config) { c.InstanceIDs = []string{"node-a"} },
		"--data-dir":         func(c *Config) { c.DataDir = "" },
	} {
		c := good
		change(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%s: %v, want an error naming it", flag, err)
		}
	}
}

// An --instance-id moat lb does not know is said once, with the instance, however many polls.
func TestAgentWarnsUnknownInstance(t *testing.T) {
	w := startWorld(t)
	creds := filepath.Join(t.TempDir(), "credentials")
	credentials(t, creds, lbtest.ReadOnlyAccessKey, lbtest.ReadOnlySecretKey)
	a, fw, logs, _ := newTestAgent(t, w.env.URL, creds)
	a.cfg.InstanceIDs = []string{nodeA, "i-0123456789abcdef0"}
	for range 3 {
		a.poll(context.Background())
	}
	if warns := logs.lines("WARN"); len(warns) != 1 || !strings.Contains(warns[0], "i-0123456789abcdef0") {
		t.Errorf("warnings %q, want one naming the unknown instance", warns)
	}
	if fw.count() != 1 || len(fw.last().Interfaces) != 1 {
		t.Errorf("node-a, which moat lb knows, is not protected: %d programs", fw.count())
	}
}
