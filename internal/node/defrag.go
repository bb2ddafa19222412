package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/caucus/caucus/internal/mvcc"
)

// Defragment rewrites this member's state machine file into a compact copy (mvcc.Store.Defragment)
// and returns the file size before and after.
//
// It runs on the loop goroutine, after committing the open apply transaction: the store requires
// that no batch be open, and the loop is the only place batches are opened. While it runs, which
// takes about as long as reading the live data once, this member processes nothing else: no Raft
// messages, proposals, ticks or reads. Like etcd's defrag, it is an operator action on one member
// at a time: a quorum keeps serving while one member is busy, and the busy member catches up from
// the leader afterwards (it may miss heartbeats long enough to trigger an election if it led;
// transfer leadership away first on a large store).
//
// ctx bounds only the wait: once the loop has started the defragmentation it runs to completion
// even if ctx expires, and the sizes are then lost to this caller (Status reports the new size).
// A failure after the file was swapped (the store cannot be reopened) stops the member, as any
// state machine I/O error does; a failure before leaves the member running on its current file.
func (n *Node) Defragment(ctx context.Context) (before, after int64, err error) {
	type result struct {
		before, after int64
		err           error
	}
	done := make(chan result, 1) // buffered: the loop never waits for this caller
	f := func() {
		if err := n.commitApplied(); err != nil {
			n.stopFatal(err)
			done <- result{err: fmt.Errorf("%w: %w", ErrStopped, err)}
			return
		}
		b, a, err := n.store.Defragment()
		if errors.Is(err, mvcc.ErrClosed) {
			// The store could not be reopened: applying cannot go on. A restart opens the file,
			// which is complete whether or not the rename happened.
			err = fmt.Errorf("node: defragment: state machine unusable: %w", err)
			n.stopFatal(err)
			done <- result{err: fmt.Errorf("%w: %w", ErrStopped, err)}
			return
		}
		if err != nil {
			err = fmt.Errorf("node: defragment: %w", err)
		}
		done <- result{b, a, err}
	}
	select {
	case n.ctrlc <- f:
	case <-ctx.Done():
		return 0, 0, fmt.Errorf("%w: defragment not started: %w", ErrUnavailable, ctx.Err())
	case <-n.donec:
		return 0, 0, ErrStopped
	}
	select {
	case r := <-done:
		return r.before, r.after, r.err
	case <-ctx.Done():
		return 0, 0, fmt.Errorf("%w: defragment still running: %w", ErrUnavailable, ctx.Err())
	case <-n.donec:
		// The loop may have finished the work just before exiting.
		select {
		case r := <-done:
			return r.before, r.after, r.err
		default:
			return 0, 0, ErrStopped
		}
	}
}

// stopFatal records a fatal error from code running on the loop outside the loop's own select
// (a control function cannot return from the loop), and makes the loop exit at its next turn.
func (n *Node) stopFatal(err error) {
	n.fail(err)
	n.stopOnce.Do(func() { close(n.stopc) })
}
