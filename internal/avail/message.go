package avail

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/caucus/caucus/internal/crdt"
)

// Message size limits of anti-entropy.
const (
	// DefaultMaxMessageBytes bounds a session message when the config does not say: it holds a
	// register with the largest value (crdt.MaxRegisterValueBytes) or a state of MaxStateBytes.
	DefaultMaxMessageBytes = 4 << 20
	// MinMessageBytes is the smallest MaxMessageBytes a session accepts: room for the header,
	// a key section holding its cursor and one key with its digest, and a want.
	MinMessageBytes = 3*MaxKeyBytes + 512
	// MaxMessageBytes is the largest MaxMessageBytes a session accepts, and the bound on what
	// a decoder reads whatever the config.
	MaxMessageBytes = 64 << 20
)

// ErrMessage is wrapped by every error about a malformed or unexpected session message.
var ErrMessage = errors.New("avail: bad anti-entropy message")

const (
	msgMagic   = 'A'
	msgVersion = 1

	flagHello = 1 << 0 // first message of the initiator: keyspace and tree shape follow
	flagMore  = 1 << 1 // the sender has more queued: the receiver must answer even if idle
	flagDone  = 1 << 2 // the conversation is over; no answer
	flagsAll  = flagHello | flagMore | flagDone

	sectionFinal    = 1 << 0 // the section reaches the end of its leaf
	sectionHasAfter = 1 << 1 // the section starts after a cursor key (else at the leaf's start)
)

// message is one turn of an anti-entropy session. Encoding (numbers are uvarints unless sized):
//
//	'A' version:u8 flags:u8
//	[hello: len keyspace, leafBits:u8]
//	count (depth:u8 index hash:32)*                       tree node hashes
//	count (leaf flags:u8 [len after] count (len key digest:32)*)*   key sections of leaves
//	count (len key)*                                      keys whose states the sender wants
//	count (len key len state)*                            states for the receiver to merge
type message struct {
	flags    byte
	keyspace string
	leafBits int
	hashes   []nodeHash
	sections []section
	wants    [][]byte
	states   []Remote
}

type nodeHash struct {
	depth, index int
	hash         Hash
}

// section lists the keys of one leaf (with their state digests) in index order, from after
// (exclusive; none: the leaf's start) to its last key (or the leaf's end, if final).
type section struct {
	leaf     int
	after    []byte
	hasAfter bool
	final    bool
	keys     []KeyDigest
}

// KeyDigest is a key and the digest of its state.
type KeyDigest struct {
	Key    []byte
	Digest crdt.Digest
}

func (m *message) empty() bool {
	return len(m.hashes) == 0 && len(m.sections) == 0 && len(m.wants) == 0 && len(m.states) == 0
}

// Sizes of encoded items, for filling a message up to its limit.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func bytesLen(b []byte) int { return uvarintLen(uint64(len(b))) + len(b) }

func hashLen(h nodeHash) int { return 1 + uvarintLen(uint64(h.index)) + len(Hash{}) }

func keyDigestLen(k KeyDigest) int { return bytesLen(k.Key) + len(crdt.Digest{}) }

func sectionHeaderLen(s *section) int {
	n := uvarintLen(uint64(s.leaf)) + 1 + 5 // 5: room for the key count
	if s.hasAfter {
		n += bytesLen(s.after)
	}
	return n
}

func stateLen(r Remote) int { return bytesLen(r.Key) + bytesLen(r.State) }

// headerLen is the room reserved for the fixed header and the four counts.
func headerLen(m *message) int { return 3 + 4*5 + 1 + bytesLen([]byte(m.keyspace)) }

func (m *message) marshal() []byte {
	b := []byte{msgMagic, msgVersion, m.flags}
	if m.flags&flagHello != 0 {
		b = binary.AppendUvarint(b, uint64(len(m.keyspace)))
		b = append(b, m.keyspace...)
		b = append(b, byte(m.leafBits))
	}
	b = binary.AppendUvarint(b, uint64(len(m.hashes)))
	for _, h := range m.hashes {
		b = append(b, byte(h.depth))
		b = binary.AppendUvarint(b, uint64(h.index))
		b = append(b, h.hash[:]...)
	}
	b = binary.AppendUvarint(b, uint64(len(m.sections)))
	for _, s := range m.sections {
		b = binary.AppendUvarint(b, uint64(s.leaf))
		var f byte
		if s.final {
			f |= sectionFinal
		}
		if s.hasAfter {
			f |= sectionHasAfter
		}
		b = append(b, f)
		if s.hasAfter {
			b = appendBytes(b, s.after)
		}
		b = binary.AppendUvarint(b, uint64(len(s.keys)))
		for _, k := range s.keys {
			b = appendBytes(b, k.Key)
			b = append(b, k.Digest[:]...)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(m.wants)))
	for _, k := range m.wants {
		b = appendBytes(b, k)
	}
	b = binary.AppendUvarint(b, uint64(len(m.states)))
	for _, r := range m.states {
		b = appendBytes(b, r.Key)
		b = appendBytes(b, r.State)
	}
	return b
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// reader decodes a message, remembering the first error.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: at offset %d: %s", ErrMessage, r.off, fmt.Sprintf(format, args...))
	}
}

func (r *reader) byte1(what string) byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.fail("%s: unexpected end", what)
		return 0
	}
	r.off++
	return r.b[r.off-1]
}

func (r *reader) uvarint(what string, limit uint64) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	switch {
	case n <= 0:
		r.fail("%s: bad uvarint", what)
		return 0
	case n > 1 && r.b[r.off+n-1] == 0:
		// One encoding per message keeps byte counts and fuzzing honest.
		r.fail("%s: uvarint not minimally encoded", what)
		return 0
	case v > limit:
		r.fail("%s: %d exceeds %d", what, v, limit)
		return 0
	}
	r.off += n
	return v
}

// count reads a list length whose items take at least minItem bytes each.
func (r *reader) count(what string, minItem int) int {
	return int(r.uvarint(what, uint64(len(r.b)-r.off)/uint64(minItem)))
}

func (r *reader) bytes(what string, limit int) []byte {
	n := int(r.uvarint(what, uint64(limit)))
	if r.err != nil {
		return nil
	}
	if n > len(r.b)-r.off {
		r.fail("%s: %d bytes, %d left", what, n, len(r.b)-r.off)
		return nil
	}
	v := make([]byte, n)
	copy(v, r.b[r.off:])
	r.off += n
	return v
}

func (r *reader) hash(what string) (h [32]byte) {
	if r.err != nil {
		return h
	}
	if len(r.b)-r.off < 32 {
		r.fail("%s: unexpected end", what)
		return h
	}
	copy(h[:], r.b[r.off:])
	r.off += 32
	return h
}

func (r *reader) key(what string) []byte {
	k := r.bytes(what, MaxKeyBytes)
	if r.err == nil && len(k) == 0 {
		r.fail("%s: empty key", what)
	}
	return k
}

// unmarshalMessage decodes and validates one message of at most limit bytes. It checks the
// shape (flags, depths, indexes, key sizes, counts against the remaining input, no trailing
// bytes); what the items mean is checked by the session.
func unmarshalMessage(b []byte, limit int) (*message, error) {
	if len(b) > limit {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMessage, len(b), limit)
	}
	r := &reader{b: b}
	if r.byte1("magic") != msgMagic || r.err != nil {
		r.fail("not an anti-entropy message")
		return nil, r.err
	}
	if v := r.byte1("version"); r.err == nil && v != msgVersion {
		r.fail("version %d, want %d", v, msgVersion)
	}
	m := &message{flags: r.byte1("flags")}
	if r.err == nil && m.flags&^flagsAll != 0 {
		r.fail("unknown flags %#x", m.flags)
	}
	if m.flags&flagHello != 0 {
		m.keyspace = string(r.bytes("keyspace", MaxKeyspaceNameBytes))
		m.leafBits = int(r.byte1("leaf bits"))
	}
	n := r.count("hashes", 1+1+32)
	for range n {
		h := nodeHash{depth: int(r.byte1("depth"))}
		if r.err == nil && h.depth > LeafBits {
			r.fail("depth %d below the leaves (%d)", h.depth, LeafBits)
		}
		h.index = int(r.uvarint("index", 1<<h.depth-1))
		h.hash = r.hash("hash")
		if r.err != nil {
			return nil, r.err
		}
		m.hashes = append(m.hashes, h)
	}
	n = r.count("sections", 1+1+1)
	for range n {
		s := section{leaf: int(r.uvarint("leaf", Leaves-1))}
		f := r.byte1("section flags")
		if r.err == nil && f&^(sectionFinal|sectionHasAfter) != 0 {
			r.fail("unknown section flags %#x", f)
		}
		s.final, s.hasAfter = f&sectionFinal != 0, f&sectionHasAfter != 0
		if s.hasAfter {
			s.after = r.key("section cursor")
		}
		nk := r.count("section keys", 1+1+32)
		for range nk {
			k := KeyDigest{Key: r.key("section key")}
			k.Digest = r.hash("section digest")
			if r.err != nil {
				break
			}
			s.keys = append(s.keys, k)
		}
		if r.err == nil && !s.final && len(s.keys) == 0 {
			r.fail("leaf %d: a section that is not final lists no key", s.leaf)
		}
		if r.err != nil {
			return nil, r.err
		}
		m.sections = append(m.sections, s)
	}
	n = r.count("wants", 2)
	for range n {
		k := r.key("wanted key")
		if r.err != nil {
			return nil, r.err
		}
		m.wants = append(m.wants, k)
	}
	n = r.count("states", 2+2)
	for range n {
		st := Remote{Key: r.key("state key")}
		st.State = r.bytes("state", MaxMessageBytes)
		if r.err != nil {
			return nil, r.err
		}
		m.states = append(m.states, st)
	}
	if r.err == nil && r.off != len(b) {
		r.fail("%d trailing bytes", len(b)-r.off)
	}
	if r.err == nil && m.flags&flagDone != 0 && (!m.empty() || m.flags&flagMore != 0) {
		r.fail("a done message carries content")
	}
	return m, r.err
}
