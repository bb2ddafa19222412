package avail

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/caucus/caucus/internal/hlc"
)

// exchange runs one session between a (initiator) and b over ks and returns both sides' stats.
// It checks that every message is within the size limit.
func exchange(a, b *member, ks string, cfg SessionConfig) (SessionStats, SessionStats, error) {
	return exchangeWith(a, b, ks, cfg, nil)
}

func exchangeWith(a, b *member, ks string, cfg SessionConfig, skip func(depth, index int) bool) (SessionStats, SessionStats, error) {
	sa, err := NewSession(a.replica(), ks, true, cfg)
	if err != nil {
		return SessionStats{}, SessionStats{}, err
	}
	sb, err := NewSession(b.replica(), ks, false, cfg)
	if err != nil {
		return SessionStats{}, SessionStats{}, err
	}
	sa.skip, sb.skip = skip, skip
	limit := sa.maxBytes
	msg, err := sa.Start()
	if err != nil {
		return SessionStats{}, SessionStats{}, err
	}
	cur, other := sb, sa
	for turn := 0; ; turn++ {
		if len(msg) > limit {
			return sa.stats, sb.stats, fmt.Errorf("message of %d bytes, limit %d", len(msg), limit)
		}
		if turn > 100000 {
			return sa.stats, sb.stats, errors.New("session does not end")
		}
		out, done, err := cur.Step(ctx, msg)
		if err != nil {
			return sa.stats, sb.stats, err
		}
		if done {
			if out != nil {
				if _, d, err := other.Step(ctx, out); err != nil || !d {
					return sa.stats, sb.stats, fmt.Errorf("peer of a finished side: done %v, %v", d, err)
				}
			}
			break
		}
		msg, cur, other = out, other, cur
	}
	if !sa.Done() || !sb.Done() {
		return sa.stats, sb.stats, errors.New("a side is not done")
	}
	return sa.stats, sb.stats, nil
}

// model is the reference for convergence: every delta any member produced, merged into a fresh
// store. After anti-entropy every member must hold exactly the model's states.
type model struct {
	deltas []Delta
}

func (md *model) record(t *testing.T) func(Delta, error) {
	return func(d Delta, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		md.deltas = append(md.deltas, d)
	}
}

// randomOps makes m perform n random operations on a small key pool, so that members write the
// same keys concurrently. Keys r*, c*, s* hold registers, counters and sets.
func randomOps(t *testing.T, rng *rand.Rand, m *member, md *model, ks string, n, pool int) {
	rec := md.record(t)
	for range n {
		i := rng.IntN(pool)
		switch rng.IntN(6) {
		case 0, 1:
			rec(m.s.Put(ctx, m.o(), ks, fmt.Appendf(nil, "r%d", i), fmt.Appendf(nil, "v%d-%d", m.id, rng.IntN(1000))))
		case 2:
			rec(m.s.Delete(ctx, m.o(), ks, fmt.Appendf(nil, "r%d", i)))
		case 3:
			if rng.IntN(3) == 0 {
				rec(m.s.Decr(ctx, m.o(), ks, fmt.Appendf(nil, "c%d", i), uint64(rng.IntN(5)+1)))
			} else {
				rec(m.s.Incr(ctx, m.o(), ks, fmt.Appendf(nil, "c%d", i), uint64(rng.IntN(5)+1)))
			}
		case 4:
			rec(m.s.Add(ctx, m.o(), ks, fmt.Appendf(nil, "s%d", i), fmt.Sprint("e", rng.IntN(4))))
		case 5:
			rec(m.s.Remove(ctx, m.o(), ks, fmt.Appendf(nil, "s%d", i), fmt.Sprint("e", rng.IntN(4))))
		}
	}
}

func TestSessionConvergesRandom(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, seed))
			md := &model{}
			ms := []*member{newMember(t, 1, Options{NoSync: true}), newMember(t, 2, Options{NoSync: true}), newMember(t, 3, Options{NoSync: true})}
			ref := newMember(t, 99, Options{NoSync: true})
			for _, m := range append(ms, ref) {
				m.mustCreate("ks", KindAny)
			}
			// A common history everyone has, then divergence on every member.
			randomOps(t, rng, ms[0], md, "ks", 100, 60)
			for _, d := range md.deltas {
				for _, m := range ms[1:] {
					must[bool](t)(m.s.MergeRemote(ctx, m.o(), "ks", d.Key, d.State))
				}
			}
			for _, m := range ms {
				randomOps(t, rng, m, md, "ks", 150, 60)
			}
			for _, d := range md.deltas {
				must[bool](t)(ref.s.MergeRemote(ctx, ref.o(), "ks", d.Key, d.State))
			}
			for _, p := range [][2]int{{0, 1}, {1, 2}, {0, 2}} {
				a, b := ms[p[0]], ms[p[1]]
				sa, sb, err := exchange(a, b, "ks", SessionConfig{})
				if err != nil {
					t.Fatalf("seed %d: session %d->%d: %v", seed, a.id, b.id, err)
				}
				if err := sameStores(a.s, b.s, "ks"); err != nil {
					t.Fatalf("seed %d: after one session %d->%d (%+v / %+v): %v", seed, a.id, b.id, sa, sb, err)
				}
				// The other way: nothing left to do, the root says so.
				sb2, sa2, err := exchange(b, a, "ks", SessionConfig{})
				if err != nil || sb2.MessagesSent != 1 || sa2.MessagesSent != 1 || sb2.HashesSent != 1 {
					t.Fatalf("seed %d: session between equal stores: %+v / %+v, %v", seed, sb2, sa2, err)
				}
			}
			for _, m := range ms {
				if err := sameStores(m.s, ref.s, "ks"); err != nil {
					t.Fatalf("seed %d: member %d differs from the merge of every delta: %v", seed, m.id, err)
				}
			}
		})
	}
}

// TestSessionEqualStoresSendOnlyRoot: the initiator sends its root, the responder its done.
func TestSessionEqualStoresSendOnlyRoot(t *testing.T) {
	a, b := newMember(t, 1, Options{NoSync: true}), newMember(t, 2, Options{NoSync: true})
	for _, m := range []*member{a, b} {
		m.mustCreate("ks", KindAny)
		for i := range 50 {
			// The same writes by the same member at the same times: equal states.
			o := Origin{Member: 7, Clock: hlc.NewClock(0), Physical: t0 + int64(i)}
			must[Delta](t)(m.s.Put(ctx, o, "ks", fmt.Appendf(nil, "k%d", i), []byte("v")))
		}
	}
	sa, sb, err := exchange(a, b, "ks", SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("equal stores: initiator %+v, responder %+v", sa, sb)
	if sa.MessagesSent != 1 || sa.HashesSent != 1 || sb.MessagesSent != 1 || sb.HashesSent+sb.KeysListed+sb.StatesSent != 0 {
		t.Fatalf("equal stores: initiator %+v, responder %+v", sa, sb)
	}
}

// TestSessionTenThousandKeys diverges 10,000 keys (5,000 on each side, 500 of them written on
// both) and checks one session converges them.
func TestSessionTenThousandKeys(t *testing.T) {
	a, b := newMember(t, 1, Options{NoSync: true}), newMember(t, 2, Options{NoSync: true})
	for _, m := range []*member{a, b} {
		m.mustCreate("ks", KindRegister)
	}
	load(t, a, "ks", 0, 5000)
	load(t, b, "ks", 4500, 9500)
	sa, sb, err := exchange(a, b, "ks", SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sameStores(a.s, b.s, "ks"); err != nil {
		t.Fatal(err)
	}
	if n := must[Hash](t)(a.s.Root("ks")); n == (Hash{}) {
		t.Fatal("zero root")
	}
	ks, _ := a.s.keyspace("ks")
	if ks.tree.Keys() != 9500 {
		t.Fatalf("%d keys after the session, want 9500", ks.tree.Keys())
	}
	t.Logf("10,000 diverged keys: initiator %+v", sa)
	t.Logf("10,000 diverged keys: responder %+v", sb)
	t.Logf("total: %d messages, %d bytes", sa.MessagesSent+sb.MessagesSent, sa.BytesSent+sb.BytesSent)
}

// load puts keys k<from>..k<to-1> with concurrent writers (group commit keeps it fast).
func load(t testing.TB, m *member, ks string, from, to int) {
	t.Helper()
	const writers = 32
	errs := make(chan error, writers)
	for w := range writers {
		go func() {
			var err error
			for i := from + w; i < to && err == nil; i += writers {
				_, err = m.s.Put(ctx, Origin{Member: m.id, Clock: m.clock, Physical: t0 + int64(i)}, ks, fmt.Appendf(nil, "key-%06d", i), fmt.Appendf(nil, "value of %d at %d", i, m.id))
			}
			errs <- err
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestSessionPlantedBug: a session that skips one subtree leaves the stores different, and
// the convergence checker says so.
func TestSessionPlantedBug(t *testing.T) {
	a, b := newMember(t, 1, Options{NoSync: true}), newMember(t, 2, Options{NoSync: true})
	for _, m := range []*member{a, b} {
		m.mustCreate("ks", KindRegister)
	}
	load(t, a, "ks", 0, 300)
	inSkipped := 0
	for i := range 300 {
		if LeafOf(fmt.Appendf(nil, "key-%06d", i)) < Leaves>>DefaultDescentStep {
			inSkipped++
		}
	}
	if inSkipped == 0 {
		t.Fatal("no key falls in the skipped subtree: the test shows nothing")
	}
	skip := func(depth, index int) bool { return depth == DefaultDescentStep && index == 0 }
	if _, _, err := exchangeWith(a, b, "ks", SessionConfig{}, skip); err != nil {
		t.Fatal(err)
	}
	err := sameStores(a.s, b.s, "ks")
	if err == nil {
		t.Fatal("the checker missed a session that skips a subtree")
	}
	t.Logf("planted bug caught (%d keys in the skipped subtree): %v", inSkipped, err)
	// Without the bug the next session repairs it.
	if _, _, err := exchange(a, b, "ks", SessionConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := sameStores(a.s, b.s, "ks"); err != nil {
		t.Fatal(err)
	}
}

// TestSessionPaginatesLargeLeaf puts hundreds of long keys in one leaf on both sides and uses
// the smallest message size, so key lists span many messages.
func TestSessionPaginatesLargeLeaf(t *testing.T) {
	a, b := newMember(t, 1, Options{NoSync: true}), newMember(t, 2, Options{NoSync: true})
	for _, m := range []*member{a, b} {
		m.mustCreate("ks", KindAny)
	}
	var keys [][]byte
	pad := bytes.Repeat([]byte("x"), 200)
	for i := 0; len(keys) < 400; i++ {
		k := fmt.Appendf(bytes.Clone(pad), "%d", i)
		if h := sha256.Sum256(k); h[0] == 0 && h[1]>>6 == 0 { // leaf 0
			keys = append(keys, k)
		}
	}
	for i, k := range keys {
		switch i % 4 {
		case 0:
			must[Delta](t)(a.s.Incr(ctx, a.o(), "ks", k, 1))
		case 1:
			must[Delta](t)(b.s.Incr(ctx, b.o(), "ks", k, 2))
		default: // on both, different
			must[Delta](t)(a.s.Incr(ctx, a.o(), "ks", k, 1))
			must[Delta](t)(b.s.Incr(ctx, b.o(), "ks", k, 1))
		}
	}
	cfg := SessionConfig{MaxMessageBytes: MinMessageBytes}
	sa, sb, err := exchange(a, b, "ks", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := sameStores(a.s, b.s, "ks"); err != nil {
		t.Fatal(err)
	}
	t.Logf("one leaf of %d keys of ~200 bytes, %d-byte messages: %+v / %+v", len(keys), MinMessageBytes, sa, sb)
	if sa.MessagesSent+sb.MessagesSent < 10 {
		t.Fatalf("only %d messages: the leaf was not paginated", sa.MessagesSent+sb.MessagesSent)
	}
	for i, k := range keys {
		v, _ := must[Entry](t)(a.s.Get("ks", k)).Counter.Value()
		if want := []int64{1, 2, 2, 2}[i%4]; v != want {
			t.Fatalf("key %d: counter %d, want %d", i, v, want)
		}
	}
}

// TestSessionRefusesSkewedStamps: a register stamped an hour ahead is refused by the receiver,
// counted, and the rest converges.
func TestSessionRefusesSkewedStamps(t *testing.T) {
	a, b := newMember(t, 1, Options{NoSync: true}), newMember(t, 2, Options{NoSync: true})
	for _, m := range []*member{a, b} {
		m.mustCreate("ks", KindRegister)
	}
	must[Delta](t)(a.s.Put(ctx, a.o(), "ks", []byte("ok"), []byte("v")))
	far := hlc.NewClock(0)
	must[Delta](t)(a.s.Put(ctx, Origin{Member: 1, Clock: far, Physical: t0 + 3_600_000_000_000}, "ks", []byte("future"), []byte("v")))
	_, sb, err := exchange(a, b, "ks", SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if sb.StatesRefused != 1 || sb.StatesMerged != 1 {
		t.Fatalf("responder %+v: want one state refused, one merged", sb)
	}
	if _, err := b.s.Get("ks", []byte("future")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("skewed write was merged: %v", err)
	}
	must[Entry](t)(b.s.Get("ks", []byte("ok")))
}

func TestSessionRejectsBadMessages(t *testing.T) {
	a, b := newMember(t, 1, Options{NoSync: true}), newMember(t, 2, Options{NoSync: true})
	a.mustCreate("ks", KindAny)
	b.mustCreate("other", KindAny)
	b.mustCreate("ks", KindAny)
	must[Delta](t)(a.s.Incr(ctx, a.o(), "ks", []byte("c"), 1))
	sa := must[*Session](t)(NewSession(a.replica(), "ks", true, SessionConfig{}))
	hello := must[[]byte](t)(sa.Start())
	// Wrong keyspace.
	sb := must[*Session](t)(NewSession(b.replica(), "other", false, SessionConfig{}))
	if _, _, err := sb.Step(ctx, hello); !errors.Is(err, ErrMessage) {
		t.Fatalf("hello for another keyspace: %v", err)
	}
	// Every truncation and a trailing byte are refused, never a panic.
	for n := range len(hello) {
		sb := must[*Session](t)(NewSession(b.replica(), "ks", false, SessionConfig{}))
		if _, _, err := sb.Step(ctx, hello[:n]); !errors.Is(err, ErrMessage) {
			t.Fatalf("hello truncated to %d bytes: %v", n, err)
		}
	}
	sb = must[*Session](t)(NewSession(b.replica(), "ks", false, SessionConfig{}))
	if _, _, err := sb.Step(ctx, append(bytes.Clone(hello), 0)); !errors.Is(err, ErrMessage) {
		t.Fatalf("hello with a trailing byte: %v", err)
	}
	// A key list naming a key of another leaf.
	k := []byte("c")
	m := &message{sections: []section{{leaf: (LeafOf(k) + 1) % Leaves, final: true, keys: []KeyDigest{{Key: k}}}}}
	sb = must[*Session](t)(NewSession(b.replica(), "ks", false, SessionConfig{}))
	if _, _, err := sb.Step(ctx, hello); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sb.Step(ctx, m.marshal()); !errors.Is(err, ErrMessage) {
		t.Fatalf("key listed under the wrong leaf: %v", err)
	}
	if _, err := NewSession(a.replica(), "ks", true, SessionConfig{MaxMessageBytes: MinMessageBytes - 1}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("message limit below the minimum: %v", err)
	}
}

func FuzzMessage(f *testing.F) {
	f.Add((&message{flags: flagHello, keyspace: "ks", leafBits: LeafBits, hashes: []nodeHash{{depth: 2, index: 3}}}).marshal())
	f.Add((&message{flags: flagMore, sections: []section{{leaf: 5, hasAfter: true, after: []byte("a"), keys: []KeyDigest{{Key: []byte("b")}}}},
		wants: [][]byte{[]byte("w")}, states: []Remote{{Key: []byte("k"), State: []byte("C\x01\x00")}}}).marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := unmarshalMessage(b, DefaultMaxMessageBytes)
		if err != nil {
			return
		}
		if !bytes.Equal(m.marshal(), b) {
			t.Fatalf("accepted message does not re-encode to its input")
		}
	})
}
