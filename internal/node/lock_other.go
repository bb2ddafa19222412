//go:build !unix

package node

// lockLogDir does nothing where flock is not available.
func lockLogDir(string) (func() error, error) { return func() error { return nil }, nil }
