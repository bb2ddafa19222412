package storebench

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Put is one applied command: a put of Value under Key.
type Put struct {
	Key, Value []byte
}

// Table identifies one of the modelled tables; its byte is also the table prefix in Pebble.
type Table byte

// The tables of internal/mvcc that the workload touches.
const (
	TableMeta Table = 'm'
	TableKV   Table = 'k'
	TableLive Table = 'l'
	TableRev  Table = 'r'
)

// Tables lists the modelled tables in a fixed order (for Dump and for creating buckets).
var Tables = []Table{TableMeta, TableKV, TableLive, TableRev}

func (t Table) bucket() []byte {
	switch t {
	case TableMeta:
		return []byte("meta")
	case TableKV:
		return []byte("kv")
	case TableLive:
		return []byte("live")
	default:
		return []byte("rev")
	}
}

var (
	metaRev     = []byte("rev")
	metaApplied = []byte("applied_index")
)

// errCorrupt reports data that does not follow the layout.
var errCorrupt = errors.New("storebench: corrupt data")

// appendEscaped appends the order-preserving, prefix-free escaping of key used by internal/mvcc:
// 0x00 becomes 0x00 0xFF, so the terminator 0x00 0x01 sorts before any continuation of the key.
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

// kvKey appends esc(key) 0x00 0x01 ^rev ^sub: a key's versions sort newest first.
func kvKey(dst, key []byte, rev, sub int64) []byte {
	dst = appendEscaped(dst, key)
	dst = append(dst, 0, 1)
	dst = binary.BigEndian.AppendUint64(dst, ^uint64(rev))
	return binary.BigEndian.AppendUint64(dst, ^uint64(sub))
}

// kvSuffixLen is the length of what follows esc(key) in a kv key.
const kvSuffixLen = 2 + 8 + 8

// splitKVKey returns the escaped user key, revision and sub-revision of a kv key.
func splitKVKey(k []byte) (esc []byte, rev, sub int64, err error) {
	n := len(k) - kvSuffixLen
	if n < 0 || k[n] != 0 || k[n+1] != 1 {
		return nil, 0, 0, fmt.Errorf("%w: kv key %x", errCorrupt, k)
	}
	return k[:n], int64(^binary.BigEndian.Uint64(k[n+2:])), int64(^binary.BigEndian.Uint64(k[n+10:])), nil
}

// revKey appends rev sub, big endian: the rev table is in revision order.
func revKey(dst []byte, rev, sub int64) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(rev))
	return binary.BigEndian.AppendUint64(dst, uint64(sub))
}

// record is the metadata of one key version; the value travels separately.
type record struct {
	create, version, lease int64
}

// encodeVersion appends a kv record: flags, create, version, lease, value.
func encodeVersion(dst []byte, r record, value []byte) []byte {
	dst = append(dst, 0) // flags: never a tombstone, the workload only puts
	dst = binary.AppendVarint(dst, r.create)
	dst = binary.AppendVarint(dst, r.version)
	dst = binary.AppendVarint(dst, r.lease)
	return append(dst, value...)
}

// versionValue returns the value part of a kv record.
func versionValue(b []byte) ([]byte, error) {
	if len(b) < 1 {
		return nil, fmt.Errorf("%w: empty kv record", errCorrupt)
	}
	b = b[1:]
	for range 3 {
		_, n := binary.Varint(b)
		if n <= 0 {
			return nil, fmt.Errorf("%w: bad varint in kv record", errCorrupt)
		}
		b = b[n:]
	}
	return b, nil
}

// encodeLive appends a live entry: the newest version's revision and metadata, no value.
func encodeLive(dst []byte, rev, sub int64, r record) []byte {
	dst = binary.AppendVarint(dst, rev)
	dst = binary.AppendVarint(dst, sub)
	dst = binary.AppendVarint(dst, r.create)
	dst = binary.AppendVarint(dst, r.version)
	return binary.AppendVarint(dst, r.lease)
}

func decodeLive(b []byte) (r record, rev, sub int64, err error) {
	var f [5]int64
	for i := range f {
		v, n := binary.Varint(b)
		if n <= 0 {
			return r, 0, 0, fmt.Errorf("%w: bad varint in live entry", errCorrupt)
		}
		f[i], b = v, b[n:]
	}
	return record{create: f[2], version: f[3], lease: f[4]}, f[0], f[1], nil
}

// nextVersion returns the record of a put over the previous live version (if any) at rev.
func nextVersion(prev []byte, rev int64) (record, error) {
	if prev == nil {
		return record{create: rev, version: 1}, nil
	}
	p, _, _, err := decodeLive(prev)
	if err != nil {
		return record{}, err
	}
	return record{create: p.create, version: p.version + 1, lease: p.lease}, nil
}

func putU64(dst []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(dst, v) }

func getU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
