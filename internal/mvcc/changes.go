package mvcc

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/caucus/caucus/internal/logpb"
	bolt "go.etcd.io/bbolt"
)

// ChangeType says whether a change wrote or deleted a key.
type ChangeType int

const (
	ChangePut ChangeType = iota
	ChangeDelete
)

// Change is one change of a key, as recorded in the history bucket: the store's own change
// feed, from which watches are served. (The events users publish with their writes are
// another thing, and another name.)
type Change struct {
	Type ChangeType
	// Kv is the version written; for a delete, only Key and ModRevision (the deletion's
	// revision) are set.
	Kv *logpb.KeyValue
	// PrevKv is the version the change replaced, if requested and still stored (compaction may
	// have discarded it).
	PrevKv *logpb.KeyValue
}

// Changes returns the changes at revisions >= fromRev in revision order, for watchers. It returns
// at least max changes when there are that many, but never splits a revision, so a caller can
// resume at the last change's revision + 1. It also returns the store revision the changes were
// read at. History at or below the compacted revision is incomplete, so fromRev must be above it
// (ErrCompacted otherwise).
func (s *Store) Changes(fromRev int64, max int, prevKV bool) ([]Change, int64, error) {
	for {
		out, cur, err := s.changes(fromRev, max, prevKV)
		if !errors.Is(err, errIndexAhead) {
			return out, cur, err
		}
	}
}

// changes is Changes in one read transaction; see errIndexAhead.
func (s *Store) changes(fromRev int64, max int, prevKV bool) ([]Change, int64, error) {
	var out []Change
	var cur int64
	err := s.view(func(tx *bolt.Tx) error {
		st := loadState(tx)
		cur = st.rev
		if fromRev <= st.compactRev {
			return errorf(ErrCompacted, "changes from revision %d, compacted at %d", fromRev, st.compactRev)
		}
		rd := reader{hist: tx.Bucket(bucketHistory), idx: s.idx, locked: true, floor: st.compactRev}
		c := rd.hist.Cursor()
		var last int64
		for k, v := c.Seek(histKey(fromRev, 0)); k != nil; k, v = c.Next() {
			rev, sub, ok := splitHistKey(k)
			if !ok {
				return errorCorrupt(fmt.Sprintf("history key %x", k))
			}
			if len(out) >= max && rev != last {
				break
			}
			last = rev
			rec, err := decodeRecord(v)
			if err != nil {
				return err
			}
			key := bytes.Clone(rec.key)
			ev := Change{Type: ChangePut, Kv: toKV(key, rev, &rec, false)}
			if rec.tombstone {
				ev = Change{Type: ChangeDelete, Kv: &logpb.KeyValue{Key: key, ModRevision: rev}}
			}
			if prevKV {
				// The previous version is the one before it in the key's index entry.
				prev, ok, err := s.idx.before(key, revision{main: rev, sub: int32(sub)}, st.compactRev)
				if err != nil {
					return err
				}
				if ok && !prev.tomb {
					prec, err := rd.get(prev.main, int64(prev.sub))
					if err != nil {
						return err
					}
					ev.PrevKv = toKV(bytes.Clone(key), prev.main, &prec, false)
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
