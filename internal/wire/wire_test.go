package wire

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"testing"

	"github.com/caucus/caucus/raft"
)

// gen produces random values whose fields span the varint size classes, so that round trips
// exercise 1- through 10-byte varints.
type gen struct{ r *rand.Rand }

func newGen(seed uint64) gen { return gen{rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))} }

func (g gen) u64() uint64 {
	switch g.r.IntN(5) {
	case 0:
		return 0
	case 1:
		return uint64(g.r.IntN(128))
	case 2:
		return math.MaxUint64 - uint64(g.r.IntN(3))
	default:
		return g.r.Uint64() >> g.r.IntN(64)
	}
}

func (g gen) bytes(max int) []byte {
	n := g.r.IntN(max + 1)
	if n == 0 {
		return nil // decoders return nil for empty fields; keep expectations comparable
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(g.r.Uint32())
	}
	return b
}

func (g gen) nodes() []raft.NodeID {
	n := g.r.IntN(6)
	if n == 0 {
		return nil
	}
	ids := make([]raft.NodeID, n)
	for i := range ids {
		ids[i] = raft.NodeID(g.u64())
	}
	return ids
}

func (g gen) entry() raft.Entry {
	return raft.Entry{Term: g.u64(), Index: g.u64(), Type: raft.EntryType(g.r.IntN(256)), Data: g.bytes(64)}
}

func (g gen) snapMeta() raft.SnapshotMeta {
	return raft.SnapshotMeta{Index: g.u64(), Term: g.u64(), ConfState: raft.ConfState{
		Voters: g.nodes(), VotersOutgoing: g.nodes(), Learners: g.nodes(), LearnersNext: g.nodes(),
		AutoLeave: g.r.IntN(2) == 0,
	}}
}

func (g gen) message() raft.Message {
	m := raft.Message{
		Type: raft.MessageType(g.r.IntN(256)), To: raft.NodeID(g.u64()), From: raft.NodeID(g.u64()),
		Term: g.u64(), LogTerm: g.u64(), Index: g.u64(), Commit: g.u64(), Reject: g.r.IntN(2) == 0,
		RejectHint: g.u64(), Context: g.bytes(16),
	}
	if n := g.r.IntN(5); n > 0 {
		m.Entries = make([]raft.Entry, n)
		for i := range m.Entries {
			m.Entries[i] = g.entry()
		}
	}
	if g.r.IntN(3) == 0 {
		sm := g.snapMeta()
		m.Snapshot = &sm
	}
	if g.r.IntN(3) == 0 {
		m.Chunk = &raft.SnapshotChunk{Offset: g.u64(), Total: g.u64(), Data: g.bytes(128), Last: g.r.IntN(2) == 0}
	}
	return m
}

func TestEntryRoundTripRandom(t *testing.T) {
	g := newGen(1)
	for i := 0; i < 5000; i++ {
		e := g.entry()
		prefix := g.bytes(3)
		b := AppendEntry(prefix, &e)
		if got, want := len(b)-len(prefix), EntrySize(&e); got != want {
			t.Fatalf("EntrySize=%d, encoded %d bytes for %+v", want, got, e)
		}
		if !bytes.Equal(b[:len(prefix)], prefix) {
			t.Fatalf("AppendEntry clobbered dst prefix")
		}
		got, n, err := DecodeEntry(b[len(prefix):])
		if err != nil {
			t.Fatalf("decode %+v: %v", e, err)
		}
		if n != len(b)-len(prefix) {
			t.Fatalf("consumed %d of %d bytes", n, len(b)-len(prefix))
		}
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("round trip: got %+v want %+v", got, e)
		}
	}
}

func TestHardStateRoundTripRandom(t *testing.T) {
	g := newGen(2)
	for i := 0; i < 5000; i++ {
		hs := raft.HardState{Term: g.u64(), Vote: raft.NodeID(g.u64()), Commit: g.u64()}
		b := AppendHardState(nil, &hs)
		if len(b) != HardStateSize(&hs) {
			t.Fatalf("HardStateSize=%d, encoded %d", HardStateSize(&hs), len(b))
		}
		got, n, err := DecodeHardState(b)
		if err != nil || n != len(b) || got != hs {
			t.Fatalf("round trip %+v: got %+v n=%d err=%v", hs, got, n, err)
		}
	}
}

func TestSnapshotMetaRoundTripRandom(t *testing.T) {
	g := newGen(3)
	for i := 0; i < 5000; i++ {
		m := g.snapMeta()
		b := AppendSnapshotMeta(nil, &m)
		if len(b) != SnapshotMetaSize(&m) {
			t.Fatalf("SnapshotMetaSize=%d, encoded %d", SnapshotMetaSize(&m), len(b))
		}
		got, n, err := DecodeSnapshotMeta(b)
		if err != nil || n != len(b) || !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip %+v: got %+v n=%d err=%v", m, got, n, err)
		}
	}
}

func TestMessageRoundTripRandom(t *testing.T) {
	g := newGen(4)
	for i := 0; i < 5000; i++ {
		m := g.message()
		b := AppendMessage(nil, &m)
		if len(b) != MessageSize(&m) {
			t.Fatalf("MessageSize=%d, encoded %d for %+v", MessageSize(&m), len(b), m)
		}
		got, n, err := DecodeMessage(b)
		if err != nil || n != len(b) {
			t.Fatalf("decode: n=%d len=%d err=%v", n, len(b), err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
		}
		// Determinism: re-encoding the decoded value gives the same bytes.
		if b2 := AppendMessage(nil, &got); !bytes.Equal(b, b2) {
			t.Fatalf("re-encoding differs")
		}
	}
}

// TestConcatenated checks that the consumed count lets a reader walk back-to-back encodings.
func TestConcatenated(t *testing.T) {
	g := newGen(5)
	var want []raft.Message
	var buf []byte
	for i := 0; i < 100; i++ {
		m := g.message()
		want = append(want, m)
		buf = AppendMessage(buf, &m)
	}
	for i := range want {
		m, n, err := DecodeMessage(buf)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !reflect.DeepEqual(m, want[i]) {
			t.Fatalf("message %d differs", i)
		}
		buf = buf[n:]
	}
	if len(buf) != 0 {
		t.Fatalf("%d bytes left over", len(buf))
	}
}

// TestEmptyNormalizesToNil documents that empty and nil fields encode identically.
func TestEmptyNormalizesToNil(t *testing.T) {
	a := raft.Message{Entries: []raft.Entry{}, Context: []byte{}, Chunk: &raft.SnapshotChunk{Data: []byte{}}}
	b := raft.Message{Chunk: &raft.SnapshotChunk{}}
	if !bytes.Equal(AppendMessage(nil, &a), AppendMessage(nil, &b)) {
		t.Fatal("empty and nil fields encode differently")
	}
	got, _, err := DecodeMessage(AppendMessage(nil, &a))
	if err != nil {
		t.Fatal(err)
	}
	if got.Entries != nil || got.Context != nil || got.Chunk.Data != nil {
		t.Fatalf("empty fields decoded non-nil: %+v", got)
	}
}

func TestDecodeDoesNotAlias(t *testing.T) {
	m := raft.Message{Entries: []raft.Entry{{Data: []byte("abc")}}, Context: []byte("ctx"),
		Chunk: &raft.SnapshotChunk{Data: []byte("chunk")}}
	b := AppendMessage(nil, &m)
	got, _, err := DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0xff
	}
	if string(got.Entries[0].Data) != "abc" || string(got.Context) != "ctx" || string(got.Chunk.Data) != "chunk" {
		t.Fatalf("decoded fields alias the input: %+v", got)
	}
}

// TestEveryPrefixFails: a truncated encoding must be reported, never decoded as something else
// and never panic.
func TestEveryPrefixFails(t *testing.T) {
	g := newGen(6)
	for i := 0; i < 200; i++ {
		m := g.message()
		b := AppendMessage(nil, &m)
		for n := 0; n < len(b); n++ {
			if _, _, err := DecodeMessage(b[:n]); !errors.Is(err, ErrDecode) {
				t.Fatalf("prefix %d/%d: err=%v, want ErrDecode", n, len(b), err)
			}
		}
		e := g.entry()
		b = AppendEntry(nil, &e)
		for n := 0; n < len(b); n++ {
			if _, _, err := DecodeEntry(b[:n]); !errors.Is(err, ErrDecode) {
				t.Fatalf("entry prefix %d/%d: err=%v", n, len(b), err)
			}
		}
	}
}

func TestRejectsBadInput(t *testing.T) {
	uv := func(b []byte, v uint64) []byte {
		for v >= 0x80 {
			b = append(b, byte(v)|0x80)
			v >>= 7
		}
		return append(b, byte(v))
	}
	// A message header with all-zero fields, up to (not including) the entry count.
	hdr := func(flags byte) []byte { return []byte{Version, byte(raft.MsgApp), flags, 0, 0, 0, 0, 0, 0, 0} }
	cases := []struct {
		name string
		in   []byte
		dec  func([]byte) error
	}{
		{"wrong version", []byte{Version + 1, 0, 0, 0, 0}, decEntry},
		{"varint overflow", append([]byte{Version, 0}, bytes.Repeat([]byte{0xff}, 11)...), decEntry},
		{"data longer than input", uv([]byte{Version, 0, 1, 1}, 10), decEntry},
		{"data over MaxFieldBytes", uv([]byte{Version, 0, 1, 1}, MaxFieldBytes+1), decEntry},
		{"unknown message flag", append(hdr(0x80), 0, 0), decMessage},
		{"chunk-last without chunk", append(hdr(msgFlagChunkLast), 0, 0), decMessage},
		{"entry count over limit", uv(hdr(0), MaxEntriesPerMessage+1), decMessage},
		// 1000 entries need at least 4000 bytes: refuse before allocating them.
		{"entry count beyond input", append(uv(hdr(0), 1000), make([]byte, 100)...), decMessage},
		{"huge varint count", uv(hdr(0), math.MaxUint64), decMessage},
		{"conf list over MaxConfNodes", uv([]byte{Version, 1, 1, 0}, MaxConfNodes+1), decSnap},
		{"unknown conf flag", []byte{Version, 1, 1, 0x02, 0, 0, 0, 0}, decSnap},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.dec(c.in); !errors.Is(err, ErrDecode) {
				t.Fatalf("err=%v, want ErrDecode", err)
			}
		})
	}
}

func decEntry(b []byte) error   { _, _, err := DecodeEntry(b); return err }
func decMessage(b []byte) error { _, _, err := DecodeMessage(b); return err }
func decSnap(b []byte) error    { _, _, err := DecodeSnapshotMeta(b); return err }

// TestDecodeAllocationBounded: a small hostile input claiming a huge entry count must not make
// the decoder allocate in proportion to the claim.
func TestDecodeAllocationBounded(t *testing.T) {
	in := []byte{Version, byte(raft.MsgApp), 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0x3f}
	in = append(in, make([]byte, 64)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < 10; i++ {
		if _, _, err := DecodeMessage(in); err == nil {
			t.Fatal("hostile count decoded")
		}
	}
	runtime.ReadMemStats(&after)
	// Only the error value is allocated; a decoder that trusted the count would allocate
	// ~1M entries (tens of MiB) per call.
	if got := after.TotalAlloc - before.TotalAlloc; got > 64<<10 {
		t.Fatalf("decoding a hostile count allocated %d bytes", got)
	}
}

func TestDecodeErrorNamesOffset(t *testing.T) {
	_, _, err := DecodeEntry([]byte{Version, 0, 1, 1, 5, 'a'})
	if err == nil {
		t.Fatal("want error")
	}
	const want = "wire: malformed input: entry at offset 5: data: length 5 exceeds remaining 1 bytes"
	if err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
}

func FuzzDecodeEntry(f *testing.F) {
	g := newGen(7)
	for i := 0; i < 8; i++ {
		e := g.entry()
		f.Add(AppendEntry(nil, &e))
	}
	f.Add([]byte{})
	f.Add([]byte{Version})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, n, err := DecodeEntry(b)
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("error does not wrap ErrDecode: %v", err)
			}
			return
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("consumed %d of %d", n, len(b))
		}
		// Whatever decodes must re-encode to something that decodes to the same value.
		e2, _, err := DecodeEntry(AppendEntry(nil, &e))
		if err != nil || !reflect.DeepEqual(e, e2) {
			t.Fatalf("re-round-trip: %+v vs %+v err=%v", e, e2, err)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	g := newGen(8)
	for i := 0; i < 16; i++ {
		m := g.message()
		f.Add(AppendMessage(nil, &m))
	}
	f.Add([]byte{})
	f.Add([]byte{Version, byte(raft.MsgApp), msgFlagSnapshot | msgFlagChunk})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, n, err := DecodeMessage(b)
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("error does not wrap ErrDecode: %v", err)
			}
			return
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("consumed %d of %d", n, len(b))
		}
		enc := AppendMessage(nil, &m)
		if len(enc) != MessageSize(&m) {
			t.Fatalf("MessageSize %d != encoded %d", MessageSize(&m), len(enc))
		}
		m2, _, err := DecodeMessage(enc)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-round-trip: %+v vs %+v err=%v", m, m2, err)
		}
	})
}

func benchMessage() raft.Message {
	m := raft.Message{Type: raft.MsgApp, To: 2, From: 1, Term: 7, LogTerm: 7, Index: 1 << 20, Commit: 1<<20 - 5}
	for i := 0; i < 16; i++ {
		m.Entries = append(m.Entries, raft.Entry{Term: 7, Index: uint64(1<<20 + i + 1), Data: make([]byte, 256)})
	}
	return m
}

func BenchmarkAppendMessage(b *testing.B) {
	m := benchMessage()
	buf := make([]byte, 0, MessageSize(&m))
	b.ReportAllocs()
	b.SetBytes(int64(MessageSize(&m)))
	for b.Loop() {
		buf = AppendMessage(buf[:0], &m)
	}
}

func BenchmarkDecodeMessage(b *testing.B) {
	m := benchMessage()
	enc := AppendMessage(nil, &m)
	b.ReportAllocs()
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, _, err := DecodeMessage(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendEntry(b *testing.B) {
	e := raft.Entry{Term: 7, Index: 1 << 20, Data: make([]byte, 1024)}
	buf := make([]byte, 0, EntrySize(&e))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEntry(buf[:0], &e)
	}
}

func BenchmarkDecodeEntry(b *testing.B) {
	e := raft.Entry{Term: 7, Index: 1 << 20, Data: make([]byte, 1024)}
	enc := AppendEntry(nil, &e)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := DecodeEntry(enc); err != nil {
			b.Fatal(err)
		}
	}
}
