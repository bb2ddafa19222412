package hlc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// DefaultMaxSkew is the bound on how far ahead of the local physical time a remote timestamp may
// be and still be accepted, when a Clock is created without one. NTP keeps healthy members within
// a few milliseconds; half a second tolerates a poorly synchronized member while still refusing a
// clock set wrong by hours or days.
const DefaultMaxSkew = 500 * time.Millisecond

// EncodedLen is the length of a Timestamp's binary encoding.
const EncodedLen = 12

// ErrSkew is matched (errors.Is) by every *SkewError.
var ErrSkew = errors.New("hlc: remote timestamp too far ahead of local clock")

// ErrDecode is wrapped by decoding errors.
var ErrDecode = errors.New("hlc: malformed timestamp")

// Timestamp is a hybrid logical clock reading: Wall is nanoseconds since the Unix epoch (the
// greatest physical time seen), Logical orders events that share a Wall. The zero Timestamp is
// smaller than every timestamp a Clock issues for a physical time after the epoch.
type Timestamp struct {
	Wall    int64
	Logical uint32
}

// Compare returns -1, 0 or +1 as t is less than, equal to or greater than u.
func (t Timestamp) Compare(u Timestamp) int {
	switch {
	case t.Wall < u.Wall:
		return -1
	case t.Wall > u.Wall:
		return 1
	case t.Logical < u.Logical:
		return -1
	case t.Logical > u.Logical:
		return 1
	}
	return 0
}

// Less reports whether t orders before u.
func (t Timestamp) Less(u Timestamp) bool { return t.Compare(u) < 0 }

// IsZero reports whether t is the zero Timestamp.
func (t Timestamp) IsZero() bool { return t == Timestamp{} }

// Time returns the wall part as a time.Time (the logical part is dropped).
func (t Timestamp) Time() time.Time { return time.Unix(0, t.Wall).UTC() }

// String formats t as RFC 3339 with nanoseconds and the logical counter, e.g.
// "2025-01-02T03:04:05.000000006Z+7".
func (t Timestamp) String() string {
	return fmt.Sprintf("%s+%d", t.Time().Format(time.RFC3339Nano), t.Logical)
}

// next returns the smallest timestamp greater than t: the counter plus one, or, when the counter
// is exhausted, the next nanosecond with counter 0. At the greatest representable timestamp
// (year 2262) it returns t itself: physical time cannot get there before then, and the skew
// bound keeps remote timestamps from getting there either.
func (t Timestamp) next() Timestamp {
	if t.Logical < math.MaxUint32 {
		return Timestamp{Wall: t.Wall, Logical: t.Logical + 1}
	}
	if t.Wall == math.MaxInt64 {
		return t
	}
	return Timestamp{Wall: t.Wall + 1}
}

// AppendBinary appends the 12-byte encoding of t to b. Flipping the sign bit of Wall maps the
// int64 range monotonically onto uint64, so the big-endian bytes sort like the timestamps.
func (t Timestamp) AppendBinary(b []byte) ([]byte, error) {
	return t.Append(b), nil
}

// Append is AppendBinary without the error, which is always nil.
func (t Timestamp) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Wall)^(1<<63))
	return binary.BigEndian.AppendUint32(b, t.Logical)
}

// MarshalBinary returns the 12-byte encoding of t.
func (t Timestamp) MarshalBinary() ([]byte, error) {
	return t.Append(make([]byte, 0, EncodedLen)), nil
}

// UnmarshalBinary decodes exactly EncodedLen bytes into t.
func (t *Timestamp) UnmarshalBinary(b []byte) error {
	v, err := Decode(b)
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// Decode decodes a Timestamp from exactly EncodedLen bytes.
func Decode(b []byte) (Timestamp, error) {
	if len(b) != EncodedLen {
		return Timestamp{}, fmt.Errorf("%w: %d bytes, want %d", ErrDecode, len(b), EncodedLen)
	}
	return Timestamp{
		Wall:    int64(binary.BigEndian.Uint64(b) ^ (1 << 63)),
		Logical: binary.BigEndian.Uint32(b[8:]),
	}, nil
}

// SkewError reports a remote timestamp that is further ahead of the local physical time than
// the clock accepts. Callers refuse the write or message that carried it.
type SkewError struct {
	Remote   Timestamp
	Physical int64 // local physical time, ns since the epoch
	MaxSkew  time.Duration
}

func (e *SkewError) Error() string {
	return fmt.Sprintf("hlc: remote timestamp %s is %s ahead of local physical time %s, more than the accepted skew of %s",
		e.Remote, time.Duration(e.Remote.Wall-e.Physical), time.Unix(0, e.Physical).UTC().Format(time.RFC3339Nano), e.MaxSkew)
}

// Is makes errors.Is(err, ErrSkew) true for a *SkewError.
func (e *SkewError) Is(target error) bool { return target == ErrSkew }

// Clock is a hybrid logical clock. The zero Clock is ready to use with DefaultMaxSkew.
type Clock struct {
	maxSkew time.Duration
	last    Timestamp
}

// NewClock returns a clock that refuses remote timestamps more than maxSkew ahead of the local
// physical time; maxSkew <= 0 selects DefaultMaxSkew.
func NewClock(maxSkew time.Duration) *Clock {
	return &Clock{maxSkew: maxSkew}
}

// MaxSkew returns the bound on accepted remote skew.
func (c *Clock) MaxSkew() time.Duration {
	if c.maxSkew <= 0 {
		return DefaultMaxSkew
	}
	return c.maxSkew
}

// Last returns the greatest timestamp the clock has issued, accepted or restored.
func (c *Clock) Last() Timestamp { return c.last }

// Restore raises the clock to at least ts without the skew check. A member calls it at start
// with the greatest timestamp it finds in its own durable state, so that a physical clock that
// went backwards across a restart cannot make it issue timestamps below ones it issued before.
func (c *Clock) Restore(ts Timestamp) {
	if c.last.Less(ts) {
		c.last = ts
	}
}

// Now returns a timestamp for a local event (a write, or a message about to be sent) at
// physical time pt (ns since the epoch). It follows the paper's send rule: the wall part is the
// greater of pt and the last wall; the counter restarts at 0 when pt moved past the last wall
// and is incremented otherwise.
func (c *Clock) Now(pt int64) Timestamp {
	if pt > c.last.Wall {
		c.last = Timestamp{Wall: pt}
	} else {
		c.last = c.last.next()
	}
	return c.last
}

// Accept checks that remote is not more than MaxSkew ahead of physical time pt, without changing
// the clock. The error is a *SkewError naming both times and the limit.
func (c *Clock) Accept(remote Timestamp, pt int64) error {
	skew := c.MaxSkew()
	// pt + skew saturates instead of wrapping for physical times near the end of int64.
	limit := pt + int64(skew)
	if limit < pt {
		limit = math.MaxInt64
	}
	if remote.Wall > limit {
		return &SkewError{Remote: remote, Physical: pt, MaxSkew: skew}
	}
	return nil
}

// Update merges a remote timestamp received at physical time pt and returns a timestamp for the
// receive event, greater than both remote and every timestamp the clock issued before (the
// paper's receive rule). A remote timestamp refused by Accept leaves the clock unchanged.
func (c *Clock) Update(remote Timestamp, pt int64) (Timestamp, error) {
	if err := c.Accept(remote, pt); err != nil {
		return c.last, err
	}
	switch {
	case pt > c.last.Wall && pt > remote.Wall:
		c.last = Timestamp{Wall: pt}
	case remote.Wall > c.last.Wall:
		c.last = remote.next()
	case c.last.Wall > remote.Wall:
		c.last = c.last.next()
	default: // equal walls, both at least pt: continue from the greater counter
		if remote.Logical > c.last.Logical {
			c.last = remote.next()
		} else {
			c.last = c.last.next()
		}
	}
	return c.last, nil
}
