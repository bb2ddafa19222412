//go:build !linux

package kvbench

import "os"

func fdatasync(f *os.File) error { return f.Sync() }
