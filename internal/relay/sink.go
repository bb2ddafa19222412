package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// Sink delivers one event to a destination and returns once the destination acknowledged it.
// It is safe for concurrent use (the relay sends events of different keys in parallel).
type Sink interface {
	Send(ctx context.Context, ev *caucusv1.Event) error
	Close() error
}

// PermanentError is a failure that sending the same event again cannot fix.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Retry bounds the attempts of one delivery.
type Retry struct {
	// First and Max bound the exponential backoff between attempts.
	First, Max time.Duration
	// Span bounds the time spent on one delivery before it is given back to the consumer.
	Span time.Duration
}

// DefaultRetry: 100 ms doubling up to 5 s, for at most 20 s per delivery (under the consumer's
// default 30 s ack wait, so a delivery is given back before caucus would redeliver it).
var DefaultRetry = Retry{First: 100 * time.Millisecond, Max: 5 * time.Second, Span: 20 * time.Second}

// send delivers ev through s, retrying transient failures with backoff within r.Span. wait is
// the sleep (a timer; tests pass one that records). It returns the last error when it gives up.
func send(ctx context.Context, s Sink, ev *caucusv1.Event, r Retry, wait func(context.Context, time.Duration) error) error {
	ctx, cancel := context.WithTimeout(ctx, r.Span)
	defer cancel()
	backoff := r.First
	for attempt := 1; ; attempt++ {
		err := s.Send(ctx, ev)
		if err == nil {
			return nil
		}
		var perm *PermanentError
		if errors.As(err, &perm) {
			return err
		}
		if werr := wait(ctx, backoff); werr != nil {
			return fmt.Errorf("event %s: giving up after %d attempts: %w", ev.GetId(), attempt, err)
		}
		backoff = min(2*backoff, r.Max)
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
