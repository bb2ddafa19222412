package server

import (
	"context"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// consumersService serves the durable consumers (internal/mvcc/consumer.go). Creating, deleting,
// fetching and acknowledging are commands of the log; info and list read the committed state
// after a read index, like a linearizable range.
type consumersService struct{ s *Server }

func (c *consumersService) ConsumerCreate(ctx context.Context, req *connect.Request[caucusv1.ConsumerCreateRequest]) (*connect.Response[caucusv1.ConsumerCreateResponse], error) {
	return write(ctx, c.s, &logpb.Command{Op: &logpb.Command_ConsumerCreate{ConsumerCreate: consumerCreateToLog(req.Msg)}}, consumerCreateFromLog)
}

func (c *consumersService) ConsumerDelete(ctx context.Context, req *connect.Request[caucusv1.ConsumerDeleteRequest]) (*connect.Response[caucusv1.ConsumerDeleteResponse], error) {
	return write(ctx, c.s, &logpb.Command{Op: &logpb.Command_ConsumerDelete{ConsumerDelete: consumerDeleteToLog(req.Msg)}}, consumerDeleteFromLog)
}

func (c *consumersService) ConsumerInfo(ctx context.Context, req *connect.Request[caucusv1.ConsumerInfoRequest]) (*connect.Response[caucusv1.ConsumerInfoResponse], error) {
	s := c.s
	if err := mvcc.CheckConsumerName(req.Msg.Name); err != nil {
		return nil, toConnect(err)
	}
	if err := s.linearize(ctx); err != nil {
		return nil, err
	}
	st, err := s.store.Consumer(req.Msg.Name, time.Now())
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&caucusv1.ConsumerInfoResponse{Header: s.header(0), Consumer: consumerStateFromLog(st)}), nil
}

func (c *consumersService) ConsumerList(ctx context.Context, _ *connect.Request[caucusv1.ConsumerListRequest]) (*connect.Response[caucusv1.ConsumerListResponse], error) {
	s := c.s
	if err := s.linearize(ctx); err != nil {
		return nil, err
	}
	sts, err := s.store.Consumers(time.Now())
	if err != nil {
		return nil, toConnect(err)
	}
	out := &caucusv1.ConsumerListResponse{Header: s.header(0)}
	for _, st := range sts {
		out.Consumers = append(out.Consumers, consumerStateFromLog(st))
	}
	return connect.NewResponse(out), nil
}

func (c *consumersService) Ack(ctx context.Context, req *connect.Request[caucusv1.AckRequest]) (*connect.Response[caucusv1.AckResponse], error) {
	return write(ctx, c.s, &logpb.Command{Op: &logpb.Command_Ack{Ack: ackToLog(req.Msg)}}, ackFromLog)
}

// maxEmptyFetches bounds the fetch proposals in a row that hand out nothing although the state
// said something was ready (a follower's state behind the leader's), before the fetch waits
// for a change.
const maxEmptyFetches = 3

// Fetch proposes a fetch only when the committed state says it would hand something out (or has
// a long way to go through other topics). With wait_ms and nothing ready, it waits at the
// server, up to wait_ms (at most mvcc.MaxFetchWait) and the request's deadline, for a commit
// with new events, a consumer change (an ack that frees a key or room), or the earliest
// deadline of a pending delivery, and looks again.
func (c *consumersService) Fetch(ctx context.Context, req *connect.Request[caucusv1.FetchRequest]) (*connect.Response[caucusv1.FetchResponse], error) {
	s := c.s
	cmd := &logpb.Command{Op: &logpb.Command_Fetch{Fetch: fetchToLog(req.Msg)}}
	if err := s.store.Limits().Validate(cmd); err != nil {
		return nil, toConnect(err)
	}
	name := req.Msg.Consumer
	wait := min(time.Duration(req.Msg.WaitMs)*time.Millisecond, mvcc.MaxFetchWait)
	until := time.Now().Add(wait)
	if dl, ok := ctx.Deadline(); ok {
		// Answer (empty) a little before the caller gives up, rather than not at all.
		if early := dl.Add(-min(100*time.Millisecond, time.Until(dl)/10)); early.Before(until) {
			until = early
		}
	}
	s.fetchWaiting.Add(1)
	defer s.fetchWaiting.Add(-1)
	empty, linearized := 0, false
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		// Take the wake-ups before looking, so that a commit between the look and the wait
		// is not missed.
		revs, cons := s.store.RevChanged(), s.store.ConsumersChanged()
		now := time.Now()
		ready, wake, err := s.store.FetchReady(name, now)
		if (err != nil || !ready) && !linearized {
			// The readiness check read this member's state, which may be behind the cluster's:
			// catch up before waiting or failing, so that a consumer created (or an event
			// published) before this request is seen. When it says ready, the fetch command
			// itself is applied after everything committed before it, and the check needs
			// no such round.
			if err := s.linearize(ctx); err != nil {
				return nil, err
			}
			linearized = true
			continue
		}
		if err != nil {
			return nil, toConnect(err)
		}
		if ready && empty < maxEmptyFetches {
			r, err := write(ctx, s, freshCommand(cmd), fetchFromLog)
			if err != nil || len(r.Msg.Deliveries) > 0 || !now.Before(until) {
				return r, err
			}
			empty++
			continue
		}
		if !now.Before(until) {
			return connect.NewResponse(&caucusv1.FetchResponse{Header: s.header(0)}), nil
		}
		next := until
		if wake != 0 && time.Unix(0, wake).Before(next) {
			next = time.Unix(0, wake)
		}
		if timer == nil {
			timer = time.NewTimer(next.Sub(now))
		} else {
			timer.Reset(next.Sub(now))
		}
		select {
		case <-revs:
		case <-cons:
		case <-timer.C:
		case <-ctx.Done():
			return nil, toConnect(ctx.Err())
		}
		empty = 0
	}
}

// freshCommand returns a copy of a command to propose again: the proposer stamps what it proposes.
func freshCommand(cmd *logpb.Command) *logpb.Command {
	return &logpb.Command{Op: cmd.Op}
}
