package relay

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// Headers set on every forwarded event, besides the event's own headers.
const (
	HeaderTopic    = "Caucus-Topic"
	HeaderKey      = "Caucus-Key" // base64 (standard, padded): keys are bytes
	HeaderRevision = "Caucus-Revision"
	HeaderIndex    = "Caucus-Index"
	HeaderTime     = "Caucus-Time" // the write's time, Unix nanoseconds
)

// NATSConfig configures a JetStream sink.
type NATSConfig struct {
	// URL of the NATS server(s), comma-separated.
	URL string
	// SubjectPrefix is put before the event's topic to make the subject ("caucus." + "users").
	// The subject must fall in a JetStream stream's subjects: the relay does not create streams.
	SubjectPrefix string
	// Options are extra connection options (credentials, TLS).
	Options []nats.Option
}

// NATSSink publishes events to JetStream and waits for the stream's acknowledgement.
type NATSSink struct {
	cfg NATSConfig
	nc  *nats.Conn
	js  jetstream.JetStream
}

// NewNATSSink connects to NATS.
func NewNATSSink(cfg NATSConfig) (*NATSSink, error) {
	nc, err := nats.Connect(cfg.URL, append([]nats.Option{nats.Name("caucus relay"), nats.MaxReconnects(-1)}, cfg.Options...)...)
	if err != nil {
		return nil, fmt.Errorf("relay: connect to NATS at %s: %w", cfg.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("relay: JetStream: %w", err)
	}
	return &NATSSink{cfg: cfg, nc: nc, js: js}, nil
}

// Subject returns the subject an event is published to.
func (s *NATSSink) Subject(ev *caucusv1.Event) string { return s.cfg.SubjectPrefix + ev.GetTopic() }

// Send publishes ev with Nats-Msg-Id set to its id, so that JetStream drops a repeat within
// the stream's duplicate window, and returns once the stream acknowledged it (a duplicate
// acknowledgement counts: the stream already has the event).
func (s *NATSSink) Send(ctx context.Context, ev *caucusv1.Event) error {
	msg := nats.NewMsg(s.Subject(ev))
	msg.Data = ev.GetPayload()
	for k, v := range ev.GetHeaders() {
		msg.Header.Set(k, v)
	}
	setMetadata(msg.Header.Set, ev)
	msg.Header.Set(jetstream.MsgIDHeader, ev.GetId())
	if _, err := s.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("relay: publish event %s to %s: %w", ev.GetId(), msg.Subject, err)
	}
	return nil
}

// Close closes the NATS connection.
func (s *NATSSink) Close() error {
	s.nc.Close()
	return nil
}

// setMetadata sets the headers that carry an event's position and origin.
func setMetadata(set func(k, v string), ev *caucusv1.Event) {
	set(HeaderTopic, ev.GetTopic())
	if len(ev.GetKey()) > 0 {
		set(HeaderKey, base64.StdEncoding.EncodeToString(ev.GetKey()))
	}
	set(HeaderRevision, strconv.FormatInt(ev.GetRevision(), 10))
	set(HeaderIndex, strconv.FormatInt(int64(ev.GetIndex()), 10))
	set(HeaderTime, strconv.FormatInt(ev.GetTimeUnixNano(), 10))
}
