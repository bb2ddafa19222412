package signup

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caucus/caucus/client"
	"github.com/caucus/caucus/internal/embed/embedtest"
	"github.com/caucus/caucus/internal/relay"
)

func quiet() *slog.Logger { return embedtest.Quiet() }

// world is NATS with a WELCOME stream and a caucus cluster.
type world struct {
	cl     *embedtest.Cluster
	kv     *client.Client
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	url    string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	url := embedtest.StartNATS(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "WELCOME", Subjects: []string{"welcome.>"},
		Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	cl := embedtest.Start(t, 3)
	kv, err := client.New(client.Config{Endpoints: cl.Endpoints(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	return &world{cl: cl, kv: kv, nc: nc, js: js, stream: stream, url: url}
}

// crashes returns a CrashFunc that kills the service at a point with probability p, decided by
// a hash of (seed, user, point, attempt) so that a run's crashes do not depend on timing.
func crashes(seed uint64, p float64) func(id string, attempt int) CrashFunc {
	return func(id string, attempt int) CrashFunc {
		return func(point string) bool {
			h := fnv.New64a()
			fmt.Fprintf(h, "%d/%s/%s/%d", seed, id, point, attempt)
			return float64(h.Sum64()%1_000_000)/1_000_000 < p
		}
	}
}

type signupFunc func(ctx context.Context, id string, crash CrashFunc) error

// load runs n signups from 8 callers. A caller whose signup failed (the service crashed, or
// the cluster did not answer) retries it with probability 1/2 (decided by the same hash), as a
// user who sees an error page does or does not press the button again. Every 60 signups a
// member is killed and restarted.
func load(t *testing.T, w *world, n int, seed uint64, signup signupFunc) {
	t.Helper()
	crash := crashes(seed, 0.1)
	retry := crashes(seed^0x5eed, 0.5)
	ids := make(chan string)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				for attempt := 0; ; attempt++ {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					err := signup(ctx, id, crash(id, attempt))
					cancel()
					if err == nil || attempt >= 3 || !retry(id, attempt)("retry") {
						break
					}
				}
			}
		}()
	}
	for i := range n {
		if i > 0 && i%60 == 0 {
			w.cl.Bounce((i / 60) % 3)
		}
		ids <- fmt.Sprintf("u%04d", i)
	}
	close(ids)
	wg.Wait()
}

// divergences compares the users in caucus with the welcomes in the stream: users without a
// welcome, users welcomed more than once, and welcomes of users that do not exist.
func divergences(t *testing.T, w *world, userOf func(jetstream.RawStreamMsg) string) (missing, dup, orphan int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := w.kv.Get(ctx, "user/", client.WithPrefix(), client.WithKeysOnly(), client.WithLimit(100000))
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]bool{}
	for _, kv := range resp.GetKvs() {
		users[strings.TrimPrefix(string(kv.GetKey()), "user/")] = true
	}
	info, err := w.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	welcomes := map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := w.stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		welcomes[userOf(*m)]++
	}
	for u := range users {
		switch welcomes[u] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	for u := range welcomes {
		if !users[u] {
			orphan++
		}
	}
	t.Logf("%d users, %d welcomed: %d without a welcome, %d welcomed more than once, %d welcomes without a user",
		len(users), len(welcomes), missing, dup, orphan)
	return missing, dup, orphan
}

const signups = 240

// TestNaiveDualWriteDiverges: saving, then publishing, under crashes and retries, leaves users
// without a welcome and users welcomed twice.
func TestNaiveDualWriteDiverges(t *testing.T) {
	w := newWorld(t)
	svc := &Naive{KV: w.kv, JS: w.js}
	load(t, w, signups, 1, func(ctx context.Context, id string, crash CrashFunc) error {
		s := *svc // each call its own crash function
		s.Crash = crash
		return s.Signup(ctx, id, "name-"+id)
	})
	missing, dup, orphan := divergences(t, w, func(m jetstream.RawStreamMsg) string { return strings.TrimPrefix(m.Subject, WelcomeSubject) })
	if missing == 0 || dup == 0 {
		t.Fatalf("the naive version did not diverge (%d missing, %d duplicated, %d orphans): the test lost its point", missing, dup, orphan)
	}
}

// TestOutboxNeverDiverges: the same load with events in the write and the relay forwarding them
// (itself stopped and restarted under load): every user is welcomed exactly once, and every
// welcome has its user.
func TestOutboxNeverDiverges(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := w.kv.ConsumerCreate(ctx, &client.ConsumerConfig{Name: "mailer", Topics: []string{Topic}, StartRevision: 1, AckWaitMs: 1000}); err != nil {
		t.Fatal(err)
	}
	sink, err := relay.NewNATSSink(relay.NATSConfig{URL: w.url, SubjectPrefix: WelcomeSubject})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	// The relay runs in spans of 200 ms: each stop abandons what it has in flight.
	relayDone := make(chan struct{})
	stopRelay := make(chan struct{})
	go func() {
		defer close(relayDone)
		for {
			rctx, rcancel := context.WithTimeout(ctx, 200*time.Millisecond)
			err := relay.Run(rctx, w.kv, sink, relay.Config{Consumer: "mailer", Parallelism: 8, Logger: quiet()})
			rcancel()
			if err != nil && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				t.Logf("relay: %v", err)
			}
			select {
			case <-stopRelay:
				return
			default:
			}
		}
	}()
	svc := &Outbox{KV: w.kv}
	load(t, w, signups, 1, func(ctx context.Context, id string, crash CrashFunc) error {
		s := *svc
		s.Crash = crash
		return s.Signup(ctx, id, "name-"+id)
	})
	// Wait until the mailer's consumer has everything acknowledged, then stop the relay.
	for {
		st, err := w.kv.ConsumerInfo(ctx, "mailer")
		if err == nil && st.GetLagEvents() == 0 && st.GetPending() == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the relay did not drain the consumer: %v %v", st, err)
		}
		time.Sleep(20 * time.Millisecond) // polling real members and a relay on wall-clock time
	}
	close(stopRelay)
	<-relayDone
	missing, dup, orphan := divergences(t, w, func(m jetstream.RawStreamMsg) string {
		k, _ := base64.StdEncoding.DecodeString(m.Header.Get(relay.HeaderKey))
		return string(k)
	})
	if missing != 0 || dup != 0 || orphan != 0 {
		t.Fatalf("with the outbox: %d users without a welcome, %d welcomed twice, %d welcomes without a user", missing, dup, orphan)
	}
}
