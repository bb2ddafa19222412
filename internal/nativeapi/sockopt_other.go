//go:build !linux

package nativeapi

import "syscall"

// setUserTimeout is Linux-only; elsewhere keep-alive probes and call deadlines remain.
func setUserTimeout(syscall.RawConn, int) error { return nil }
