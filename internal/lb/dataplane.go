package lb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/dataplane"
	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/sgresolve"
)

// healthReporter shows the engine's target health to the API (DescribeTargetHealth).
type healthReporter struct{ engine dataplane.Engine }

func (h healthReporter) TargetHealth(targetGroupARN, id string, port int) (cloud.TargetHealth, bool) {
	got, ok := h.engine.TargetHealth(targetGroupARN, id, uint16(port))
	return cloud.TargetHealth{State: got.State, Reason: got.Reason, Description: got.Description}, ok
}

// syncDataPlane keeps the engine in step with the store. After every committed change, after a
// listener loses its socket (kick), and when a deregistered target finishes draining, it reads
// the state, applies it (and the instance firewall's program, when fw runs), and reports back: a
// load balancer whose listeners all serve is active, one with a listener that cannot serve is
// active_impaired with the reason.
func syncDataPlane(ctx context.Context, c *cloud.Cloud, engine dataplane.Engine, gate *zoneGate, routes *subnetRouter, fw *firewall.Firewall, sgMode firewall.Mode, kick <-chan struct{}, log *slog.Logger) {
	changes, stop := c.Store().Changes()
	defer stop()
	drained := time.NewTimer(time.Hour)
	defer drained.Stop()
	var certs keyPairCache
	for {
		start := time.Now()
		next, err := syncOnce(c, engine, gate, routes, fw, sgMode, &certs, log)
		if err != nil {
			log.Error("data plane sync failed", "err", err)
		}
		took := time.Since(start)
		drained.Stop()
		if !next.IsZero() {
			drained.Reset(time.Until(next) + 10*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		case <-kick:
		case <-drained.C:
		}
		// A sync reads and compiles the whole state. Under a stream of commits, start the next
		// one no sooner than the last one took after it ended: syncing then takes at most half a
		// CPU, the API keeps the rest, and the commits meanwhile are applied together.
		if wait := start.Add(2 * took).Sub(time.Now()); wait > 0 {
			pace := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				pace.Stop()
				return
			case <-pace.C:
			}
		}
	}
}

// syncOnce applies the current state, for the zones this node serves (gate), and returns when
// the next deregistered target finishes draining (zero if none is draining).
func syncOnce(c *cloud.Cloud, engine dataplane.Engine, gate *zoneGate, routes *subnetRouter, fw *firewall.Firewall, sgMode firewall.Mode, certs *keyPairCache, log *slog.Logger) (time.Time, error) {
	st, err := c.State()
	if err != nil {
		return time.Time{}, err
	}
	routes.Sync(localRanges(st))
	// One index of the state serves both: resolving groups to addresses is the costly part.
	n := newNetwork(st)
	n.keyPairs = certs.keyPairs(st.Certificates, log)
	now := time.Now()
	cfg := desiredConfig(st, n, now)
	if fw != nil {
		program := desiredFirewall(st, n, sgMode, sgresolve.HostAddrs())
		program.Listeners = listenerLog(cfg)
		fw.Apply(program)
	}
	if err := gate.Apply(cfg); err != nil {
		var aerr *dataplane.ApplyError
		if !errors.As(err, &aerr) {
			return time.Time{}, err
		}
		log.Warn("some listeners cannot be served", "err", err)
	}
	for _, lb := range st.LoadBalancers {
		if !gate.serves(lb) {
			continue // the nodes serving it report its state
		}
		state, reason := cloud.StateActive, ""
		for _, z := range lb.Zones {
			if a, err := netip.ParseAddr(z.Address); err == nil {
				if why := routes.Why(a); why != nil {
					state, reason = cloud.StateActiveImpaired, fmt.Sprintf("its address %s cannot be served: %v", a, why)
				}
			}
		}
		for _, l := range n.listenersOf[lb.ARN] {
			if state != cloud.StateActive {
				break
			}
			if err := engine.ListenerStatus(l.ARN); err != nil && !errors.Is(err, dataplane.ErrUnknownListener) {
				state, reason = cloud.StateActiveImpaired, err.Error()
				break
			}
		}
		if lb.State != state || lb.StateReason != reason {
			if err := c.SetLoadBalancerState(lb.ARN, state, reason); err != nil {
				log.Error("set load balancer state failed", "arn", lb.ARN, "err", err)
			}
		}
	}
	var next time.Time
	for _, tg := range st.TargetGroups {
		for _, t := range tg.Targets {
			if t.DrainingUntil.After(now) && (next.IsZero() || t.DrainingUntil.Before(next)) {
				next = t.DrainingUntil
			}
		}
	}
	return next, nil
}

// canListen is the API's check before it accepts a listener: it binds every address on the port
// and lets go at once, so a port that is taken or privileged, or an address the host does not
// have, fails CreateListener clearly instead of leaving the load balancer impaired. The one
// exception is an address that moat lb tried and failed to make local (notLocal says why): that
// listener is accepted, and the sync reports its load balancer active_impaired with the reason,
// as AWS reports a load balancer it cannot serve.
func canListen(notLocal func(netip.Addr) error) cloud.PortChecker {
	return func(addrs []netip.Addr, protocol string, port int) error {
		for _, a := range addrs {
			err := bindOnce(a, protocol, port)
			if errors.Is(err, syscall.EADDRNOTAVAIL) {
				if notLocal(a) != nil {
					continue
				}
				return &addrNotLocalError{a, err}
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
}

// addrNotLocalError is a bind refused because the host does not have the address.
type addrNotLocalError struct {
	addr netip.Addr
	err  error
}

func (e *addrNotLocalError) Error() string {
	return fmt.Sprintf("%v: %s is not an address of this host (macOS has only 127.0.0.1 on loopback until others are added: sudo ifconfig lo0 alias %s)", e.err, e.addr, e.addr)
}

func (e *addrNotLocalError) Unwrap() error { return e.err }

func bindOnce(a netip.Addr, protocol string, port int) error {
	addr := netip.AddrPortFrom(a, uint16(port)).String()
	if protocol == "UDP" {
		pc, err := net.ListenPacket("udp", addr)
		if err == nil {
			pc.Close()
		}
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
	}
	return err
}
