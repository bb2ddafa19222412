package mvcc

import (
	"bytes"
	"encoding/binary"
	"math"
)

// Bucket names.
var (
	bucketMeta     = []byte("meta")
	bucketKV       = []byte("kv")
	bucketRev      = []byte("rev")
	bucketLease    = []byte("lease")
	bucketLeaseExp = []byte("leaseexp")
	bucketLeaseKey = []byte("leasekey")
	bucketSession  = []byte("session")
	bucketSessLRU  = []byte("sesslru")
	bucketMember   = []byte("member")

	allBuckets = [][]byte{bucketMeta, bucketKV, bucketRev, bucketLease, bucketLeaseExp,
		bucketLeaseKey, bucketSession, bucketSessLRU, bucketMember}
)

// Keys of the meta bucket.
var (
	metaSchema      = []byte("schema")
	metaRev         = []byte("rev")
	metaCompactRev  = []byte("compact_rev")
	metaApplied     = []byte("applied_index")
	metaClock       = []byte("clock")
	metaSessions    = []byte("sessions")
	metaLeases      = []byte("leases")
	metaCompactNext = []byte("compact_next")
)

// schemaVersion is bumped on any incompatible change of the layout described in doc.go.
// Version 2 moved the newest-version index from its own bucket into the kv bucket; version 3
// dropped it (the newest version is the first under a key's prefix). Open migrates a version 2
// store in place by deleting the index entries (migrateLiveMarkers).
const schemaVersion = 3

// kvSuffixLen is the length of what follows esc(key) in a kv bucket key: the terminator and the
// inverted revision and sub-revision.
const kvSuffixLen = 2 + 8 + 8

// appendEscaped appends the order-preserving, prefix-free escaping of key: 0x00 becomes 0x00 0xFF.
// The code {0x00 0xFF, 0x01, ..., 0xFF} is monotone and prefix-free, so comparing escaped keys
// bytewise orders them like the raw keys, and the terminator 0x00 0x01 sorts before any
// continuation of the key.
func appendEscaped(dst, key []byte) []byte {
	for _, c := range key {
		if c == 0 {
			dst = append(dst, 0, 0xFF)
		} else {
			dst = append(dst, c)
		}
	}
	return dst
}

// unescape reverses appendEscaped into a fresh slice.
func unescape(esc []byte) []byte {
	out := make([]byte, 0, len(esc))
	for i := 0; i < len(esc); i++ {
		out = append(out, esc[i])
		if esc[i] == 0 {
			i++ // skip the 0xFF
		}
	}
	return out
}

// kvKey appends esc(key) 0x00 0x01 ^rev ^sub: a key's versions sort newest first.
func kvKey(dst, key []byte, rev, sub int64) []byte {
	dst = appendEscaped(dst, key)
	dst = append(dst, 0, 1)
	dst = binary.BigEndian.AppendUint64(dst, ^uint64(rev))
	return binary.BigEndian.AppendUint64(dst, ^uint64(sub))
}

// liveMarker appends esc(key) 0x00 0x00: the kv bucket key of key's newest-version index entry
// in schema 2, which schema 3 deletes (migrateLiveMarkers).
func liveMarker(dst, key []byte) []byte {
	return append(appendEscaped(dst, key), 0, 0)
}

// kvKeyEsc is kvKey for an already escaped key.
func kvKeyEsc(dst, esc []byte, rev, sub int64) []byte {
	dst = append(append(dst, esc...), 0, 1)
	dst = binary.BigEndian.AppendUint64(dst, ^uint64(rev))
	return binary.BigEndian.AppendUint64(dst, ^uint64(sub))
}

// Kinds of kv bucket key, by the byte after the terminator's 0x00.
const (
	kindLive    byte = 0 // esc 0x00 0x00: live marker (schema 2 only)
	kindVersion byte = 1 // esc 0x00 0x01 ^rev ^sub: a version
)

// splitKind returns the escaped user key of a kv bucket key and its kind. An escaped key holds
// 0x00 only as 0x00 0xFF, so the first 0x00 followed by anything else is the terminator. ok is
// false for a key without one (corruption).
func splitKind(k []byte) (esc []byte, kind byte, ok bool) {
	for i := 0; ; {
		j := bytes.IndexByte(k[i:], 0)
		if j < 0 || i+j+1 >= len(k) {
			return nil, 0, false
		}
		i += j
		if k[i+1] != 0xFF {
			return k[:i], k[i+1], true
		}
		i += 2
	}
}

// kvPrefix appends esc(key) 0x00 0x01: the prefix of every version of key.
func kvPrefix(dst, key []byte) []byte {
	return append(appendEscaped(dst, key), 0, 1)
}

// escSeekAt appends the position of the newest version at or below rev of the escaped key esc.
func escSeekAt(dst, esc []byte, rev int64) []byte {
	dst = append(append(dst, esc...), 0, 1)
	dst = binary.BigEndian.AppendUint64(dst, ^uint64(rev))
	return binary.BigEndian.AppendUint64(dst, 0) // sorts before every encoded ^sub
}

// splitKVKey returns the escaped user key and the revision of a kv bucket key.
func splitKVKey(k []byte) (esc []byte, rev, sub int64) {
	n := len(k) - kvSuffixLen
	return k[:n], int64(^binary.BigEndian.Uint64(k[n+2:])), int64(^binary.BigEndian.Uint64(k[n+10:]))
}

// nextKeySeek appends the smallest kv bucket key above every version of the escaped key esc:
// esc 0x00 0x02 sorts after esc's terminator 0x00 0x01 and before esc 0x00 0xFF (a longer key).
func nextKeySeek(dst, esc []byte) []byte {
	return append(append(dst, esc...), 0, 2)
}

// revKey is the rev bucket key: rev sub, big endian, so the bucket is in revision order.
func revKey(rev, sub int64) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, uint64(rev))
	binary.BigEndian.PutUint64(k[8:], uint64(sub))
	return k
}

const flagTombstone = 1

// record is one version of a key as stored in the kv bucket.
type record struct {
	tombstone bool
	create    int64
	version   int64
	lease     int64
	value     []byte // aliases bbolt memory when decoded; valid only within the transaction
	loaded    bool   // value is set
}

func (r *record) encode(dst []byte) []byte {
	var flags byte
	if r.tombstone {
		flags |= flagTombstone
	}
	dst = append(dst, flags)
	dst = binary.AppendVarint(dst, r.create)
	dst = binary.AppendVarint(dst, r.version)
	dst = binary.AppendVarint(dst, r.lease)
	return append(dst, r.value...)
}

func decodeRecord(b []byte) (record, error) {
	var r record
	if len(b) < 1 {
		return r, errorCorrupt("empty kv record")
	}
	r.tombstone = b[0]&flagTombstone != 0
	var ok bool
	b = b[1:]
	if r.create, b, ok = varint(b); !ok {
		return r, errorCorrupt("bad create revision in kv record")
	}
	if r.version, b, ok = varint(b); !ok {
		return r, errorCorrupt("bad version in kv record")
	}
	if r.lease, b, ok = varint(b); !ok {
		return r, errorCorrupt("bad lease in kv record")
	}
	r.value, r.loaded = b, true
	return r, nil
}

// varint decodes one varint from b and returns the rest. (A loop over field pointers would make
// the fields escape to the heap: this runs once per key scanned.)
func varint(b []byte) (int64, []byte, bool) {
	v, n := binary.Varint(b)
	if n <= 0 {
		return 0, b, false
	}
	return v, b[n:], true
}

// orderedTime maps an int64 time to a uint64 with the same order (for big-endian keys).
func orderedTime(t int64) uint64 { return uint64(t) ^ (1 << 63) }

func u64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func putU64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// addSat adds without overflowing int64.
func addSat(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	if b < 0 && a < math.MinInt64-b {
		return math.MinInt64
	}
	return a + b
}
