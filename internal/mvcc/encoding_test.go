package mvcc

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// The kv bucket relies on escaping preserving the order of keys and on the terminator sorting
// before any longer key: check both on random keys rich in 0x00, 0x01, 0x02 and 0xFF bytes.
func TestEscapeOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte{0, 1, 2, 0xFE, 0xFF, 'a'}
	gen := func() []byte {
		k := make([]byte, 1+rng.IntN(5))
		for i := range k {
			k[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return k
	}
	for range 20000 {
		a, b := gen(), gen()
		if got := unescape(appendEscaped(nil, a)); !bytes.Equal(got, a) {
			t.Fatalf("unescape(escape(%x)) = %x", a, got)
		}
		ra, rb := int64(rng.IntN(3)+1), int64(rng.IntN(3)+1)
		ka, kb := kvKey(nil, a, ra, 0), kvKey(nil, b, rb, 0)
		want := bytes.Compare(a, b)
		if want == 0 {
			// Same key: newer revision first.
			want = -cmpInt(ra, rb)
		}
		if got := bytes.Compare(ka, kb); got != want {
			t.Fatalf("kv key order of %x@%d vs %x@%d = %d, want %d", a, ra, b, rb, got, want)
		}
		// Every version of a sorts before the next-key seek position, which sorts before
		// every version of any greater key.
		if bytes.Compare(ka, nextKeySeek(nil, appendEscaped(nil, a))) >= 0 {
			t.Fatalf("version of %x not below its next-key seek", a)
		}
		if bytes.Compare(a, b) < 0 && bytes.Compare(nextKeySeek(nil, appendEscaped(nil, a)), kb) > 0 {
			t.Fatalf("next-key seek of %x skips %x", a, b)
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
