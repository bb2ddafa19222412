package server

import (
	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/logpb"
)

// Translation of the durable consumers' messages between caucus.v1 and the log format, field
// for field like translate.go (translate_test.go checks both).

func consumerConfigToLog(c *caucusv1.ConsumerConfig) *logpb.ConsumerConfig {
	if c == nil {
		return nil
	}
	return &logpb.ConsumerConfig{Name: c.Name, Topics: c.Topics, StartRevision: c.StartRevision, AckWaitMs: c.AckWaitMs,
		MaxDeliver: c.MaxDeliver, DeadLetterTopic: c.DeadLetterTopic, MaxAckPending: c.MaxAckPending,
		MaxAgeSeconds: c.MaxAgeSeconds, MaxBytes: c.MaxBytes}
}

func consumerConfigFromLog(c *logpb.ConsumerConfig) *caucusv1.ConsumerConfig {
	if c == nil {
		return nil
	}
	return &caucusv1.ConsumerConfig{Name: c.Name, Topics: c.Topics, StartRevision: c.StartRevision, AckWaitMs: c.AckWaitMs,
		MaxDeliver: c.MaxDeliver, DeadLetterTopic: c.DeadLetterTopic, MaxAckPending: c.MaxAckPending,
		MaxAgeSeconds: c.MaxAgeSeconds, MaxBytes: c.MaxBytes}
}

func consumerStateFromLog(s *logpb.ConsumerState) *caucusv1.ConsumerState {
	if s == nil {
		return nil
	}
	return &caucusv1.ConsumerState{Config: consumerConfigFromLog(s.Config), CreatedRevision: s.CreatedRevision,
		AckFloor: s.AckFloor, DeliveredRevision: s.DeliveredRevision, DeliveredIndex: s.DeliveredIndex,
		Pending: s.Pending, Redelivered: s.Redelivered, DeadLettered: s.DeadLettered,
		LagEvents: s.LagEvents, LagSeconds: s.LagSeconds, Stalled: s.Stalled, StalledReason: s.StalledReason}
}

func consumerCreateToLog(r *caucusv1.ConsumerCreateRequest) *logpb.ConsumerCreateRequest {
	if r == nil {
		return nil
	}
	return &logpb.ConsumerCreateRequest{Config: consumerConfigToLog(r.Config)}
}

func consumerCreateFromLog(r *logpb.ConsumerCreateResponse, h *caucusv1.ResponseHeader) *caucusv1.ConsumerCreateResponse {
	if r == nil {
		return nil
	}
	return &caucusv1.ConsumerCreateResponse{Header: pickHeader(r.Header, h), Consumer: consumerStateFromLog(r.Consumer)}
}

func consumerDeleteToLog(r *caucusv1.ConsumerDeleteRequest) *logpb.ConsumerDeleteRequest {
	if r == nil {
		return nil
	}
	return &logpb.ConsumerDeleteRequest{Name: r.Name}
}

func consumerDeleteFromLog(r *logpb.ConsumerDeleteResponse, h *caucusv1.ResponseHeader) *caucusv1.ConsumerDeleteResponse {
	if r == nil {
		return nil
	}
	return &caucusv1.ConsumerDeleteResponse{Header: pickHeader(r.Header, h)}
}

func fetchToLog(r *caucusv1.FetchRequest) *logpb.FetchRequest {
	if r == nil {
		return nil
	}
	return &logpb.FetchRequest{Consumer: r.Consumer, MaxEvents: r.MaxEvents, WaitMs: r.WaitMs}
}

func fetchFromLog(r *logpb.FetchResponse, h *caucusv1.ResponseHeader) *caucusv1.FetchResponse {
	if r == nil {
		return nil
	}
	out := &caucusv1.FetchResponse{Header: pickHeader(r.Header, h)}
	if r.Deliveries != nil {
		out.Deliveries = make([]*caucusv1.Delivery, len(r.Deliveries))
		for i, d := range r.Deliveries {
			if d != nil {
				out.Deliveries[i] = &caucusv1.Delivery{Event: EventFromLog(d.Event), Attempt: d.Attempt, DeadlineUnixNano: d.DeadlineUnixNano}
			}
		}
	}
	return out
}

func positionsToLog(ps []*caucusv1.EventPosition) []*logpb.EventPosition {
	if ps == nil {
		return nil
	}
	out := make([]*logpb.EventPosition, len(ps))
	for i, p := range ps {
		if p != nil {
			out[i] = &logpb.EventPosition{Revision: p.Revision, Index: p.Index, Attempt: p.Attempt}
		}
	}
	return out
}

func ackToLog(r *caucusv1.AckRequest) *logpb.AckRequest {
	if r == nil {
		return nil
	}
	return &logpb.AckRequest{Consumer: r.Consumer, Acks: positionsToLog(r.Acks), Naks: positionsToLog(r.Naks), Session: sessionToLog(r.Session)}
}

func ackFromLog(r *logpb.AckResponse, h *caucusv1.ResponseHeader) *caucusv1.AckResponse {
	if r == nil {
		return nil
	}
	return &caucusv1.AckResponse{Header: pickHeader(r.Header, h)}
}
