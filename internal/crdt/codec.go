package crdt

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/caucus/caucus/internal/hlc"
)

// Version is the format version byte that follows the kind byte of every encoding.
const Version = 1

// Kind bytes open each encoding, so that bytes of one type are never decoded as another.
const (
	kindRegister byte = 'R'
	kindCounter  byte = 'C'
	kindSet      byte = 'S'
)

// ErrDecode is wrapped by every decoding error.
var ErrDecode = errors.New("crdt: malformed input")

// ErrLimit is wrapped by errors of operations that would pass a named limit.
var ErrLimit = errors.New("crdt: limit exceeded")

// ErrOverflow is wrapped by errors of counter arithmetic that would overflow.
var ErrOverflow = errors.New("crdt: counter overflow")

// Digest is the SHA-256 of a value's canonical encoding: equal states have equal digests, so
// anti-entropy compares digests (or hashes of them per key range) instead of states.
type Digest [sha256.Size]byte

func digestOf(b []byte) Digest { return sha256.Sum256(b) }

func appendHeader(b []byte, kind byte) []byte { return append(b, kind, Version) }

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// decoder reads a byte slice and remembers the first error; after it every read returns zero
// values, so decoders check err once per loop iteration instead of after every field.
type decoder struct {
	b    []byte
	off  int
	err  error
	what string
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s at offset %d: %s", ErrDecode, d.what, d.off, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) header(kind byte) {
	if d.remaining() < 2 {
		d.fail("header: unexpected end of input")
		return
	}
	if d.b[d.off] != kind {
		d.fail("kind byte %q, want %q", d.b[d.off], kind)
		return
	}
	if d.b[d.off+1] != Version {
		d.fail("format version %d, want %d", d.b[d.off+1], Version)
		return
	}
	d.off += 2
}

func (d *decoder) byte1(field string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail("%s: unexpected end of input", field)
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

// uvarint reads a minimally encoded uvarint: a longer encoding of the same number would make
// two encodings of one state, and digests must not differ for equal states.
func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("%s: bad uvarint", field)
		return 0
	}
	if n > 1 && d.b[d.off+n-1] == 0 {
		d.fail("%s: uvarint not minimally encoded", field)
		return 0
	}
	d.off += n
	return v
}

// count reads a list length, refusing one above limit or one whose items (at least minItem
// bytes each) cannot fit in the remaining input, before anything is allocated for them.
func (d *decoder) count(field string, limit, minItem int) int {
	v := d.uvarint(field)
	if d.err != nil {
		return 0
	}
	if v > uint64(limit) {
		d.fail("%s: %d exceeds the limit of %d", field, v, limit)
		return 0
	}
	if v*uint64(minItem) > uint64(d.remaining()) {
		d.fail("%s: %d items cannot fit in %d remaining bytes", field, v, d.remaining())
		return 0
	}
	return int(v)
}

// bytes reads a length-prefixed byte string of at most limit bytes, copied out of the input.
func (d *decoder) bytes(field string, limit int) []byte {
	n := d.uvarint(field)
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) {
		d.fail("%s: %d bytes exceeds the limit of %d", field, n, limit)
		return nil
	}
	if n > uint64(d.remaining()) {
		d.fail("%s: %d bytes, only %d remaining", field, n, d.remaining())
		return nil
	}
	if n == 0 {
		return nil
	}
	v := make([]byte, n)
	copy(v, d.b[d.off:])
	d.off += int(n)
	return v
}

func (d *decoder) timestamp(field string) hlc.Timestamp {
	if d.err != nil {
		return hlc.Timestamp{}
	}
	if d.remaining() < hlc.EncodedLen {
		d.fail("%s: unexpected end of input", field)
		return hlc.Timestamp{}
	}
	ts, err := hlc.Decode(d.b[d.off : d.off+hlc.EncodedLen])
	if err != nil {
		d.fail("%s: %v", field, err)
	}
	d.off += hlc.EncodedLen
	return ts
}

// finish fails on trailing bytes: each encoding is a whole value.
func (d *decoder) finish() error {
	if d.err == nil && d.off != len(d.b) {
		d.fail("%d trailing bytes", len(d.b)-d.off)
	}
	return d.err
}

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
