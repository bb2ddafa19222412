package mvcc

import (
	"bytes"
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

// compactStep discards up to budget history entries' worth of garbage. It walks the history
// bucket from where it stopped (st.compactNext) up to the compacted revision, in revision order;
// for each version found it removes the key's older versions, and the version itself if it is a
// tombstone. Versions before the walk's position were already reduced to at most one per key,
// which a newer version reached by the walk removes in turn. The key index says which older
// versions a key has; the removals are returned as cuts, for the index to apply once the batch
// has committed (see index.go).
func (b *Batch) compactStep(budget int) ([]cut, error) {
	type entry struct {
		rev revision
		key []byte
	}
	// Collect first, delete after: a bbolt cursor must not iterate across its own deletions.
	var todo []entry
	c := b.hist.Cursor()
	for k, v := c.Seek(histKey(b.st.compactNextRev, b.st.compactNextSub)); k != nil && len(todo) < budget; k, v = c.Next() {
		r, sub, ok := splitHistKey(k)
		if !ok {
			return nil, errorCorrupt(fmt.Sprintf("history key %x", k))
		}
		if r > b.st.compactRev {
			break
		}
		rec, err := decodeRecord(v)
		if err != nil {
			return nil, err
		}
		todo = append(todo, entry{rev: revision{main: r, sub: int32(sub), tomb: rec.tombstone}, key: bytes.Clone(rec.key)})
	}
	// done[ki] is how many of ki's oldest versions this step already deleted: the index changes
	// only after the commit, so a key's later entries must not delete them again.
	done := map[*keyIndex]int{}
	cuts := make([]cut, 0, len(todo))
	removed := 0
	for _, e := range todo {
		ki := b.s.idx.get(e.key)
		if ki == nil {
			return nil, errorCorrupt(fmt.Sprintf("version %d.%d of key %q is not in the key index", e.rev.main, e.rev.sub, e.key))
		}
		at := ki.search(e.rev)
		if at == ki.count() || ki.rev(at) != e.rev {
			return nil, errorCorrupt(fmt.Sprintf("version %d.%d of key %q is not in the key index", e.rev.main, e.rev.sub, e.key))
		}
		end := at
		if e.rev.tomb {
			end++
		}
		for i := done[ki]; i < end; i++ {
			r := ki.rev(i)
			if err := b.hist.Delete(histKey(r.main, int64(r.sub))); err != nil {
				return nil, fmt.Errorf("compact version %d.%d of key %q: %w", r.main, r.sub, e.key, err)
			}
			removed++
		}
		done[ki] = max(done[ki], end)
		cuts = append(cuts, cut{ki: ki, below: e.rev, inclusive: e.rev.tomb})
	}
	if len(todo) < budget {
		// Caught up: continue after the compacted revision next time.
		b.st.compactNextRev, b.st.compactNextSub = b.st.compactRev+1, 0
		if len(todo) > 0 {
			b.s.log.Info("compaction done", "revision", b.st.compactRev, "versions_removed", removed)
		}
		return cuts, nil
	}
	last := todo[len(todo)-1].rev
	b.st.compactNextRev, b.st.compactNextSub = last.main, int64(last.sub)+1
	b.s.log.Debug("compaction step", "revision", b.st.compactRev, "at", last.main, "versions_removed", removed)
	return cuts, nil
}
