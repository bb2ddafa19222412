//go:build !unix

package node

// lockFileName is the lock file lockLogDir would hold (see lock_unix.go).
const lockFileName = "LOCK"

// lockLogDir does nothing where flock is not available.
func lockLogDir(string) (func() error, error) { return func() error { return nil }, nil }
