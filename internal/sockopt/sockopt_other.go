//go:build !linux

package sockopt

import (
	"syscall"
	"time"
)

// SetUserTimeout is Linux-only; elsewhere keep-alive probes and deadlines remain.
func SetUserTimeout(syscall.RawConn, time.Duration) error { return nil }

// UserTimeout is Linux-only; elsewhere it reports 0.
func UserTimeout(syscall.Conn) (time.Duration, error) { return 0, nil }
