// Package wire is caucus's compact binary encoding of the Raft core's types: raft.Entry,
// raft.HardState, raft.SnapshotMeta and raft.Message. The transport sends these bytes between
// nodes and the WAL stores them on disk, so the format is a compatibility contract.
//
// # Format
//
// Every top-level encoding starts with one format version byte (Version). Integers are
// encoding/binary unsigned varints; byte strings are a uvarint length followed by the bytes;
// booleans are packed into a flags byte whose unknown bits must be zero. Embedded values (the
// entries and snapshot metadata inside a Message) are encoded without their own version byte:
// the enclosing version covers them.
//
//	Entry        = version type:u8 term index len(data) data
//	HardState    = version term vote commit
//	SnapshotMeta = version body(SnapshotMeta)
//	  body(SnapshotMeta) = index term flags:u8(autoLeave) voters votersOutgoing learners learnersNext
//	  node list          = count id...
//	Message      = version type:u8 flags:u8 to from term logTerm index commit rejectHint
//	               count(entries) body(Entry)...
//	               [body(SnapshotMeta)          if flagSnapshot]
//	               [offset total len(data) data if flagChunk]
//	               len(context) context
//
// # Invariants
//
//   - Encoding is deterministic: equal values encode to equal bytes (nil and empty byte slices and
//     lists both encode as length 0 and decode as nil).
//   - Decoding never panics and never allocates more than a small constant times the length of
//     its input: every count and length is checked against the remaining input before anything
//     is allocated, and against the named limits (MaxFieldBytes, MaxEntriesPerMessage,
//     MaxConfNodes).
//   - Decoded values never alias the input buffer: byte fields are copied, so callers may reuse
//     their read buffers.
//   - Decoders return the number of bytes consumed, so encodings can be concatenated; trailing
//     bytes are the caller's business.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"github.com/caucus/caucus/raft"
)

// Version is the format version byte that leads every top-level encoding. Bump it (and keep a
// decoder for the old one) on any incompatible change.
const Version byte = 1

// Limits enforced by the decoders. Encoders do not check them: the values they encode come from
// our own core, and the limits exist to keep a hostile or corrupt peer or file from making a
// decoder allocate without bound.
const (
	// MaxFieldBytes bounds any single byte field: Entry.Data, Message.Context, Chunk.Data. The
	// Raft core bounds messages by MaxMsgBytes (1 MiB default) and snapshot chunks by
	// MaxSnapshotChunkBytes (1 MiB default); 64 MiB leaves room for large single proposals.
	MaxFieldBytes = 64 << 20
	// MaxEntriesPerMessage bounds the entries of one Message. At the 1 MiB default MaxMsgBytes
	// even empty no-op entries (4 bytes each) stay well below it.
	MaxEntriesPerMessage = 1 << 20
	// MaxConfNodes bounds each node list of a ConfState. Raft clusters have a handful of voters;
	// a list this long can only come from corruption.
	MaxConfNodes = 1 << 12
)

// ErrDecode is wrapped by every decoding error, so callers can tell malformed input from other
// failures with errors.Is.
var ErrDecode = errors.New("wire: malformed input")

const (
	msgFlagReject    = 1 << 0
	msgFlagSnapshot  = 1 << 1
	msgFlagChunk     = 1 << 2
	msgFlagChunkLast = 1 << 3
	msgFlagsKnown    = msgFlagReject | msgFlagSnapshot | msgFlagChunk | msgFlagChunkLast

	confFlagAutoLeave = 1 << 0
	confFlagsKnown    = confFlagAutoLeave
	minEntryBodyBytes = 4 // type, term, index, data length: one byte each at least
	minNodeIDBytes    = 1
	versionBytes      = 1
)

// uvarintLen returns the encoded length of v as a uvarint: 7 payload bits per byte.
func uvarintLen(v uint64) int {
	return (bits.Len64(v|1) + 6) / 7
}

func bytesLen(b []byte) int { return uvarintLen(uint64(len(b))) + len(b) }

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func boolFlag(b bool, f byte) byte {
	if b {
		return f
	}
	return 0
}

// decoder reads from a byte slice, remembering the first error. Once err is set every read
// returns zero values, so decode functions can read a whole structure and check err once.
type decoder struct {
	b   []byte
	off int
	err error
	// what names the value being decoded, for error messages.
	what string
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s at offset %d: %s", ErrDecode, d.what, d.off, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

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

func (d *decoder) uvarint(field string) uint64 { return d.uvarintOf(field, "") }

// uvarintOf reads a uvarint named field+suffix in errors. The name is only joined on failure so
// the success path does not allocate.
func (d *decoder) uvarintOf(field, suffix string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	switch {
	case n == 0:
		d.fail("%s%s: unexpected end of input", field, suffix)
		return 0
	case n < 0:
		d.fail("%s%s: varint overflows 64 bits", field, suffix)
		return 0
	}
	d.off += n
	return v
}

// bytes reads a length-prefixed byte field and returns a copy (nil when empty).
func (d *decoder) bytes(field string) []byte {
	n := d.uvarintOf(field, " length")
	if d.err != nil {
		return nil
	}
	if n > MaxFieldBytes {
		d.fail("%s: length %d exceeds MaxFieldBytes %d", field, n, MaxFieldBytes)
		return nil
	}
	if n > uint64(d.remaining()) {
		d.fail("%s: length %d exceeds remaining %d bytes", field, n, d.remaining())
		return nil
	}
	if n == 0 {
		return nil
	}
	out := make([]byte, n)
	copy(out, d.b[d.off:])
	d.off += int(n)
	return out
}

// count reads a list length and checks that the rest of the input could hold that many items of
// at least minItem bytes each, before the caller allocates the list.
func (d *decoder) count(field string, limit, minItem int) int {
	n := d.uvarintOf(field, " count")
	if d.err != nil {
		return 0
	}
	if n > uint64(limit) {
		d.fail("%s: count %d exceeds limit %d", field, n, limit)
		return 0
	}
	if n*uint64(minItem) > uint64(d.remaining()) {
		d.fail("%s: count %d cannot fit in remaining %d bytes", field, n, d.remaining())
		return 0
	}
	return int(n)
}

func (d *decoder) version() {
	v := d.byte1("version")
	if d.err == nil && v != Version {
		d.off--
		d.fail("unsupported format version %d (want %d)", v, Version)
	}
}

// ---- Entry ----

// EntrySize returns the exact length of AppendEntry's output for e.
func EntrySize(e *raft.Entry) int { return versionBytes + entryBodySize(e) }

func entryBodySize(e *raft.Entry) int {
	return 1 + uvarintLen(e.Term) + uvarintLen(e.Index) + bytesLen(e.Data)
}

// AppendEntry appends the encoding of e to dst and returns the extended slice.
func AppendEntry(dst []byte, e *raft.Entry) []byte {
	dst = append(dst, Version)
	return appendEntryBody(dst, e)
}

func appendEntryBody(dst []byte, e *raft.Entry) []byte {
	dst = append(dst, byte(e.Type))
	dst = binary.AppendUvarint(dst, e.Term)
	dst = binary.AppendUvarint(dst, e.Index)
	return appendBytes(dst, e.Data)
}

// DecodeEntry decodes an Entry from the front of b and returns it with the number of bytes
// consumed. The entry's Data is a copy.
func DecodeEntry(b []byte) (raft.Entry, int, error) {
	d := decoder{b: b, what: "entry"}
	d.version()
	e := d.entryBody()
	if d.err != nil {
		return raft.Entry{}, 0, d.err
	}
	return e, d.off, nil
}

func (d *decoder) entryBody() raft.Entry {
	var e raft.Entry
	e.Type = raft.EntryType(d.byte1("type"))
	e.Term = d.uvarint("term")
	e.Index = d.uvarint("index")
	e.Data = d.bytes("data")
	return e
}

// ---- HardState ----

// HardStateSize returns the exact length of AppendHardState's output for hs.
func HardStateSize(hs *raft.HardState) int {
	return versionBytes + uvarintLen(hs.Term) + uvarintLen(uint64(hs.Vote)) + uvarintLen(hs.Commit)
}

// AppendHardState appends the encoding of hs to dst and returns the extended slice.
func AppendHardState(dst []byte, hs *raft.HardState) []byte {
	dst = append(dst, Version)
	dst = binary.AppendUvarint(dst, hs.Term)
	dst = binary.AppendUvarint(dst, uint64(hs.Vote))
	return binary.AppendUvarint(dst, hs.Commit)
}

// DecodeHardState decodes a HardState from the front of b and returns it with the number of
// bytes consumed.
func DecodeHardState(b []byte) (raft.HardState, int, error) {
	d := decoder{b: b, what: "hardstate"}
	d.version()
	var hs raft.HardState
	hs.Term = d.uvarint("term")
	hs.Vote = raft.NodeID(d.uvarint("vote"))
	hs.Commit = d.uvarint("commit")
	if d.err != nil {
		return raft.HardState{}, 0, d.err
	}
	return hs, d.off, nil
}

// ---- SnapshotMeta ----

// SnapshotMetaSize returns the exact length of AppendSnapshotMeta's output for m.
func SnapshotMetaSize(m *raft.SnapshotMeta) int { return versionBytes + snapMetaBodySize(m) }

func snapMetaBodySize(m *raft.SnapshotMeta) int {
	cs := &m.ConfState
	return uvarintLen(m.Index) + uvarintLen(m.Term) + 1 +
		nodesLen(cs.Voters) + nodesLen(cs.VotersOutgoing) + nodesLen(cs.Learners) + nodesLen(cs.LearnersNext)
}

func nodesLen(ids []raft.NodeID) int {
	n := uvarintLen(uint64(len(ids)))
	for _, id := range ids {
		n += uvarintLen(uint64(id))
	}
	return n
}

// AppendSnapshotMeta appends the encoding of m to dst and returns the extended slice.
func AppendSnapshotMeta(dst []byte, m *raft.SnapshotMeta) []byte {
	dst = append(dst, Version)
	return appendSnapMetaBody(dst, m)
}

func appendSnapMetaBody(dst []byte, m *raft.SnapshotMeta) []byte {
	dst = binary.AppendUvarint(dst, m.Index)
	dst = binary.AppendUvarint(dst, m.Term)
	cs := &m.ConfState
	dst = append(dst, boolFlag(cs.AutoLeave, confFlagAutoLeave))
	dst = appendNodes(dst, cs.Voters)
	dst = appendNodes(dst, cs.VotersOutgoing)
	dst = appendNodes(dst, cs.Learners)
	return appendNodes(dst, cs.LearnersNext)
}

func appendNodes(dst []byte, ids []raft.NodeID) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ids)))
	for _, id := range ids {
		dst = binary.AppendUvarint(dst, uint64(id))
	}
	return dst
}

// DecodeSnapshotMeta decodes a SnapshotMeta from the front of b and returns it with the number
// of bytes consumed.
func DecodeSnapshotMeta(b []byte) (raft.SnapshotMeta, int, error) {
	d := decoder{b: b, what: "snapshot meta"}
	d.version()
	m := d.snapMetaBody()
	if d.err != nil {
		return raft.SnapshotMeta{}, 0, d.err
	}
	return m, d.off, nil
}

func (d *decoder) snapMetaBody() raft.SnapshotMeta {
	var m raft.SnapshotMeta
	m.Index = d.uvarint("index")
	m.Term = d.uvarint("term")
	flags := d.byte1("conf flags")
	if d.err == nil && flags&^confFlagsKnown != 0 {
		d.off--
		d.fail("conf flags: unknown bits %#x", flags&^confFlagsKnown)
	}
	m.ConfState.AutoLeave = flags&confFlagAutoLeave != 0
	m.ConfState.Voters = d.nodes("voters")
	m.ConfState.VotersOutgoing = d.nodes("voters outgoing")
	m.ConfState.Learners = d.nodes("learners")
	m.ConfState.LearnersNext = d.nodes("learners next")
	return m
}

func (d *decoder) nodes(field string) []raft.NodeID {
	n := d.count(field, MaxConfNodes, minNodeIDBytes)
	if d.err != nil || n == 0 {
		return nil
	}
	ids := make([]raft.NodeID, n)
	for i := range ids {
		ids[i] = raft.NodeID(d.uvarint(field))
	}
	if d.err != nil {
		return nil
	}
	return ids
}

// ---- Message ----

// MessageSize returns the exact length of AppendMessage's output for m.
func MessageSize(m *raft.Message) int {
	n := versionBytes + 2 + uvarintLen(uint64(m.To)) + uvarintLen(uint64(m.From)) +
		uvarintLen(m.Term) + uvarintLen(m.LogTerm) + uvarintLen(m.Index) + uvarintLen(m.Commit) +
		uvarintLen(m.RejectHint) + uvarintLen(uint64(len(m.Entries)))
	for i := range m.Entries {
		n += entryBodySize(&m.Entries[i])
	}
	if m.Snapshot != nil {
		n += snapMetaBodySize(m.Snapshot)
	}
	if c := m.Chunk; c != nil {
		n += uvarintLen(c.Offset) + uvarintLen(c.Total) + bytesLen(c.Data)
	}
	return n + bytesLen(m.Context)
}

// AppendMessage appends the encoding of m to dst and returns the extended slice. Callers that
// want a single allocation can pass make([]byte, 0, MessageSize(m)).
func AppendMessage(dst []byte, m *raft.Message) []byte {
	dst = append(dst, Version, byte(m.Type))
	flags := boolFlag(m.Reject, msgFlagReject) | boolFlag(m.Snapshot != nil, msgFlagSnapshot)
	if m.Chunk != nil {
		flags |= msgFlagChunk | boolFlag(m.Chunk.Last, msgFlagChunkLast)
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(m.To))
	dst = binary.AppendUvarint(dst, uint64(m.From))
	dst = binary.AppendUvarint(dst, m.Term)
	dst = binary.AppendUvarint(dst, m.LogTerm)
	dst = binary.AppendUvarint(dst, m.Index)
	dst = binary.AppendUvarint(dst, m.Commit)
	dst = binary.AppendUvarint(dst, m.RejectHint)
	dst = binary.AppendUvarint(dst, uint64(len(m.Entries)))
	for i := range m.Entries {
		dst = appendEntryBody(dst, &m.Entries[i])
	}
	if m.Snapshot != nil {
		dst = appendSnapMetaBody(dst, m.Snapshot)
	}
	if c := m.Chunk; c != nil {
		dst = binary.AppendUvarint(dst, c.Offset)
		dst = binary.AppendUvarint(dst, c.Total)
		dst = appendBytes(dst, c.Data)
	}
	return appendBytes(dst, m.Context)
}

// DecodeMessage decodes a Message from the front of b and returns it with the number of bytes
// consumed. All byte fields are copies.
func DecodeMessage(b []byte) (raft.Message, int, error) {
	d := decoder{b: b, what: "message"}
	d.version()
	var m raft.Message
	m.Type = raft.MessageType(d.byte1("type"))
	flags := d.byte1("flags")
	if d.err == nil {
		if flags&^msgFlagsKnown != 0 {
			d.off--
			d.fail("flags: unknown bits %#x", flags&^msgFlagsKnown)
		} else if flags&msgFlagChunkLast != 0 && flags&msgFlagChunk == 0 {
			// Only a present chunk can be the last one; rejecting this keeps decode(encode(x))
			// the only way to produce a given byte string.
			d.off--
			d.fail("flags: chunk-last set without chunk")
		}
	}
	m.Reject = flags&msgFlagReject != 0
	m.To = raft.NodeID(d.uvarint("to"))
	m.From = raft.NodeID(d.uvarint("from"))
	m.Term = d.uvarint("term")
	m.LogTerm = d.uvarint("log term")
	m.Index = d.uvarint("index")
	m.Commit = d.uvarint("commit")
	m.RejectHint = d.uvarint("reject hint")
	if n := d.count("entries", MaxEntriesPerMessage, minEntryBodyBytes); n > 0 {
		m.Entries = make([]raft.Entry, n)
		for i := range m.Entries {
			m.Entries[i] = d.entryBody()
		}
	}
	if flags&msgFlagSnapshot != 0 {
		sm := d.snapMetaBody()
		m.Snapshot = &sm
	}
	if flags&msgFlagChunk != 0 {
		c := &raft.SnapshotChunk{Last: flags&msgFlagChunkLast != 0}
		c.Offset = d.uvarint("chunk offset")
		c.Total = d.uvarint("chunk total")
		c.Data = d.bytes("chunk data")
		m.Chunk = c
	}
	m.Context = d.bytes("context")
	if d.err != nil {
		return raft.Message{}, 0, d.err
	}
	return m, d.off, nil
}
