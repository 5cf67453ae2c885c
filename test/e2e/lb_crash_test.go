package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TestLBSurvivesKill9 kills moat lb with SIGKILL in the middle of a burst of mutations, restarts
// it on the same data dir, and checks that every acknowledged change is there and that no request
// is visible in part.
func TestLBSurvivesKill9(t *testing.T) {
	dataDir := t.TempDir()
	rounds := 3
	if testing.Short() {
		rounds = 1
	}
	acked := map[string]int{} // group ID -> rules acknowledged
	for round := range rounds {
		p := startLB(t, dataDir)
		ec2c, _ := p.clients(t)
		var mu sync.Mutex
		acks := make(chan struct{}, 1024)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ctx.Err() == nil; i++ {
					name := fmt.Sprintf("r%d-w%d-%d", round, w, i)
					out, err := ec2c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(name), Description: aws.String("crash test")})
					if err != nil {
						return // the kill, or a failure the deadline below reports
					}
					mu.Lock()
					acked[*out.GroupId] = 0
					mu.Unlock()
					select {
					case acks <- struct{}{}:
					default: // counting is over
					}
					perm := types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80), IpRanges: []types.IpRange{
						{CidrIp: aws.String("10.0.0.0/8")}, {CidrIp: aws.String("172.16.0.0/12")}, {CidrIp: aws.String("192.168.0.0/16")},
					}}
					if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: out.GroupId, IpPermissions: []types.IpPermission{perm}}); err != nil {
						return
					}
					mu.Lock()
					acked[*out.GroupId] = 3
					mu.Unlock()
					select {
					case acks <- struct{}{}:
					default: // counting is over
					}
				}
			}()
		}
		// Kill after a random number of acknowledged mutations, while the workers keep going.
		target := 20 + rand.IntN(100)
		deadline := time.After(60 * time.Second)
		for n := 0; n < target; n++ {
			select {
			case <-acks:
			case <-deadline:
				t.Fatalf("only %d of %d mutations acknowledged in 60s; moat lb said:\n%s", n, target, p.stderr)
			}
		}
		p.kill()
		cancel()
		wg.Wait()
	}

	p := startLB(t, dataDir)
	ec2c, _ := p.clients(t)
	out, err := ec2c.DescribeSecurityGroups(context.Background(), &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{{Name: aws.String("description"), Values: []string{"crash test"}}}})
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]types.SecurityGroup{}
	for _, g := range out.SecurityGroups {
		found[*g.GroupId] = g
	}
	for id, rules := range acked {
		g, ok := found[id]
		if !ok {
			t.Errorf("acknowledged group %s lost", id)
			continue
		}
		if n := countRules(g.IpPermissions); n < rules {
			t.Errorf("group %s: %d rules, %d acknowledged", id, n, rules)
		}
	}
	for id, g := range found {
		if n := countRules(g.IpPermissions); n != 0 && n != 3 {
			t.Errorf("group %s holds %d rules: an authorize of 3 is visible in part", id, n)
		}
		if len(g.IpPermissionsEgress) != 1 {
			t.Errorf("group %s has %d egress permissions, want its default one", id, len(g.IpPermissionsEgress))
		}
	}
	if len(acked) == 0 {
		t.Fatal("the burst acknowledged nothing before the kill")
	}
	t.Logf("%d acknowledged groups survived %d kills; %d groups present", len(acked), rounds, len(found))
}

func countRules(perms []types.IpPermission) int {
	n := 0
	for _, p := range perms {
		n += len(p.IpRanges) + len(p.Ipv6Ranges) + len(p.UserIdGroupPairs) + len(p.PrefixListIds)
	}
	return n
}
