package mvcc

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// The history bucket relies on its keys sorting like (revision, sub-revision), and a record
// must decode to what was encoded, whatever bytes the key and value hold.
func TestHistoryEncoding(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	gen := func(n int) []byte {
		b := make([]byte, rng.IntN(n))
		for i := range b {
			b[i] = []byte{0, 1, 0x80, 0xFF, 'a'}[rng.IntN(5)]
		}
		return b
	}
	for range 20000 {
		ra, rb := rng.Int64N(1<<40), rng.Int64N(1<<40)
		if rng.IntN(2) == 0 {
			rb = ra
		}
		sa, sb := rng.Int64N(300), rng.Int64N(300)
		want := cmpInt(ra, rb)
		if want == 0 {
			want = cmpInt(sa, sb)
		}
		if got := bytes.Compare(histKey(ra, sa), histKey(rb, sb)); got != want {
			t.Fatalf("history key order of %d.%d vs %d.%d = %d, want %d", ra, sa, rb, sb, got, want)
		}
		if r, s, ok := splitHistKey(histKey(ra, sa)); !ok || r != ra || s != sa {
			t.Fatalf("splitHistKey(histKey(%d, %d)) = %d, %d, %v", ra, sa, r, s, ok)
		}
		rec := record{tombstone: rng.IntN(2) == 0, create: rng.Int64N(1 << 50), version: rng.Int64N(1 << 30),
			lease: rng.Int64() - rng.Int64(), value: gen(40)}
		key := gen(30)
		got, err := decodeRecord(rec.encode(nil, key))
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if got.tombstone != rec.tombstone || got.create != rec.create || got.version != rec.version ||
			got.lease != rec.lease || !bytes.Equal(got.key, key) || !bytes.Equal(got.value, rec.value) || !got.loaded {
			t.Fatalf("record %+v of key %x decoded as %+v", rec, key, got)
		}
	}
	// A record cut anywhere inside its key is refused, never read past its end.
	enc := (&record{create: 1, version: 1}).encode(nil, []byte("some key"))
	for n := 0; n < len(enc); n++ {
		if _, err := decodeRecord(enc[:n]); err == nil {
			t.Fatalf("record cut to %d of %d bytes decoded", n, len(enc))
		}
	}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
