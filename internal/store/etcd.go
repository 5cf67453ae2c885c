package store

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Etcd is the Store that several moat lb nodes share: records live in an etcd cluster, under a
// root prefix, so that several deployments can share one cluster.
//
// Layout: record bucket/key is the etcd key <root>/<bucket>/<key>, its value sealed with the same
// checksum as in the bolt store (so a value written by another tool, or found under another key,
// is ErrCorrupt). Each bucket also has a marker key <root>/<bucket>, outside the bucket's range,
// that every commit writing the bucket puts again: its mod revision changes with every change to
// the bucket, deletes included, which a comparison over the bucket's range cannot see.
//
// Transactions. A transaction reads at one etcd revision, fixed by its first read, which is
// linearizable: it sees every update acknowledged before it began, from any node. An update
// holds its writes aside, then commits them in one etcd transaction that compares the marker of
// every bucket it read with the revision it read it at: if another commit wrote one of those
// buckets since, nothing is written and fn runs again on a fresh read. So updates are
// serializable (per bucket, coarser than per key, which keeps the comparisons few), and etcd
// answers only once the commit is in its raft log on a quorum of members, so it is durable.
// Updates of one Etcd take turns, so that they do not conflict with each other and fn runs once
// unless another node's commit gets in between.
//
// Every call into etcd runs under the deadline of the View or Update (Timeout), so a stuck
// cluster gives an error, never a hang. When an update's commit times out, whether it happened
// is unknown, as with any remote store.
//
// One update's commit is one etcd request, so it holds what etcd allows one transaction: with
// etcd's defaults (--max-txn-ops 128, --max-request-bytes 1.5 MiB), up to 128 writes, each
// written bucket's marker counted, and 1.5 MiB in all. A larger one fails, writing nothing.
//
// Version is the mod revision of the bucket's marker, so indexes built from a bucket are kept
// until any node writes it. Shared reads (LoadShared, ListShared) decode every time: the shared
// cache's bookkeeping of deletes sees only this process's commits.
type Etcd struct {
	client  *clientv3.Client
	root    string
	name    string // for errors
	timeout time.Duration

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	turn chan struct{} // holds a value while an update runs: updates take turns
	// conflicts counts the updates that ran again because another node's commit wrote a bucket
	// they had read.
	conflicts atomic.Uint64

	mu       sync.Mutex
	closed   bool
	watchers map[chan struct{}]string // -> the bucket it follows; "" for every bucket
	seen     int64                    // the revision the watch has reported up to
	seenMore chan struct{}            // closed when seen grows
	watching chan struct{}            // closed when the watch loop returns
}

// EtcdConfig says how to reach the cluster and where moat's records live in it.
type EtcdConfig struct {
	Endpoints []string
	TLS       *tls.Config // nil: plain connections
	// Root is the key prefix of every record ("/moat" when empty). Deployments sharing a cluster
	// need roots that are not one inside the other: /moat/a and /moat/b, not /moat and /moat/b.
	Root string
	// Timeout bounds each View and Update, all its calls to etcd and retries included (10 s when
	// zero).
	Timeout time.Duration
}

// ErrClosed is returned by transactions on a closed store.
var ErrClosed = errors.New("store closed")

const (
	defaultEtcdRoot    = "/moat"
	defaultEtcdTimeout = 10 * time.Second
	// etcdPage is how many records one range request of ForEach returns: a bucket is read in
	// pages, all at the transaction's revision, so no response grows near etcd's message limits.
	etcdPage = 256
)

// OpenEtcd connects to the cluster and checks, within the timeout, that it answers.
func OpenEtcd(cfg EtcdConfig) (*Etcd, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd store: no endpoints")
	}
	root := strings.TrimRight(cfg.Root, "/")
	if cfg.Root == "" {
		root = defaultEtcdRoot
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = defaultEtcdTimeout
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		TLS:         cfg.TLS,
		DialTimeout: timeout,
		Logger:      zap.NewNop(), // errors reach callers; its retry chatter would flood the log
	})
	if err != nil {
		return nil, fmt.Errorf("etcd store %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Etcd{client: client, root: root, timeout: timeout, ctx: ctx, cancel: cancel,
		name:     fmt.Sprintf("etcd %s%s", strings.Join(cfg.Endpoints, ","), root),
		watchers: map[chan struct{}]string{}, seenMore: make(chan struct{}), watching: make(chan struct{}), turn: make(chan struct{}, 1)}
	// Any read gives the revision to watch from; this key is never written.
	getCtx, done := context.WithTimeout(ctx, timeout)
	resp, err := client.Get(getCtx, s.root+"/")
	done()
	if err != nil {
		cancel()
		client.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			// What the client says of a refused connection or a failed TLS handshake too.
			return nil, fmt.Errorf("%s: no answer within %s (is etcd running there, and do the TLS settings match its?): %w", s.name, timeout, err)
		}
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	s.seen = resp.Header.Revision
	go s.watch(resp.Header.Revision + 1)
	return s, nil
}

// Empty reports whether nothing is stored under the root: no record and no bucket marker, so
// that a copy of another store (moat lb migrate) cannot mix with state already there.
func (s *Etcd) Empty() (bool, error) {
	ctx, cancel, err := s.begin()
	if err != nil {
		return false, err
	}
	defer cancel()
	resp, err := s.client.Get(ctx, s.root+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("%s: %w", s.name, err)
	}
	return resp.Count == 0, nil
}

// Root is the key prefix of the store's records.
func (s *Etcd) Root() string { return s.root }

func (s *Etcd) markerKey(bucket string) string { return s.root + "/" + bucket }

// Client is the store's connection to etcd, for what else nodes keep in the cluster beside
// records, under QuietPrefix.
func (s *Etcd) Client() *clientv3.Client { return s.client }

func (s *Etcd) bucketPrefix(bucket string) string { return s.root + "/" + bucket + "/" }

// QuietPrefix is where nodes keep, beside the records, what must not make every node read the
// whole state again (the targets' health, the zones' elections): <root>/quiet/ (no bucket has
// that name).
// Changes does not signal writes there; their readers watch it themselves.
func (s *Etcd) QuietPrefix() string { return s.root + "/quiet/" }

// signals reports whether a watch response wrote bucket ("": any bucket, that is anything but
// the quiet keys).
func (s *Etcd) signals(events []*clientv3.Event, bucket string) bool {
	return slices.ContainsFunc(events, func(e *clientv3.Event) bool {
		key := string(e.Kv.Key)
		if bucket == "" {
			return !strings.HasPrefix(key, s.QuietPrefix())
		}
		return key == s.markerKey(bucket) || strings.HasPrefix(key, s.bucketPrefix(bucket))
	})
}

func (s *Etcd) View(fn func(Tx) error) error {
	ctx, cancel, err := s.begin()
	if err != nil {
		return err
	}
	defer cancel()
	return fn(&etcdTx{s: s, ctx: ctx, markers: map[string]int64{}})
}

func (s *Etcd) Update(fn func(Tx) error) error {
	ctx, cancel, err := s.begin()
	if err != nil {
		return err
	}
	defer cancel()
	// The deadline counts the wait for the updates before, so that behind a stuck cluster each
	// fails in time instead of waiting for all of those before it to time out.
	select {
	case s.turn <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%s: waiting for the updates before this one: %w", s.name, ctx.Err())
	}
	defer func() { <-s.turn }()
	for {
		tx := &etcdTx{s: s, ctx: ctx, markers: map[string]int64{}, pending: map[string]map[string][]byte{}}
		if err := fn(tx); err != nil {
			return err
		}
		rev, committed, err := tx.commit()
		if err != nil {
			return fmt.Errorf("%s: commit: %w", s.name, err)
		}
		if committed {
			s.awaitWatch(ctx, rev)
			return nil
		}
		// Another commit wrote a bucket fn read: run it again on what is there now.
		s.conflicts.Add(1)
	}
}

// Conflicts is how many times an update ran again because another node's commit got in between
// its reads and its commit.
func (s *Etcd) Conflicts() uint64 { return s.conflicts.Load() }

// begin gives a transaction's context, bounded by the timeout and cancelled by Close.
func (s *Etcd) begin() (context.Context, context.CancelFunc, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, nil, ErrClosed
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	return ctx, cancel, nil
}

// awaitWatch waits until the watch has reported revision rev to the Changes channels, so that,
// as with the bolt store, they hear of a commit before its Update returns. A watch that lags
// past the deadline only delays the signal: the commit stands. Without Changes channels there is
// nobody to wait for.
func (s *Etcd) awaitWatch(ctx context.Context, rev int64) {
	for {
		s.mu.Lock()
		seen, more, listened := s.seen, s.seenMore, len(s.watchers) > 0
		s.mu.Unlock()
		if seen >= rev || !listened {
			return
		}
		select {
		case <-more:
		case <-ctx.Done():
			return
		}
	}
}

// watch follows every change under the root from revision from, signals the Changes channels,
// and then advances seen; a broken or compacted watch starts again, signalling, since changes may
// have been missed.
func (s *Etcd) watch(from int64) {
	defer close(s.watching)
	for s.ctx.Err() == nil {
		ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.ctx))
		for resp := range s.client.Watch(ctx, s.root+"/", clientv3.WithPrefix(), clientv3.WithRev(from)) {
			if resp.CompactRevision != 0 {
				from = resp.CompactRevision
			}
			if resp.Err() != nil || resp.Canceled {
				s.notify(nil) // what was missed is unknown: every watcher reads again
				break
			}
			if n := len(resp.Events); n > 0 {
				s.notify(resp.Events)
				last := resp.Events[n-1].Kv.ModRevision
				from = last + 1
				s.advance(last)
			}
		}
		cancel()
		select {
		case <-s.ctx.Done():
		case <-time.After(100 * time.Millisecond): // a cluster without a leader: do not spin
		}
	}
}

func (s *Etcd) advance(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev > s.seen {
		s.seen = rev
		close(s.seenMore)
		s.seenMore = make(chan struct{})
	}
}

func (s *Etcd) Changes() (<-chan struct{}, func()) { return s.BucketChanges("") }

// BucketChanges is Changes for the commits that wrote one bucket: a reader of one bucket is not
// woken by every other commit.
func (s *Etcd) BucketChanges(bucket string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.watchers[ch] = bucket
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		delete(s.watchers, ch)
		s.mu.Unlock()
	}
}

// notify signals the watchers whose bucket events wrote; nil events signal them all.
func (s *Etcd) notify(events []*clientv3.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch, bucket := range s.watchers {
		if events != nil && !s.signals(events, bucket) {
			continue
		}
		select {
		case ch <- struct{}{}:
		default: // a signal is already pending; the reader will see this change too
		}
	}
}

// Close waits for the update in progress, then disconnects; transactions after it fail.
func (s *Etcd) Close() error {
	s.turn <- struct{}{}
	defer func() { <-s.turn }()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	<-s.watching
	return s.client.Close()
}

type etcdTx struct {
	s   *Etcd
	ctx context.Context
	rev int64 // the revision every read is at; 0 until the first read
	// markers are the mod revisions, at rev, of the markers of the buckets whose contents the
	// transaction depends on: in an update, those it read, which the commit checks.
	markers map[string]int64
	// pending are an update's writes (bucket, key, stored bytes or nil for a delete), held until
	// it commits; nil in a read-only transaction.
	pending map[string]map[string][]byte
}

// get runs a range request at the transaction's revision, fixing it on the first one.
func (t *etcdTx) get(key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if t.rev != 0 {
		opts = append(opts, clientv3.WithRev(t.rev))
	}
	resp, err := t.s.client.Get(t.ctx, key, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: read %s: %w", t.s.name, key, err)
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	return resp, nil
}

// readBucket notes, in an update, the bucket's marker for the commit to check.
func (t *etcdTx) readBucket(bucket string) error {
	if t.pending == nil {
		return nil
	}
	_, err := t.marker(bucket)
	return err
}

// marker returns the mod revision of the bucket's marker at the transaction's revision (0: the
// bucket was never written).
func (t *etcdTx) marker(bucket string) (int64, error) {
	if m, ok := t.markers[bucket]; ok {
		return m, nil
	}
	resp, err := t.get(t.s.markerKey(bucket))
	if err != nil {
		return 0, err
	}
	var m int64
	if len(resp.Kvs) > 0 {
		m = resp.Kvs[0].ModRevision
	}
	t.markers[bucket] = m
	return m, nil
}

// version implements Version: the marker's mod revision names the bucket's committed contents,
// since every commit that writes the bucket puts the marker. In an update, the keys it wrote are
// the changed ones. When the marker cannot be read, the version is one no bucket has, never the
// same twice, so that nothing kept is reused and the read that follows meets the failure.
func (t *etcdTx) version(bucket string) (uint64, []string) {
	changed := slices.Sorted(maps.Keys(t.pending[bucket]))
	m, err := t.marker(bucket)
	if err != nil {
		return math.MaxUint64 - unreadVersions.Add(1), changed
	}
	return uint64(m), changed
}

// unreadVersions counts the versions given for markers that could not be read.
var unreadVersions atomic.Uint64

func (t *etcdTx) Get(bucket, key string) ([]byte, error) {
	if stored, ok := t.pending[bucket][key]; ok {
		if stored == nil {
			return nil, ErrNotFound
		}
		value, err := unseal(t.s.name, bucket, key, stored)
		return bytes.Clone(value), err // callers may keep and change it; the commit may not
	}
	if err := checkName(bucket, key); err != nil {
		return nil, err
	}
	if err := t.readBucket(bucket); err != nil {
		return nil, err
	}
	resp, err := t.get(t.s.bucketPrefix(bucket) + key)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, ErrNotFound
	}
	return unseal(t.s.name, bucket, key, resp.Kvs[0].Value)
}

func (t *etcdTx) Put(bucket, key string, value []byte) error {
	if t.pending == nil {
		return errReadOnly
	}
	if err := checkName(bucket, key); err != nil {
		return err
	}
	t.note(bucket, key, seal(bucket, key, value))
	return nil
}

func (t *etcdTx) Delete(bucket, key string) error {
	if t.pending == nil {
		return errReadOnly
	}
	if err := checkName(bucket, key); err != nil {
		return err
	}
	t.note(bucket, key, nil)
	return nil
}

var errReadOnly = errors.New("write in a read-only transaction")

// checkName refuses names the key layout cannot hold: a bucket with a slash would share keys
// with another bucket.
func checkName(bucket, key string) error {
	switch {
	case bucket == "" || strings.Contains(bucket, "/"):
		return fmt.Errorf("bucket %q: want a non-empty name without slashes", bucket)
	case key == "":
		return fmt.Errorf("bucket %s: empty key", bucket)
	}
	return nil
}

func (t *etcdTx) note(bucket, key string, stored []byte) {
	if t.pending[bucket] == nil {
		t.pending[bucket] = map[string][]byte{}
	}
	t.pending[bucket][key] = stored
}

func (t *etcdTx) ForEach(bucket string, fn func(key string, value []byte) error) error {
	if err := checkName(bucket, "-"); err != nil {
		return err
	}
	if err := t.readBucket(bucket); err != nil {
		return err
	}
	prefix := t.s.bucketPrefix(bucket)
	walk := func(yield func(k, stored []byte) error) error {
		end := clientv3.GetPrefixRangeEnd(prefix)
		for from := prefix; ; {
			resp, err := t.get(from, clientv3.WithRange(end), clientv3.WithLimit(etcdPage))
			if err != nil {
				return err
			}
			for _, kv := range resp.Kvs {
				if err := yield(kv.Key[len(prefix):], kv.Value); err != nil {
					return err
				}
			}
			if !resp.More || len(resp.Kvs) == 0 {
				return nil
			}
			from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
	}
	return withPending(t.pending[bucket], walk, func(k, stored []byte) error {
		key := string(k)
		value, err := unseal(t.s.name, bucket, key, stored)
		if err != nil {
			return err
		}
		return fn(key, value)
	})
}

// commit writes the update's writes, and puts the markers of their buckets, if the markers of
// the buckets it read are as it read them. It returns the commit's revision (0 when there was
// nothing to write) and false when another commit got in first.
func (t *etcdTx) commit() (int64, bool, error) {
	var ops []clientv3.Op
	for bucket, writes := range t.pending {
		for key, stored := range writes {
			k := t.s.bucketPrefix(bucket) + key
			if stored == nil {
				ops = append(ops, clientv3.OpDelete(k))
			} else {
				ops = append(ops, clientv3.OpPut(k, string(stored)))
			}
		}
		ops = append(ops, clientv3.OpPut(t.s.markerKey(bucket), ""))
	}
	if len(ops) == 0 {
		return 0, true, nil
	}
	var cmps []clientv3.Cmp
	for bucket, rev := range t.markers {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(t.s.markerKey(bucket)), "=", rev))
	}
	resp, err := t.s.client.Txn(t.ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return 0, false, err
	}
	return resp.Header.Revision, resp.Succeeded, nil
}
