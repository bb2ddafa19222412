package avail

import (
	"bytes"
	"context"
	"fmt"

	"github.com/caucus/caucus/internal/crdt"
	"github.com/caucus/caucus/internal/hlc"
)

// Delta is what a local operation replicates: the crdt encoding of the operation's delta,
// which any replica applies with MergeRemote (once or many times, in any order).
type Delta struct {
	Keyspace string
	Key      []byte
	State    []byte
	// Stamp is a register write's HLC stamp (zero for counters and sets).
	Stamp hlc.Timestamp
}

// CreateKeyspace creates a keyspace whose keys hold kind (KindAny: each key's kind is fixed by
// its first write). Creating an existing keyspace with the same kind is a no-op; with another
// kind it fails with ErrKind.
func (s *Store) CreateKeyspace(ctx context.Context, name string, kind Kind) error {
	if name == "" || len(name) > MaxKeyspaceNameBytes {
		return fmt.Errorf("%w: keyspace name of %d bytes, want 1..%d", ErrInvalid, len(name), MaxKeyspaceNameBytes)
	}
	if !kind.valid() {
		return fmt.Errorf("%w: keyspace %q: %v", ErrInvalid, name, kind)
	}
	return s.do(ctx, "create keyspace "+name, func(t *txn) error {
		if ks, err := t.keyspace(name); err == nil {
			if ks.kind != kind {
				return fmt.Errorf("%w: keyspace %q exists with kind %v, not %v", ErrKind, name, ks.kind, kind)
			}
			return nil
		}
		s.mu.RLock()
		n := len(s.keyspaces)
		s.mu.RUnlock()
		if n+len(t.created) >= MaxKeyspaces {
			return fmt.Errorf("%w: already %d keyspaces", ErrLimit, MaxKeyspaces)
		}
		for _, b := range [][]byte{dataBucket(name), indexBucket(name)} {
			if _, err := t.tx.CreateBucket(b); err != nil {
				t.fatal = fmt.Errorf("create bucket %q: %w", b, err)
				return t.fatal
			}
		}
		if err := t.tx.Bucket(bucketKeyspaces).Put([]byte(name), []byte{byte(kind)}); err != nil {
			t.fatal = err
			return err
		}
		t.created = append(t.created, &keyspace{name: name, kind: kind, tree: NewTree()})
		return nil
	})
}

// load returns key's current state as an Entry of kind want (empty if the key is absent), and
// the raw stored bytes (nil if absent), refusing a kind mismatch.
func (t *txn) load(ks *keyspace, key []byte, want Kind) (Entry, []byte, error) {
	if ks.kind != KindAny && ks.kind != want {
		return Entry{}, nil, fmt.Errorf("%w: keyspace %q holds %ss, not %ss", ErrKind, ks.name, ks.kind, want)
	}
	raw := t.raw(ks, key)
	if raw == nil {
		e := Entry{Key: key, Kind: want}
		switch want {
		case KindCounter:
			e.Counter = new(crdt.Counter)
		case KindSet:
			e.Set = new(crdt.Set)
		}
		return e, nil, nil
	}
	if Kind(raw[0]) != want {
		return Entry{}, nil, fmt.Errorf("%w: keyspace %q key %q holds a %v, not a %v", ErrKind, ks.name, key, Kind(raw[0]), want)
	}
	e, err := decodeState(key, raw)
	if err != nil {
		return Entry{}, nil, fmt.Errorf("%w: keyspace %q key %q: %w", ErrCorrupt, ks.name, key, err)
	}
	return e, raw, nil
}

func (e *Entry) marshal() []byte {
	switch e.Kind {
	case KindRegister:
		return e.Register.Marshal()
	case KindCounter:
		return e.Counter.Marshal()
	}
	return e.Set.Marshal()
}

// local runs a local operation op on key's state of kind in the committer and returns its
// delta once the new state is durable.
func (s *Store) local(ctx context.Context, o Origin, name string, key []byte, kind Kind, what string,
	op func(e *Entry) (delta []byte, stamp hlc.Timestamp, err error)) (Delta, error) {
	what = fmt.Sprintf("%s keyspace %q key %q", what, name, key)
	if err := checkKey(key); err != nil {
		return Delta{}, fmt.Errorf("avail: %s: %w", what, err)
	}
	if kind == KindRegister && o.Clock == nil {
		return Delta{}, fmt.Errorf("avail: %s: %w: no clock", what, ErrInvalid)
	}
	key = bytes.Clone(key)
	var d Delta
	err := s.do(ctx, what, func(t *txn) error {
		ks, err := t.keyspace(name)
		if err != nil {
			return fmt.Errorf("avail: %s: %w", what, err)
		}
		e, old, err := t.load(ks, key, kind)
		if err != nil {
			return fmt.Errorf("avail: %s: %w", what, err)
		}
		delta, stamp, err := op(&e)
		if err != nil {
			return fmt.Errorf("avail: %s: %w", what, err)
		}
		state := e.marshal()
		if len(state) > MaxStateBytes {
			return fmt.Errorf("avail: %s: %w: state of %d bytes, limit %d", what, ErrLimit, len(state), MaxStateBytes)
		}
		if !bytes.Equal(state, old) {
			t.put(ks, key, state)
		}
		t.stamp(stamp)
		d = Delta{Keyspace: name, Key: key, State: delta, Stamp: stamp}
		return nil
	})
	return d, err
}

// registerWrite stamps a register write: the clock first learns the register's current stamp
// (accepted when it was merged), so the new write is stamped above it and wins.
func registerWrite(o Origin, e *Entry, write func(ts hlc.Timestamp) (crdt.Register, error)) ([]byte, hlc.Timestamp, error) {
	o.Clock.Restore(e.Register.Stamp)
	ts := o.Clock.Now(o.Physical)
	w, err := write(ts)
	if err != nil {
		return nil, hlc.Timestamp{}, err
	}
	return w.Marshal(), ts, nil
}

// Put writes value to a register key, stamped by o.Clock at o.Physical.
func (s *Store) Put(ctx context.Context, o Origin, name string, key, value []byte) (Delta, error) {
	if len(value) > crdt.MaxRegisterValueBytes {
		return Delta{}, fmt.Errorf("avail: put keyspace %q key %q: %w: value of %d bytes, limit %d",
			name, key, ErrLimit, len(value), crdt.MaxRegisterValueBytes)
	}
	value = bytes.Clone(value)
	return s.local(ctx, o, name, key, KindRegister, "put", func(e *Entry) ([]byte, hlc.Timestamp, error) {
		return registerWrite(o, e, func(ts hlc.Timestamp) (crdt.Register, error) { return e.Register.Set(value, ts, o.Member) })
	})
}

// Delete writes a tombstone to a register key (whether or not it holds a value: the tombstone
// must beat older writes that other members may hold).
func (s *Store) Delete(ctx context.Context, o Origin, name string, key []byte) (Delta, error) {
	return s.local(ctx, o, name, key, KindRegister, "delete", func(e *Entry) ([]byte, hlc.Timestamp, error) {
		return registerWrite(o, e, func(ts hlc.Timestamp) (crdt.Register, error) { return e.Register.Delete(ts, o.Member) })
	})
}

// Incr adds n to a counter key as member o.Member.
func (s *Store) Incr(ctx context.Context, o Origin, name string, key []byte, n uint64) (Delta, error) {
	return s.local(ctx, o, name, key, KindCounter, "incr", func(e *Entry) ([]byte, hlc.Timestamp, error) {
		d, err := e.Counter.Incr(o.Member, n)
		if err != nil {
			return nil, hlc.Timestamp{}, err
		}
		return d.Marshal(), hlc.Timestamp{}, nil
	})
}

// Decr subtracts n from a counter key as member o.Member.
func (s *Store) Decr(ctx context.Context, o Origin, name string, key []byte, n uint64) (Delta, error) {
	return s.local(ctx, o, name, key, KindCounter, "decr", func(e *Entry) ([]byte, hlc.Timestamp, error) {
		d, err := e.Counter.Decr(o.Member, n)
		if err != nil {
			return nil, hlc.Timestamp{}, err
		}
		return d.Marshal(), hlc.Timestamp{}, nil
	})
}

// Add adds elem to a set key as member o.Member.
func (s *Store) Add(ctx context.Context, o Origin, name string, key []byte, elem string) (Delta, error) {
	return s.local(ctx, o, name, key, KindSet, "set add", func(e *Entry) ([]byte, hlc.Timestamp, error) {
		d, err := e.Set.Add(o.Member, elem)
		if err != nil {
			return nil, hlc.Timestamp{}, err
		}
		return d.Marshal(), hlc.Timestamp{}, nil
	})
}

// Remove removes elem (the adds of it this member has seen) from a set key.
func (s *Store) Remove(ctx context.Context, o Origin, name string, key []byte, elem string) (Delta, error) {
	return s.local(ctx, o, name, key, KindSet, "set remove", func(e *Entry) ([]byte, hlc.Timestamp, error) {
		return e.Set.Remove(elem).Marshal(), hlc.Timestamp{}, nil
	})
}

// Remote is a state or delta a peer sent for one key.
type Remote struct {
	Key   []byte
	State []byte
}

// MergeResult is the outcome of merging one Remote.
type MergeResult struct {
	Changed bool  // the local state changed
	Err     error // why this item was refused (nothing of it was applied)
}

// MergeRemote merges a state or delta a peer sent for key. See MergeRemoteBatch.
func (s *Store) MergeRemote(ctx context.Context, o Origin, name string, key, state []byte) (bool, error) {
	res, err := s.MergeRemoteBatch(ctx, o, name, []Remote{{Key: key, State: state}})
	if err != nil {
		return false, err
	}
	return res[0].Changed, res[0].Err
}

// MergeRemoteBatch merges states or deltas a peer sent, in one transaction. Each item is
// validated (key limits, canonical crdt encoding, the key's and keyspace's kind) and a
// register's stamp is passed through o.Clock.Update at o.Physical: a stamp further ahead than
// the clock's skew bound is refused with the hlc error (matching hlc.ErrSkew). A refused item
// is reported in its MergeResult and does not stop the others; the error is for the batch.
func (s *Store) MergeRemoteBatch(ctx context.Context, o Origin, name string, items []Remote) ([]MergeResult, error) {
	res := make([]MergeResult, len(items))
	decoded := make([]Entry, len(items))
	hasRegister := false
	for i, it := range items {
		if err := checkKey(it.Key); err != nil {
			res[i].Err = fmt.Errorf("avail: merge keyspace %q: %w", name, err)
			continue
		}
		e, err := decodeState(bytes.Clone(it.Key), it.State)
		if err != nil {
			res[i].Err = fmt.Errorf("avail: merge keyspace %q key %q: %w", name, it.Key, err)
			continue
		}
		hasRegister = hasRegister || e.Kind == KindRegister
		decoded[i] = e
	}
	if hasRegister && o.Clock == nil {
		return nil, fmt.Errorf("avail: merge keyspace %q: %w: no clock", name, ErrInvalid)
	}
	err := s.do(ctx, fmt.Sprintf("merge %d states into keyspace %q", len(items), name), func(t *txn) error {
		ks, err := t.keyspace(name)
		if err != nil {
			return fmt.Errorf("avail: merge: %w", err)
		}
		for i := range items {
			if res[i].Err != nil {
				continue
			}
			res[i].Changed, res[i].Err = t.merge(o, ks, &decoded[i])
			if t.fatal != nil {
				return t.fatal
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

func (t *txn) merge(o Origin, ks *keyspace, r *Entry) (bool, error) {
	cur, old, err := t.load(ks, r.Key, r.Kind)
	if err != nil {
		return false, fmt.Errorf("avail: merge: %w", err)
	}
	changed := false
	switch r.Kind {
	case KindRegister:
		if _, err := o.Clock.Update(r.Register.Stamp, o.Physical); err != nil {
			return false, fmt.Errorf("avail: merge keyspace %q key %q: %w", ks.name, r.Key, err)
		}
		changed = cur.Register.Merge(r.Register)
		t.stamp(r.Register.Stamp)
	case KindCounter:
		changed = cur.Counter.Merge(r.Counter)
	case KindSet:
		changed = cur.Set.Merge(r.Set)
	}
	if !changed && old != nil {
		return false, nil
	}
	// A key absent here is stored even when the peer's state is the type's bottom (a set
	// whose elements were all removed): both sides then hold the key, and their trees agree.
	state := cur.marshal()
	if bytes.Equal(state, old) {
		return false, nil
	}
	t.put(ks, r.Key, state)
	return true, nil
}

// PurgeTombstones drops the register tombstones of a keyspace stamped before the watermark and
// returns how many it dropped.
//
// The caller guarantees that every live member has received every tombstone stamped before
// before (for example: every member reported, after a completed anti-entropy round with all
// others, a clock above it). Dropping a tombstone a member lacks lets that member's older
// value come back through anti-entropy, as if the delete never happened. A purged tombstone
// that another member still holds comes back harmlessly, until that member purges too.
func (s *Store) PurgeTombstones(ctx context.Context, name string, before hlc.Timestamp) (int, error) {
	n := 0
	err := s.do(ctx, fmt.Sprintf("purge tombstones of keyspace %q before %v", name, before), func(t *txn) error {
		ks, err := t.keyspace(name)
		if err != nil {
			return fmt.Errorf("avail: purge: %w", err)
		}
		var keys [][]byte
		c := t.tx.Bucket(dataBucket(name)).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) == 0 || Kind(v[0]) != KindRegister {
				continue
			}
			var r crdt.Register
			if err := r.Unmarshal(v); err != nil {
				return fmt.Errorf("avail: purge: %w: keyspace %q key %q: %w", ErrCorrupt, name, k, err)
			}
			if r.Deleted && r.Stamp.Less(before) {
				keys = append(keys, bytes.Clone(k))
			}
		}
		for _, k := range keys {
			t.del(ks, k)
			if t.fatal != nil {
				return t.fatal
			}
		}
		n = len(keys)
		return nil
	})
	return n, err
}
