package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"math"

	"github.com/caucus/caucus/internal/logpb"
	bolt "go.etcd.io/bbolt"
)

// reader reads key versions inside one bbolt transaction (read-only for Store reads,
// read-write inside a Batch, where it sees the batch's own writes): the key index says which
// revision of a key a read sees, the history bucket holds that version.
type reader struct {
	hist *bolt.Bucket
	idx  *index
	// locked is set for readers other than the Batch, which take the index's lock.
	locked bool
	// floor is the transaction's compacted revision: see index.visible.
	floor int64
	// last is the entry the last latest call found for lastKey, which the Batch's write of the
	// same key reuses instead of a second lookup.
	last    *keyIndex
	lastKey []byte
	buf     []byte
}

// errIndexAhead is returned by a reader whose transaction predates a compaction already applied
// to the index: the read must start over on a new transaction (see index.go). Never returned
// to clients.
var errIndexAhead = errors.New("mvcc: the key index was compacted past the read transaction")

// visit is called for each key in a range with the key's visible version; rec.value may not be
// loaded yet (see loadValue). Returning false stops the scan.
type visit func(key string, rev, sub int64, rec *record) (bool, error)

// latest returns the newest version of key if it is live, without its value (see loadValue);
// ok is false if the key is absent (never written, or deleted). Only the Batch calls it: the
// fields come from the index, without reading the file.
func (r *reader) latest(key []byte) (rec record, rev, sub int64, ok bool, err error) {
	ki := r.idx.get(key)
	r.last, r.lastKey = ki, key
	if ki == nil {
		return record{}, 0, 0, false, nil
	}
	n := ki.newest()
	if n.tomb {
		return record{}, 0, 0, false, nil
	}
	return record{create: ki.create, version: ki.ver, lease: ki.lease}, n.main, int64(n.sub), true, nil
}

// get reads the version at rev.sub from the history bucket, which must hold it.
func (r *reader) get(rev, sub int64) (record, error) {
	r.buf = appendHistKey(r.buf[:0], rev, sub)
	v := r.hist.Get(r.buf)
	if v == nil {
		return record{}, errorCorrupt(fmt.Sprintf("the key index names version %d.%d, which is not stored", rev, sub))
	}
	return decodeRecord(v)
}

// loadValue fills rec.value from the version at rev.sub if rec was decoded without it.
func (r *reader) loadValue(rev, sub int64, rec *record) error {
	if rec.loaded {
		return nil
	}
	full, err := r.get(rev, sub)
	if err != nil {
		return err
	}
	rec.value, rec.loaded = full.value, true
	return nil
}

// scanBounds turns the API's key and range_end into index bounds: [from, to), to nil for no
// upper bound; empty is set when nothing can match. A single key is [key, key 0x00).
func scanBounds(key, end []byte) (from, to []byte, empty bool) {
	switch {
	case len(end) == 0:
		return key, append(append(make([]byte, 0, len(key)+1), key...), 0), false
	case len(end) == 1 && end[0] == 0: // every key from key on
		return key, nil, false
	case bytes.Compare(key, end) >= 0:
		return nil, nil, true
	}
	return key, end, false
}

// scan calls fn for every key selected by key and end (the API's range_end rules) that is live
// at revision atRev (0: the newest versions), in key order, with its version at atRev.
func (r *reader) scan(key, end []byte, atRev int64, fn visit) error {
	from, to, empty := scanBounds(key, end)
	if empty {
		return nil
	}
	if atRev == 0 {
		atRev = math.MaxInt64 // the newest versions, the Batch's own writes included
	}
	return r.scanRange(from, to, atRev, fn)
}

// scanRange is scan over [from, to) (to nil: no bound). When the visible version is the key's
// newest, rec comes from the index without its value; otherwise it is read from the file.
func (r *reader) scanRange(from, to []byte, atRev int64, fn visit) error {
	var rec record // reused: fn receives a pointer, which would move a fresh one to the heap
	visitHit := func(h *hit) (bool, error) {
		if h.newest {
			rec = record{create: h.create, version: h.ver, lease: h.lease}
		} else {
			var err error
			if rec, err = r.get(h.rev.main, int64(h.rev.sub)); err != nil {
				return false, err
			}
		}
		return fn(h.key, h.rev.main, int64(h.rev.sub), &rec)
	}
	if isSingle(from, to) {
		h, ok, err := r.idx.point(from, atRev, r.locked, r.floor)
		if err != nil || !ok {
			return err
		}
		_, err = visitHit(&h)
		return err
	}
	return r.idx.visible(from, to, atRev, r.locked, r.floor, visitHit)
}

// isSingle reports whether [from, to) holds the single key from.
func isSingle(from, to []byte) bool {
	return len(to) == len(from)+1 && to[len(from)] == 0 && bytes.Equal(from, to[:len(from)])
}

// countRange returns the number of keys in [from, to) live at atRev, from the index alone.
func (r *reader) countRange(from, to []byte, atRev int64) (int64, error) {
	return r.idx.count(from, to, atRev, r.locked, r.floor)
}

// toKV builds an API KeyValue from a key owned by the caller, copying the value out of bbolt
// memory.
func toKV(key []byte, rev int64, rec *record, keysOnly bool) *logpb.KeyValue {
	kv := &logpb.KeyValue{
		Key:            key,
		CreateRevision: rec.create,
		ModRevision:    rev,
		Version:        rec.version,
		Lease:          rec.lease,
	}
	if !keysOnly {
		kv.Value = bytes.Clone(rec.value)
		if kv.Value == nil {
			kv.Value = []byte{}
		}
	}
	return kv
}

// rangeAt serves a range request against a store at revision cur, compacted at compactRev.
func (r *reader) rangeAt(req *logpb.RangeRequest, cur, compactRev, maxResults int64) (*logpb.RangeResponse, error) {
	atRev := req.GetRevision()
	switch {
	case atRev < 0:
		return nil, errorf(ErrInvalidArgument, "negative revision %d", atRev)
	case atRev > cur:
		return nil, errorf(ErrFutureRev, "revision %d, current %d", atRev, cur)
	case atRev > 0 && atRev < compactRev:
		return nil, errorf(ErrCompacted, "revision %d, compacted at %d", atRev, compactRev)
	case atRev == 0 && r.locked:
		atRev = cur
	case atRev == 0:
		// The Batch: the newest versions, its own writes included (a transaction's range after
		// its puts sees them, at the revision the transaction is taking).
		atRev = math.MaxInt64
	}
	if len(req.GetKey()) == 0 {
		return nil, ErrEmptyKey
	}
	limit := req.GetLimit()
	if limit < 0 {
		return nil, errorf(ErrInvalidArgument, "negative limit %d", limit)
	}
	if limit == 0 || limit > maxResults {
		limit = maxResults
	}
	resp := &logpb.RangeResponse{Header: &logpb.ResponseHeader{Revision: cur}}
	from, to, empty := scanBounds(req.GetKey(), req.GetRangeEnd())
	if empty {
		return resp, nil
	}
	if req.GetCountOnly() {
		n, err := r.countRange(from, to, atRev)
		if err != nil {
			return nil, err
		}
		resp.Count = n
		return resp, nil
	}
	// Read up to limit keys, then count the rest from the index alone.
	var last string
	err := r.scanRange(from, to, atRev, func(k string, rev, sub int64, rec *record) (bool, error) {
		if !req.GetKeysOnly() {
			if err := r.loadValue(rev, sub, rec); err != nil {
				return false, err
			}
		}
		resp.Kvs = append(resp.Kvs, toKV([]byte(k), rev, rec, req.GetKeysOnly()))
		last = k
		return int64(len(resp.Kvs)) < limit, nil
	})
	if err != nil {
		return nil, err
	}
	resp.Count = int64(len(resp.Kvs))
	if resp.Count == limit {
		rest, err := r.countRange(append([]byte(last), 0), to, atRev)
		if err != nil {
			return nil, err
		}
		resp.Count += rest
		resp.More = rest > 0
	}
	return resp, nil
}
