//go:build !linux

package vfs

import "os"

// datasync falls back to a full fsync where fdatasync is not available.
func datasync(f *os.File) error { return f.Sync() }

// preallocate extends the file with a hole where fallocate is not available.
func preallocate(f *os.File, size int64) error { return growByTruncate(f, size) }
