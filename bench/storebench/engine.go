package storebench

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Engine is the state machine's storage as the workload sees it. Apply, CompactHistory and
// Reclaim must not run concurrently with each other; Get and Range may run concurrently with
// everything but Reclaim and Close.
type Engine interface {
	// Apply applies puts as the batch of entries ending at index, in one atomic commit without
	// fsync. Each put takes the next revision and first reads the key's previous live version.
	Apply(index uint64, puts []Put) error
	// Get appends the newest value of key to dst; ok is false if the key does not exist.
	Get(key, dst []byte) (val []byte, ok bool, err error)
	// Range reads up to limit live keys from start on, with their values, from one consistent
	// state, and returns how many keys and value bytes it read.
	Range(start []byte, limit int) (keys, bytes int, err error)
	// WriteSnapshot writes a consistent copy of the whole state to w.
	WriteSnapshot(w io.Writer) (int64, error)
	// CompactHistory deletes every version but the newest of each key, with at most budget
	// deletions per commit, and returns how many versions it deleted.
	CompactHistory(budget int) (int, error)
	// Reclaim gives the space freed by CompactHistory back to the file system.
	Reclaim() error
	// Settle waits until the engine's background work (flushes, compactions) has stopped, so
	// that a measurement can charge the work a phase caused to that phase.
	Settle() error
	// Rev and Applied return the persisted revision and applied index.
	Rev() int64
	Applied() uint64
	// Dump calls fn for every entry of every table, tables in Tables order, keys in order.
	Dump(fn func(t Table, k, v []byte) error) error
	// Dir is the directory holding the engine's files.
	Dir() string
	Close() error
}

// Config tunes the engines. The zero value is the configuration the benchmark reports.
type Config struct {
	// PebbleWAL enables Pebble's own write-ahead log. Off by default: caucus's Raft WAL already
	// makes every applied entry durable and is replayed from the persisted applied index, so a
	// second log only costs writes. The price is that Pebble's unflushed memtable is lost on a
	// process crash (bbolt's NoSync writes survive kill -9 in the page cache), so the Raft WAL
	// must keep every entry above the last flushed applied index, not only above the last
	// snapshot.
	PebbleWAL bool
	// BoltInitialMmapSize is bbolt's Options.InitialMmapSize (internal/mvcc's option of the same
	// name, 0 by default there): a large value avoids remapping as the file grows, which waits for
	// every open read transaction.
	BoltInitialMmapSize int
	// PebbleCacheBytes is Pebble's block cache (0: 64 MiB). bbolt has no cache of its own: it
	// reads through its mmap, i.e. the OS page cache.
	PebbleCacheBytes int64
}

// Kind names an engine and how to create one.
type Kind struct {
	Name string
	// Open opens (creating if needed) the engine in dir.
	Open func(dir string, cfg Config) (Engine, error)
	// Restore creates the engine in the empty dir from a stream written by WriteSnapshot.
	Restore func(dir string, cfg Config, r io.Reader) (Engine, error)
}

// Kinds are the engines under comparison, bbolt first (the baseline of every ratio).
var Kinds = []Kind{
	{Name: "bbolt", Open: OpenBolt, Restore: RestoreBolt},
	{Name: "pebble", Open: OpenPebble, Restore: RestorePebble},
}

// KindByName returns the engine kind called name.
func KindByName(name string) (Kind, error) {
	for _, k := range Kinds {
		if k.Name == name {
			return k, nil
		}
	}
	return Kind{}, fmt.Errorf("storebench: unknown engine %q (want bbolt or pebble)", name)
}

// DiskUsage returns the bytes the files under dir occupy on disk (allocated blocks, so sparse
// regions of a grown bbolt file do not count) and their apparent size.
func DiskUsage(dir string) (allocated, apparent int64, err error) {
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // Pebble deleted an obsolete file during the walk
		}
		if err != nil {
			return err
		}
		apparent += fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			allocated += st.Blocks * 512
		} else {
			allocated += fi.Size()
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("storebench: disk usage of %s: %w", dir, err)
	}
	return allocated, apparent, nil
}

// syncFile fsyncs and closes f, reporting which file failed.
func syncFile(f *os.File) error {
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", f.Name(), err)
	}
	return nil
}
