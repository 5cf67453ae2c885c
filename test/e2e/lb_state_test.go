package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/moatlb/moat/internal/store"
)

// runLBRefused runs moat lb on dataDir, which must refuse to start: it returns what moat lb said.
func runLBRefused(t *testing.T, dataDir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args = append([]string{"lb", "--data-dir", dataDir, "--api-addr", "127.0.0.1:0", "--dns-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--fast-path", "off"}, args...)
	cmd := exec.CommandContext(ctx, moatBin, args...)
	cmd.SysProcAttr = dieWithTest()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("moat lb did not exit within 60s; it said:\n%s", out)
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("moat lb started on %s (%v); it said:\n%s", dataDir, err, out)
	}
	if s := string(out); strings.Contains(s, "panic") || strings.Contains(s, "goroutine ") {
		t.Errorf("moat lb crashed instead of refusing:\n%s", s)
	}
	return string(out)
}

func wantAll(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s does not say %q:\n%s", what, w, got)
		}
	}
}

func createGroup(t *testing.T, ec2c *ec2.Client, name, description string) string {
	t.Helper()
	out, err := ec2c.CreateSecurityGroup(context.Background(), &ec2.CreateSecurityGroupInput{GroupName: aws.String(name), Description: aws.String(description)})
	if err != nil {
		t.Fatal(err)
	}
	return *out.GroupId
}

func groupExists(t *testing.T, ec2c *ec2.Client, id string) bool {
	t.Helper()
	_, err := ec2c.DescribeSecurityGroups(context.Background(), &ec2.DescribeSecurityGroupsInput{GroupIds: []string{id}})
	if err != nil && !strings.Contains(err.Error(), "InvalidGroup.NotFound") {
		t.Fatal(err)
	}
	return err == nil
}

// TestLBRefusesEmptyStateNextToCredentials loses state.db (emptied, then removed) in a data dir
// that has served: moat lb refuses to start as if new, until --start-fresh says to.
func TestLBRefusesEmptyStateNextToCredentials(t *testing.T) {
	dataDir := t.TempDir()
	p := startLB(t, dataDir, "--fast-path", "off")
	ec2c, _ := p.clients(t)
	id := createGroup(t, ec2c, "kept", "state test")
	p.kill()

	state := filepath.Join(dataDir, "state.db")
	for _, loss := range []struct {
		name string
		do   func() error
	}{
		{"empty", func() error { return os.Truncate(state, 0) }},
		{"missing", func() error { return os.Remove(state) }},
	} {
		if err := loss.do(); err != nil {
			t.Fatal(err)
		}
		said := runLBRefused(t, dataDir)
		wantAll(t, "the refusal of an "+loss.name+" state file", said, state, "credentials", "--start-fresh", "moat lb backup")
		info, err := os.Stat(state)
		if loss.name == "empty" && (err != nil || info.Size() != 0) || loss.name == "missing" && err == nil {
			t.Errorf("refusing the %s state file changed it: %v, %v", loss.name, info, err)
		}
	}

	p = startLB(t, dataDir, "--fast-path", "off", "--start-fresh")
	ec2c, _ = p.clients(t) // the same credentials file
	if groupExists(t, ec2c, id) {
		t.Errorf("group %s exists after a fresh start", id)
	}
	createGroup(t, ec2c, "after-fresh-start", "state test")
}

// TestLBRefusesTruncatedState halves state.db: moat lb refuses it with what is wrong and how to
// restore, without a panic and without changing the file.
func TestLBRefusesTruncatedState(t *testing.T) {
	dataDir := t.TempDir()
	p := startLB(t, dataDir, "--fast-path", "off")
	ec2c, _ := p.clients(t)
	for i := range 30 {
		createGroup(t, ec2c, fmt.Sprintf("g%d", i), strings.Repeat("padding ", 30))
	}
	p.kill()

	// bbolt grows the file ahead of its pages, with zeros: cutting only those would lose nothing,
	// so this halves the part of the file that was written.
	state := filepath.Join(dataDir, "state.db")
	data, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	written := len(bytes.TrimRight(data, "\x00"))
	half := int64(written / 2)
	t.Logf("state.db: %d bytes, %d written; truncated to %d", len(data), written, half)
	if err := os.Truncate(state, half); err != nil {
		t.Fatal(err)
	}
	said := runLBRefused(t, dataDir)
	wantAll(t, "the refusal of a truncated state file", said, state, "truncated", "moat lb backup", "--start-fresh")
	if info, err := os.Stat(state); err != nil || info.Size() != half {
		t.Errorf("refusing the truncated file changed it: %v, %v", info, err)
	}
}

// TestLBRefusesFlippedRecordBytes inverts the bytes of a group's description inside state.db:
// moat lb refuses the file and names the damaged record.
func TestLBRefusesFlippedRecordBytes(t *testing.T) {
	dataDir := t.TempDir()
	p := startLB(t, dataDir, "--fast-path", "off")
	ec2c, _ := p.clients(t)
	marker := strings.Repeat("flipme", 33) // 198 bytes found nowhere else in the file
	id := createGroup(t, ec2c, "damaged", marker)
	createGroup(t, ec2c, "intact", "state test")
	p.kill()

	state := filepath.Join(dataDir, "state.db")
	data, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	copies := bytes.Count(data, []byte(marker))
	if copies == 0 {
		t.Fatal("the description is not in state.db: the test would damage nothing")
	}
	for off := bytes.Index(data, []byte(marker)); off >= 0; off = bytes.Index(data, []byte(marker)) {
		for i := off; i < off+len(marker); i++ {
			data[i] ^= 0xff
		}
	}
	if err := os.WriteFile(state, data, 0o600); err != nil {
		t.Fatal(err)
	}
	said := runLBRefused(t, dataDir)
	wantAll(t, "the refusal of a damaged record", said, state, "security-groups/"+id, "checksum mismatch", "moat lb backup")
	t.Logf("flipped %d bytes in %d copies of the record", copies*len(marker), copies)
}

// TestLBSecondProcessOnDataDirIsRefused starts a second moat lb on a data dir in use: it names
// the data dir as in use, and leaves the first one serving with its endpoints file.
func TestLBSecondProcessOnDataDirIsRefused(t *testing.T) {
	dataDir := t.TempDir()
	p := startLB(t, dataDir, "--fast-path", "off")
	start := time.Now()
	said := runLBRefused(t, dataDir)
	wantAll(t, "the second moat lb", said, "data dir "+dataDir+" is in use by another moat lb")
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the second moat lb took %v to give up", d)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "endpoints.json")); err != nil {
		t.Errorf("the first moat lb's endpoints file: %v", err)
	}
	ec2c, _ := p.clients(t)
	createGroup(t, ec2c, "still-serving", "state test")
}

// TestLBBackupWhileRunningRestores backs up a running moat lb while a client keeps writing, loses
// the state, and restores the backup: every resource acknowledged before the backup is back, and
// what was made after it is not (it is the backup that was restored).
func TestLBBackupWhileRunningRestores(t *testing.T) {
	dataDir := t.TempDir()
	p := startLB(t, dataDir, "--fast-path", "off")
	ec2c, elbc := p.clients(t)
	ctx := context.Background()
	vpc, subnetIDs := vpcSubnets(t, ec2c)

	var lbs, tgs, listeners, groups []string
	for i := range 3 {
		name := fmt.Sprintf("kept-%d", i)
		tg, err := elbc.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String(name), Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(8080), VpcId: vpc, TargetType: elbtypes.TargetTypeEnumIp})
		if err != nil {
			t.Fatal(err)
		}
		tgs = append(tgs, *tg.TargetGroups[0].TargetGroupArn)
		lb, err := elbc.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String(name), Type: elbtypes.LoadBalancerTypeEnumNetwork, Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: subnetIDs})
		if err != nil {
			t.Fatal(err)
		}
		lbs = append(lbs, *lb.LoadBalancers[0].LoadBalancerArn)
		l, err := elbc.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: lb.LoadBalancers[0].LoadBalancerArn, Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(int32(8000 + i)),
			DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: tg.TargetGroups[0].TargetGroupArn}}})
		if err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, *l.Listeners[0].ListenerArn)
	}
	perm := types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(443), ToPort: aws.Int32(443), IpRanges: []types.IpRange{{CidrIp: aws.String("10.0.0.0/8")}}}
	for i := range 10 {
		id := createGroup(t, ec2c, fmt.Sprintf("kept-%d", i), "backup test")
		if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(id), IpPermissions: []types.IpPermission{perm}}); err != nil {
			t.Fatal(err)
		}
		groups = append(groups, id)
	}

	// A client keeps writing while the backup is taken.
	writeCtx, stopWriting := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	written := 0
	go func() {
		defer wg.Done()
		for ; writeCtx.Err() == nil; written++ {
			if _, err := ec2c.CreateSecurityGroup(writeCtx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(fmt.Sprintf("during-%d", written)), Description: aws.String("backup test")}); err != nil {
				return
			}
		}
	}()
	backup := filepath.Join(t.TempDir(), "backup.db")
	out, err := exec.Command(moatBin, "lb", "backup", backup, "--data-dir", dataDir).CombinedOutput()
	stopWriting()
	wg.Wait()
	if err != nil {
		t.Fatalf("moat lb backup: %v\n%s", err, out)
	}
	wantAll(t, "moat lb backup", string(out), "from the running moat lb", backup)
	t.Logf("moat lb backup: %s(%d groups written meanwhile)", out, written)
	if info, err := os.Stat(backup); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v; want mode 0600", info, err)
	}
	st, err := store.OpenBoltReadOnly(backup)
	if err != nil {
		t.Fatalf("the backup does not open: %v", err)
	}
	st.Close()
	if out, err := exec.Command(moatBin, "lb", "backup", filepath.Join(dataDir, "state.db"), "--data-dir", dataDir).CombinedOutput(); err == nil {
		t.Errorf("moat lb backup over the state file itself succeeded:\n%s", out)
	}

	after := createGroup(t, ec2c, "after-backup", "backup test")
	p.kill()

	// Stopped: the backup reads the file.
	offline := filepath.Join(t.TempDir(), "offline.db")
	out, err = exec.Command(moatBin, "lb", "backup", offline, "--data-dir", dataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("moat lb backup of a stopped moat lb: %v\n%s", err, out)
	}
	wantAll(t, "moat lb backup of a stopped moat lb", string(out), "moat lb is not running")

	// Lose the state, and restore the online backup as the README says.
	state := filepath.Join(dataDir, "state.db")
	if err := os.Truncate(state, 0); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(state, data, 0o600); err != nil {
		t.Fatal(err)
	}
	p = startLB(t, dataDir, "--fast-path", "off")
	ec2c, elbc = p.clients(t)
	checkStacks(t, p, elbc, lbs, tgs, listeners)
	for _, id := range groups {
		out, err := ec2c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{id}})
		if err != nil {
			t.Errorf("acknowledged group %s not restored: %v", id, err)
			continue
		}
		if n := countRules(out.SecurityGroups[0].IpPermissions); n != 1 {
			t.Errorf("group %s restored with %d inbound rules, want 1", id, n)
		}
	}
	if groupExists(t, ec2c, after) {
		t.Errorf("group %s, made after the backup, exists: the backup was not what was restored", after)
	}
}
