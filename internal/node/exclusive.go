package node

import (
	"context"
	"errors"
	"fmt"
)

// ErrFatal, wrapped in an error returned by a function given to Exclusive, stops the member:
// the state machine cannot go on (a file that could not be reopened, say).
var ErrFatal = errors.New("fatal")

// Exclusive runs fn on the loop goroutine, after committing what the state machine applied, so
// that fn sees the state machine alone: no entry is applied, and nothing else (Raft messages,
// proposals, ticks, reads) is processed, until fn returns. It is for maintenance that must not
// overlap applying, such as defragmenting the state machine's file (fsm.Defragment), which
// makes it an operator action on one member at a time: a quorum keeps serving while one member
// is busy, and the busy member catches up from the leader afterwards (it may miss heartbeats
// long enough to trigger an election if it led).
//
// ctx bounds only the wait: once fn has started it runs to completion even if ctx expires, and
// its error is then lost to this caller. An error wrapping ErrFatal stops the member, as any
// state machine I/O error does; any other error is returned and the member keeps running.
func (n *Node) Exclusive(ctx context.Context, fn func() error) error {
	done := make(chan error, 1) // buffered: the loop never waits for this caller
	f := func() {
		if err := n.commitApplied(); err != nil {
			n.stopFatal(err)
			done <- fmt.Errorf("%w: %w", ErrStopped, err)
			return
		}
		err := fn()
		if errors.Is(err, ErrFatal) {
			n.stopFatal(err)
			err = fmt.Errorf("%w: %w", ErrStopped, err)
		}
		done <- err
	}
	select {
	case n.ctrlc <- f:
	case <-ctx.Done():
		return fmt.Errorf("%w: not started: %w", ErrUnavailable, ctx.Err())
	case <-n.donec:
		return ErrStopped
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: still running: %w", ErrUnavailable, ctx.Err())
	case <-n.donec:
		// The loop may have finished the work just before exiting.
		select {
		case err := <-done:
			return err
		default:
			return ErrStopped
		}
	}
}

// stopFatal records a fatal error from code running on the loop outside the loop's own select
// (a control function cannot return from the loop), and makes the loop exit at its next turn.
func (n *Node) stopFatal(err error) {
	n.fail(err)
	n.stopOnce.Do(func() { close(n.stopc) })
}

// CommitApplied makes everything this member's state machine has applied visible to readers of
// its committed state, without waiting for the group commit (a snapshot download wants every
// entry the member applied). It needs no quorum.
func (n *Node) CommitApplied(ctx context.Context) error {
	return n.Exclusive(ctx, func() error { return nil })
}
