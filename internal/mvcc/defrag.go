package mvcc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// defragTxBytes bounds the key and value bytes copied in one transaction of the destination
// file. bbolt keeps a write transaction's dirty pages in memory until commit, so one transaction
// for a large store would hold a copy of all of it; a few tens of MiB keep memory flat while the
// commits (unsynced, see below) stay few.
const defragTxBytes = 32 << 20

// defragBeforeSwap, when set (tests only), runs after the new file is written and checked and
// before the store's lock is taken; an error it returns aborts the defragmentation there. It lets
// tests fail the last step before the rename, which no real I/O error can be aimed at reliably.
var defragBeforeSwap func(tmp string) error

// ErrDefragRace is returned by Defragment when a Batch committed while the copy was being made:
// the copy misses that commit, so it is discarded. The caller violated Defragment's contract.
var ErrDefragRace = errors.New("mvcc: defragment: a batch committed during the copy")

// Defragment rewrites the database into a new, compact file and swaps it in, returning the file
// size before and after. bbolt never shrinks its file: pages freed by deletes and compaction are
// reused but stay allocated, so after a large compaction the file keeps its peak size until it is
// defragmented.
//
// The live data is copied into a temporary file next to the database while readers keep being
// served from the current file; the copy is fsynced and checked, then, under the store's
// exclusive lock (readers wait for the swap, which is only a close, a rename and an open), the
// current database is closed, the copy renamed over it, the directory fsynced, and the file
// reopened. The applied index is part of the data, so the copy is exactly the committed state.
//
// No Batch may be open or begin during the call: the caller owns the apply path and must commit
// first (the node runs Defragment on its loop, where batches are opened). A Batch that commits
// during the copy is detected and fails the call with ErrDefragRace, without harm. An open
// Snapshot delays the swap until it is closed.
//
// On any error before the rename the current file stays in use and the temporary file is removed.
// If the current database was closed and could not be reopened (after the rename, or a failed
// close), the error wraps ErrClosed and so does every later call, like after a failed Restore:
// the file on disk is then a complete database (the compacted copy once renamed), and opening
// the store again recovers it.
func (s *Store) Defragment() (before, after int64, err error) {
	start := time.Now()
	tmp := s.path + ".defrag.tmp"
	// A crash during an earlier run can leave a temporary file; bbolt would open it as a database
	// and copy into it, so it must go first.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, 0, fmt.Errorf("mvcc: defragment: remove stale %s: %w", tmp, err)
	}
	txid, applied, err := s.copyCompacted(tmp)
	if err == nil {
		err = checkDefragFile(tmp, applied)
	}
	if err == nil && defragBeforeSwap != nil {
		err = defragBeforeSwap(tmp)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, 0, err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		os.Remove(tmp)
		return 0, 0, ErrClosed
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		if tx.ID() != txid {
			return fmt.Errorf("%w (transaction %d, copied %d)", ErrDefragRace, tx.ID(), txid)
		}
		return nil
	}); err != nil {
		os.Remove(tmp)
		return 0, 0, err
	}
	if before, err = fileSize(s.path); err != nil {
		os.Remove(tmp)
		return 0, 0, fmt.Errorf("mvcc: defragment: %w", err)
	}
	if err := s.db.Close(); err != nil {
		// bbolt releases the file whatever Close returns; the store cannot continue on it.
		s.db = nil
		os.Remove(tmp)
		return before, 0, fmt.Errorf("mvcc: defragment: close current database: %w (%w)", err, ErrClosed)
	}
	s.db = nil
	if err := os.Rename(tmp, s.path); err != nil {
		os.Remove(tmp)
		// The old file is intact: reopen it so that the store keeps serving.
		if db, _, oerr := s.openDB(false); oerr == nil {
			s.db = db
		} else {
			err = errors.Join(err, fmt.Errorf("reopen current database: %w", oerr), ErrClosed)
		}
		return before, 0, fmt.Errorf("mvcc: defragment: rename %s over %s: %w", tmp, s.path, err)
	}
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		return before, 0, fmt.Errorf("mvcc: defragment: %w (%w)", err, ErrClosed)
	}
	// The copy holds exactly the committed state (the transaction ids matched), which the key
	// index already describes: it is kept, not rebuilt.
	db, _, err := s.openDB(false)
	if err != nil {
		return before, 0, fmt.Errorf("mvcc: defragment: reopen: %w (%w)", err, ErrClosed)
	}
	s.db = db
	if after, err = fileSize(s.path); err != nil {
		return before, 0, fmt.Errorf("mvcc: defragment: %w", err)
	}
	s.log.Info("defragmented", "before_bytes", before, "after_bytes", after,
		"applied_index", s.applied.Load(), "took", time.Since(start))
	return before, after, nil
}

// copyCompacted writes the committed state into a new database at dst, synced, and returns the
// id of the last transaction and the applied index it reflects.
func (s *Store) copyCompacted(dst string) (txid int, applied uint64, err error) {
	// The copy is unsynced while it is written (one fsync at the end makes it durable), and
	// uses the same freelist settings as the store, which reopens it.
	out, err := bolt.Open(dst, 0o600, &bolt.Options{
		Timeout:        time.Second,
		NoSync:         true,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return 0, 0, fmt.Errorf("mvcc: defragment: create %s: %w", dst, err)
	}
	defer func() {
		if cerr := out.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("mvcc: defragment: close %s: %w", dst, cerr)
		}
	}()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return 0, 0, ErrClosed
	}
	// bolt.Compact copies in its own read transaction; the id read just before it is the state
	// it copies unless a batch commits in between, which the caller detects by comparing ids
	// again under the exclusive lock (ids only grow).
	if err := s.db.View(func(tx *bolt.Tx) error {
		txid, applied = tx.ID(), loadState(tx).applied
		return nil
	}); err != nil {
		return 0, 0, fmt.Errorf("mvcc: defragment: read transaction id: %w", err)
	}
	if err := bolt.Compact(out, s.db, defragTxBytes); err != nil {
		return 0, 0, fmt.Errorf("mvcc: defragment: copy %s into %s: %w", s.path, dst, err)
	}
	if err := out.Sync(); err != nil {
		return 0, 0, fmt.Errorf("mvcc: defragment: fsync %s: %w", dst, err)
	}
	return txid, applied, nil
}

// checkDefragFile verifies that the copy at path is a store of this schema at the applied index
// the store had, before it replaces anything.
func checkDefragFile(path string, applied uint64) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("mvcc: defragment: reopen copy %s: %w", path, err)
	}
	defer db.Close()
	size, err := fileSize(path)
	if err != nil {
		return fmt.Errorf("mvcc: defragment: %w", err)
	}
	return db.View(func(tx *bolt.Tx) error {
		// bbolt trusts its meta page: touching a page beyond the end of a short file is a SIGBUS
		// through the mmap, not an error, so the length is checked before any page is read.
		if tx.Size() > size {
			return fmt.Errorf("mvcc: defragment: copy %s is %d bytes, its meta page claims %d", path, size, tx.Size())
		}
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("mvcc: defragment: copy %s lacks bucket %s", path, name)
			}
		}
		m := tx.Bucket(bucketMeta)
		if v := u64(m.Get(metaSchema)); v != schemaVersion {
			return fmt.Errorf("mvcc: defragment: copy %s has schema version %d, want %d", path, v, schemaVersion)
		}
		if got := loadState(tx).applied; got != applied {
			return fmt.Errorf("mvcc: defragment: copy %s is at applied index %d, the store at %d", path, got, applied)
		}
		return nil
	})
}

func fileSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return fi.Size(), nil
}
