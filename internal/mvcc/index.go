package mvcc

import (
	"sort"
	"sync"
	"unsafe"

	"github.com/google/btree"
)

// The key index is the in-memory half of schema 4: for every key that has a stored version, the
// revisions of those versions in order, and the fields of the newest one. The history bucket,
// keyed by revision, holds the versions themselves; the index is what turns a key (or a key
// range) and a read revision into the revisions to fetch.
//
// Concurrency. One Batch writes the index while any number of readers read it. The index is
// guarded by mu: the Batch, its only writer, takes it exclusively around each change and reads
// without it; readers hold it shared while they pick revisions, a bounded number of keys at a
// time. The Batch appends the versions it writes before they are committed, so the index may
// hold revisions above a reader's bbolt transaction; a reader only ever considers revisions at
// or below its read revision, which its transaction holds. A Batch that does not commit removes
// what it appended (undo). Compaction removes revisions only after the batch that deleted them
// from the file has committed, and records the compacted revision it applied in compacted;
// a reader whose transaction predates that compaction (its compacted revision is lower) may be
// missing revisions it could observe, so it starts over on a new transaction (errIndexAhead).

// indexDegree is the B-tree's degree: nodes of up to 63 keys, as etcd's index.
const indexDegree = 32

// revision names a stored version: the revision of the command that wrote it, its position
// among that command's writes, and whether it is a tombstone. 16 bytes.
type revision struct {
	main int64
	sub  int32
	tomb bool
}

// less orders revisions as the history bucket does.
func (r revision) less(o revision) bool {
	return r.main < o.main || (r.main == o.main && r.sub < o.sub)
}

// keyIndex is one key's entry: 64 bytes in one allocation, plus the key, for a key with one
// stored version (most keys); a key with more holds the older ones in a slice of their own (24
// bytes and 16 per version). Keeping the newest version inline instead of in a slice of every
// version saves that slice's allocation for most keys. (Keeping the key in the B-tree's slots
// instead, beside a pointer to the rest, costs 17 more bytes per key and measured no faster:
// BenchmarkGetLargeKeyspace.)
type keyIndex struct {
	key string
	// last is the key's newest stored version; older are the versions before it, oldest first,
	// nil if there are none. An entry in the tree has at least last.
	last  revision
	older *[]revision
	// create, ver and lease describe the newest version (zero if it is a tombstone), so a write
	// finds what it needs without reading the file.
	create, ver, lease int64
}

func (ki *keyIndex) newest() revision { return ki.last }

// count is how many stored versions the entry holds.
func (ki *keyIndex) count() int {
	if ki.older == nil {
		return 1
	}
	return len(*ki.older) + 1
}

// rev returns the i-th stored version, oldest first.
func (ki *keyIndex) rev(i int) revision {
	if ki.older == nil || i == len(*ki.older) {
		return ki.last
	}
	return (*ki.older)[i]
}

// revs returns the stored versions, oldest first, in a new slice.
func (ki *keyIndex) revs() []revision {
	var out []revision
	if ki.older != nil {
		out = append(out, *ki.older...)
	}
	return append(out, ki.last)
}

// search returns the position of the first stored version that is not below r.
func (ki *keyIndex) search(r revision) int {
	return sort.Search(ki.count(), func(i int) bool { return !ki.rev(i).less(r) })
}

// push records a new newest version.
func (ki *keyIndex) push(r revision) {
	if ki.older == nil {
		ki.older = &[]revision{ki.last}
	} else {
		*ki.older = append(*ki.older, ki.last)
	}
	ki.last = r
}

// truncate keeps the n (at least 1) oldest versions.
func (ki *keyIndex) truncate(n int) {
	if n >= ki.count() {
		return
	}
	older := *ki.older
	ki.last = older[n-1]
	if n == 1 {
		ki.older = nil
		return
	}
	*ki.older = older[:n-1]
}

// dropOldest removes the n oldest versions, fewer than count.
func (ki *keyIndex) dropOldest(n int) {
	older := *ki.older
	if n == len(older) {
		ki.older = nil
		return
	}
	// A fresh slice: the old one may be far larger than what remains.
	rest := append(make([]revision, 0, len(older)-n), older[n:]...)
	ki.older = &rest
}

// at returns the newest version at or below rev; ok is false if the key had none then.
func (ki *keyIndex) at(rev int64) (revision, bool) {
	if ki.last.main <= rev {
		return ki.last, true
	}
	if ki.older == nil {
		return revision{}, false
	}
	// The i-th older version is the first above rev; the one before it is visible.
	older := *ki.older
	i := sort.Search(len(older), func(i int) bool { return older[i].main > rev })
	if i == 0 {
		return revision{}, false
	}
	return older[i-1], true
}

// index is the key index of a Store; see above.
type index struct {
	mu   sync.RWMutex
	tree *btree.BTreeG[*keyIndex]
	// compacted is the highest compaction revision whose removals were applied.
	compacted int64
	// probe is the writer's search key (get).
	probe keyIndex
}

func newIndex() *index {
	return &index{tree: btree.NewG(indexDegree, func(a, b *keyIndex) bool { return a.key < b.key })}
}

// probe returns a search key aliasing key, for lookups only: the tree compares with it and
// keeps nothing.
func probe(key []byte) *keyIndex {
	return &keyIndex{key: unsafe.String(unsafe.SliceData(key), len(key))}
}

// get returns key's entry or nil. Only the writer may call it without holding mu; it reuses one
// search key.
func (x *index) get(key []byte) *keyIndex {
	x.probe.key = unsafe.String(unsafe.SliceData(key), len(key))
	ki, _ := x.tree.Get(&x.probe)
	x.probe.key = ""
	return ki
}

// undo restores one entry as it was before a write of the open batch.
type undo struct {
	ki                 *keyIndex
	n                  int // versions before (0: the write added the entry)
	create, ver, lease int64
}

// add records a new newest version of key written by the open batch (the entry ki, nil for a
// key without one), and returns how to undo it.
func (x *index) add(ki *keyIndex, key []byte, r revision, rec *record) undo {
	x.mu.Lock()
	defer x.mu.Unlock()
	var u undo
	if ki == nil {
		ki = &keyIndex{key: string(key), last: r}
		x.tree.ReplaceOrInsert(ki)
		u = undo{ki: ki}
	} else {
		u = undo{ki: ki, n: ki.count(), create: ki.create, ver: ki.ver, lease: ki.lease}
		ki.push(r)
	}
	ki.create, ki.ver, ki.lease = rec.create, rec.version, rec.lease
	if rec.tombstone {
		ki.create, ki.ver, ki.lease = 0, 0, 0
	}
	return u
}

// revert undoes writes of a batch that did not commit, newest first.
func (x *index) revert(us []undo) {
	if len(us) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for i := len(us) - 1; i >= 0; i-- {
		u := us[i]
		if u.n == 0 {
			x.tree.Delete(u.ki)
			continue
		}
		u.ki.truncate(u.n)
		u.ki.create, u.ki.ver, u.ki.lease = u.create, u.ver, u.lease
	}
}

// cut removes the versions of a key below a revision, and the one at it if inclusive: the
// removals of one physical compaction step, applied once its batch committed.
type cut struct {
	ki        *keyIndex
	below     revision
	inclusive bool
}

// compact applies the removals of a committed compaction step at compaction revision rev.
func (x *index) compact(cuts []cut, rev int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, c := range cuts {
		n := c.ki.count()
		i := c.ki.search(c.below)
		if c.inclusive && i < n && c.ki.rev(i) == c.below {
			i++
		}
		if i == 0 {
			continue
		}
		if i == n {
			x.tree.Delete(c.ki)
			c.ki.older = nil
			continue
		}
		c.ki.dropOldest(i)
	}
	x.compacted = max(x.compacted, rev)
}

// hit is a key's version visible to a read, copied out of the index.
type hit struct {
	key string
	rev revision
	// newest says the version is the key's newest, whose fields follow; otherwise the reader
	// reads them from the file.
	newest             bool
	create, ver, lease int64
}

// scanChunk is how many keys a reader collects per hold of the index's lock: a long range does
// not hold back the writer for long.
const scanChunk = 256

// visible calls fn with the live version at atRev of each key in [from, end) (end nil: no
// bound), in key order, until fn returns false. locked is false only for the writer. floor is
// the compacted revision of the reader's transaction: if the index was compacted above it,
// visible returns errIndexAhead. fn runs without the lock held.
func (x *index) visible(from, end []byte, atRev int64, locked bool, floor int64, fn func(h *hit) (bool, error)) error {
	start := &keyIndex{key: string(from)}
	var buf []hit
	for {
		buf = buf[:0]
		last, done, err := x.chunk(start, end, locked, floor, func(ki *keyIndex) {
			if r, ok := ki.at(atRev); ok && !r.tomb {
				buf = append(buf, makeHit(ki, r))
			}
		})
		if err != nil {
			return err
		}
		for i := range buf {
			if more, err := fn(&buf[i]); err != nil || !more {
				return err
			}
		}
		if done {
			return nil
		}
		start = &keyIndex{key: last + "\x00"}
	}
}

// count returns how many keys in [from, end) are live at atRev, like visible.
func (x *index) count(from, end []byte, atRev int64, locked bool, floor int64) (int64, error) {
	var n int64
	start := &keyIndex{key: string(from)}
	for {
		last, done, err := x.chunk(start, end, locked, floor, func(ki *keyIndex) {
			if r, ok := ki.at(atRev); ok && !r.tomb {
				n++
			}
		})
		if err != nil || done {
			return n, err
		}
		start = &keyIndex{key: last + "\x00"}
	}
}

// chunk calls fn, under the read lock if locked, for up to scanChunk keys in [start, end), and
// returns the last key it passed to fn; done says the range was exhausted.
func (x *index) chunk(start *keyIndex, end []byte, locked bool, floor int64, fn func(*keyIndex)) (last string, done bool, err error) {
	if locked {
		if err := x.rlock(floor); err != nil {
			return "", false, err
		}
		defer x.mu.RUnlock()
	}
	done, n := true, 0
	x.tree.AscendGreaterOrEqual(start, func(ki *keyIndex) bool {
		if end != nil && ki.key >= string(end) {
			return false
		}
		if n == scanChunk {
			done = false
			return false
		}
		n++
		fn(ki)
		last = ki.key
		return true
	})
	return last, done, nil
}

// rlock takes the read lock for a reader whose transaction was compacted at floor, or returns
// errIndexAhead (without the lock) if the index was compacted above it.
func (x *index) rlock(floor int64) error {
	x.mu.RLock()
	if x.compacted > floor {
		x.mu.RUnlock()
		return errIndexAhead
	}
	return nil
}

func makeHit(ki *keyIndex, r revision) hit {
	h := hit{key: ki.key, rev: r}
	if r == ki.newest() {
		h.newest, h.create, h.ver, h.lease = true, ki.create, ki.ver, ki.lease
	}
	return h
}

// point is visible for the single key key, without the scan's allocations.
func (x *index) point(key []byte, atRev int64, locked bool, floor int64) (h hit, ok bool, err error) {
	if locked {
		if err := x.rlock(floor); err != nil {
			return hit{}, false, err
		}
		defer x.mu.RUnlock()
	}
	ki, found := x.tree.Get(probe(key))
	if !found {
		return hit{}, false, nil
	}
	r, ok := ki.at(atRev)
	if !ok || r.tomb {
		return hit{}, false, nil
	}
	return makeHit(ki, r), true, nil
}

// before returns the version of key that precedes r (the previous version of an event), if the
// index still holds it.
func (x *index) before(key []byte, r revision, floor int64) (revision, bool, error) {
	if err := x.rlock(floor); err != nil {
		return revision{}, false, err
	}
	defer x.mu.RUnlock()
	ki, found := x.tree.Get(probe(key))
	if !found {
		return revision{}, false, nil
	}
	i := ki.search(r)
	if i == 0 {
		return revision{}, false, nil
	}
	return ki.rev(i - 1), true, nil
}
