package node

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/caucus/caucus/raft"
)

// readBatchTimeout bounds how long a read-index request may stay unanswered (a lost message, a
// leader that stepped down) before its readers are failed and may retry.
const readBatchTimeout = 3 * time.Second

// LinearizableRead returns once this member has applied every write acknowledged before the call
// (dissertation 6.4): a read of the state machine afterwards is linearizable. Concurrent callers
// share one read-index round.
func (n *Node) LinearizableRead(ctx context.Context) error {
	rw := &readWaiter{done: make(chan error, 1)}
	select {
	case n.readc <- rw:
	case <-ctx.Done():
		return fmt.Errorf("%w: read queue full until deadline: %w", ErrUnavailable, ctx.Err())
	case <-n.donec:
		return ErrStopped
	}
	select {
	case err := <-rw.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: no quorum: read index not confirmed before the deadline: %w", ErrUnavailable, ctx.Err())
	case <-n.donec:
		return ErrStopped
	}
}

type readWaiter struct {
	done chan error // buffered(1): the loop never blocks on it
	// served is the state machine's visible applied index when the read was released.
	served uint64
}

type readBatch struct {
	ctx       []byte
	waiters   []*readWaiter
	index     uint64
	confirmed bool
	issued    time.Time
}

// readQueue is owned by the loop goroutine. Readers that arrive while a round is in flight wait
// for the next round: a round only covers writes acknowledged before it was requested.
type readQueue struct {
	pending  []*readWaiter
	inflight []*readBatch
	seq      uint64
}

func (q *readQueue) add(rw *readWaiter) { q.pending = append(q.pending, rw) }

// issue starts one read-index round for every pending reader.
func (q *readQueue) issue(n *Node) {
	now := n.clock.Now()
	q.expire(now)
	if len(q.pending) == 0 {
		return
	}
	q.seq++
	ctx := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(n.id))
	ctx = binary.BigEndian.AppendUint64(ctx, q.seq)
	if err := n.rn.ReadIndex(ctx); err != nil {
		err = mapRaftErr(err)
		for _, w := range q.pending {
			w.done <- err
		}
		q.pending = nil
		return
	}
	q.inflight = append(q.inflight, &readBatch{ctx: ctx, waiters: q.pending, issued: now})
	q.pending = nil
}

func (q *readQueue) confirmed(rs raft.ReadState) {
	for _, b := range q.inflight {
		if string(b.ctx) == string(rs.RequestCtx) {
			b.index = rs.Index
			b.confirmed = true
			return
		}
	}
}

// release answers the batches whose read index has been applied. Read indexes are not
// necessarily monotonic across batches after a leader change, so every batch is checked.
func (q *readQueue) release(applied uint64) {
	kept := q.inflight[:0]
	for _, b := range q.inflight {
		if b.confirmed && b.index <= applied {
			for _, w := range b.waiters {
				w.served = applied
				w.done <- nil
			}
			continue
		}
		kept = append(kept, b)
	}
	clear(q.inflight[len(kept):])
	q.inflight = kept
}

// waitsFor reports whether a confirmed round waits for an index this member has applied
// (applied) but not yet committed to the state machine (visible): then the commit must not wait
// for the group-commit timer.
func (q *readQueue) waitsFor(visible, applied uint64) bool {
	for _, b := range q.inflight {
		if b.confirmed && b.index > visible && b.index <= applied {
			return true
		}
	}
	return false
}

func (q *readQueue) expire(now time.Time) {
	kept := q.inflight[:0]
	for _, b := range q.inflight {
		if !b.confirmed && now.Sub(b.issued) > readBatchTimeout {
			for _, w := range b.waiters {
				w.done <- fmt.Errorf("%w: no quorum: read index not confirmed within %s", ErrUnavailable, readBatchTimeout)
			}
			continue
		}
		kept = append(kept, b)
	}
	clear(q.inflight[len(kept):])
	q.inflight = kept
}

// failAll fails every reader whose round is not confirmed yet. Confirmed rounds stay: their
// index was confirmed by a quorum, so serving them once applied is still linearizable.
func (q *readQueue) failAll(err error) {
	for _, w := range q.pending {
		w.done <- err
	}
	q.pending = nil
	kept := q.inflight[:0]
	for _, b := range q.inflight {
		if b.confirmed {
			kept = append(kept, b)
			continue
		}
		for _, w := range b.waiters {
			w.done <- err
		}
	}
	clear(q.inflight[len(kept):])
	q.inflight = kept
}
