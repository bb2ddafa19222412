package vfs

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// datasync calls fdatasync(2): it flushes the data and the metadata needed to read it back (the
// size), skipping timestamps, which is all a log needs and saves a journal commit per sync.
func datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

// preallocate reserves [0, size) with fallocate(2) mode 0, which also extends the file size.
// Filesystems without fallocate (some network and FUSE filesystems, tmpfs on old kernels) report
// EOPNOTSUPP; there we fall back to extending the file with a hole.
func preallocate(f *os.File, size int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Fallocate(int(fd), 0, 0, size)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if errors.Is(ferr, unix.EOPNOTSUPP) || errors.Is(ferr, unix.ENOSYS) {
		return growByTruncate(f, size)
	}
	return ferr
}
