package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go/middleware"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/moatlb/moat/internal/controller/model"
	"github.com/moatlb/moat/internal/lbtest"
)

// killer stops a controller at its n-th mutating AWS call: before the call is sent, or after
// AWS made the change but before the controller learns it, as a process killed at that moment.
type killer struct {
	mu     sync.Mutex
	at     int
	after  bool
	seen   int
	killed bool
}

var errKilled = errors.New("controller killed")

func (k *killer) option(o *startOptions) {
	o.aws = func(cfg *aws.Config, kill func()) {
		cfg.APIOptions = append(cfg.APIOptions, func(stack *middleware.Stack) error {
			return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("kill", func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				if !lbtest.IsMutating(middleware.GetOperationName(ctx)) {
					return next.HandleInitialize(ctx, in)
				}
				k.mu.Lock()
				k.seen++
				hit := k.seen == k.at || k.killed
				k.killed = k.killed || hit
				k.mu.Unlock()
				if !hit {
					return next.HandleInitialize(ctx, in)
				}
				if k.after && k.seen == k.at {
					next.HandleInitialize(ctx, in)
				}
				kill()
				return middleware.InitializeOutput{}, middleware.Metadata{}, errKilled
			}), middleware.After)
		})
	}
}

func (k *killer) wasKilled() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.killed
}

// TestKillRestart: a controller killed at a random mutating call while it creates or deletes a
// stack, then replaced by a new one, converges: one load balancer, one frontend group, one
// target group per port, and after deletion nothing left. -controller-restarts sets the number
// of rounds.
func TestKillRestart(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	h := newHarness(t)
	h.create(h.endpointSlice("svc-ip", []string{"198.18.1.10", "198.18.2.10"}))

	for round := range restarts() {
		name, edit := "svc-inst", func(*corev1.Service) {}
		if round%2 == 1 {
			name, edit = "svc-ip", ipTargets
		}
		// Create, killed at a random mutating call.
		k := &killer{at: 1 + rng.IntN(12), after: rng.IntN(2) == 0}
		c := h.start(k.option)
		h.create(h.service(name, edit, sourceRanges("10.0.0.0/8", "192.168.0.0/16")))
		eventually(t, 30*time.Second, func() error {
			if k.wasKilled() {
				return nil
			}
			svc := h.get(name)
			if len(svc.Status.LoadBalancer.Ingress) == 1 {
				return nil
			}
			return fmt.Errorf("round %d: neither killed nor deployed", round)
		})
		c.stop()
		t.Logf("round %d: create of %s, killed at mutating call %d (after the call: %v): %v", round, name, k.at, k.after, k.wasKilled())
		c = h.start()
		d := h.waitDeployed(name)
		h.settle(500 * time.Millisecond)
		if gs := h.groups(filter("tag:"+model.TagStack, h.ns+"/"+name)); len(gs) != 1 {
			t.Fatalf("round %d (killed at create call %d, after=%v): %d frontend groups", round, k.at, k.after, len(gs))
		}
		if err := equalStrings(inbound(h.group(d.frontend)), []string{
			"tcp 80-80 10.0.0.0/8", "tcp 80-80 192.168.0.0/16", "tcp 443-443 10.0.0.0/8", "tcp 443-443 192.168.0.0/16",
		}); err != nil {
			t.Fatalf("round %d: frontend rules: %v", round, err)
		}
		if len(d.tgs) != 2 || len(d.lb.SecurityGroups) != 2 {
			t.Fatalf("round %d: %d target groups, groups %v", round, len(d.tgs), d.lb.SecurityGroups)
		}
		for _, tg := range d.tgs {
			if n := len(h.targets(aws.ToString(tg.TargetGroupArn))); n != 2 {
				t.Fatalf("round %d: %d targets in %s, want 2", round, n, aws.ToString(tg.TargetGroupName))
			}
		}
		if len(inbound(h.nodeGroup())) != 1 {
			t.Fatalf("round %d: node rules %v, want one", round, inbound(h.nodeGroup()))
		}
		c.stop()

		// Delete, killed at a random mutating call.
		k = &killer{at: 1 + rng.IntN(8), after: rng.IntN(2) == 0}
		c = h.start(k.option)
		svc := h.get(name)
		if err := k8s.Delete(h.ctx, svc); err != nil {
			t.Fatal(err)
		}
		gone := func() error {
			err := k8s.Get(h.ctx, client.ObjectKeyFromObject(svc), &corev1.Service{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("round %d: service %s still there: %v", round, name, err)
		}
		eventually(t, 30*time.Second, func() error {
			if k.wasKilled() {
				return nil
			}
			return gone()
		})
		c.stop()
		t.Logf("round %d: delete of %s, killed at mutating call %d (after the call: %v): %v", round, name, k.at, k.after, k.wasKilled())
		c = h.start()
		eventually(t, 30*time.Second, gone)
		if left := h.leftovers(); len(left) != 0 {
			t.Fatalf("round %d (killed at delete call %d, after=%v): left in AWS: %q", round, k.at, k.after, left)
		}
		c.stop()
	}
}
