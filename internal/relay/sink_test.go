package relay

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/embed/embedtest"
)

func testEvent(id string) *caucusv1.Event {
	return &caucusv1.Event{Topic: "users", Key: []byte("u1"), Payload: []byte("created " + id), Id: id,
		Headers: map[string]string{"Trace": "t-" + id}, Revision: 7, Index: 1, TimeUnixNano: 42}
}

// TestNATSSinkDeduplicatesByEventID: an event sent twice (the relay crashed between JetStream's
// acknowledgement and caucus's) is stored once, with its id, position and headers.
func TestNATSSinkDeduplicatesByEventID(t *testing.T) {
	url := embedtest.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"caucus.>"}, Storage: jetstream.FileStorage, Duplicates: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := NewNATSSink(NATSConfig{URL: url, SubjectPrefix: "caucus."})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	for _, id := range []string{"a", "a", "b"} {
		if err := sink.Send(ctx, testEvent(id)); err != nil {
			t.Fatal(err)
		}
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("stream holds %d messages, want 2 (the repeat of event a dropped)", info.State.Msgs)
	}
	m, err := stream.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	h := m.Header
	if m.Subject != "caucus.users" || string(m.Data) != "created a" || h.Get(jetstream.MsgIDHeader) != "a" ||
		h.Get("Trace") != "t-a" || h.Get(HeaderRevision) != "7" || h.Get(HeaderIndex) != "1" || h.Get(HeaderKey) != "dTE=" {
		t.Fatalf("stored message %s %q headers %v", m.Subject, m.Data, h)
	}
}

// TestNATSSinkWithoutStreamFails: a subject no stream holds is an error (nothing acknowledged
// it), not a silent success.
func TestNATSSinkWithoutStreamFails(t *testing.T) {
	url := embedtest.StartNATS(t)
	sink, err := NewNATSSink(NATSConfig{URL: url, SubjectPrefix: "nowhere."})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sink.Send(ctx, testEvent("x")); err == nil {
		t.Fatal("publish to a subject without a stream succeeded")
	}
}

// TestWebhookSink: the receiver gets the payload, the id as Idempotency-Key, the metadata and a
// signature it can verify; 5xx is retried with backoff, 4xx is permanent.
func TestWebhookSink(t *testing.T) {
	secret := []byte("s3cret")
	now := time.Unix(1_700_000_000, 0)
	var calls atomic.Int32
	status := func(n int32) int {
		if n == 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		if got, want := r.Header.Get(HeaderSignature), Sign(secret, now, body); got != want {
			t.Errorf("signature %q, want %q", got, want)
		}
		if r.Header.Get(HeaderIdempotencyKey) != "e1" || r.Header.Get("Trace") != "t-e1" || r.Header.Get(HeaderTopic) != "users" || string(body) != "created e1" {
			t.Errorf("request %v body %q", r.Header, body)
		}
		w.WriteHeader(status(n))
	}))
	defer hs.Close()
	sink, err := NewWebhookSink(WebhookConfig{URL: hs.URL, Secret: secret, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	var waits []time.Duration
	wait := func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil }
	if err := send(context.Background(), sink, testEvent("e1"), DefaultRetry, wait); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 || len(waits) != 1 || waits[0] != DefaultRetry.First {
		t.Fatalf("%d calls, waits %v: want one retry after %v", calls.Load(), waits, DefaultRetry.First)
	}
	status = func(int32) int { return http.StatusBadRequest }
	calls.Store(0)
	waits = nil
	err = send(context.Background(), sink, testEvent("e1"), DefaultRetry, wait)
	var perm *PermanentError
	if !errors.As(err, &perm) || calls.Load() != 1 || len(waits) != 0 {
		t.Fatalf("400: %v after %d calls and waits %v, want a permanent error at once", err, calls.Load(), waits)
	}
	if _, err := NewWebhookSink(WebhookConfig{URL: hs.URL}); err == nil {
		t.Fatal("a webhook without a secret accepted")
	}
}

// TestSendGivesUpAfterSpan: transient failures are retried with doubling backoff, capped, until
// the span ends; the last error is returned.
func TestSendGivesUpAfterSpan(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) }))
	defer hs.Close()
	sink, _ := NewWebhookSink(WebhookConfig{URL: hs.URL, Secret: []byte("k")})
	var waits []time.Duration
	r := Retry{First: time.Millisecond, Max: 4 * time.Millisecond, Span: time.Hour}
	wait := func(_ context.Context, d time.Duration) error {
		waits = append(waits, d)
		if len(waits) == 5 {
			return context.DeadlineExceeded
		}
		return nil
	}
	err := send(context.Background(), sink, testEvent("e"), r, wait)
	if err == nil || len(waits) != 5 {
		t.Fatalf("err %v after waits %v", err, waits)
	}
	want := []time.Duration{1, 2, 4, 4, 4}
	for i, w := range want {
		if waits[i] != w*time.Millisecond {
			t.Fatalf("waits %v, want %v ms", waits, want)
		}
	}
}
