package mvcc

import (
	"bytes"
	"fmt"

	"github.com/caucus/caucus/internal/logpb"
	bolt "go.etcd.io/bbolt"
)

// reader reads key versions from one bbolt transaction (read-only for Store reads, read-write
// inside a Batch, where it sees the batch's own writes), from the kv bucket: a key's newest
// version is the first entry under its prefix, older ones follow it.
type reader struct {
	kv  *bolt.Bucket
	buf []byte
}

// keyRef is a key found by a scan, aliasing bbolt memory or the caller's: raw, or escaped (as
// in the kv bucket's keys).
type keyRef struct {
	b       []byte
	escaped bool
}

// clone returns the raw key in fresh memory.
func (k keyRef) clone() []byte {
	if k.escaped {
		return unescape(k.b)
	}
	return bytes.Clone(k.b)
}

// visit is called for each key in a range with the key's visible version; rec.value may not be
// loaded yet (see loadValue). Returning false stops the scan.
type visit func(key keyRef, rev, sub int64, rec *record) (bool, error)

// latest returns the newest version of key if it is live, with its value; ok is false if the key
// is absent (never written, or deleted). Versions sort newest first (revisions are stored
// inverted), so the newest is the first entry under the key's prefix: one seek.
func (r *reader) latest(key []byte) (rec record, rev, sub int64, ok bool, err error) {
	r.buf = kvPrefix(r.buf[:0], key)
	k, v := r.kv.Cursor().Seek(r.buf)
	if k == nil || len(k) != len(r.buf)-2+kvSuffixLen || !bytes.HasPrefix(k, r.buf) {
		return record{}, 0, 0, false, nil
	}
	_, rev, sub = splitKVKey(k)
	if rec, err = decodeRecord(v); err != nil {
		return record{}, 0, 0, false, err
	}
	if rec.tombstone {
		return record{}, 0, 0, false, nil
	}
	return rec, rev, sub, true, nil
}

// loadValue fills rec.value from the key's version if rec was decoded without it.
func (r *reader) loadValue(key keyRef, rev, sub int64, rec *record) error {
	if rec.loaded {
		return nil
	}
	if key.escaped {
		r.buf = kvKeyEsc(r.buf[:0], key.b, rev, sub)
	} else {
		r.buf = kvKey(r.buf[:0], key.b, rev, sub)
	}
	v := r.kv.Get(r.buf)
	if v == nil {
		return errorCorrupt(fmt.Sprintf("key %q has no version %d.%d", key.b, rev, sub))
	}
	full, err := decodeRecord(v)
	if err != nil {
		return err
	}
	rec.value, rec.loaded = full.value, true
	return nil
}

// scan calls fn for every live key selected by key and end (the API's range_end rules), in key
// order, with the version visible at revision atRev; atRev 0 means the newest version.
// Tombstoned and not-yet-created keys are skipped.
func (r *reader) scan(key, end []byte, atRev int64, fn visit) error {
	all := len(end) == 1 && end[0] == 0
	if len(end) == 0 {
		if atRev == 0 {
			rec, rev, sub, ok, err := r.latest(key)
			if err != nil || !ok {
				return err
			}
			_, err = fn(keyRef{b: key}, rev, sub, &rec)
			return err
		}
		// A single key: bound the scan to the key itself.
		end = append(append([]byte(nil), key...), 0)
		all = false
	} else if !all && bytes.Compare(key, end) >= 0 {
		return nil
	}
	if atRev == 0 {
		return r.scanLatest(key, end, all, fn)
	}
	return r.scanAt(key, end, all, atRev, fn)
}

// scanLatest is scan at the newest revision: the first entry of each key is its newest version
// (skipped if a tombstone); the rest of its history is stepped over (a short one step by step,
// a long one with a seek).
func (r *reader) scanLatest(key, end []byte, all bool, fn visit) error {
	var escEnd []byte
	if !all {
		escEnd = appendEscaped(nil, end)
	}
	// rec is reused across keys: fn receives a pointer, which would otherwise move a fresh
	// record to the heap for every key scanned.
	var rec record
	var err error
	c := r.kv.Cursor()
	k, v := c.Seek(appendEscaped(nil, key))
	for k != nil {
		if len(k) < kvSuffixLen {
			return errorCorrupt("kv key too short")
		}
		esc, rev, sub := splitKVKey(k) // aliases bbolt memory, valid for the whole transaction
		if escEnd != nil && bytes.Compare(esc, escEnd) >= 0 {
			return nil
		}
		if rec, err = decodeRecord(v); err != nil {
			return err
		}
		if !rec.tombstone {
			if more, err := fn(keyRef{b: esc, escaped: true}, rev, sub, &rec); err != nil || !more {
				return err
			}
		}
		k, v = r.skipHistory(c, k, v, esc, longWalk)
	}
	return nil
}

// skipHistory moves c from k past the rest of the escaped key esc's versions: up to steps
// cursor steps, then one seek past them all. It returns the first entry of the next key.
func (r *reader) skipHistory(c *bolt.Cursor, k, v, esc []byte, steps int) ([]byte, []byte) {
	for i := 0; k != nil && sameKey(k, esc); i++ {
		if i == steps {
			r.buf = nextKeySeek(r.buf[:0], esc)
			return c.Seek(r.buf)
		}
		k, v = c.Next()
	}
	return k, v
}

// longWalk is how many of a key's versions scanLatest steps over before it seeks past the rest:
// a bbolt seek costs as much as dozens of steps (it allocates while checking pages), so only a
// long uncompacted history is worth one.
const longWalk = 32

// shortWalk is how many cursor steps scanAt takes through a key's history before it falls back
// to a seek: a step is far cheaper than a seek, and most keys have few versions.
const shortWalk = 4

// sameKey reports whether the kv bucket key k is a version of the escaped key esc.
func sameKey(k, esc []byte) bool {
	return len(k) == len(esc)+kvSuffixLen && bytes.HasPrefix(k, esc) && k[len(esc)] == 0 && k[len(esc)+1] == 1
}

// scanAt is scan at a past revision, over the kv bucket.
func (r *reader) scanAt(key, end []byte, all bool, atRev int64, fn visit) error {
	var escEnd []byte
	if !all {
		escEnd = appendEscaped(nil, end)
	}
	var rec record // reused, as in scan
	var err error
	c := r.kv.Cursor()
	k, v := c.Seek(appendEscaped(nil, key))
	for k != nil {
		if len(k) < kvSuffixLen {
			return errorCorrupt("kv key too short")
		}
		// esc aliases bbolt memory, valid for the whole transaction.
		esc, rev, sub := splitKVKey(k)
		if escEnd != nil && bytes.Compare(esc, escEnd) >= 0 {
			return nil
		}
		// The cursor is on the newest version of esc; find the newest at or below atRev,
		// stepping through a short history and seeking past a long one.
		visible := true
		for steps := 0; rev > atRev; steps++ {
			if steps == shortWalk {
				r.buf = escSeekAt(r.buf[:0], esc, atRev)
				k, v = c.Seek(r.buf)
			} else {
				k, v = c.Next()
			}
			if k == nil || !sameKey(k, esc) {
				visible = false // no version at or below atRev: created later
				break
			}
			_, rev, sub = splitKVKey(k)
		}
		if visible {
			if rec, err = decodeRecord(v); err != nil {
				return err
			}
			if !rec.tombstone {
				more, err := fn(keyRef{b: esc, escaped: true}, rev, sub, &rec)
				if err != nil || !more {
					return err
				}
			}
			k, v = r.skipHistory(c, k, v, esc, shortWalk)
		}
	}
	return nil
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
// dirty says that the transaction holds writes above cur (a transaction's range after its own
// writes), so a read at exactly cur must seek instead of taking the newest versions.
func (r *reader) rangeAt(req *logpb.RangeRequest, cur, compactRev, maxResults int64, dirty bool) (*logpb.RangeResponse, error) {
	atRev := req.GetRevision()
	switch {
	case atRev < 0:
		return nil, errorf(ErrInvalidArgument, "negative revision %d", atRev)
	case atRev > cur:
		return nil, errorf(ErrFutureRev, "revision %d, current %d", atRev, cur)
	case atRev > 0 && atRev < compactRev:
		return nil, errorf(ErrCompacted, "revision %d, compacted at %d", atRev, compactRev)
	case atRev == cur && !dirty:
		atRev = 0 // the newest versions: no per-key seek needed
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
	err := r.scan(req.GetKey(), req.GetRangeEnd(), atRev, func(k keyRef, rev, sub int64, rec *record) (bool, error) {
		resp.Count++
		if req.GetCountOnly() {
			return true, nil
		}
		if int64(len(resp.Kvs)) < limit {
			if !req.GetKeysOnly() {
				if err := r.loadValue(k, rev, sub, rec); err != nil {
					return false, err
				}
			}
			resp.Kvs = append(resp.Kvs, toKV(k.clone(), rev, rec, req.GetKeysOnly()))
		} else {
			resp.More = true
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}
