package mvcc

import (
	"bytes"
	"encoding/binary"

	"github.com/caucus/caucus/internal/logpb"
	bolt "go.etcd.io/bbolt"
)

// EventType says whether an event wrote or deleted a key.
type EventType int

const (
	EventPut EventType = iota
	EventDelete
)

// Event is one change of a key, as recorded in the revision log.
type Event struct {
	Type EventType
	// Kv is the version written; for a delete, only Key and ModRevision (the deletion's
	// revision) are set.
	Kv *logpb.KeyValue
	// PrevKv is the version the change replaced, if requested and still stored (compaction may
	// have discarded it).
	PrevKv *logpb.KeyValue
}

// Events returns the changes at revisions >= fromRev in revision order, for watchers. It returns
// at least max events when there are that many, but never splits a revision, so a caller can
// resume at the last event's revision + 1. It also returns the store revision the events were
// read at. History at or below the compacted revision is incomplete, so fromRev must be above it
// (ErrCompacted otherwise).
func (s *Store) Events(fromRev int64, max int, prevKV bool) ([]Event, int64, error) {
	var out []Event
	var cur int64
	err := s.view(func(tx *bolt.Tx) error {
		st := loadState(tx)
		cur = st.rev
		if fromRev <= st.compactRev {
			return errorf(ErrCompacted, "events from revision %d, compacted at %d", fromRev, st.compactRev)
		}
		kv := tx.Bucket(bucketKV)
		c := tx.Bucket(bucketRev).Cursor()
		kc := kv.Cursor()
		var last int64
		for k, v := c.Seek(revKey(fromRev, 0)); k != nil; k, v = c.Next() {
			rev, sub := int64(binary.BigEndian.Uint64(k)), int64(binary.BigEndian.Uint64(k[8:]))
			if len(out) >= max && rev != last {
				break
			}
			last = rev
			if len(v) < 1 {
				return errorCorrupt("empty revision entry")
			}
			key := bytes.Clone(v[1:])
			at := kvKey(nil, key, rev, sub)
			kk, kvv := kc.Seek(at)
			if !bytes.Equal(kk, at) {
				return errorCorrupt("revision entry without its version")
			}
			rec, err := decodeRecord(kvv)
			if err != nil {
				return err
			}
			ev := Event{Type: EventPut, Kv: toKV(key, rev, &rec, false)}
			if rec.tombstone {
				ev = Event{Type: EventDelete, Kv: &logpb.KeyValue{Key: key, ModRevision: rev}}
			}
			if prevKV {
				// The previous version is the next entry of the same key (versions are newest
				// first).
				if pk, pv := kc.Next(); pk != nil && len(pk) == len(at) && bytes.Equal(pk[:len(at)-16], at[:len(at)-16]) {
					_, prev, _ := splitKVKey(pk)
					prec, err := decodeRecord(pv)
					if err != nil {
						return err
					}
					if !prec.tombstone {
						ev.PrevKv = toKV(bytes.Clone(key), prev, &prec, false)
					}
				}
			}
			out = append(out, ev)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return out, cur, nil
}
