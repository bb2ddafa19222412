package avail

import (
	"context"
	"crypto/sha256"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/caucus/caucus/internal/crdt"
	"github.com/caucus/caucus/internal/hlc"
)

// request is one write waiting for the committer. apply runs in the committer goroutine inside
// the batch's transaction; it must check everything that can refuse the write before its first
// change to the transaction, so that a refused write leaves nothing behind, and it reports
// storage failures through txn.fatal (they fail the whole batch).
type request struct {
	ctx   context.Context
	what  string
	apply func(t *txn) error
	err   error
	done  chan struct{}
}

// do hands apply to the committer and waits until its transaction is durable. Concurrent
// callers share one transaction and one fsync (group commit). If ctx ends before the committer
// takes the request, it is not applied; if it ends while the request is in a batch, the
// outcome is unknown and the error says so.
func (s *Store) do(ctx context.Context, what string, apply func(t *txn) error) error {
	r := &request{ctx: ctx, what: what, apply: apply, done: make(chan struct{})}
	select {
	case <-s.quit:
		return fmt.Errorf("avail: %s: %w", what, ErrClosed)
	default:
	}
	select {
	case s.reqs <- r:
	case <-ctx.Done():
		return ctxErr(ctx, what+": not applied, the write queue stayed full")
	case <-s.quit:
		return fmt.Errorf("avail: %s: %w", what, ErrClosed)
	}
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctxErr(ctx, what+": outcome unknown, the write was queued")
	case <-s.done:
		select {
		case <-r.done:
			return r.err
		default:
			return fmt.Errorf("avail: %s: not applied: %w", what, ErrClosed)
		}
	}
}

// run is the committer: it takes every request queued while the previous commit was syncing
// (up to MaxBatchWrites) into one transaction.
func (s *Store) run() {
	defer close(s.done)
	batch := make([]*request, 0, MaxBatchWrites)
	for {
		select {
		case <-s.quit:
			return
		case r := <-s.reqs:
			batch = append(batch[:0], r)
		}
	fill:
		for len(batch) < MaxBatchWrites {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		s.commit(batch)
		clear(batch)
	}
}

// txn is the state of one batch: the bbolt transaction and what to apply in memory once it is
// durable.
type txn struct {
	s        *Store
	tx       *bolt.Tx
	treeOps  []treeOp
	created  []*keyspace
	maxStamp hlc.Timestamp
	fatal    error
}

type treeOp struct {
	tree     *Tree
	leaf     int
	old, new sum256
	had, has bool
}

func (s *Store) commit(batch []*request) {
	tx, err := s.db.Begin(true)
	if err != nil {
		for _, r := range batch {
			r.err = fmt.Errorf("avail: %s: begin transaction: %w", r.what, err)
		}
		s.finish(batch)
		return
	}
	t := &txn{s: s, tx: tx, maxStamp: s.MaxStamp()}
	ok := make([]bool, len(batch))
	for i, r := range batch {
		if r.ctx.Err() != nil {
			r.err = ctxErr(r.ctx, r.what+": not applied")
			continue
		}
		r.err = r.apply(t)
		if t.fatal != nil {
			break
		}
		ok[i] = r.err == nil
	}
	if t.fatal == nil && t.maxStamp != s.MaxStamp() {
		if err := tx.Bucket(bucketMeta).Put(metaMaxStamp, t.maxStamp.Append(nil)); err != nil {
			t.fatal = err
		}
	}
	if t.fatal == nil {
		if err := tx.Commit(); err != nil {
			t.fatal = fmt.Errorf("commit: %w", err)
		}
	} else {
		_ = tx.Rollback()
	}
	if t.fatal != nil {
		s.log.Error("avail: write batch failed", "writes", len(batch), "err", t.fatal)
		for i, r := range batch {
			if ok[i] || r.err == nil {
				r.err = fmt.Errorf("avail: %s: not applied: %w", r.what, t.fatal)
			}
		}
		s.finish(batch)
		return
	}
	s.commits.Add(1)
	if len(t.created) > 0 {
		s.mu.Lock()
		for _, ks := range t.created {
			s.keyspaces[ks.name] = ks
		}
		s.mu.Unlock()
	}
	for _, op := range t.treeOps {
		switch {
		case op.had && op.has:
			op.tree.replace(op.leaf, op.old, op.new)
		case op.had:
			op.tree.remove(op.leaf, op.old)
		case op.has:
			op.tree.add(op.leaf, op.new)
		}
	}
	ms := t.maxStamp
	s.maxStamp.Store(&ms)
	s.finish(batch)
}

func (s *Store) finish(batch []*request) {
	s.writes.Add(uint64(len(batch)))
	for _, r := range batch {
		close(r.done)
	}
}

// keyspace looks a keyspace up, including those created earlier in this batch.
func (t *txn) keyspace(name string) (*keyspace, error) {
	for _, ks := range t.created {
		if ks.name == name {
			return ks, nil
		}
	}
	return t.s.keyspace(name)
}

func (t *txn) stamp(ts hlc.Timestamp) {
	if t.maxStamp.Less(ts) {
		t.maxStamp = ts
	}
}

// raw returns the stored state of key, nil if none. The slice is valid during the batch only.
func (t *txn) raw(ks *keyspace, key []byte) []byte {
	return t.tx.Bucket(dataBucket(ks.name)).Get(key)
}

// put stores key's new state and its index entry, and queues the tree update.
func (t *txn) put(ks *keyspace, key, state []byte) {
	op := treeOp{tree: ks.tree, leaf: LeafOf(key), has: true}
	d := crdt.Digest(sha256.Sum256(state))
	op.new = keyHash(key, d)
	idx := indexKey(key)
	ib := t.tx.Bucket(indexBucket(ks.name))
	if old := ib.Get(idx); old != nil {
		op.had, op.old = true, keyHash(key, crdt.Digest(old))
	}
	if err := t.tx.Bucket(dataBucket(ks.name)).Put(key, state); err != nil {
		t.fatal = fmt.Errorf("keyspace %q key %q: %w", ks.name, key, err)
		return
	}
	if err := ib.Put(idx, d[:]); err != nil {
		t.fatal = fmt.Errorf("keyspace %q index of key %q: %w", ks.name, key, err)
		return
	}
	t.treeOps = append(t.treeOps, op)
}

// del removes key's state and index entry, and queues the tree update.
func (t *txn) del(ks *keyspace, key []byte) {
	idx := indexKey(key)
	ib := t.tx.Bucket(indexBucket(ks.name))
	old := ib.Get(idx)
	if old == nil {
		return
	}
	op := treeOp{tree: ks.tree, leaf: LeafOf(key), had: true, old: keyHash(key, crdt.Digest(old))}
	if err := t.tx.Bucket(dataBucket(ks.name)).Delete(key); err != nil {
		t.fatal = fmt.Errorf("keyspace %q key %q: %w", ks.name, key, err)
		return
	}
	if err := ib.Delete(idx); err != nil {
		t.fatal = fmt.Errorf("keyspace %q index of key %q: %w", ks.name, key, err)
		return
	}
	t.treeOps = append(t.treeOps, op)
}
