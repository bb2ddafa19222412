package client

import (
	"context"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// Events published with writes: the transactional outbox. A Put, Delete or transaction branch
// carries events (WithEvents, OpPublish); the write and its events are one log entry, so both
// happen or neither. Each event gets a position (revision, index) in one totally ordered stream.

type (
	// Event is an event to publish, or one read back (then with its position and time).
	Event = caucusv1.Event
	// PublishResponse answers Publish.
	PublishResponse = caucusv1.PublishResponse
)

// NewEvent returns an event of topic, ordered by key, with payload.
func NewEvent(topic, key string, payload []byte) *Event {
	return &Event{Topic: topic, Key: []byte(key), Payload: payload}
}

// WithEvents makes a Put or Delete (or its transaction op) publish events in the same log
// entry as its write.
func WithEvents(events ...*Event) OpOption {
	return func(op *Op) { op.events = append(op.events, events...) }
}

// Publish publishes events without changing a key, exactly once across retries. The response
// lists the events' ids (those given, or the store's "<revision>-<index>").
func (c *Client) Publish(ctx context.Context, events ...*Event) (*PublishResponse, error) {
	req := &caucusv1.PublishRequest{Events: events}
	return unaryWrite(ctx, c, "publish", func(s *caucusv1.Session) { req.Session = s }, func(ctx context.Context, ep *endpoint) (*connect.Response[PublishResponse], error) {
		return ep.events.Publish(ctx, connect.NewRequest(req))
	})
}
