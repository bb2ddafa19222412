// Package testutil holds small helpers shared by the tests of several packages. Nothing in it
// may be imported by non-test code.
package testutil

import (
	"bytes"
	"sync"
)

// LockedBuffer is a bytes.Buffer that loggers on several goroutines and a test can share: it
// collects what they write and hands the test a consistent copy.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
