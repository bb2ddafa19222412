package crdt

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sort"
)

// MaxCounterMembers bounds the members with an entry in one counter, in Incr/Decr and when
// decoding. Entries are never removed, so it bounds every member that ever wrote to a counter.
const MaxCounterMembers = 1 << 16

// minCounterEntryBytes is the smallest encoding of an entry: member, increments, decrements.
const minCounterEntryBytes = 3

// Counter is a PN-counter: each member counts its own increments and decrements (two grow-only
// counts), Merge takes the per-member maximum, and the value is the sum of increments minus the
// sum of decrements over all members. The zero Counter is a counter at 0.
//
// Entries are kept sorted by member and an entry with both counts 0 is never stored, so equal
// states have one representation and one encoding.
type Counter struct {
	entries []counterEntry
}

type counterEntry struct {
	member   uint64
	inc, dec uint64
}

func (c *Counter) find(member uint64) (int, bool) {
	i := sort.Search(len(c.entries), func(i int) bool { return c.entries[i].member >= member })
	return i, i < len(c.entries) && c.entries[i].member == member
}

// Incr adds n to member's increments and returns the delta: a counter holding only member's
// entry, which Merge into any replica applies the increment (once, however often it arrives).
// It fails with ErrOverflow if member's increments would pass 2^64-1, and with ErrLimit for a new
// member when the counter already has MaxCounterMembers entries.
func (c *Counter) Incr(member, n uint64) (*Counter, error) { return c.add(member, n, false) }

// Decr adds n to member's decrements and returns the delta, as Incr does.
func (c *Counter) Decr(member, n uint64) (*Counter, error) { return c.add(member, n, true) }

func (c *Counter) add(member, n uint64, dec bool) (*Counter, error) {
	i, ok := c.find(member)
	if !ok {
		if len(c.entries) >= MaxCounterMembers {
			return nil, fmt.Errorf("%w: counter already has entries of %d members", ErrLimit, MaxCounterMembers)
		}
		if n == 0 {
			return &Counter{}, nil
		}
		c.entries = slices.Insert(c.entries, i, counterEntry{member: member})
	}
	e := &c.entries[i]
	p, what := &e.inc, "increments"
	if dec {
		p, what = &e.dec, "decrements"
	}
	if *p > math.MaxUint64-n { // a new entry starts at 0 and cannot overflow, so none is left empty
		return nil, fmt.Errorf("%w: member %d's %s %d + %d", ErrOverflow, member, what, *p, n)
	}
	*p += n
	return &Counter{entries: []counterEntry{*e}}, nil
}

// Merge joins o into c (per-member maximum of both counts) and reports whether c changed. o is
// not modified. The result may hold more than MaxCounterMembers entries only if more members
// than that wrote to the counter; Merge cannot refuse, a join must be total.
func (c *Counter) Merge(o *Counter) bool {
	if len(o.entries) == 0 {
		return false
	}
	changed := false
	// Fast path for deltas: each entry of o updates c in place or is inserted.
	if len(o.entries) <= 4 {
		for _, oe := range o.entries {
			i, ok := c.find(oe.member)
			if !ok {
				c.entries = slices.Insert(c.entries, i, oe)
				changed = true
				continue
			}
			e := &c.entries[i]
			if oe.inc > e.inc {
				e.inc, changed = oe.inc, true
			}
			if oe.dec > e.dec {
				e.dec, changed = oe.dec, true
			}
		}
		return changed
	}
	out := make([]counterEntry, 0, max(len(c.entries), len(o.entries)))
	i, j := 0, 0
	for i < len(c.entries) || j < len(o.entries) {
		switch {
		case j == len(o.entries) || (i < len(c.entries) && c.entries[i].member < o.entries[j].member):
			out = append(out, c.entries[i])
			i++
		case i == len(c.entries) || o.entries[j].member < c.entries[i].member:
			out = append(out, o.entries[j])
			j++
			changed = true
		default:
			e, oe := c.entries[i], o.entries[j]
			if oe.inc > e.inc {
				e.inc, changed = oe.inc, true
			}
			if oe.dec > e.dec {
				e.dec, changed = oe.dec, true
			}
			out = append(out, e)
			i++
			j++
		}
	}
	c.entries = out
	return changed
}

// Clone returns a deep copy.
func (c *Counter) Clone() *Counter { return &Counter{entries: slices.Clone(c.entries)} }

// Value returns the sum of all increments minus all decrements. The sums are exact (128-bit);
// a result outside the int64 range is returned saturated (math.MaxInt64 or math.MinInt64)
// together with an error wrapping ErrOverflow, so callers can show the bound or refuse.
func (c *Counter) Value() (int64, error) {
	var incHi, incLo, decHi, decLo, carry uint64
	for _, e := range c.entries {
		incLo, carry = bits.Add64(incLo, e.inc, 0)
		incHi += carry
		decLo, carry = bits.Add64(decLo, e.dec, 0)
		decHi += carry
	}
	neg := incHi < decHi || (incHi == decHi && incLo < decLo)
	if neg {
		incHi, incLo, decHi, decLo = decHi, decLo, incHi, incLo
	}
	lo, borrow := bits.Sub64(incLo, decLo, 0)
	hi := incHi - decHi - borrow
	// |value| = hi:lo; int64 holds magnitudes up to 2^63-1, or 2^63 when negative.
	switch {
	case !neg && (hi != 0 || lo > math.MaxInt64):
		return math.MaxInt64, fmt.Errorf("%w: counter value %s exceeds int64", ErrOverflow, u128String(hi, lo, false))
	case neg && (hi != 0 || lo > 1<<63):
		return math.MinInt64, fmt.Errorf("%w: counter value %s below int64", ErrOverflow, u128String(hi, lo, true))
	case neg:
		return int64(-lo), nil // -lo wraps to the two's complement, right also for lo = 2^63
	}
	return int64(lo), nil
}

func u128String(hi, lo uint64, neg bool) string {
	sign := ""
	if neg {
		sign = "-"
	}
	if hi == 0 {
		return fmt.Sprintf("%s%d", sign, lo)
	}
	return fmt.Sprintf("%s(%d*2^64+%d)", sign, hi, lo)
}

// Members returns the number of members with an entry.
func (c *Counter) Members() int { return len(c.entries) }

// Marshal returns the canonical encoding:
//
//	'C' version count:uvarint (member:uvarint inc:uvarint dec:uvarint)*count
//
// with members strictly increasing and no entry with both counts 0.
func (c *Counter) Marshal() []byte {
	return c.AppendBinary(make([]byte, 0, 3+len(c.entries)*12))
}

// AppendBinary appends the canonical encoding to b.
func (c *Counter) AppendBinary(b []byte) []byte {
	b = appendHeader(b, kindCounter)
	b = appendUvarint(b, uint64(len(c.entries)))
	for _, e := range c.entries {
		b = appendUvarint(b, e.member)
		b = appendUvarint(b, e.inc)
		b = appendUvarint(b, e.dec)
	}
	return b
}

// Digest returns the SHA-256 of the canonical encoding.
func (c *Counter) Digest() Digest { return digestOf(c.Marshal()) }

// Unmarshal decodes a canonical encoding into c, refusing more than MaxCounterMembers entries,
// members out of order or repeated, empty entries, non-minimal varints and trailing bytes. On
// error c is unchanged.
func (c *Counter) Unmarshal(b []byte) error {
	d := decoder{b: b, what: "counter"}
	d.header(kindCounter)
	n := d.count("entries", MaxCounterMembers, minCounterEntryBytes)
	var entries []counterEntry
	if n > 0 {
		entries = make([]counterEntry, 0, n)
	}
	for k := 0; k < n && d.err == nil; k++ {
		e := counterEntry{member: d.uvarint("member"), inc: d.uvarint("increments"), dec: d.uvarint("decrements")}
		switch {
		case d.err != nil:
		case k > 0 && e.member <= entries[k-1].member:
			d.fail("member %d after member %d: not strictly increasing", e.member, entries[k-1].member)
		case e.inc == 0 && e.dec == 0:
			d.fail("member %d has an empty entry", e.member)
		}
		entries = append(entries, e)
	}
	if err := d.finish(); err != nil {
		return err
	}
	c.entries = entries
	return nil
}
