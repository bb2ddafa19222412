package mvcc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/caucus/caucus/internal/logpb"
)

// Retention. Key compaction removes the history below the compacted revision; events are kept
// longer while a consumer needs them: the events floor (state.evFloor, persisted) is
//
//	min(compacted revision + 1, the ack floor revision of every consumer that holds events)
//
// and only events below it are removed (a bounded share per batch, like key versions). The
// consumers that hold events are those of the cfloor index: every consumer that is not stalled.
// A consumer holds events beyond key compaction only within its limits: when the events it
// holds below the compacted revision are older than its max age, or larger than its max bytes,
// it is stalled: it leaves the index (the floor may rise past its unacknowledged events), its
// record says why, and every member logs it at error level (the alarm). The checks run at each
// compaction command for every consumer that holds something, and at each fetch for its
// consumer, with the command's time.
//
// A stalled consumer goes on from the events floor: its next fetch forgets the pending events
// that were removed (counted as lost) and skips to the floor. It holds events again once it no
// longer needs anything below the compacted revision.
//
// The floor only rises: a consumer is created at or above it, an ack floor only rises, and the
// compacted revision only grows.

// refreshEventsFloor raises the events floor to what the compacted revision and the holding
// consumers allow.
func (b *Batch) refreshEventsFloor() {
	f := b.st.compactRev + 1
	if k, _ := b.cons.floor.Cursor().First(); k != nil {
		if len(k) < 8 {
			b.fail(errorCorrupt(fmt.Sprintf("retention key %x", k)))
			return
		}
		if r := int64(binary.BigEndian.Uint64(k)); r < f {
			f = r
		}
	}
	if f > b.st.evFloor {
		b.st.evFloor = f
	}
}

// recordEventSizes records, for the command's revision, the bytes and events published before
// it and through it (evsize).
func (b *Batch) recordEventSizes() error {
	v := make([]byte, 0, 32)
	for _, n := range []int64{b.evBefore[0], b.evBefore[1], b.st.evBytes, b.st.evCount} {
		v = binary.BigEndian.AppendUint64(v, uint64(n))
	}
	if err := b.cons.evsize.Put(putU64(uint64(b.pendRev)), v); err != nil {
		return fmt.Errorf("record event sizes of revision %d: %w", b.pendRev, err)
	}
	return nil
}

// pruneEventSizes removes the evsize entries below rev.
func (b *Batch) pruneEventSizes(rev int64) error {
	var gone [][]byte
	c := b.cons.evsize.Cursor()
	for k, _ := c.First(); k != nil && int64(u64(k)) < rev; k, _ = c.Next() {
		gone = append(gone, bytes.Clone(k))
	}
	for _, k := range gone {
		if err := b.cons.evsize.Delete(k); err != nil {
			return fmt.Errorf("prune event sizes: %w", err)
		}
	}
	return nil
}

// publishedBefore returns the bytes and events published before revision rev.
func publishedBefore(cb consumerBuckets, st state, rev int64) (bytes, count int64) {
	k, v := cb.evsize.Cursor().Seek(putU64(uint64(rev)))
	if k == nil || len(v) != 32 {
		return st.evBytes, st.evCount
	}
	return int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:]))
}

// holdForConsumers runs after a compaction command raised the compacted revision: every
// consumer that would hold events below it moves past the events it does not select, and is
// stalled if what it still holds exceeds its retention; then the events floor is raised.
func (b *Batch) holdForConsumers() {
	var names []string
	c := b.cons.floor.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) < 8 {
			b.fail(errorCorrupt(fmt.Sprintf("retention key %x", k)))
			return
		}
		if int64(binary.BigEndian.Uint64(k)) > b.st.compactRev {
			break
		}
		names = append(names, string(k[8:]))
	}
	budget := retentionScanBudget
	for _, name := range names {
		if budget <= 0 {
			break
		}
		c, err := b.loadConsumer(name)
		if err != nil {
			b.fail(fmt.Errorf("consumer %q of the retention index: %w", name, err))
			return
		}
		budget -= b.checkRetention(c)
	}
	b.refreshEventsFloor()
}

// checkRetention moves a holding consumer past the events it does not select up to the
// compacted revision (a consumer idle on a quiet topic holds nothing), then stalls it if the
// events it still holds below the compacted revision are past its max age or max bytes. It
// returns how many events it examined. A consumer whose scan stops at its budget, short of an
// event it selects, is not judged this time: it holds what it holds until a later check.
func (b *Batch) checkRetention(c *consumer) (scanned int) {
	if c.rec.Stalled || c.rec.AckFloorRevision > b.st.compactRev {
		return 0
	}
	limit := position{b.st.compactRev + 1, 0}
	next := nextOf(c.rec)
	if next.less(limit) {
		ec := b.events.Cursor()
		for k, v := ec.Seek(next.key()); ; k, v = ec.Next() {
			p, ok := splitPos(k)
			if k == nil || !p.less(limit) {
				next = limit
				break
			}
			if !ok {
				b.fail(errorCorrupt(fmt.Sprintf("event key %x", k)))
				return
			}
			if scanned == fetchScanBudget {
				c.rec.NextRevision, c.rec.NextIndex = next.rev, next.idx
				b.settle(c)
				return scanned
			}
			scanned++
			topic, err := eventTopic(v)
			if err != nil {
				b.fail(err)
				return
			}
			if c.filter.Match(topic) {
				break
			}
			next = p.after()
		}
		c.rec.NextRevision, c.rec.NextIndex = next.rev, next.idx
		b.settle(c)
		if b.err != nil || c.rec.AckFloorRevision > b.st.compactRev {
			return scanned
		}
	}
	floor := ackFloorOf(c.rec)
	cfg := c.rec.Config
	held, _ := publishedBefore(b.cons, b.st, b.st.compactRev+1)
	before, _ := publishedBefore(b.cons, b.st, floor.rev)
	if held -= before; held > cfg.MaxBytes {
		b.stall(c, fmt.Sprintf("max bytes: it holds %d bytes of events below the compacted revision %d, limit %d", held, b.st.compactRev, cfg.MaxBytes))
		return
	}
	k, _ := b.events.Cursor().Seek(floor.key())
	if p, ok := splitPos(k); ok && p.rev <= b.st.compactRev {
		ev, _, err := readEvent(b.events, p)
		if err != nil {
			b.fail(err)
			return
		}
		if age := time.Duration(b.now - ev.TimeUnixNano); age > time.Duration(cfg.MaxAgeSeconds)*time.Second {
			b.stall(c, fmt.Sprintf("max age: its oldest unacknowledged event (%s) is %v old, limit %v", p, age.Round(time.Second),
				time.Duration(cfg.MaxAgeSeconds)*time.Second))
		}
	}
	return scanned
}

// stall lets go of the events a consumer holds.
func (b *Batch) stall(c *consumer, reason string) {
	if err := b.cons.floor.Delete(floorKey(c.rec.AckFloorRevision, c.name)); err != nil {
		b.fail(fmt.Errorf("consumer %q: leave retention: %w", c.name, err))
		return
	}
	c.rec.Stalled = true
	c.rec.StalledReason = fmt.Sprintf("stalled at revision %d by %s; events below the compacted revision are no longer kept for it", b.st.rev, reason)
	b.saveConsumer(c)
	b.refreshEventsFloor()
	b.s.log.Error("consumer stalled: retention lets go of its unacknowledged events", "consumer", c.name, "reason", reason,
		"ack_floor", c.rec.AckFloorRevision, "compacted", b.st.compactRev, "index", b.index)
}

// skipLost brings a stalled consumer up to the events floor: the pending events below it were
// removed and are counted as lost, and the search for new events resumes at the floor. A
// consumer that then needs nothing below the compacted revision holds events again.
func (b *Batch) skipLost(c *consumer) {
	if !c.rec.Stalled {
		return
	}
	if c.rec.AckFloorRevision < b.st.evFloor {
		prefix := consPrefix(c.name)
		var gone []position
		cur := b.cons.pending.Cursor()
		for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
			p, ok := splitPos(k[len(prefix):])
			if !ok {
				b.fail(errorCorrupt(fmt.Sprintf("pending key %x", k)))
				return
			}
			if p.rev >= b.st.evFloor {
				break
			}
			gone = append(gone, p)
		}
		for _, p := range gone {
			b.removeEntry(c, p)
		}
		c.rec.Lost += int64(len(gone))
		next := maxPos(nextOf(c.rec), position{b.st.evFloor, 0})
		c.rec.NextRevision, c.rec.NextIndex = next.rev, next.idx
		b.settle(c)
		b.s.log.Warn("stalled consumer skips to the retained events", "consumer", c.name, "pending_lost", len(gone), "from", b.st.evFloor, "index", b.index)
	}
	if b.err == nil && c.rec.AckFloorRevision > b.st.compactRev {
		if err := b.cons.floor.Put(floorKey(c.rec.AckFloorRevision, c.name), []byte{}); err != nil {
			b.fail(fmt.Errorf("consumer %q: rejoin retention: %w", c.name, err))
			return
		}
		c.rec.Stalled = false
		b.saveConsumer(c)
		b.s.log.Info("consumer holds events again", "consumer", c.name, "ack_floor", c.rec.AckFloorRevision, "lost", c.rec.Lost, "index", b.index)
	}
}

// lossNote is appended to a stalled reason in reports.
func lossNote(r *logpb.ConsumerRecord) string {
	if r.Lost == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d pending events lost)", r.Lost)
}
