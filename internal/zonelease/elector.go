package zonelease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Config says which zones a node runs for, and where the elections live.
type Config struct {
	Client *clientv3.Client
	// Prefix is where the elections live: zone z's candidates are the keys Prefix+z+"/<lease>".
	Prefix string
	Zones  []string
	Node   string // this node's name, the value of its candidate keys
	// TTL is the lease's: how long after a node dies (or loses etcd) another may take its zones.
	TTL time.Duration
	Log *slog.Logger
	// OnChange is called, from any goroutine, whenever Active or Holders may have changed.
	OnChange func()
}

// Elector campaigns for its node in every zone of its Config, each zone its own election on one
// lease, and says which zones the node holds now.
type Elector struct {
	cfg Config

	mu sync.Mutex
	// term counts the node's leases; what a goroutine of an ended term learns late (a win, a
	// renewal) is ignored.
	term    uint64
	fence   fence
	won     map[string]bool   // zones whose election this node's current lease has won
	holders map[string]string // zone -> node, as last seen in etcd
}

// New returns an Elector; Run campaigns.
func New(cfg Config) *Elector {
	return &Elector{cfg: cfg, fence: fence{margin: Margin(cfg.TTL)}, won: map[string]bool{}, holders: map[string]string{}}
}

// Active says whether the node holds zone now: it won the zone's election, and its lease is
// certainly alive (see fence). It turns false at the fence even if nothing has run since.
func (e *Elector) Active(zone string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.won[zone] && e.fence.alive(time.Now())
}

// Holders returns which node holds each zone that has a holder, as this node last saw etcd.
func (e *Elector) Holders() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.holders)
}

// Served says whether some node holds zone, as this node last saw the elections.
func (e *Elector) Served(zone string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.holders[zone]
	return ok
}

// Run campaigns until ctx ends, and returns once the node has let go of its zones. Each term is
// one lease: when it is lost (not renewed before the fence, revoked, or etcd unreachable), the
// node lets go of every zone at once and starts a new term with a new lease.
func (e *Elector) Run(ctx context.Context) {
	// Nothing calls OnChange once Run has returned: the caller may then close what it changes.
	var watching sync.WaitGroup
	watching.Go(func() { e.watchHolders(ctx) })
	defer watching.Wait()
	for ctx.Err() == nil {
		err := e.runTerm(ctx)
		if ctx.Err() != nil {
			return
		}
		e.cfg.Log.Warn("zone lease lost; campaigning again with a new one", "err", err)
		retry := time.NewTimer(renewEvery(e.cfg.TTL))
		select {
		case <-ctx.Done():
			retry.Stop()
			return
		case <-retry.C:
		}
	}
}

// runTerm runs one lease's life: grant, campaign in every zone, renew until the lease is lost.
func (e *Elector) runTerm(ctx context.Context) error {
	e.mu.Lock()
	e.term++
	term := e.term
	e.mu.Unlock()
	client := e.cfg.Client
	every := renewEvery(e.cfg.TTL)
	ttlSeconds := int64((e.cfg.TTL + time.Second - 1) / time.Second)
	grantCtx, cancel := context.WithTimeout(ctx, e.cfg.TTL)
	sent := time.Now()
	grant, err := client.Grant(grantCtx, ttlSeconds)
	cancel()
	if err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	e.renewed(term, sent, grant.TTL)
	termCtx, endTerm := context.WithCancel(ctx)
	defer endTerm()
	// On the way out, let go of every zone first (OnChange stops serving them), then revoke, so
	// that a node that stops, or gives up a lease it could not renew in time, hands its zones over
	// without waiting for the TTL when etcd can be reached.
	defer func() {
		e.loseAll()
		revokeCtx, cancel := context.WithTimeout(context.Background(), every)
		defer cancel()
		_, _ = client.Revoke(revokeCtx, grant.ID)
	}()
	session, err := concurrency.NewSession(client, concurrency.WithLease(grant.ID), concurrency.WithContext(termCtx))
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}

	lost := make(chan error, len(e.cfg.Zones))
	for _, zone := range e.cfg.Zones {
		go func() {
			if err := e.campaign(termCtx, term, session, zone); err != nil && termCtx.Err() == nil {
				lost <- err
			}
		}()
	}
	go e.renew(termCtx, term, grant.ID, every)
	for {
		e.mu.Lock()
		until := e.fence.until
		e.mu.Unlock()
		fenced := time.NewTimer(time.Until(until))
		select {
		case <-ctx.Done():
			fenced.Stop()
			return ctx.Err()
		case err := <-lost:
			fenced.Stop()
			return err
		case <-session.Done():
			fenced.Stop()
			return errors.New("session ended")
		case <-fenced.C:
			e.mu.Lock()
			alive := e.fence.alive(time.Now())
			e.mu.Unlock()
			if !alive {
				return fmt.Errorf("lease not renewed in time: fenced at %s", until.Format(time.RFC3339Nano))
			}
		}
	}
}

// campaign waits until the node wins zone's election, and then marks it won.
func (e *Elector) campaign(ctx context.Context, term uint64, session *concurrency.Session, zone string) error {
	election := concurrency.NewElection(session, e.cfg.Prefix+zone)
	if err := election.Campaign(ctx, e.cfg.Node); err != nil {
		return fmt.Errorf("campaign in zone %s: %w", zone, err)
	}
	e.mu.Lock()
	if e.term != term {
		e.mu.Unlock()
		return nil // won as the term ended: the lease is being revoked
	}
	e.won[zone] = true
	until := e.fence.until
	e.mu.Unlock()
	e.cfg.Log.Info("zone election won", "zone", zone, "node", e.cfg.Node, "lease_alive_until", until.Format(time.RFC3339Nano))
	e.cfg.OnChange()
	return nil
}

// renew keeps the lease alive with one keep-alive at a time, each timed from when it was sent
// (see fence), until ctx ends. A lease etcd no longer has ends the session, and so the term.
func (e *Elector) renew(ctx context.Context, term uint64, lease clientv3.LeaseID, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		onceCtx, cancel := context.WithTimeout(ctx, every)
		sent := time.Now()
		resp, err := e.cfg.Client.KeepAliveOnce(onceCtx, lease)
		cancel()
		if err != nil {
			e.cfg.Log.Debug("zone lease keep-alive failed", "err", err)
			continue
		}
		e.renewed(term, sent, resp.TTL)
	}
}

func (e *Elector) renewed(term uint64, sentAt time.Time, ttlSeconds int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.term != term {
		return
	}
	e.fence.renewed(sentAt, time.Duration(ttlSeconds)*time.Second)
}

// loseAll lets go of every zone: the term is over.
func (e *Elector) loseAll() {
	e.mu.Lock()
	e.term++
	held := len(e.won) > 0
	clear(e.won)
	e.fence.drop()
	e.mu.Unlock()
	if held {
		e.cfg.OnChange()
	}
}

// watchHolders follows the elections: the holder of a zone is its candidate with the oldest key.
func (e *Elector) watchHolders(ctx context.Context) {
	for ctx.Err() == nil {
		rev, err := e.readHolders(ctx)
		if err == nil {
			watchCtx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			// One event is enough to read again: elections change rarely.
			for range e.cfg.Client.Watch(watchCtx, e.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
				break
			}
			cancel()
			continue
		}
		e.cfg.Log.Debug("reading zone holders failed", "err", err)
		retry := time.NewTimer(renewEvery(e.cfg.TTL))
		select {
		case <-ctx.Done():
			retry.Stop()
		case <-retry.C:
		}
	}
}

func (e *Elector) readHolders(ctx context.Context) (int64, error) {
	getCtx, cancel := context.WithTimeout(ctx, e.cfg.TTL)
	defer cancel()
	resp, err := e.cfg.Client.Get(getCtx, e.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return 0, err
	}
	holders := map[string]string{}
	for _, kv := range resp.Kvs {
		zone, _, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), e.cfg.Prefix), "/")
		if _, seen := holders[zone]; ok && !seen {
			holders[zone] = string(kv.Value)
		}
	}
	e.mu.Lock()
	changed := !maps.Equal(holders, e.holders)
	e.holders = holders
	e.mu.Unlock()
	if changed {
		e.cfg.OnChange()
	}
	return resp.Header.Revision, nil
}
