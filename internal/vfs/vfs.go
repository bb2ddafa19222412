// Package vfs is the filesystem seam under caucus's durable storage (internal/wal, internal/snap).
// Storage code talks only to FS and File, so the same code runs over the real disk (OS) and over
// Sim, an in-memory filesystem for deterministic simulation that models what survives a crash.
//
// # Durability contract
//
// Both implementations follow the conservative POSIX reading that storage code must assume:
//
//   - Data written to a file is durable only once File.Sync returns nil for that file.
//   - A directory entry (a file created, renamed or removed, a directory made) is durable only
//     once SyncDir returns nil for the directory holding it. A synced file whose name was never
//     made durable is lost in a crash.
//   - After Sync or SyncDir fails, nothing written since the previous successful sync may be
//     assumed durable, ever: Linux drops the dirty pages on writeback errors and a later fsync
//     can succeed without writing them ("fsyncgate"). Callers must treat a sync error as fatal.
//   - File.Preallocate reserves space so that later writes inside the file's size do not need new
//     blocks; on a full disk such writes still succeed, writes that grow the file fail with an
//     error wrapping syscall.ENOSPC.
//
// Paths are slash-separated; Sim treats relative paths as relative to its root.
package vfs

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
)

// FS is a filesystem. Implementations are safe for concurrent use; a File is not required to be.
type FS interface {
	// OpenFile opens name with os.O_* flags (O_RDONLY, O_WRONLY, O_RDWR, O_CREATE, O_EXCL,
	// O_TRUNC, O_APPEND); perm applies when the file is created.
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// Create creates or truncates name for reading and writing, like os.Create.
	Create(name string) (File, error)
	// Open opens name read-only.
	Open(name string) (File, error)
	// Rename atomically replaces newpath with oldpath.
	Rename(oldpath, newpath string) error
	// Remove removes a file or an empty directory.
	Remove(name string) error
	// MkdirAll creates dir and any missing parents. The new entries are not durable until
	// their parents are synced; see MkdirAllDurable.
	MkdirAll(dir string, perm fs.FileMode) error
	// ReadDir returns the names in dir, sorted.
	ReadDir(dir string) ([]string, error)
	// Stat describes name.
	Stat(name string) (fs.FileInfo, error)
	// SyncDir makes dir's entries durable (fsync of the directory).
	SyncDir(dir string) error
}

// File is an open file.
type File interface {
	// Name is the name the file was opened with.
	Name() string
	// Write writes at the file's current position (its end with O_APPEND) and advances it.
	Write(p []byte) (int, error)
	// WriteAt writes at off without moving the position.
	WriteAt(p []byte, off int64) (int, error)
	// ReadAt follows io.ReaderAt: a short read returns io.EOF.
	ReadAt(p []byte, off int64) (int, error)
	// Sync makes the file's data durable (fdatasync: metadata needed to read the data back,
	// such as the size, is included; timestamps are not).
	Sync() error
	// Truncate sets the file's size.
	Truncate(size int64) error
	// Preallocate makes the file at least size bytes long, reserving the blocks where the
	// platform can (fallocate) so that writes inside it cannot fail for lack of space. The new
	// bytes read as zeros. It never shrinks the file.
	Preallocate(size int64) error
	// Size returns the file's current size.
	Size() (int64, error)
	// Close releases the file. It does not sync.
	Close() error
}

// MkdirAllDurable creates dir like MkdirAll and then syncs dir and each of its ancestors, so
// that every directory entry on the path is durable. Syncing an ancestor that did not change is
// cheap; doing all of them avoids having to know which levels MkdirAll created.
func MkdirAllDurable(fsys FS, dir string, perm fs.FileMode) error {
	if err := fsys.MkdirAll(dir, perm); err != nil {
		return err
	}
	for d := filepath.Clean(dir); ; {
		if err := fsys.SyncDir(d); err != nil {
			return err
		}
		parent := filepath.Dir(d)
		if parent == d {
			return nil
		}
		d = parent
	}
}

// WriteFileDurable writes data to name through a temporary file, syncs it, renames it into place
// and syncs the directory, so that after a crash name holds either its old contents or data,
// never a mix. The temporary file is name+".tmp".
func WriteFileDurable(fsys FS, name string, data []byte) (err error) {
	tmp := name + ".tmp"
	f, err := fsys.Create(tmp)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = fsys.Remove(tmp) // best effort: the temp file is garbage either way
		}
	}()
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("vfs: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := fsys.Rename(tmp, name); err != nil {
		return err
	}
	return fsys.SyncDir(filepath.Dir(name))
}

// ReadFile reads the whole of name.
func ReadFile(fsys FS, name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	n, err := f.ReadAt(buf, 0)
	if int64(n) == size {
		return buf, nil // io.EOF at exactly the end is fine
	}
	if err == nil {
		err = errors.New("short read")
	}
	return nil, fmt.Errorf("vfs: read %s: got %d of %d bytes: %w", name, n, size, err)
}

var _ FS = (*OS)(nil)
var _ FS = (*Sim)(nil)
