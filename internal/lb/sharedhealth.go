package lb

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/dataplane"
	"github.com/moatlb/moat/internal/store"
)

// Target health with --store etcd. Only the node serving a zone health-checks its targets, yet
// DescribeTargetHealth and DNS must answer alike on every node. So each node writes its engine's
// health of the targets of the groups it serves (checked, or unused in a zone it does not serve),
// when it changes, to <root>/quiet/health/<node>/<group>/<target>/<port>, on a lease of its own
// (a dead node's records vanish with it, about when its zones move), and every node follows
// those keys with a watch. They are quiet keys (store.Etcd.QuietPrefix): a health change does not
// make every node read the whole state again.
//
// A target checked by several nodes (a target group behind load balancers, or zones, served by
// different nodes) shows the worst of their views, unhealthy over initial over healthy over
// unused, the same on every node: a target one serving node cannot reach fails the flows through
// that node's zone.

// healthPollInterval is how often a node compares its engine's health with what it wrote.
const healthPollInterval = 250 * time.Millisecond

// targetKey names one target of one target group.
type targetKey struct {
	Group string `json:"target_group_arn"`
	ID    string `json:"target_id"`
	Port  uint16 `json:"port"`
}

// healthRecord is one node's view of a target of a group it serves.
type healthRecord struct {
	targetKey
	State       string    `json:"state"`
	Reason      string    `json:"reason,omitempty"`
	Description string    `json:"description,omitempty"`
	Node        string    `json:"node"`
	Time        time.Time `json:"time"`
}

// healthRank orders views of one target: the worst wins. Unused is the view of a node that
// serves the target group but not the target's zone: any checking node's view beats it.
func healthRank(state string) int {
	switch state {
	case dataplane.StateUnused:
		return 0
	case dataplane.StateHealthy:
		return 1
	case dataplane.StateUnhealthy:
		return 3
	}
	return 2
}

// sharedHealth is the health reporter of a node on an etcd store: it publishes its engine's view
// and answers with every serving node's.
type sharedHealth struct {
	engine  dataplane.Engine
	targets func() []targetKey // the targets of the groups the engine serves
	client  *clientv3.Client
	prefix  string
	node    string
	ttl     time.Duration // of the records' lease
	log     *slog.Logger

	mu       sync.Mutex
	byKey    map[string]healthRecord               // etcd key -> record, as the watch saw them
	byTarget map[targetKey]map[string]healthRecord // target -> node -> record
}

func newSharedHealth(st *store.Etcd, engine dataplane.Engine, targets func() []targetKey, node string, ttl time.Duration, log *slog.Logger) *sharedHealth {
	return &sharedHealth{engine: engine, targets: targets, client: st.Client(), prefix: st.QuietPrefix() + "health/",
		node: node, ttl: ttl, log: log, byKey: map[string]healthRecord{}, byTarget: map[targetKey]map[string]healthRecord{}}
}

// start publishes and follows the records until ctx ends; wait returns once this node's records
// are revoked.
func (h *sharedHealth) start(ctx context.Context) (wait func()) {
	var wg sync.WaitGroup
	wg.Go(func() { h.publish(ctx) })
	wg.Go(func() { h.follow(ctx) })
	return wg.Wait
}

func (h *sharedHealth) key(node string, t targetKey) string {
	return h.prefix + url.PathEscape(node) + "/" + url.PathEscape(t.Group) + "/" + url.PathEscape(t.ID) + "/" + strconv.Itoa(int(t.Port))
}

// TargetHealth implements cloud.HealthReporter: the worst view of the nodes that serve the
// target's group, this node's from its engine (fresher than its record).
func (h *sharedHealth) TargetHealth(targetGroupARN, id string, port int) (cloud.TargetHealth, bool) {
	k := targetKey{targetGroupARN, id, uint16(port)}
	own, ownOK := h.engine.TargetHealth(targetGroupARN, id, uint16(port))
	var worst *healthRecord
	consider := func(r healthRecord) {
		if worst == nil || healthRank(r.State) > healthRank(worst.State) ||
			healthRank(r.State) == healthRank(worst.State) && r.Node < worst.Node {
			worst = &r
		}
	}
	if ownOK {
		consider(healthRecord{State: own.State, Reason: own.Reason, Description: own.Description, Node: h.node})
	}
	h.mu.Lock()
	for node, r := range h.byTarget[k] {
		if node != h.node {
			consider(r)
		}
	}
	h.mu.Unlock()
	if worst == nil {
		return cloud.TargetHealth{}, false
	}
	return cloud.TargetHealth{State: worst.State, Reason: worst.Reason, Description: worst.Description}, true
}

// publish writes this node's view of the targets of the groups it serves whenever it changes,
// and deletes the record of a target it no longer serves, on a lease kept alive while the node
// runs; a lost lease is replaced and every record written again. At the end it revokes the
// lease, so the records go with the node.
func (h *sharedHealth) publish(ctx context.Context) {
	var lease clientv3.LeaseID
	var alive <-chan *clientv3.LeaseKeepAliveResponse
	written := map[targetKey]dataplane.Health{}
	tick := time.NewTicker(healthPollInterval)
	defer tick.Stop()
	for {
		if lease == 0 {
			lease, alive = h.grant(ctx)
			clear(written)
		}
		if lease != 0 {
			h.publishOnce(ctx, lease, written)
		}
		select {
		case <-ctx.Done():
			if lease != 0 {
				revokeCtx, cancel := context.WithTimeout(context.Background(), h.ttl)
				_, err := h.client.Revoke(revokeCtx, lease)
				cancel()
				if err != nil {
					h.log.Warn("revoking this node's target health records; they expire with their lease", "err", err)
				}
			}
			return
		case _, ok := <-alive:
			if !ok {
				alive = nil
				if ctx.Err() == nil { // else the lease is still to be revoked
					lease = 0
				}
			}
		case <-tick.C:
		}
	}
}

// grant takes a new lease for the records and keeps it alive; 0 when etcd does not answer.
func (h *sharedHealth) grant(ctx context.Context) (clientv3.LeaseID, <-chan *clientv3.LeaseKeepAliveResponse) {
	grantCtx, cancel := context.WithTimeout(ctx, h.ttl)
	defer cancel()
	resp, err := h.client.Grant(grantCtx, int64(h.ttl/time.Second))
	if err == nil {
		var alive <-chan *clientv3.LeaseKeepAliveResponse
		if alive, err = h.client.KeepAlive(ctx, resp.ID); err == nil {
			return resp.ID, alive
		}
	}
	if ctx.Err() == nil {
		h.log.Warn("target health records: no lease; trying again", "err", err)
	}
	return 0, nil
}

// publishOnce brings this node's records in line with its engine; written is what they hold.
func (h *sharedHealth) publishOnce(ctx context.Context, lease clientv3.LeaseID, written map[targetKey]dataplane.Health) {
	now := map[targetKey]bool{}
	for _, k := range h.targets() {
		got, ok := h.engine.TargetHealth(k.Group, k.ID, k.Port)
		if !ok {
			continue
		}
		now[k] = true
		if old, ok := written[k]; ok && old == got {
			continue
		}
		value, err := json.Marshal(healthRecord{targetKey: k, State: got.State, Reason: got.Reason, Description: got.Description, Node: h.node, Time: time.Now().UTC()})
		if err == nil {
			err = h.call(ctx, func(ctx context.Context) error {
				_, err := h.client.Put(ctx, h.key(h.node, k), string(value), clientv3.WithLease(lease))
				return err
			})
		}
		if err != nil {
			return // the next poll tries again
		}
		written[k] = got
	}
	for k := range written {
		if now[k] {
			continue
		}
		if err := h.call(ctx, func(ctx context.Context) error {
			_, err := h.client.Delete(ctx, h.key(h.node, k))
			return err
		}); err != nil {
			return
		}
		delete(written, k)
	}
}

// call runs one etcd request with a deadline, logging its failure.
func (h *sharedHealth) call(ctx context.Context, fn func(context.Context) error) error {
	callCtx, cancel := context.WithTimeout(ctx, h.ttl)
	defer cancel()
	err := fn(callCtx)
	if err != nil && ctx.Err() == nil {
		h.log.Warn("writing target health to the store; trying again", "err", err)
	}
	return err
}

// follow keeps byKey and byTarget the records under the prefix: a read, then a watch from it,
// read again whenever the watch breaks.
func (h *sharedHealth) follow(ctx context.Context) {
	for ctx.Err() == nil {
		getCtx, cancel := context.WithTimeout(ctx, h.ttl)
		resp, err := h.client.Get(getCtx, h.prefix, clientv3.WithPrefix())
		cancel()
		if err == nil {
			h.mu.Lock()
			clear(h.byKey)
			clear(h.byTarget)
			for _, kv := range resp.Kvs {
				h.setLocked(string(kv.Key), kv.Value)
			}
			h.mu.Unlock()
			watchCtx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			for wr := range h.client.Watch(watchCtx, h.prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
				if wr.Err() != nil || wr.Canceled {
					break
				}
				h.mu.Lock()
				for _, ev := range wr.Events {
					if ev.Type == clientv3.EventTypeDelete {
						h.deleteLocked(string(ev.Kv.Key))
					} else {
						h.setLocked(string(ev.Kv.Key), ev.Kv.Value)
					}
				}
				h.mu.Unlock()
			}
			cancel()
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond): // etcd unreachable or without a leader: do not spin
		}
	}
}

func (h *sharedHealth) setLocked(key string, value []byte) {
	var r healthRecord
	if err := json.Unmarshal(value, &r); err != nil {
		h.log.Warn("ignoring a target health record moat cannot read", "key", key, "err", err)
		return
	}
	h.deleteLocked(key)
	h.byKey[key] = r
	if h.byTarget[r.targetKey] == nil {
		h.byTarget[r.targetKey] = map[string]healthRecord{}
	}
	h.byTarget[r.targetKey][r.Node] = r
}

func (h *sharedHealth) deleteLocked(key string) {
	r, ok := h.byKey[key]
	if !ok {
		return
	}
	delete(h.byKey, key)
	delete(h.byTarget[r.targetKey], r.Node)
	if len(h.byTarget[r.targetKey]) == 0 {
		delete(h.byTarget, r.targetKey)
	}
}
