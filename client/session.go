package client

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// MaxWriteRetrySpan bounds how long a session write (Put, Delete, Txn commit) keeps sending
// attempts, whatever its context's deadline: after it, the write fails with the last attempt's
// error. The server's exactly-once guarantee for a write that opens a session (sequence 1)
// holds only if the client stops re-sending it well within the server's session retry window
// (mvcc.Limits.SessionRetryWindow, default 2 minutes, four times this span; the assumption is
// stated in internal/mvcc/session.go). A longer context deadline is not an error: the write
// just gives up earlier.
const MaxWriteRetrySpan = 30 * time.Second

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
	// dropped counts lanes retired after the server forgot or refused their session.
	dropped int
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

// fresh opens a lane with a new random client id, bypassing the free lanes (which may have
// expired on the server as well), and starts its first write: the session has sequence 1.
func (p *lanePool) fresh() (*lane, *caucusv1.Session) {
	l := &lane{clientID: randomClientID(), seq: 1}
	p.mu.Lock()
	p.all++
	p.mu.Unlock()
	return l, &caucusv1.Session{ClientId: l.clientID, Sequence: l.seq}
}

// drop retires a lane instead of releasing it, after the server forgot its client id or
// refused to open its session: the lane's next sequence would be refused too, and a fresh lane
// costs the server no more than reviving this one. The id is never sent again.
func (p *lanePool) drop(*lane) {
	p.mu.Lock()
	p.dropped++
	p.mu.Unlock()
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

// retired returns how many lanes were dropped.
func (p *lanePool) retired() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
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
