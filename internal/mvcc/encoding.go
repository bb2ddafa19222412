package mvcc

import (
	"encoding/binary"
	"math"
)

// Bucket names.
var (
	bucketMeta     = []byte("meta")
	bucketHistory  = []byte("history")
	bucketLease    = []byte("lease")
	bucketLeaseExp = []byte("leaseexp")
	bucketLeaseKey = []byte("leasekey")
	bucketSession  = []byte("session")
	bucketSessLRU  = []byte("sesslru")
	bucketMember   = []byte("member")

	allBuckets = [][]byte{bucketMeta, bucketHistory, bucketLease, bucketLeaseExp,
		bucketLeaseKey, bucketSession, bucketSessLRU, bucketMember, bucketEvents, bucketTopics,
		bucketIdemKey, bucketIdemExp}
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
// Versions 1 to 3 kept the versions keyed by key (schema 3: esc(key) ^rev ^sub, see
// migrate.go); version 4 keys them by revision behind the in-memory key index. Open migrates a
// version 2 or 3 store (migrateToHistory).
const schemaVersion = 4

// histKey is the history bucket key of a version: rev sub, big endian, so the bucket is in
// revision order and every write appends.
func histKey(rev, sub int64) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, uint64(rev))
	binary.BigEndian.PutUint64(k[8:], uint64(sub))
	return k
}

// appendHistKey is histKey into dst.
func appendHistKey(dst []byte, rev, sub int64) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(rev))
	return binary.BigEndian.AppendUint64(dst, uint64(sub))
}

// splitHistKey decodes a history bucket key; ok is false if it is not one.
func splitHistKey(k []byte) (rev, sub int64, ok bool) {
	if len(k) != 16 {
		return 0, 0, false
	}
	return int64(binary.BigEndian.Uint64(k)), int64(binary.BigEndian.Uint64(k[8:])), true
}

const flagTombstone = 1

// record is one version of a key. In the history bucket it is stored as
// flags create version lease len(key) key value (varints, then the bytes).
type record struct {
	tombstone bool
	create    int64
	version   int64
	lease     int64
	key       []byte // set by decodeRecord only; aliases bbolt memory
	value     []byte // aliases bbolt memory when decoded; valid only within the transaction
	loaded    bool   // value is set
}

// encode appends the history record of key's version r.
func (r *record) encode(dst, key []byte) []byte {
	var flags byte
	if r.tombstone {
		flags |= flagTombstone
	}
	dst = append(dst, flags)
	dst = binary.AppendVarint(dst, r.create)
	dst = binary.AppendVarint(dst, r.version)
	dst = binary.AppendVarint(dst, r.lease)
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	return append(dst, r.value...)
}

// decodeRecord decodes a history record.
func decodeRecord(b []byte) (record, error) {
	r, b, err := decodeFields(b, "history")
	if err != nil {
		return r, err
	}
	n, m := binary.Uvarint(b)
	if m <= 0 || n > uint64(len(b)-m) {
		return r, errorCorrupt("bad key length in history record")
	}
	r.key, r.value, r.loaded = b[m:m+int(n)], b[m+int(n):], true
	return r, nil
}

// decodeFields decodes the leading fields that every schema's version record shares, returning
// the rest; what says which record it is, for errors.
func decodeFields(b []byte, what string) (record, []byte, error) {
	var r record
	if len(b) < 1 {
		return r, nil, errorCorrupt("empty " + what + " record")
	}
	r.tombstone = b[0]&flagTombstone != 0
	var ok bool
	b = b[1:]
	if r.create, b, ok = varint(b); !ok {
		return r, nil, errorCorrupt("bad create revision in " + what + " record")
	}
	if r.version, b, ok = varint(b); !ok {
		return r, nil, errorCorrupt("bad version in " + what + " record")
	}
	if r.lease, b, ok = varint(b); !ok {
		return r, nil, errorCorrupt("bad lease in " + what + " record")
	}
	return r, b, nil
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
