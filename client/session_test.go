package client

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/client/clienttest"
	"github.com/caucus/caucus/internal/mvcc"
)

// serverError returns the error a member sends for the state machine's refusal kind, built the
// way internal/server builds it (its toConnect maps the code, the message is the error's text),
// so these tests pin the contract between the client's classification and the server's text.
func serverError(code connect.Code, kind *mvcc.Error) error {
	return connect.NewError(code, &mvcc.Error{Code: kind.Code, Message: kind.Message + ": client 1 sequence 2"})
}

// putScript answers the Put attempts of a fake cluster from a script: step i gets the i-th
// attempt (counted from 1) and returns the error to send, applying the write first when apply
// is set; attempts beyond the script are served normally. It records every attempt's session.
type putScript struct {
	mu       sync.Mutex
	steps    map[int]scriptStep
	sessions []*caucusv1.Session
}

type scriptStep struct {
	apply bool  // apply the write before answering with err (a lost answer)
	err   error // nil: answer normally
}

func (p *putScript) intercept(ctx context.Context, m *clienttest.Member, proc string, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
	if proc != caucusv1connect.KVPutProcedure {
		return next(ctx, req)
	}
	p.mu.Lock()
	p.sessions = append(p.sessions, proto.Clone(req.Any().(*caucusv1.PutRequest).GetSession()).(*caucusv1.Session))
	step, scripted := p.steps[len(p.sessions)]
	p.mu.Unlock()
	if !scripted || step.err == nil {
		return next(ctx, req)
	}
	if step.apply {
		if _, err := next(ctx, req); err != nil {
			return nil, err
		}
	}
	return nil, step.err
}

func (p *putScript) attempts() []*caucusv1.Session {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*caucusv1.Session(nil), p.sessions...)
}

func TestExpiredSessionMovesToFreshLane(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps map[int]scriptStep
	}{
		{"first send refused", map[int]scriptStep{
			2: {err: serverError(connect.CodeFailedPrecondition, mvcc.ErrSessionExpired)},
		}},
		{"refused after a not-leader answer", map[int]scriptStep{
			2: {err: connect.NewError(connect.CodeUnavailable, errors.New("server: not leader"))},
			3: {err: serverError(connect.CodeFailedPrecondition, mvcc.ErrSessionExpired)},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := clienttest.NewCluster(t, 1)
			script := &putScript{steps: tc.steps}
			fc.SetInterceptor(script.intercept)
			c := newClient(t, Config{Endpoints: fc.Endpoints()})
			ctx := context.Background()

			if _, err := c.Put(ctx, "k", "v1"); err != nil {
				t.Fatalf("first Put: %v", err)
			}
			before := fc.Revision()
			resp, err := c.Put(ctx, "k", "v2")
			if err != nil {
				t.Fatalf("Put whose session expired before it was applied: %v", err)
			}
			if got := fc.Revision(); got != before+1 || resp.GetHeader().GetRevision() != got {
				t.Errorf("revision %d -> %d, answered %d: want one application", before, got, resp.GetHeader().GetRevision())
			}
			sent := script.attempts()
			old, moved := sent[0].GetClientId(), sent[len(sent)-1]
			for i, s := range sent[1 : len(sent)-1] {
				if s.GetClientId() != old || s.GetSequence() != 2 {
					t.Errorf("attempt %d carried %v, want the old lane's sequence 2", i+2, s)
				}
			}
			if moved.GetClientId() == old || moved.GetSequence() != 1 {
				t.Fatalf("final attempt carried %v, want a fresh client id at sequence 1 (old id %x)", moved, old)
			}
			if n := len(sent); n != len(tc.steps)+2 {
				t.Errorf("%d attempts in all, want %d: a single move to a fresh lane", n, len(tc.steps)+2)
			}
			if c.lanes.opened() != 2 || c.lanes.retired() != 1 {
				t.Errorf("lanes opened %d retired %d, want 2 and 1", c.lanes.opened(), c.lanes.retired())
			}
			// The fresh lane is kept; the expired one is never used again.
			if _, err := c.Put(ctx, "k", "v3"); err != nil {
				t.Fatal(err)
			}
			sent = script.attempts()
			if last := sent[len(sent)-1]; last.GetClientId() != moved.GetClientId() || last.GetSequence() != 2 {
				t.Errorf("next write carried %v, want the fresh lane %x at sequence 2", last, moved.GetClientId())
			}
		})
	}
}

func TestExpiredSessionAfterPossibleApplyIsOutcomeUnknown(t *testing.T) {
	fc := clienttest.NewCluster(t, 1)
	expired := serverError(connect.CodeFailedPrecondition, mvcc.ErrSessionExpired)
	script := &putScript{steps: map[int]scriptStep{
		// Applied, but the answer is lost; the retry finds the session forgotten.
		1: {apply: true, err: connect.NewError(connect.CodeUnavailable, errors.New("no quorum"))},
		2: {err: expired},
	}}
	fc.SetInterceptor(script.intercept)
	c := newClient(t, Config{Endpoints: fc.Endpoints()})
	ctx := context.Background()

	before := fc.Revision()
	_, err := c.Put(ctx, "k", "v")
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("Put = %v, want ErrOutcomeUnknown", err)
	}
	if !IsFailedPrecondition(err) || !isSessionExpired(err) {
		t.Errorf("error %v lost its cause", err)
	}
	sent := script.attempts()
	if len(sent) != 2 || !proto.Equal(sent[0], sent[1]) {
		t.Fatalf("attempts %v: want exactly the original and one retry with the same session, never a new identity", sent)
	}
	if got := fc.Revision(); got != before+1 {
		t.Errorf("revision %d -> %d: want the single application of the first attempt", before, got)
	}
	// The lane is retired: the next write opens a fresh one.
	if _, err := c.Put(ctx, "other", "v"); err != nil {
		t.Fatal(err)
	}
	sent = script.attempts()
	if last := sent[len(sent)-1]; last.GetClientId() == sent[0].GetClientId() || last.GetSequence() != 1 {
		t.Errorf("next write carried %v, want a fresh lane at sequence 1", last)
	}
	if c.lanes.retired() != 1 {
		t.Errorf("%d lanes retired, want 1", c.lanes.retired())
	}
}

func TestTooManySessionsIsNotRetried(t *testing.T) {
	fc := clienttest.NewCluster(t, 2)
	script := &putScript{steps: map[int]scriptStep{
		1: {err: serverError(connect.CodeResourceExhausted, mvcc.ErrTooManySessions)},
	}}
	fc.SetInterceptor(script.intercept)
	c := newClient(t, Config{Endpoints: fc.Endpoints()})
	ctx := context.Background()

	before := fc.Revision()
	_, err := c.Put(ctx, "k", "v")
	if !IsResourceExhausted(err) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("Put = %v, want a resource-exhausted error (nothing was applied)", err)
	}
	if n := len(script.attempts()); n != 1 {
		t.Errorf("%d attempts, want 1: a full session table is not retried", n)
	}
	if fc.Revision() != before {
		t.Errorf("refused write applied")
	}
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	sent := script.attempts()
	if sent[1].GetClientId() == sent[0].GetClientId() || sent[1].GetSequence() != 1 {
		t.Errorf("write after the refusal carried %v, want a fresh lane at sequence 1 (refused %v)", sent[1], sent[0])
	}
}

// A write stops sending attempts MaxWriteRetrySpan after it starts, however long its context
// allows, and keeps the configured RequestTimeout when the context has no deadline.
func TestWriteRetrySpanIsBounded(t *testing.T) {
	fc := clienttest.NewCluster(t, 1)
	c := newClient(t, Config{Endpoints: fc.Endpoints(), RequestTimeout: time.Hour})
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		max  time.Duration
	}{
		{"long context deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), time.Hour)
		}, MaxWriteRetrySpan},
		{"no deadline, long RequestTimeout", func() (context.Context, context.CancelFunc) {
			return context.WithCancel(context.Background())
		}, MaxWriteRetrySpan},
		{"short context deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), time.Second)
		}, time.Second},
	} {
		ctx, cancel := tc.ctx()
		var got time.Duration
		err := c.write(ctx, "put", func(*caucusv1.Session) {}, func(ctx context.Context, _ *endpoint) error {
			dl, ok := ctx.Deadline()
			if !ok {
				return errors.New("attempt has no deadline")
			}
			got = time.Until(dl)
			return nil
		})
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		// The lower bound only rules out a deadline derived from something else; it is far
		// from any scheduling delay between the write's start and its attempt.
		if got > tc.max || got < tc.max/2 {
			t.Errorf("%s: attempt had %v left, want at most %v", tc.name, got, tc.max)
		}
	}
}
