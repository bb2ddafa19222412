// Package sockopt sets the socket options caucus's TCP connections share: how long written
// data may stay unacknowledged before the kernel fails the connection. It exists so that the
// client protocol (internal/nativeapi) and the peer transport (internal/transport) bound a
// vanished peer the same way; on other systems than Linux it does nothing.
package sockopt

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SetUserTimeout bounds, in the kernel, how long data written to the connection may stay
// unacknowledged before the connection fails (TCP_USER_TIMEOUT). Keep-alive probes notice a
// peer that vanished only while nothing is in flight; with data in flight, retransmissions
// would otherwise go on for a quarter of an hour.
func SetUserTimeout(c syscall.RawConn, d time.Duration) error {
	ms := int(d / time.Millisecond)
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms)
	})
	if err != nil {
		return err
	}
	return serr
}

// UserTimeout reports the connection's TCP_USER_TIMEOUT (0: the kernel's default behaviour).
func UserTimeout(conn syscall.Conn) (time.Duration, error) {
	c, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var ms int
	var gerr error
	if err := c.Control(func(fd uintptr) {
		ms, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}); err != nil {
		return 0, err
	}
	return time.Duration(ms) * time.Millisecond, gerr
}
