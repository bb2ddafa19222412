package client

import (
	"crypto/rand"
	"encoding/binary"
	"sync"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// lane is one exactly-once session: a client id and the sequence of its latest write. A lane is
// owned by at most one write at a time (see the package documentation), so seq needs no lock of
// its own: the pool's mutex hands ownership over.
type lane struct {
	clientID uint64
	seq      uint64
}

// lanePool hands out lanes. Free lanes are kept as a stack so that a client with little
// concurrency keeps reusing the same few client ids, which keeps the server's session table
// small.
type lanePool struct {
	mu   sync.Mutex
	free []*lane
	all  int // lanes ever opened, for tests and diagnostics
}

// acquire takes a free lane or opens one with a fresh random client id, and advances its
// sequence for a new logical write. The returned Session must be reused unchanged for every
// retry of that write, and the lane released when the write is done, whatever its outcome.
func (p *lanePool) acquire() (*lane, *caucusv1.Session) {
	p.mu.Lock()
	var l *lane
	if n := len(p.free); n > 0 {
		l = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		l = &lane{clientID: randomClientID()}
		p.all++
	}
	p.mu.Unlock()
	l.seq++
	return l, &caucusv1.Session{ClientId: l.clientID, Sequence: l.seq}
}

// release returns l to the pool. After an ambiguous failure the next write of the lane uses the
// next sequence, which the server accepts: it is newer than anything it has seen for the id.
func (p *lanePool) release(l *lane) {
	p.mu.Lock()
	p.free = append(p.free, l)
	p.mu.Unlock()
}

// opened returns how many lanes were ever opened.
func (p *lanePool) opened() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.all
}

// randomClientID returns a uniformly random non-zero id (0 disables deduplication on the
// server). crypto/rand makes collisions between independent clients negligible: two clients
// sharing an id would see each other's cached results.
func randomClientID() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:]) // never returns an error (crypto/rand documentation)
		if id := binary.LittleEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}
