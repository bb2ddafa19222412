package relay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/client"
	"github.com/caucus/caucus/internal/ctl"
	"github.com/caucus/caucus/internal/embed/embedtest"
	"github.com/caucus/caucus/internal/relay"
)

// TestRelayToJetStreamExactlyOnceDownstream: events published with writes reach a JetStream
// stream through the relay, in order per key, each once even though the relay is stopped and
// started again while it forwards (JetStream drops the repeats by Nats-Msg-Id).
func TestRelayToJetStreamExactlyOnceDownstream(t *testing.T) {
	m := embedtest.Start(t, 1).Members[0]
	natsURL := embedtest.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"caucus.>"}, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}

	cli, err := client.New(client.Config{Endpoints: []string{m.ClientURL}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.ConsumerCreate(ctx, &client.ConsumerConfig{Name: "to-nats", Topics: []string{"orders"}, StartRevision: 1, AckWaitMs: 500}); err != nil {
		t.Fatal(err)
	}
	const keys, perKey = 4, 25
	for i := range perKey {
		for k := range keys {
			key := fmt.Sprintf("order/%d", k)
			if _, err := cli.Put(ctx, key, strconv.Itoa(i), client.WithEvents(client.NewEvent("orders", key, []byte(strconv.Itoa(i))))); err != nil {
				t.Fatal(err)
			}
		}
	}
	nsink, err := relay.NewNATSSink(relay.NATSConfig{URL: natsURL, SubjectPrefix: "caucus."})
	if err != nil {
		t.Fatal(err)
	}
	defer nsink.Close()
	// Every third event is published and then reported failed, as if the relay died between
	// JetStream's acknowledgement and caucus's: it is delivered and published again.
	sink := &lossyAck{Sink: nsink, every: 3, failed: map[string]bool{}}
	// Run the relay in short spans, stopping it while it forwards, until everything is acked.
	for round := 0; ; round++ {
		rctx, rcancel := context.WithTimeout(ctx, 150*time.Millisecond)
		if err := relay.Run(rctx, cli, sink, relay.Config{Consumer: "to-nats", Parallelism: 4, Logger: quiet()}); err != nil {
			t.Fatal(err)
		}
		rcancel()
		st, err := cli.ConsumerInfo(ctx, "to-nats")
		if err != nil {
			t.Fatal(err)
		}
		if st.GetLagEvents() == 0 && st.GetPending() == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("relay did not drain the consumer: %v", st)
		}
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sink.repeats() == 0 {
		t.Fatal("no event was published twice: the test did not exercise duplicates")
	}
	if info.State.Msgs != keys*perKey {
		t.Fatalf("stream holds %d messages, want %d: every event once", info.State.Msgs, keys*perKey)
	}
	seen := map[string][]int{}
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := strconv.Atoi(string(msg.Data))
		key := msg.Header.Get(relay.HeaderKey)
		seen[key] = append(seen[key], v)
	}
	for key, vs := range seen {
		if !slices.IsSorted(vs) || len(vs) != perKey {
			t.Fatalf("key %s arrived as %v: want %d events in order", key, vs, perKey)
		}
	}
}

// lossyAck publishes through Sink, then reports a failure for every every-th event the first
// time it is sent.
type lossyAck struct {
	relay.Sink
	every  int
	mu     sync.Mutex
	n      int
	failed map[string]bool
}

func (l *lossyAck) Send(ctx context.Context, ev *caucusv1.Event) error {
	if err := l.Sink.Send(ctx, ev); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	if l.n%l.every == 0 && !l.failed[ev.GetId()] {
		l.failed[ev.GetId()] = true
		return &relay.PermanentError{Err: errors.New("lost the acknowledgement")}
	}
	return nil
}

func (l *lossyAck) repeats() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.failed)
}

// TestRelayWebhookCLI: `caucus relay webhook` forwards a consumer's events to an HTTP endpoint,
// signed, each with its id as Idempotency-Key, until interrupted.
func TestRelayWebhookCLI(t *testing.T) {
	m := embedtest.Start(t, 1).Members[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli, err := client.New(client.Config{Endpoints: []string{m.ClientURL}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.ConsumerCreate(ctx, &client.ConsumerConfig{Name: "hook", Topics: []string{"orders"}, StartRevision: 1}); err != nil {
		t.Fatal(err)
	}
	const n = 10
	for i := range n {
		if _, err := cli.Publish(ctx, client.NewEvent("orders", fmt.Sprint("k", i%3), []byte(strconv.Itoa(i)))); err != nil {
			t.Fatal(err)
		}
	}
	secret := []byte("hook-secret")
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	var mu sync.Mutex
	got := map[string]bool{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sig := r.Header.Get(relay.HeaderSignature)
		ts, _, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ",")
		sec, _ := strconv.ParseInt(ts, 10, 64)
		if sig != relay.Sign(secret, time.Unix(sec, 0), body) {
			t.Errorf("bad signature %q", sig)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		got[r.Header.Get(relay.HeaderIdempotencyKey)] = true
		if len(got) == n {
			stop()
		}
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer hs.Close()
	var out, errb bytes.Buffer
	err = ctl.RunIO(rctx, []string{"--endpoints", m.ClientURL, "relay", "webhook", "--consumer", "hook",
		"--url", hs.URL, "--secret-file", secretFile}, nil, &out, &errb)
	if err != nil {
		t.Fatalf("caucus relay webhook: %v\n%s", err, errb.String())
	}
	if len(got) != n {
		t.Fatalf("the endpoint got %d distinct events, want %d\n%s", len(got), n, errb.String())
	}
}
