package nativeapi

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/sockopt"
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
	got, err := sockopt.UserTimeout(conn.(*net.TCPConn))
	if err != nil || got != UnackedTimeout {
		t.Fatalf("TCP_USER_TIMEOUT = %s (%v), want %s", got, err, UnackedTimeout)
	}
}
