package mvcc

import (
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"
)

// Snapshot is a consistent, read-only view of the whole store, taken at one applied index, that
// can be serialized (WriteTo) on another goroutine while batches keep committing: the node takes
// it in its loop, where it knows the applied index's term and configuration, and writes it out
// in the background. Close must be called; until then the store cannot be restored or closed.
type Snapshot struct {
	s       *Store
	tx      *bolt.Tx
	applied uint64
	closed  bool
}

// BeginSnapshot opens a Snapshot of the committed state.
func (s *Store) BeginSnapshot() (*Snapshot, error) {
	s.mu.RLock()
	if s.db == nil {
		s.mu.RUnlock()
		return nil, ErrClosed
	}
	tx, err := s.db.Begin(false)
	if err != nil {
		s.mu.RUnlock()
		return nil, fmt.Errorf("mvcc: begin snapshot: %w", err)
	}
	return &Snapshot{s: s, tx: tx, applied: loadState(tx).applied}, nil
}

// AppliedIndex is the applied index the snapshot reflects.
func (sn *Snapshot) AppliedIndex() uint64 { return sn.applied }

// Size is the exact number of bytes WriteTo writes.
func (sn *Snapshot) Size() int64 { return sn.tx.Size() }

// WriteTo writes the snapshot in the format Restore reads.
func (sn *Snapshot) WriteTo(w io.Writer) (int64, error) {
	n, err := sn.tx.WriteTo(w)
	if err != nil {
		return n, fmt.Errorf("mvcc: write snapshot at applied index %d: %w", sn.applied, err)
	}
	return n, nil
}

// Close releases the view. It is idempotent.
func (sn *Snapshot) Close() {
	if sn.closed {
		return
	}
	sn.closed = true
	_ = sn.tx.Rollback()
	sn.s.mu.RUnlock()
}
