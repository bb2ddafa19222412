package transport

import (
	"net"
	"testing"

	"github.com/caucus/caucus/internal/sockopt"
)

// Outbound peer connections bound unacknowledged data with TCP_USER_TIMEOUT, so that a peer
// whose machine vanished is reported unreachable in UnackedTimeout.
func TestPeerDialSetsUserTimeout(t *testing.T) {
	a, b := newNode(t, 1, nil), newNode(t, 2, nil)
	connect(t, a, b)
	a.mu.Lock()
	p := a.peers[2]
	a.mu.Unlock()
	conn, stop, err := p.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	defer stop()
	got, err := sockopt.UserTimeout(conn.(*net.TCPConn))
	if err != nil || got != UnackedTimeout {
		t.Fatalf("TCP_USER_TIMEOUT = %s (%v), want %s", got, err, UnackedTimeout)
	}
}
