package store

import (
	"slices"
	"sort"
	"sync"
)

// ChangedSince returns the keys of bucket, in order, that commits wrote after the bucket's
// version since, up to the version tx sees (tx's own writes are Version's changed), so that
// something derived from the bucket at since (an index) can be brought up to date by reading
// those records alone. ok is false when the store cannot tell: it keeps no log, or not that far
// back; derive from a whole read of the bucket then.
func ChangedSince(tx Tx, bucket string, since uint64) (keys []string, ok bool) {
	if ct, is := tx.(interface {
		changedSince(bucket string, since uint64) ([]string, bool)
	}); is {
		return ct.changedSince(bucket, since)
	}
	return nil, false
}

// maxLoggedKeys bounds the keys the log keeps per bucket; a reader further behind reads the
// whole bucket, which costs about as much as reading that many records.
const maxLoggedKeys = 8192

// changeLog keeps, per bucket, the keys that recent commits wrote, by commit ID (a bucket's
// version is the ID of the last commit that wrote it).
type changeLog struct {
	mu sync.Mutex
	// last is the last commit logged; floor is, per bucket, the version from which on every
	// commit writing it is logged (base, the store's last commit when it opened, by default).
	last, base uint64
	floor      map[string]uint64
	commits    map[string][]loggedCommit
	keys       map[string]int
}

type loggedCommit struct {
	id   uint64
	keys []string
}

func newChangeLog(base uint64) *changeLog {
	return &changeLog{last: base, base: base, floor: map[string]uint64{}, commits: map[string][]loggedCommit{}, keys: map[string]int{}}
}

// add logs commit id's writes, per bucket.
func (l *changeLog) add(id uint64, written map[string][]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = id
	for bucket, keys := range written {
		l.commits[bucket] = append(l.commits[bucket], loggedCommit{id: id, keys: keys})
		l.keys[bucket] += len(keys)
		for l.keys[bucket] > maxLoggedKeys {
			oldest := l.commits[bucket][0]
			l.commits[bucket] = l.commits[bucket][1:]
			l.keys[bucket] -= len(oldest.keys)
			l.floor[bucket] = oldest.id
		}
	}
}

// since returns the keys commits after version from wrote to bucket, up to version to.
func (l *changeLog) since(bucket string, from, to uint64) ([]string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	floor, trimmed := l.floor[bucket]
	if !trimmed {
		floor = l.base
	}
	if from < floor || to > l.last || from > to {
		return nil, false // not logged that far back; a commit not logged yet; a reader behind
	}
	// The commits are logged in ID order: a reader one commit behind reads one entry, not the log.
	commits := l.commits[bucket]
	first := sort.Search(len(commits), func(i int) bool { return commits[i].id > from })
	var keys []string
	for _, c := range commits[first:] {
		if c.id > to {
			break
		}
		keys = append(keys, c.keys...)
	}
	slices.Sort(keys)
	return slices.Compact(keys), true
}
