package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

// mountTmpfs mounts a tmpfs of size bytes on dir, so that a member's data directory lives on a
// disk that really fills (ENOSPC from the kernel, not a simulation), and unmounts it when the
// test ends, whatever its outcome. Without the privilege to mount (not root, or no
// CAP_SYS_ADMIN in a container) the test is skipped, never failed.
func mountTmpfs(t *testing.T, dir string, size int64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			t.Skipf("cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): mount %s: %v", dir, err)
		}
		t.Fatalf("mount tmpfs of %d bytes on %s: %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			// A process that outlived the test still holds a file open: detach the mount so
			// it disappears once that process dies, rather than leaking it.
			t.Logf("unmount %s: %v; detaching it lazily", dir, err)
			if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
				t.Errorf("detach tmpfs %s: %v", dir, err)
			}
		}
	})
}

// growTmpfs resizes the tmpfs on dir to size bytes in place: files and open descriptors are
// kept, as when an operator frees or adds disk space under a running machine.
func growTmpfs(t *testing.T, dir string, size int64) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatalf("remount tmpfs %s with size %d: %v", dir, size, err)
	}
}

// freeBytes is the space left to unprivileged writers on the filesystem holding dir.
func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatalf("statfs %s: %v", dir, err)
	}
	return int64(st.Bavail) * st.Bsize
}
