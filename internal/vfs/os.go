package vfs

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
)

// OS is the real filesystem, through package os. Its zero value is ready to use.
type OS struct{}

// NewOS returns the real filesystem.
func NewOS() *OS { return &OS{} }

// OpenFile implements FS.
func (*OS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, fmt.Errorf("vfs: %w", err)
	}
	return &osFile{f: f}, nil
}

// Create implements FS.
func (o *OS) Create(name string) (File, error) {
	return o.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
}

// Open implements FS.
func (o *OS) Open(name string) (File, error) { return o.OpenFile(name, os.O_RDONLY, 0) }

// Rename implements FS.
func (*OS) Rename(oldpath, newpath string) error {
	if err := os.Rename(oldpath, newpath); err != nil {
		return fmt.Errorf("vfs: %w", err)
	}
	return nil
}

// Remove implements FS.
func (*OS) Remove(name string) error {
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("vfs: %w", err)
	}
	return nil
}

// MkdirAll implements FS.
func (*OS) MkdirAll(dir string, perm fs.FileMode) error {
	if err := os.MkdirAll(dir, perm); err != nil {
		return fmt.Errorf("vfs: %w", err)
	}
	return nil
}

// ReadDir implements FS.
func (*OS) ReadDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("vfs: %w", err)
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	slices.Sort(names) // os.ReadDir sorts already; keep the contract explicit
	return names, nil
}

// Stat implements FS.
func (*OS) Stat(name string) (fs.FileInfo, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return nil, fmt.Errorf("vfs: %w", err)
	}
	return fi, nil
}

// SyncDir implements FS: it fsyncs the directory itself, which is what makes entries created,
// renamed or removed in it durable.
func (*OS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("vfs: sync dir: %w", err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return fmt.Errorf("vfs: sync dir %s: %w", dir, serr)
	}
	if cerr != nil {
		return fmt.Errorf("vfs: close dir %s: %w", dir, cerr)
	}
	return nil
}

type osFile struct{ f *os.File }

func (o *osFile) Name() string { return o.f.Name() }

func (o *osFile) Write(p []byte) (int, error) {
	n, err := o.f.Write(p)
	if err != nil {
		err = fmt.Errorf("vfs: %w", err)
	}
	return n, err
}

func (o *osFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := o.f.WriteAt(p, off)
	if err != nil {
		err = fmt.Errorf("vfs: %w", err)
	}
	return n, err
}

// ReadAt returns io.EOF unwrapped so that callers can compare it with ==, as io.ReaderAt users do.
func (o *osFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := o.f.ReadAt(p, off)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("vfs: %w", err)
	}
	return n, err
}

func (o *osFile) Sync() error {
	if err := datasync(o.f); err != nil {
		return fmt.Errorf("vfs: fdatasync %s: %w", o.f.Name(), err)
	}
	return nil
}

func (o *osFile) Truncate(size int64) error {
	if err := o.f.Truncate(size); err != nil {
		return fmt.Errorf("vfs: %w", err)
	}
	return nil
}

func (o *osFile) Preallocate(size int64) error {
	if err := preallocate(o.f, size); err != nil {
		return fmt.Errorf("vfs: preallocate %s to %d bytes: %w", o.f.Name(), size, err)
	}
	return nil
}

func (o *osFile) Size() (int64, error) {
	fi, err := o.f.Stat()
	if err != nil {
		return 0, fmt.Errorf("vfs: %w", err)
	}
	return fi.Size(), nil
}

func (o *osFile) Close() error {
	if err := o.f.Close(); err != nil {
		return fmt.Errorf("vfs: %w", err)
	}
	return nil
}

// growByTruncate is the portable fallback for preallocation: it extends the file with a hole.
// Later writes may still hit ENOSPC, but the size is right, which is what readers rely on.
func growByTruncate(f *os.File, size int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() >= size {
		return nil
	}
	return f.Truncate(size)
}
