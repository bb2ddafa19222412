//go:build unix

package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockLogDir takes an exclusive lock on dir for this process: two members writing one log (two
// members given the same --wal-dir, or a member started twice) would destroy it. The lock is
// the kernel's (flock), so it dies with the process and never needs cleaning up.
func lockLogDir(dir string) (unlock func() error, err error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node: open lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("node: the log in %s is in use by another process (%s is locked): is this member already running, or does another member share its --wal-dir?", dir, path)
		}
		return nil, fmt.Errorf("node: lock %s: %w", path, err)
	}
	return f.Close, nil
}
