package mvcc

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/caucus/caucus/internal/logpb"
)

// Compaction is logical first, physical later. Applying a compaction command only raises the
// compacted revision: from then on reads below it fail with ErrCompacted, so the versions it
// makes unreachable are no longer observable. Discarding them is work proportional to the
// revisions since the previous compaction (possibly millions), which must not stall the apply
// loop, so each Batch does a bounded share of it (compactBudget revision entries) just before it
// commits. Where physical compaction stands is persisted (meta compact_next), so it resumes after
// a restart or a snapshot restore. Members may be at different points of physical compaction;
// that changes the file, never a read result or an event, since both are confined to revisions
// at or above the compacted revision.

// defaultCompactBudget bounds the revision entries one Batch compacts physically: a few
// milliseconds of work, and far more entries than a batch writes, so compaction keeps up.
const defaultCompactBudget = 4096

// compact applies a compaction command: versions that no read at or above rev can see become
// garbage: for each key, the versions older than its newest version at or below rev, and that
// version itself if it is a tombstone.
func (b *Batch) compact(rev int64) (*logpb.CompactionResponse, error) {
	switch {
	case rev <= b.st.compactRev:
		return nil, errorf(ErrCompacted, "revision %d, already compacted at %d", rev, b.st.compactRev)
	case rev > b.st.rev:
		return nil, errorf(ErrFutureRev, "revision %d, current %d", rev, b.st.rev)
	}
	b.s.log.Info("compaction", "revision", rev, "previous", b.st.compactRev, "index", b.index)
	b.st.compactRev = rev
	return &logpb.CompactionResponse{}, nil
}

// compactStep discards up to budget revision entries' worth of garbage. It walks the revision log
// from where it stopped (st.compactNext) up to the compacted revision, in revision order; for each
// version found it removes the key's older versions, and the version itself if it is a
// tombstone. Versions before the walk's position were already reduced to at most one live
// version per key, which a newer version reached by the walk removes in turn.
func (b *Batch) compactStep(budget int) error {
	type entry struct {
		rev, sub  int64
		tombstone bool
		key       []byte
	}
	// Collect first, delete after: a bbolt cursor must not iterate across its own deletions.
	var todo []entry
	c := b.rev.Cursor()
	for k, v := c.Seek(revKey(b.st.compactNextRev, b.st.compactNextSub)); k != nil && len(todo) < budget; k, v = c.Next() {
		r := int64(binary.BigEndian.Uint64(k))
		if r > b.st.compactRev {
			break
		}
		if len(v) < 1 {
			return errorCorrupt("empty revision entry")
		}
		todo = append(todo, entry{rev: r, sub: int64(binary.BigEndian.Uint64(k[8:])),
			tombstone: v[0]&flagTombstone != 0, key: bytes.Clone(v[1:])})
	}
	removed := 0
	for _, e := range todo {
		n, err := b.removeOlder(e.key, e.rev, e.sub, e.tombstone)
		if err != nil {
			return err
		}
		removed += n
	}
	if len(todo) < budget {
		// Caught up: continue after the compacted revision next time.
		b.st.compactNextRev, b.st.compactNextSub = b.st.compactRev+1, 0
		if len(todo) > 0 {
			b.s.log.Info("compaction done", "revision", b.st.compactRev, "versions_removed", removed)
		}
		return nil
	}
	last := todo[len(todo)-1]
	b.st.compactNextRev, b.st.compactNextSub = last.rev, last.sub+1
	b.s.log.Debug("compaction step", "revision", b.st.compactRev, "at", last.rev, "versions_removed", removed)
	return nil
}

// removeOlder deletes the versions of key older than (rev, sub), and (rev, sub) itself if
// inclusive, from the kv and rev buckets.
func (b *Batch) removeOlder(key []byte, rev, sub int64, inclusive bool) (int, error) {
	at := kvKey(nil, key, rev, sub)
	prefix := at[:len(at)-16]
	var doomed [][]byte
	c := b.kv.Cursor()
	k, _ := c.Seek(at)
	if k != nil && inclusive && bytes.Equal(k, at) {
		doomed = append(doomed, bytes.Clone(k))
	}
	if k != nil && bytes.Equal(k, at) {
		k, _ = c.Next()
	}
	for ; k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(at); k, _ = c.Next() {
		doomed = append(doomed, bytes.Clone(k))
	}
	for _, d := range doomed {
		_, r, s := splitKVKey(d)
		if err := b.kv.Delete(d); err != nil {
			return 0, fmt.Errorf("compact key %q revision %d: %w", key, r, err)
		}
		if err := b.rev.Delete(revKey(r, s)); err != nil {
			return 0, fmt.Errorf("compact revision %d.%d: %w", r, s, err)
		}
	}
	return len(doomed), nil
}
