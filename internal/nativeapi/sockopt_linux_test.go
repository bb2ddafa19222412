package nativeapi

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The default dialer bounds unacknowledged data with TCP_USER_TIMEOUT, so a member whose
// machine vanished with calls in flight fails the connection in UnackedTimeout.
func TestDefaultDialerSetsUserTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := NewClient(ClientConfig{Addr: ln.Addr().String()})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rc, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	if err := rc.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil || got != int(UnackedTimeout/time.Millisecond) {
		t.Fatalf("TCP_USER_TIMEOUT = %d (%v), want %d ms", got, gerr, UnackedTimeout/time.Millisecond)
	}
}
