package mvcc

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caucus/caucus/internal/logpb"
)

// modelVer is a key's version in the reference model.
type modelVer struct {
	value                string
	create, mod, version int64
}

func (v modelVer) String() string {
	return fmt.Sprintf("%s c%d m%d v%d", v.value, v.create, v.mod, v.version)
}

func renderModel(m map[string]modelVer) string {
	var sb strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&sb, "%s=%v;", k, m[k])
	}
	return sb.String()
}

func renderKVs(kvs []*logpb.KeyValue) string {
	var sb strings.Builder
	for _, kv := range kvs {
		fmt.Fprintf(&sb, "%s=%v;", kv.Key, modelVer{string(kv.Value), kv.CreateRevision, kv.ModRevision, kv.Version})
	}
	return sb.String()
}

// TestConcurrentReadsMatchModel: a writer applies puts, deletes, range deletes and compactions
// (physical compaction spread over many batches by a small budget) and begins batches it then
// rolls back, while readers range at the newest and at past revisions and read the change feed.
// Every answer must equal the reference model at the revision it reports: readers never see an
// uncommitted or rolled-back write, nor lose a version to a compaction that overtook them.
func TestConcurrentReadsMatchModel(t *testing.T) {
	const seed = 11
	rng := rand.New(rand.NewPCG(seed, seed))
	h := newHarness(t, Options{})
	h.s.compactBudget = 3
	// models[rev] is the state at rev, stored before the batch writing rev commits.
	var models sync.Map
	model := func(rev int64) map[string]modelVer {
		m, ok := models.Load(rev)
		if !ok {
			return nil
		}
		return m.(map[string]modelVer)
	}
	models.Store(int64(1), map[string]modelVer{})
	cur, rev, compactRev := map[string]modelVer{}, int64(1), int64(0)
	// requested is the highest compaction revision applied so far, set before its batch commits.
	var requested atomic.Int64
	key := func() string { return fmt.Sprintf("k%02d", rng.IntN(12)) }

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rrng := rand.New(rand.NewPCG(seed, uint64(r)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := readAndCheck(h.s, rrng, model, &requested); err != nil {
					t.Errorf("seed %d: %v", seed, err)
					return
				}
			}
		}()
	}
	for range 400 {
		if rng.IntN(10) == 0 {
			// A batch that does not commit: its revisions are taken again by the next one.
			b := h.s.Begin()
			for i := range 1 + rng.IntN(3) {
				if r := b.Apply(h.index+uint64(i)+1, putCmd(key(), "rolled back")); r.Err != nil {
					t.Fatal(r.Err)
				}
			}
			b.Rollback()
			continue
		}
		b := h.s.Begin()
		for range 1 + rng.IntN(4) {
			var c *logpb.Command
			switch n := rng.IntN(20); {
			case n < 14:
				k, v := key(), fmt.Sprint(rng.Uint32())
				c = putCmd(k, v)
				rev++
				old, ok := cur[k]
				if !ok {
					old = modelVer{create: rev}
				}
				cur = maps.Clone(cur)
				cur[k] = modelVer{value: v, create: old.create, mod: rev, version: old.version + 1}
			case n < 17:
				k := key()
				c = cmdOf(&logpb.DeleteRangeRequest{Key: []byte(k)})
				if _, ok := cur[k]; ok {
					rev++
					cur = maps.Clone(cur)
					delete(cur, k)
				}
			case n < 19:
				c = cmdOf(&logpb.DeleteRangeRequest{Key: []byte("k03"), RangeEnd: []byte("k07")})
				next := maps.Clone(cur)
				for k := range cur {
					if k >= "k03" && k < "k07" {
						delete(next, k)
					}
				}
				if len(next) != len(cur) {
					rev++
					cur = next
				}
			default:
				at := rev - rng.Int64N(8)
				c = cmdOf(&logpb.CompactionRequest{Revision: at})
				if at > compactRev {
					compactRev = at
					requested.Store(at)
				}
			}
			models.Store(rev, cur)
			h.index++
			c.TimeUnixNano = baseTime.UnixNano()
			res := b.Apply(h.index, c)
			if res.Err != nil && !errors.Is(res.Err, ErrCompacted) {
				t.Fatalf("seed %d: apply %v: %v", seed, c, res.Err)
			}
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		if h.s.Rev() != rev || h.s.CompactRev() != compactRev {
			t.Fatalf("seed %d: store at revision %d compacted %d, model at %d compacted %d", seed, h.s.Rev(), h.s.CompactRev(), rev, compactRev)
		}
	}
	close(stop)
	wg.Wait()
	if err := readAndCheck(h.s, rng, model, &requested); err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	checkInvariants(t, h.s)
}

// readAndCheck makes one newest read, one past read and one change feed read, and compares each
// with the model at the revision it reports.
func readAndCheck(s *Store, rng *rand.Rand, model func(int64) map[string]modelVer, compacted *atomic.Int64) error {
	all := &logpb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}
	r, err := s.Range(all)
	if err != nil {
		return fmt.Errorf("range: %w", err)
	}
	at := r.Header.Revision
	m := model(at)
	if m == nil {
		return fmt.Errorf("a read reports revision %d, which no batch wrote", at)
	}
	if got, want := renderKVs(r.Kvs), renderModel(m); got != want {
		return fmt.Errorf("newest read at %d:\n got %s\nwant %s", at, got, want)
	}
	if c := s.CompactRev(); c <= at {
		past := c + rng.Int64N(at-c+1)
		if past > 0 {
			all.Revision = past
			r, err := s.Range(all)
			switch {
			case errors.Is(err, ErrCompacted) && past < compacted.Load():
			case err != nil:
				return fmt.Errorf("range at %d: %w", past, err)
			default:
				if got, want := renderKVs(r.Kvs), renderModel(model(past)); got != want {
					return fmt.Errorf("read at %d:\n got %s\nwant %s", past, got, want)
				}
			}
		}
	}
	from := max(s.CompactRev()+1, at-6)
	evs, _, err := s.Changes(from, 1000, true)
	if errors.Is(err, ErrCompacted) && from <= compacted.Load() {
		return nil
	}
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	for _, ev := range evs {
		key, erev := string(ev.Kv.Key), ev.Kv.ModRevision
		now, before := model(erev), model(erev-1)
		v, live := now[key]
		if ev.Type == ChangePut && (!live || renderKVs([]*logpb.KeyValue{ev.Kv}) != renderModel(map[string]modelVer{key: v})) {
			return fmt.Errorf("put event %v at %d, model has %v", ev.Kv, erev, v)
		}
		if ev.Type == ChangeDelete && live {
			return fmt.Errorf("delete event of %q at %d, model has %v", key, erev, v)
		}
		p, had := before[key]
		if had != (ev.PrevKv != nil) || (had && (ev.PrevKv.ModRevision != p.mod || string(ev.PrevKv.Value) != p.value)) {
			return fmt.Errorf("event of %q at %d has previous version %v, model %v (%v)", key, erev, ev.PrevKv, p, had)
		}
	}
	return nil
}
