package nativeapi

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// setUserTimeout bounds, in the kernel, how long data written to the connection may stay
// unacknowledged before the connection fails (TCP_USER_TIMEOUT). Keep-alive probes notice a
// peer that vanished only while nothing is in flight; with calls in flight, retransmissions
// would otherwise go on for a quarter of an hour.
func setUserTimeout(c syscall.RawConn, ms int) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms)
	})
	if err != nil {
		return err
	}
	return serr
}
