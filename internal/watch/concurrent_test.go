package watch

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/logpb"
)

// TestConcurrentWritesAndWatchers runs the real feed against a writer while watchers start at
// random revisions, with small reads, responses and buffers. Half of the clients read
// everything at once (they stay live), half read nothing until the writes end (they fall behind,
// leave the feed and catch up). Every watcher must see exactly what it selects, in order.
// CAUCUS_WATCH_SEED replays a seed.
func TestConcurrentWritesAndWatchers(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CAUCUS_WATCH_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	rounds := 4
	if testing.Short() {
		rounds = 1
	}
	for round := range rounds {
		seed := seed + uint64(round)
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			t.Logf("replay with CAUCUS_WATCH_SEED=%d", seed)
			concurrentRun(t, rand.New(rand.NewPCG(seed, seed)))
		})
	}
}

func concurrentRun(t *testing.T, rng *rand.Rand) {
	s := openStore(t)
	opt := Options{ProgressInterval: -1, ReadChunk: 1 + rng.IntN(8), MaxResponseItems: 1 + rng.IntN(10),
		MaxResponseBytes: 100 + rng.IntN(2000), BufferBytes: 100 + rng.IntN(3000), MaxConcurrentCatchups: 1 + rng.IntN(3)}
	h := New(Config{Store: s.s, KV: kvOf, Event: eventOf, Options: opt, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(h.Close)
	keys := []string{"a", "b/1", "b/2", "b/3", "c", "d/x"}
	topics := []string{"orders", "orders.eu", "audit", "misc"}
	randEvents := func() []*logpb.Event {
		var evs []*logpb.Event
		for range rng.IntN(3) {
			evs = append(evs, ev(topics[rng.IntN(len(topics))], keys[rng.IntN(len(keys))], fmt.Sprint(rng.IntN(1000))))
		}
		return evs
	}
	command := func() *logpb.Command {
		switch rng.IntN(5) {
		case 0:
			return txnPuts(fmt.Sprint(rng.IntN(1000)), []string{keys[rng.IntN(len(keys))], keys[rng.IntN(len(keys))] + "x"}, randEvents()...)
		case 1:
			return del("b/", "b0", randEvents()...)
		case 2:
			if evs := randEvents(); len(evs) > 0 {
				return publish(evs...)
			}
		}
		return put(keys[rng.IntN(len(keys))], fmt.Sprint(rng.IntN(1000)), randEvents()...)
	}
	reqs := []Request{
		{Key: []byte("a")}, {Key: []byte("b/"), RangeEnd: []byte("b0"), PrevKV: true}, {Topics: []string{"orders*"}},
		{Topics: []string{"*"}, Key: []byte{0}, RangeEnd: []byte{0}}, {Key: []byte("c"), Topics: []string{"audit", "misc"}},
	}
	// The writer runs on this goroutine; watchers start between its commits.
	type started struct {
		c    *client
		req  Request
		fast bool
	}
	var ws []started
	for i := range 150 {
		var cmds []*logpb.Command
		for range 1 + rng.IntN(3) {
			cmds = append(cmds, command())
		}
		s.apply(cmds...)
		if i%10 == 0 {
			req := reqs[rng.IntN(len(reqs))]
			if rng.IntN(3) > 0 {
				req.StartRevision = 1 + rng.Int64N(s.s.Rev())
			}
			fast := rng.IntN(2) == 0
			n := 0
			if fast {
				n = 1 << 20
			}
			ws = append(ws, started{watchBuffered(t, h, req, n), req, fast})
		}
	}
	// A last revision that every watcher selects, so that each one's last response is complete
	// through it.
	s.apply(txnPuts("end", []string{"a", "b/1", "c"}, ev("orders", "", "end"), ev("audit", "", "end")))
	final := s.s.Rev()
	for i, w := range ws {
		first := w.c.next()
		if !first.Progress {
			t.Fatalf("watcher %d: first response %+v is not a progress response", i, first)
		}
		// Complete through start - 1, or further when nothing it selects happened meanwhile.
		from := first.Revision + 1
		if w.req.StartRevision != 0 && from < w.req.StartRevision {
			t.Fatalf("watcher %d: first response through %d, start %d", i, first.Revision, w.req.StartRevision)
		}
		if from > final {
			continue
		}
		sameItems(t, fmt.Sprintf("watcher %d (%+v, fast %v)", i, w.req, w.fast), w.c.until(final), expected(t, s, w.req, from, final))
	}
	t.Logf("options %+v, stats %+v", opt, h.Stats())
}
