package crdt

import (
	"bytes"
	"fmt"

	"github.com/caucus/caucus/internal/hlc"
)

// MaxRegisterValueBytes bounds a register's value, in Set and when decoding.
const MaxRegisterValueBytes = 1 << 20

const registerFlagDeleted = 1 << 0

// Register is a last-writer-wins register: the write with the greatest (Stamp, Member) wins.
// A delete is a write too (Deleted set, no value): a tombstone that beats older writes wherever
// it arrives, so the deleted value cannot come back from a replica that missed the delete.
//
// Two writes stamped with the same HLC timestamp by different members are concurrent; the
// greater member id wins, so every replica picks the same one. A member never stamps two writes
// with the same timestamp (its clock only moves forward), so (Stamp, Member) identifies a write;
// Merge still orders a hypothetical clash by tombstone then value bytes, so that it is a join on
// every input.
//
// The zero Register is the state before any write, and below every write: stamps before the
// Unix epoch (negative wall times) are refused by Set, Delete and Unmarshal. A Register is a value type; its Value is not
// modified in place, only replaced.
type Register struct {
	Value   []byte
	Stamp   hlc.Timestamp
	Member  uint64
	Deleted bool
}

// compareRegisters orders registers by (Stamp, Member, Deleted, Value): the winner of Merge is
// the greater.
func compareRegisters(a, b *Register) int {
	if c := a.Stamp.Compare(b.Stamp); c != 0 {
		return c
	}
	switch {
	case a.Member < b.Member:
		return -1
	case a.Member > b.Member:
		return 1
	case a.Deleted != b.Deleted:
		if a.Deleted {
			return 1
		}
		return -1
	}
	return bytes.Compare(a.Value, b.Value)
}

// Set writes value at ts by member and returns the write itself, which is the delta to ship.
// The receiver keeps whichever of its state and the write wins, so a write stamped below the
// current one is lost here as it would be everywhere. Callers stamp writes with an hlc.Clock that
// has seen every stamp merged into the register, so their writes win. The value is copied.
func (r *Register) Set(value []byte, ts hlc.Timestamp, member uint64) (Register, error) {
	if err := checkStamp(ts); err != nil {
		return Register{}, err
	}
	if len(value) > MaxRegisterValueBytes {
		return Register{}, fmt.Errorf("%w: register value of %d bytes, limit %d", ErrLimit, len(value), MaxRegisterValueBytes)
	}
	w := Register{Value: bytes.Clone(value), Stamp: ts, Member: member}
	if len(w.Value) == 0 {
		w.Value = nil // empty and nil values are one state: they encode alike
	}
	r.Merge(w)
	return w, nil
}

// Delete writes a tombstone at ts by member and returns it as the delta.
func (r *Register) Delete(ts hlc.Timestamp, member uint64) (Register, error) {
	if err := checkStamp(ts); err != nil {
		return Register{}, err
	}
	w := Register{Stamp: ts, Member: member, Deleted: true}
	r.Merge(w)
	return w, nil
}

func checkStamp(ts hlc.Timestamp) error {
	if ts.Wall < 0 {
		return fmt.Errorf("%w: register stamp %v is before the Unix epoch", ErrLimit, ts)
	}
	return nil
}

// Merge joins o into r: r becomes the winner of the two. It reports whether r changed.
// Merge is commutative, associative and idempotent. Afterwards r may share o's Value slice:
// values are never modified in place.
func (r *Register) Merge(o Register) bool {
	if compareRegisters(&o, r) > 0 {
		*r = o
		return true
	}
	return false
}

// Live reports whether the register holds a value: it was written and not deleted since.
func (r *Register) Live() bool { return !r.Deleted && !(r.Stamp.IsZero() && r.Member == 0) }

// Marshal returns the canonical encoding:
//
//	'R' version flags:u8(deleted) stamp:12 member:uvarint len(value):uvarint value
func (r *Register) Marshal() []byte {
	return r.AppendBinary(make([]byte, 0, 2+1+hlc.EncodedLen+10+5+len(r.Value)))
}

// AppendBinary appends the canonical encoding to b.
func (r *Register) AppendBinary(b []byte) []byte {
	b = appendHeader(b, kindRegister)
	var flags byte
	if r.Deleted {
		flags |= registerFlagDeleted
	}
	b = append(b, flags)
	b = r.Stamp.Append(b)
	b = appendUvarint(b, r.Member)
	return appendBytes(b, r.Value)
}

// Digest returns the SHA-256 of the canonical encoding.
func (r *Register) Digest() Digest { return digestOf(r.Marshal()) }

// Unmarshal decodes a canonical encoding into r, refusing unknown flags, a negative wall time, a
// tombstone with a value, values over MaxRegisterValueBytes, non-minimal varints and trailing bytes. On error r
// is unchanged.
func (r *Register) Unmarshal(b []byte) error {
	d := decoder{b: b, what: "register"}
	d.header(kindRegister)
	flags := d.byte1("flags")
	if d.err == nil && flags&^registerFlagDeleted != 0 {
		d.fail("unknown flags %#x", flags)
	}
	v := Register{Deleted: flags&registerFlagDeleted != 0}
	v.Stamp = d.timestamp("stamp")
	if d.err == nil && v.Stamp.Wall < 0 {
		d.fail("stamp %v is before the Unix epoch", v.Stamp)
	}
	v.Member = d.uvarint("member")
	v.Value = d.bytes("value", MaxRegisterValueBytes)
	if d.err == nil && v.Deleted && len(v.Value) > 0 {
		d.fail("tombstone carries a %d-byte value", len(v.Value))
	}
	if err := d.finish(); err != nil {
		return err
	}
	*r = v
	return nil
}
