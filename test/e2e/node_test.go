//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"gopkg.in/ini.v1"
)

// nodeProcess is a running `moat node` child.
type nodeProcess struct {
	cmd    *exec.Cmd
	ns     string
	stderr *syncBuffer
	done   chan struct{}
}

// readOnlyCredentials adds a read-only profile "node" to moat lb's credentials file (as an
// operator would, with moat lb credentials add-read-only) and returns a credentials file for
// the agent holding that profile alone.
func (w *sgWorld) readOnlyCredentials(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command(moatBin, "lb", "credentials", "add-read-only", "node", "--data-dir", w.p.dataDir).CombinedOutput(); err != nil {
		t.Fatalf("add-read-only: %v\n%s", err, out)
	}
	f, err := ini.Load(w.p.Creds)
	if err != nil {
		t.Fatal(err)
	}
	s := f.Section("node")
	path := filepath.Join(t.TempDir(), "node-credentials")
	writeCredentials(t, path, s.Key("aws_access_key_id").String(), s.Key("aws_secret_access_key").String())
	return path
}

// writeCredentials replaces path with a credentials file holding profile "node".
func writeCredentials(t *testing.T, path, key, secret string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "[node]\naws_access_key_id = %s\naws_secret_access_key = %s\n", key, secret), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startNode starts moat node, enforcing, on node-a's host; later args override earlier ones.
func (w *sgWorld) startNode(t *testing.T, dataDir, creds string, args ...string) *nodeProcess {
	t.Helper()
	ns := w.ns[w.nodeA]
	argv := append([]string{"netns", "exec", ns, moatBin, "node", "--endpoint-url", w.p.API, "--credentials-file", creds, "--profile", "node",
		"--instance-sg-mode=enforce", "--data-dir", dataDir, "--metrics-addr", "127.0.0.1:0"}, args...)
	n := &nodeProcess{cmd: exec.Command("ip", argv...), ns: ns, stderr: &syncBuffer{}, done: make(chan struct{})}
	n.cmd.Stderr = n.stderr
	n.cmd.SysProcAttr = dieWithTest()
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = n.cmd.Wait(); close(n.done) }()
	t.Cleanup(n.kill)
	return n
}

func (n *nodeProcess) kill() {
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
}

func (n *nodeProcess) exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

func (n *nodeProcess) waitLog(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(n.stderr.String(), s) {
		if n.exited() || time.Now().After(deadline) {
			t.Fatalf("moat node did not log %q:\n%s", s, n.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var metricsLine = regexp.MustCompile(`metrics on (http://\S+/metrics)`)

// metric sums a metric of the agent's /metrics, read from inside its namespace.
func (n *nodeProcess) metric(t *testing.T, name string) float64 {
	t.Helper()
	n.waitLog(t, "metrics on")
	url := metricsLine.FindStringSubmatch(n.stderr.String())[1]
	out, err := exec.Command("ip", "netns", "exec", n.ns, echoBin, "get", url).Output()
	if err != nil {
		t.Fatalf("get %s: %v\n%s", url, err, out)
	}
	return metricSum(t, strings.NewReader(string(out)), name)
}

// TestNodeAgentFaults drives moat node through what goes wrong: a wrong endpoint and a refused
// key at start (a clear line, retries, nothing half-programmed), a second agent, a group of 60
// rules, a referenced group deleted while in use, and a kill -9 followed by a start that
// replaces the rules in one transaction — through a table whose revoked outbound rule would
// cut the agent off from moat lb, were its own connection not exempt.
func TestNodeAgentFaults(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces and nftables need root")
	}
	w := routedWorld(t, fmt.Sprintf("%d%d", os.Getpid()%10000, 4), 4, "")
	ec2c, _ := w.p.clients(t)
	ctx := context.Background()
	nodesGroup, peersGroup := groupID(t, ec2c, "nodes"), groupID(t, ec2c, "peers")
	nodePort := w.nodeA + ":30080"
	creds := w.readOnlyCredentials(t)
	dataDir := filepath.Join(t.TempDir(), "node")

	// A wrong endpoint: one clear line, retries, and nothing programmed (client B, which no
	// rule will ever admit, still gets in: there is no table).
	// (the router's address on node-a's link, where nothing listens on port 1)
	wrong := w.startNode(t, dataDir, creds, "--endpoint-url", "http://198.18.10.13:1")
	wrong.waitLog(t, "moat lb's API is unreachable")
	waitFor(t, 10*time.Second, "the agent to retry", func() bool { return wrong.metric(t, `moat_node_api_failures_total{reason="unreachable"}`) >= 3 })
	if n := strings.Count(wrong.stderr.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d error lines for one unreachable endpoint, want 1:\n%s", n, wrong.stderr)
	}
	if !strings.Contains(wrong.stderr.String(), "none read yet") {
		t.Errorf("the error line does not say that nothing is programmed yet:\n%s", wrong.stderr)
	}
	if !w.reachable(nodePort, w.clientB) {
		t.Error("an agent that never read moat lb programmed something")
	}
	if v := wrong.metric(t, "moat_node_api_up"); v != 0 {
		t.Errorf("moat_node_api_up %v with a wrong endpoint", v)
	}
	wrong.kill()

	// A key moat lb refuses: the same, until the credentials file is fixed, without a restart.
	good, err := os.ReadFile(creds)
	if err != nil {
		t.Fatal(err)
	}
	writeCredentials(t, creds, "AKIAMOATNODEUNKNOWN0", "not-the-secret")
	agent := w.startNode(t, dataDir, creds)
	agent.waitLog(t, "moat lb refused the agent's key")
	if !strings.Contains(agent.stderr.String(), "AuthFailure") {
		t.Errorf("the refusal does not name AWS's error code:\n%s", agent.stderr)
	}
	waitFor(t, 10*time.Second, "the agent to retry", func() bool { return agent.metric(t, `moat_node_api_failures_total{reason="credentials"}`) >= 3 })
	if !w.reachable(nodePort, w.clientB) {
		t.Error("an agent whose key is refused programmed something")
	}
	if err := os.WriteFile(creds+".tmp", good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(creds+".tmp", creds); err != nil {
		t.Fatal(err)
	}
	agent.waitLog(t, "moat lb answers again")
	waitFor(t, 5*time.Second, "the agent to enforce", func() bool { return !w.reachable(nodePort, w.clientB) })

	// One agent per data dir.
	second := w.startNode(t, dataDir, creds)
	select {
	case <-second.done:
	case <-time.After(15 * time.Second):
		t.Fatal("a second agent on the same data dir kept running")
	}
	if !strings.Contains(second.stderr.String(), "in use by another moat node") {
		t.Errorf("second agent: %s", second.stderr)
	}

	authorize := func(perms ...ec2types.IpPermission) error {
		_, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: nodesGroup, IpPermissions: perms})
		return err
	}
	revoke := func(perms ...ec2types.IpPermission) {
		t.Helper()
		if _, err := ec2c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: nodesGroup, IpPermissions: perms}); err != nil {
			t.Fatal(err)
		}
	}
	nodePortFrom := func(ranges ...string) ec2types.IpPermission {
		p := ec2types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(30080), ToPort: aws.Int32(30080)}
		for _, r := range ranges {
			p.IpRanges = append(p.IpRanges, ec2types.IpRange{CidrIp: aws.String(r)})
		}
		return p
	}
	apiCode := func(err error) string {
		var apiErr smithy.APIError
		if errors.As(err, &apiErr) {
			return apiErr.ErrorCode()
		}
		return fmt.Sprint(err)
	}

	// A group with 60 rules (AWS's quota): the last one admits client A; a 61st is refused.
	var sixty []string
	for i := range 59 {
		sixty = append(sixty, fmt.Sprintf("198.18.0.%d/32", 100+i))
	}
	sixty = append(sixty, w.clientA+"/32")
	if err := authorize(nodePortFrom(sixty...)); err != nil {
		t.Fatal(err)
	}
	if err := authorize(nodePortFrom("198.18.0.250/32")); apiCode(err) != "RulesPerSecurityGroupLimitExceeded" {
		t.Errorf("a 61st rule: %v, want RulesPerSecurityGroupLimitExceeded", err)
	}
	waitFor(t, 5*time.Second, "the 60th rule to admit client A", func() bool { return w.reachable(nodePort, w.clientA) })
	if w.reachable(nodePort, w.clientB) {
		t.Error("client B got in through a group of 60 rules none of which names it")
	}
	revoke(nodePortFrom(sixty...))

	// A referenced group cannot be deleted while a rule references it (AWS's
	// DependencyViolation), and the agent goes on enforcing the reference.
	temp, err := ec2c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("temp"), Description: aws.String("referenced")})
	if err != nil {
		t.Fatal(err)
	}
	byGroup := func(g *string) ec2types.IpPermission {
		return ec2types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(30080), ToPort: aws.Int32(30080),
			UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: g}}}
	}
	if err := authorize(byGroup(temp.GroupId), byGroup(peersGroup)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the peers' rule to apply", func() bool { return w.reachable(nodePort, w.m1) })
	for _, g := range []*string{temp.GroupId, peersGroup} {
		if _, err := ec2c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: g}); apiCode(err) != "DependencyViolation" {
			t.Errorf("deleting referenced group %s: %v, want DependencyViolation", *g, err)
		}
	}
	revoke(byGroup(temp.GroupId))
	if _, err := ec2c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: temp.GroupId}); err != nil {
		t.Errorf("deleting the group once no rule references it: %v", err)
	}
	if !w.reachable(nodePort, w.m1) || w.reachable(nodePort, w.stranger) {
		t.Error("the peers' rule stopped working when another referenced group went")
	}
	revoke(byGroup(peersGroup))

	// kill -9, then a start that replaces the rules in one transaction.
	if err := authorize(nodePortFrom(w.clientA + "/32")); err != nil {
		t.Fatal(err)
	}
	allOut := []ec2types.IpPermission{{IpProtocol: aws.String("-1"), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}
	if _, err := ec2c.RevokeSecurityGroupEgress(ctx, &ec2.RevokeSecurityGroupEgressInput{GroupId: nodesGroup, IpPermissions: allOut}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "client A's rule and the outbound revoke to apply", func() bool {
		return w.reachable(nodePort, w.clientA) && !w.reachable(w.away, w.nodeA)
	})
	agent.kill()
	if !w.reachable(nodePort, w.clientA) || w.reachable(nodePort, w.clientB) || w.reachable(w.away, w.nodeA) {
		t.Fatal("the rules did not outlive the killed agent")
	}
	// While no agent runs: the outbound rule comes back, client A's goes, m1 gets one.
	if _, err := ec2c.AuthorizeSecurityGroupEgress(ctx, &ec2.AuthorizeSecurityGroupEgressInput{GroupId: nodesGroup, IpPermissions: allOut}); err != nil {
		t.Fatal(err)
	}
	revoke(nodePortFrom(w.clientA + "/32"))
	if err := authorize(nodePortFrom(w.m1 + "/32")); err != nil {
		t.Fatal(err)
	}
	// Client B, whom no rule ever admitted, probes node-a all through the restart.
	var leaked atomic.Int32
	stop := make(chan struct{})
	var probing sync.WaitGroup
	probing.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if w.reachable(nodePort, w.clientB) {
				leaked.Add(1)
			}
		}
	})
	restarted := w.startNode(t, dataDir, creds)
	// The restarted agent reads moat lb from node-a's address through the old table, whose
	// outbound rule is revoked: only the exemption of its own connection lets it in.
	waitFor(t, 10*time.Second, "the restarted agent's rules", func() bool {
		return w.reachable(w.away, w.nodeA) && w.reachable(nodePort, w.m1) && !w.reachable(nodePort, w.clientA)
	})
	close(stop)
	probing.Wait()
	if n := leaked.Load(); n > 0 {
		t.Errorf("client B got in %d times while the agent restarted", n)
	}
	if strings.Contains(restarted.stderr.String(), "level=ERROR") {
		t.Errorf("the restarted agent logged errors:\n%s", restarted.stderr)
	}

	// A stopped agent leaves its rules; --instance-sg-mode=off removes them.
	_ = restarted.cmd.Process.Signal(syscall.SIGTERM)
	<-restarted.done
	if w.reachable(nodePort, w.clientB) {
		t.Error("node-a fell open when the agent stopped")
	}
	off := w.startNode(t, dataDir, creds, "--instance-sg-mode=off")
	off.waitLog(t, "its table removed")
	if !w.reachable(nodePort, w.clientB) {
		t.Error("--instance-sg-mode=off left rules in place")
	}
}
