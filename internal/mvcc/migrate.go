package mvcc

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Schemas 2 and 3 kept a key's versions in a kv bucket keyed by the key, newest first:
//
//	kv   esc(key) 0x00 0x01 ^rev ^sub -> flags create version lease value
//	     (schema 2 also: esc(key) 0x00 0x00 -> a marker naming the newest live version)
//	rev  rev sub -> flags key                (the revision-ordered change log)
//
// esc is an order-preserving, prefix-free escaping of the key (0x00 becomes 0x00 0xFF). Schema 4
// folds both into the history bucket. The helpers below read the old layout, for the migration,
// and write it, for the tests that build old files.
var (
	legacyBucketKV  = []byte("kv")
	legacyBucketRev = []byte("rev")
)

// legacyEscape appends esc(key).
func legacyEscape(dst, key []byte) []byte {
	for _, c := range key {
		if c == 0 {
			dst = append(dst, 0, 0xFF)
		} else {
			dst = append(dst, c)
		}
	}
	return dst
}

// legacyKVKey appends a schema 2/3 kv bucket key: esc(key) 0x00 0x01 ^rev ^sub.
func legacyKVKey(dst, key []byte, rev, sub int64) []byte {
	dst = append(legacyEscape(dst, key), 0, 1)
	dst = binary.BigEndian.AppendUint64(dst, ^uint64(rev))
	return binary.BigEndian.AppendUint64(dst, ^uint64(sub))
}

// legacyRecord encodes a schema 2/3 version record.
func legacyRecord(r *record) []byte {
	var flags byte
	if r.tombstone {
		flags = flagTombstone
	}
	dst := append([]byte{flags}, binary.AppendVarint(nil, r.create)...)
	dst = binary.AppendVarint(dst, r.version)
	dst = binary.AppendVarint(dst, r.lease)
	return append(dst, r.value...)
}

// migrateToHistory turns a schema 2 or 3 store into schema 4 inside tx: it walks the old
// revision log in order, moves each version it names into the history bucket (appending, as
// every later write does), and drops the old buckets. The rev sub keys, and so the persisted
// physical compaction position, keep their meaning. One transaction: a crash leaves the old
// file, which migrates again on the next open.
func migrateToHistory(tx *bolt.Tx, from uint64) error {
	fail := func(err error) error {
		return fmt.Errorf("migrate schema %d to %d: %w", from, schemaVersion, err)
	}
	kv, rev := tx.Bucket(legacyBucketKV), tx.Bucket(legacyBucketRev)
	if kv == nil || rev == nil {
		return fail(errorCorrupt("a schema 2 or 3 store without its kv and rev buckets"))
	}
	hist := tx.Bucket(bucketHistory)
	hist.FillPercent = 1 // appends only
	c := rev.Cursor()
	n := 0
	for k, v := c.First(); k != nil; k, v = c.Next() {
		r, s, ok := splitHistKey(k)
		if !ok || len(v) < 1 {
			return fail(errorCorrupt(fmt.Sprintf("revision entry %x", k)))
		}
		key := v[1:]
		old := kv.Get(legacyKVKey(nil, key, r, s))
		if old == nil {
			return fail(errorCorrupt(fmt.Sprintf("revision %d.%d names key %q, which has no such version", r, s, key)))
		}
		rec, val, err := decodeFields(old, "kv")
		if err != nil {
			return fail(err)
		}
		rec.value = val
		if err := hist.Put(histKey(r, s), rec.encode(nil, key)); err != nil {
			return fail(fmt.Errorf("write version %d.%d: %w", r, s, err))
		}
		n++
	}
	for _, name := range [][]byte{legacyBucketKV, legacyBucketRev} {
		if err := tx.DeleteBucket(name); err != nil {
			return fail(fmt.Errorf("drop bucket %s: %w", name, err))
		}
	}
	if err := tx.Bucket(bucketMeta).Put(metaSchema, putU64(schemaVersion)); err != nil {
		return fail(err)
	}
	return nil
}
