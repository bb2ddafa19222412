package hlc

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/quick"
	"time"
)

const sec = int64(time.Second)

// TestNowMonotonicWhenPhysicalGoesBack drives a clock with a physical time that jumps back and
// forth (seeded) and checks every timestamp is greater than the previous one and never behind
// the greatest physical time seen.
func TestNowMonotonicWhenPhysicalGoesBack(t *testing.T) {
	seed := rand.Uint64()
	r := rand.New(rand.NewPCG(seed, 0))
	c := NewClock(0)
	var prev Timestamp
	var maxPT int64
	pt := 100 * sec
	for i := range 20000 {
		pt += r.Int64N(2*int64(time.Millisecond)) - int64(time.Millisecond) // ±1 ms: goes back half the time
		if r.IntN(100) == 0 {
			pt -= 10 * sec // an NTP step backwards
		}
		maxPT = max(maxPT, pt)
		var ts Timestamp
		if r.IntN(3) == 0 {
			remote := Timestamp{Wall: pt + r.Int64N(int64(DefaultMaxSkew)), Logical: r.Uint32N(5)}
			var err error
			ts, err = c.Update(remote, pt)
			if err != nil {
				t.Fatalf("seed %d step %d: Update(%v, %d): %v", seed, i, remote, pt, err)
			}
			if !remote.Less(ts) {
				t.Fatalf("seed %d step %d: Update returned %v, not after remote %v", seed, i, ts, remote)
			}
		} else {
			ts = c.Now(pt)
		}
		if !prev.Less(ts) {
			t.Fatalf("seed %d step %d: timestamp %v not after previous %v", seed, i, ts, prev)
		}
		if ts.Wall < maxPT {
			t.Fatalf("seed %d step %d: wall %d behind greatest physical time %d", seed, i, ts.Wall, maxPT)
		}
		prev = ts
	}
}

func TestNowFollowsPhysicalTime(t *testing.T) {
	var c Clock // zero value is usable
	if got := c.Now(5 * sec); got != (Timestamp{Wall: 5 * sec}) {
		t.Fatalf("first Now = %v, want wall 5s counter 0", got)
	}
	if got := c.Now(5 * sec); got != (Timestamp{Wall: 5 * sec, Logical: 1}) {
		t.Fatalf("same physical time: %v, want counter 1", got)
	}
	if got := c.Now(4 * sec); got != (Timestamp{Wall: 5 * sec, Logical: 2}) {
		t.Fatalf("physical time went back: %v, want counter 2 at 5s", got)
	}
	if got := c.Now(6 * sec); got != (Timestamp{Wall: 6 * sec}) {
		t.Fatalf("physical time moved on: %v, want wall 6s counter 0", got)
	}
}

// TestCausality: two members with skewed clocks exchanging messages; every receive event is
// after the send event it received, and every later send after it (happened-before implies
// timestamp order).
func TestCausality(t *testing.T) {
	seed := rand.Uint64()
	r := rand.New(rand.NewPCG(seed, 1))
	clocks := []*Clock{NewClock(time.Second), NewClock(time.Second), NewClock(time.Second)}
	offsets := []int64{0, 300 * int64(time.Millisecond), -400 * int64(time.Millisecond)}
	last := make([]Timestamp, len(clocks))
	real := 1000 * sec
	for i := range 5000 {
		real += r.Int64N(int64(time.Microsecond))
		from, to := r.IntN(3), r.IntN(3)
		sent := clocks[from].Now(real + offsets[from])
		if !last[from].Less(sent) {
			t.Fatalf("seed %d step %d: send %v not after member %d's previous event %v", seed, i, sent, from, last[from])
		}
		last[from] = sent
		got, err := clocks[to].Update(sent, real+offsets[to])
		if err != nil {
			t.Fatalf("seed %d step %d: %v", seed, i, err)
		}
		if !sent.Less(got) || !last[to].Less(got) {
			t.Fatalf("seed %d step %d: receive %v not after send %v and previous %v", seed, i, got, sent, last[to])
		}
		last[to] = got
	}
}

func TestUpdateRules(t *testing.T) {
	for _, tc := range []struct {
		name         string
		last, remote Timestamp
		pt           int64
		want         Timestamp
	}{
		{"physical ahead of both", Timestamp{10, 4}, Timestamp{11, 9}, 12, Timestamp{12, 0}},
		{"remote ahead", Timestamp{10, 4}, Timestamp{11, 9}, 10, Timestamp{11, 10}},
		{"local ahead", Timestamp{12, 4}, Timestamp{11, 9}, 10, Timestamp{12, 5}},
		{"equal walls, remote counter greater", Timestamp{12, 4}, Timestamp{12, 9}, 10, Timestamp{12, 10}},
		{"equal walls, local counter greater", Timestamp{12, 40}, Timestamp{12, 9}, 12, Timestamp{12, 41}},
	} {
		c := Clock{last: tc.last}
		got, err := c.Update(tc.remote, tc.pt)
		if err != nil || got != tc.want || c.Last() != tc.want {
			t.Errorf("%s: Update = %v, %v (last %v), want %v", tc.name, got, err, c.Last(), tc.want)
		}
	}
}

func TestSkewRefused(t *testing.T) {
	c := NewClock(500 * time.Millisecond)
	pt := 1000 * sec
	before := c.Now(pt)
	ok := Timestamp{Wall: pt + int64(500*time.Millisecond)}
	if err := c.Accept(ok, pt); err != nil {
		t.Fatalf("remote exactly MaxSkew ahead refused: %v", err)
	}
	bad := Timestamp{Wall: pt + int64(500*time.Millisecond) + 1, Logical: 3}
	got, err := c.Update(bad, pt)
	var se *SkewError
	if !errors.Is(err, ErrSkew) || !errors.As(err, &se) {
		t.Fatalf("Update of a timestamp past the skew bound: err = %v, want a *SkewError", err)
	}
	if se.Remote != bad || se.Physical != pt || se.MaxSkew != 500*time.Millisecond {
		t.Fatalf("SkewError fields = %+v", se)
	}
	msg := err.Error()
	for _, want := range []string{bad.String(), time.Unix(0, pt).UTC().Format(time.RFC3339Nano), "500ms", "500.000001ms ahead"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not name %q", msg, want)
		}
	}
	if got != before || c.Last() != before {
		t.Fatalf("refused update changed the clock: returned %v, last %v, want %v", got, c.Last(), before)
	}
	// The default bound applies to the zero Clock, and the limit saturates near the end of time.
	var z Clock
	if err := z.Accept(Timestamp{Wall: int64(DefaultMaxSkew) + 1}, 0); !errors.Is(err, ErrSkew) {
		t.Fatalf("zero Clock accepted a timestamp past DefaultMaxSkew: %v", err)
	}
	if err := z.Accept(Timestamp{Wall: math.MaxInt64}, math.MaxInt64-1); err != nil {
		t.Fatalf("saturated limit refused: %v", err)
	}
}

func TestCounterOverflowAdvancesWall(t *testing.T) {
	c := Clock{last: Timestamp{Wall: 7 * sec, Logical: math.MaxUint32 - 1}}
	if got := c.Now(sec); got != (Timestamp{Wall: 7 * sec, Logical: math.MaxUint32}) {
		t.Fatalf("Now = %v, want the last counter value", got)
	}
	if got := c.Now(sec); got != (Timestamp{Wall: 7*sec + 1, Logical: 0}) {
		t.Fatalf("Now after the counter is exhausted = %v, want wall + 1ns, counter 0", got)
	}
	// Receiving a remote timestamp with an exhausted counter.
	c = Clock{}
	remote := Timestamp{Wall: 9 * sec, Logical: math.MaxUint32}
	got, err := c.Update(remote, 9*sec)
	if err != nil || got != (Timestamp{Wall: 9*sec + 1}) {
		t.Fatalf("Update(%v) = %v, %v; want wall + 1ns, counter 0", remote, got, err)
	}
	if !remote.Less(got) {
		t.Fatalf("after overflow %v not greater than %v", got, remote)
	}
}

func TestRestore(t *testing.T) {
	var c Clock
	c.Restore(Timestamp{Wall: 50 * sec, Logical: 2})
	c.Restore(Timestamp{Wall: 40 * sec}) // lower: ignored
	if got := c.Now(10 * sec); got != (Timestamp{Wall: 50 * sec, Logical: 3}) {
		t.Fatalf("Now after Restore = %v, want 50s+3", got)
	}
}

// TestEncodingOrder: bytes.Compare of encodings equals Compare of timestamps, and round trips,
// across negative, zero and extreme values.
func TestEncodingOrder(t *testing.T) {
	f := func(w1, w2 int64, l1, l2 uint32, sameWall bool) bool {
		if sameWall {
			w2 = w1
		}
		a, b := Timestamp{w1, l1}, Timestamp{w2, l2}
		ea, eb := a.Append(nil), b.Append(nil)
		if len(ea) != EncodedLen || bytes.Compare(ea, eb) != a.Compare(b) {
			return false
		}
		da, err := Decode(ea)
		return err == nil && da == a
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 5000}); err != nil {
		t.Fatal(err)
	}
	edges := []Timestamp{{math.MinInt64, 0}, {-1, math.MaxUint32}, {0, 0}, {0, 1}, {1, 0}, {math.MaxInt64, math.MaxUint32}}
	for i := 1; i < len(edges); i++ {
		if bytes.Compare(edges[i-1].Append(nil), edges[i].Append(nil)) >= 0 || !edges[i-1].Less(edges[i]) {
			t.Fatalf("edge order broken between %v and %v", edges[i-1], edges[i])
		}
	}
}

func TestDecodeRejectsBadLength(t *testing.T) {
	for _, n := range []int{0, 1, 11, 13, 24} {
		if _, err := Decode(make([]byte, n)); !errors.Is(err, ErrDecode) {
			t.Errorf("Decode of %d bytes: err = %v, want ErrDecode", n, err)
		}
	}
	var ts Timestamp
	if err := ts.UnmarshalBinary(make([]byte, 11)); !errors.Is(err, ErrDecode) {
		t.Errorf("UnmarshalBinary of 11 bytes: %v", err)
	}
	b, _ := Timestamp{Wall: 3, Logical: 4}.MarshalBinary()
	if err := ts.UnmarshalBinary(b); err != nil || ts != (Timestamp{Wall: 3, Logical: 4}) {
		t.Errorf("round trip = %v, %v", ts, err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add(Timestamp{Wall: 1, Logical: 2}.Append(nil))
	f.Add(make([]byte, 13))
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := Decode(b)
		if err != nil {
			return
		}
		if !bytes.Equal(ts.Append(nil), b) {
			t.Fatalf("re-encoding %v differs from input %x", ts, b)
		}
	})
}

func BenchmarkNow(b *testing.B) {
	var c Clock
	for i := range b.N {
		c.Now(int64(i / 4))
	}
}
