package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caucus/caucus/internal/sockopt"
	"github.com/caucus/caucus/internal/wire"
	"github.com/caucus/caucus/raft"
)

// peerState is where a peer's writer is in its connection life cycle. It decides what Send does
// with a message: queue it (connecting, connected) or drop it (down).
type peerState uint8

const (
	// stateConnecting: dialing, handshaking, or pausing after a lost connection. Messages queue
	// so that the first messages to a peer, or those sent during a brief blip, are not lost.
	stateConnecting peerState = iota
	// stateConnected: the handshake succeeded and the writer drains the queue.
	stateConnected
	// stateDown: the last connection attempt failed and the writer is backing off. Queuing
	// would only deliver stale messages later, so Send drops and reports unreachable at once.
	stateDown
)

// queued is a message waiting for the writer, with its encoded size computed once by Send.
type queued struct {
	m    raft.Message
	size int
}

// errRedial ends a connection because the peer's address changed.
var errRedial = errors.New("transport: peer address changed")

// peer is the sending half of the transport for one remote node: a queue filled by Send and a
// writer goroutine (run) that owns the outbound connection.
type peer struct {
	t   *Transport
	id  raft.NodeID
	log *slog.Logger

	ctx    context.Context // cancelled by RemovePeer and Close
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	// notify holds a token whenever pending went from empty to non-empty and the writer has
	// not taken it yet. Capacity 1: Send never blocks on it.
	notify chan struct{}
	// redial holds a token when the address changed; capacity 1.
	redial chan struct{}

	// Only the writer goroutine uses these.
	rng     *rand.Rand
	scratch []byte // encoding buffer for frames that do not fit in the bufio buffer

	mu          sync.Mutex
	addr        string
	state       peerState
	pending     []queued
	pendingSize int      // encoded bytes in pending
	spare       []queued // the writer's last batch, recycled as the next pending slice
	lastDropLog time.Time

	sent, dropped, flushes, bytesSent, dials atomic.Uint64
}

func newPeer(t *Transport, id raft.NodeID, addr string) *peer {
	ctx, cancel := context.WithCancel(t.ctx)
	return &peer{
		t:      t,
		id:     id,
		log:    t.log.With("peer", id),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
		notify: make(chan struct{}, 1),
		redial: make(chan struct{}, 1),
		// Seeding from both ids desynchronises the redials of all nodes to one restarted peer
		// while keeping each node's schedule reproducible.
		rng:  rand.New(rand.NewPCG(uint64(t.cfg.ID), uint64(id))),
		addr: addr,
	}
}

func (p *peer) address() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// setAddress changes the address and asks the writer to reconnect; it reports whether the
// address changed.
func (p *peer) setAddress(addr string) bool {
	p.mu.Lock()
	changed := p.addr != addr
	p.addr = addr
	p.mu.Unlock()
	if changed {
		select {
		case p.redial <- struct{}{}:
		default:
		}
	}
	return changed
}

func (p *peer) setState(s peerState) {
	p.mu.Lock()
	p.state = s
	p.mu.Unlock()
}

// enqueue queues msgs (all addressed to p) and reports whether any was dropped.
func (p *peer) enqueue(msgs []raft.Message) (dropped bool) {
	cfg := &p.t.cfg
	maxBytes, maxQueue, maxQueueBytes := cfg.MaxMessageBytes, cfg.QueueMessages, cfg.QueueBytes
	var full, down, oversize, bigSize int
	var bigType raft.MessageType
	logDrops := false

	p.mu.Lock()
	wasEmpty := len(p.pending) == 0
	for i := range msgs {
		m := &msgs[i]
		size := wire.MessageSize(m)
		switch {
		case size > maxBytes:
			oversize++
			bigSize, bigType = size, m.Type
		case p.state == stateDown:
			down++
		case len(p.pending) >= maxQueue, len(p.pending) > 0 && p.pendingSize+size > maxQueueBytes:
			full++
		default:
			p.pending = append(p.pending, queued{m: *m, size: size})
			p.pendingSize += size
		}
	}
	wake := wasEmpty && len(p.pending) > 0
	if full+down > 0 {
		if now := time.Now(); now.Sub(p.lastDropLog) >= dropLogInterval {
			p.lastDropLog, logDrops = now, true
		}
	}
	p.mu.Unlock()

	if wake {
		p.wake()
	}
	n := full + down + oversize
	if n == 0 {
		return false
	}
	p.dropped.Add(uint64(n))
	if oversize > 0 {
		// Not rate-limited: the core should never produce these (its MaxMsgBytes and
		// MaxSnapshotChunkBytes must stay below MaxMessageBytes), so each one is a bug to see.
		p.log.Error("dropping oversize messages", "count", oversize, "type", bigType.String(),
			"bytes", bigSize, "limit", maxBytes, "err", ErrMessageTooLarge)
	}
	if logDrops {
		p.log.Warn("dropping messages to peer", "queue_full", full, "peer_down", down,
			"queue_limit", maxQueue, "queue_bytes_limit", maxQueueBytes)
	}
	return true
}

// wake makes sure the writer will look at the queue.
func (p *peer) wake() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// take hands the writer everything queued and gives Send the spare slice to fill.
func (p *peer) take() []queued {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.pending
	p.pending, p.spare, p.pendingSize = p.spare[:0], nil, 0
	return b
}

// recycle returns a written batch to be the next pending slice, cleared so that it does not
// keep entry data alive.
func (p *peer) recycle(b []queued) {
	clear(b)
	p.mu.Lock()
	if p.spare == nil {
		p.spare = b[:0]
	}
	p.mu.Unlock()
}

// goDown marks the peer down and discards its queue, returning how many messages were dropped.
func (p *peer) goDown() int {
	p.mu.Lock()
	n := len(p.pending)
	clear(p.pending)
	p.pending, p.pendingSize = p.pending[:0], 0
	p.state = stateDown
	p.mu.Unlock()
	p.dropped.Add(uint64(n))
	return n
}

func (p *peer) reportUnreachable(dropped int) {
	if dropped > 0 && p.t.cfg.Unreachable != nil {
		p.t.cfg.Unreachable(p.id)
	}
}

func (p *peer) stats() PeerStats {
	p.mu.Lock()
	s := PeerStats{Addr: p.addr, Connected: p.state == stateConnected, Queued: len(p.pending), QueuedBytes: p.pendingSize}
	p.mu.Unlock()
	s.Sent = p.sent.Load()
	s.Dropped = p.dropped.Load()
	s.Flushes = p.flushes.Load()
	s.BytesSent = p.bytesSent.Load()
	s.Dials = p.dials.Load()
	return s
}

// run is the writer goroutine: connect, drain the queue until the connection fails, back off,
// repeat, until the peer is removed or the transport closed.
func (p *peer) run() {
	defer p.t.wg.Done()
	defer close(p.done)
	defer func() {
		p.mu.Lock()
		p.pending, p.spare, p.pendingSize = nil, nil, 0
		p.mu.Unlock()
	}()

	cfg := &p.t.cfg
	bw := bufio.NewWriterSize(nil, ioBufferBytes)
	attempt := 0
	lastErr := ""
	for p.ctx.Err() == nil {
		p.setState(stateConnecting)
		conn, stop, err := p.dial()
		if err != nil {
			if p.ctx.Err() != nil {
				return
			}
			n := p.goDown()
			p.logDialError(err, &lastErr, n)
			p.reportUnreachable(n)
			if !p.wait(backoff(attempt, cfg.BackoffMin, cfg.BackoffMax, p.rng)) {
				return
			}
			attempt++
			continue
		}
		lastErr = ""
		p.setState(stateConnected)
		p.log.Info("connected to peer", "addr", conn.RemoteAddr().String())
		connectedAt := time.Now()

		err = p.serve(conn, bw)
		stop()
		p.setState(stateConnecting)
		if p.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRedial) {
			attempt = 0
			continue
		}
		p.log.Warn("connection to peer lost", "err", err)
		// A connection that dies right after its handshake (a peer that accepts and then
		// rejects every frame) must not become a hot redial loop, so the backoff only starts
		// over once a connection has lived longer than the longest backoff.
		if time.Since(connectedAt) >= cfg.BackoffMax {
			attempt = 0
		}
		if !p.wait(backoff(attempt, cfg.BackoffMin, cfg.BackoffMax, p.rng)) {
			return
		}
		attempt++
	}
}

// logDialError logs a failed connection attempt: loudly when the error is new, quietly when it
// repeats, so a peer that is down for an hour does not flood the log.
func (p *peer) logDialError(err error, last *string, dropped int) {
	msg := err.Error()
	level := slog.LevelWarn
	switch {
	case msg == *last:
		level = slog.LevelDebug
	case errors.Is(err, ErrClusterMismatch):
		level = slog.LevelError
	}
	*last = msg
	p.log.Log(context.Background(), level, "cannot connect to peer", "err", err, "dropped", dropped)
}

// wait sleeps for d, returning early (true) if the address changed and false if the peer is
// being stopped.
func (p *peer) wait(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-p.redial:
		return true
	case <-p.ctx.Done():
		return false
	}
}

// backoff returns the delay before attempt (0-based): BackoffMin doubled per attempt, capped
// at BackoffMax, then jittered down by up to half, never below min.
func backoff(attempt int, minD, maxD time.Duration, rng *rand.Rand) time.Duration {
	d := maxD
	if attempt < 62 {
		if x := minD << attempt; x > 0 && x < maxD {
			d = x
		}
	}
	half := d / 2
	d = half + time.Duration(rng.Int64N(int64(d-half)+1))
	return max(d, minD)
}

// dial connects to the peer and performs the handshake. The returned stop function detaches
// the connection from the peer's context; until it is called, cancelling the context (Close,
// RemovePeer) closes the connection, which unblocks any read or write on it.
func (p *peer) dial() (net.Conn, func() bool, error) {
	cfg := &p.t.cfg
	addr := p.address()
	p.dials.Add(1)
	d := net.Dialer{Timeout: cfg.DialTimeout, Control: func(_, _ string, rc syscall.RawConn) error {
		return sockopt.SetUserTimeout(rc, UnackedTimeout)
	}}
	conn, err := d.DialContext(p.ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: dial peer %d at %s: %w", p.id, addr, err)
	}
	stop := context.AfterFunc(p.ctx, func() { conn.Close() })
	if err := p.handshake(conn); err != nil {
		stop()
		conn.Close()
		return nil, nil, fmt.Errorf("transport: peer %d at %s: %w", p.id, addr, err)
	}
	return conn, stop, nil
}

func (p *peer) handshake(conn net.Conn) error {
	cfg := &p.t.cfg
	if err := conn.SetDeadline(time.Now().Add(cfg.HandshakeTimeout)); err != nil {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	h := hello{version: ProtocolVersion, cluster: cfg.ClusterID, from: cfg.ID, to: p.id}
	b := h.marshal()
	if _, err := conn.Write(b[:]); err != nil {
		return fmt.Errorf("%w: writing hello: %w", ErrHandshake, err)
	}
	a, err := readAck(conn)
	if err != nil {
		return err
	}
	if err := checkAck(&a, cfg.ID, p.id, cfg.ClusterID); err != nil {
		return err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	return nil
}

// serve writes batches to conn until it fails, the peer is stopped, or the address changes. It
// closes conn before returning.
func (p *peer) serve(conn net.Conn, bw *bufio.Writer) error {
	// The acceptor never writes after its ack, so a read returns only when the connection dies
	// (or the peer misbehaves). Watching it lets an idle connection notice a restarted peer
	// right away, instead of losing the next batch into a dead socket.
	monitorDone := make(chan struct{})
	var monitorErr error
	go func() {
		defer close(monitorDone)
		var b [1]byte
		_, err := conn.Read(b[:])
		if err == nil {
			err = fmt.Errorf("%w: peer wrote after the handshake", ErrProtocol)
		}
		monitorErr = err
	}()

	bw.Reset(conn)
	err := p.writeLoop(conn, bw, monitorDone, &monitorErr)
	conn.Close()
	<-monitorDone
	bw.Reset(nil) // drop the reference to the dead connection
	return err
}

func (p *peer) writeLoop(conn net.Conn, bw *bufio.Writer, monitorDone <-chan struct{}, monitorErr *error) error {
	// Messages queued while connecting may have had their notify token consumed by the previous
	// connection's loop; waking once unconditionally keeps "pending non-empty implies a token
	// or a running drain" true without tracking who consumed what. A spurious wake-up costs
	// one empty take.
	p.wake()
	for {
		select {
		case <-p.ctx.Done():
			return p.ctx.Err()
		case <-monitorDone:
			return fmt.Errorf("transport: connection to peer %d closed: %w", p.id, *monitorErr)
		case <-p.redial:
			return errRedial
		case <-p.notify:
			// An address change wins over queued messages, so that everything sent after
			// UpdatePeer returns goes to the new address. The queue is left for the next
			// connection, which re-arms the token it consumed here (see below).
			select {
			case <-p.redial:
				return errRedial
			default:
			}
		}
		batch := p.take()
		if len(batch) == 0 {
			continue
		}
		err := p.writeBatch(conn, bw, batch)
		n := len(batch)
		p.recycle(batch)
		if err != nil {
			// Some of the batch may have reached the peer; there is no way to know which, and
			// Raft does not need to: it treats all of it as lost.
			p.dropped.Add(uint64(n))
			p.reportUnreachable(n)
			return fmt.Errorf("transport: writing to peer %d: %w", p.id, err)
		}
	}
}

// writeBatch encodes batch into bw and flushes once. Frames that fit in bw's free space are
// encoded in place, so the common case copies each message once and allocates nothing.
//
// The write deadline is renewed before every operation that reaches the socket (a frame that
// does not fit in the buffer, and the final flush), so WriteTimeout detects a peer that stopped
// reading without limiting how long a large batch may take to a peer that keeps up.
func (p *peer) writeBatch(conn net.Conn, bw *bufio.Writer, batch []queued) error {
	timeout := p.t.cfg.WriteTimeout
	var zeroHeader [frameHeaderBytes]byte
	total := 0
	for i := range batch {
		q := &batch[i]
		need := frameHeaderBytes + q.size
		var frame []byte
		if need <= bw.Available() {
			frame = append(bw.AvailableBuffer(), zeroHeader[:]...)
		} else {
			if err := conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
				return err
			}
			if cap(p.scratch) < need {
				p.scratch = make([]byte, 0, need)
			}
			frame = append(p.scratch[:0], zeroHeader[:]...)
		}
		frame = wire.AppendMessage(frame, &q.m)
		putFrameHeader(frame)
		if _, err := bw.Write(frame); err != nil {
			return err
		}
		total += len(frame)
	}
	if cap(p.scratch) > maxRetainedBufferBytes {
		p.scratch = nil
	}
	if err := conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	p.sent.Add(uint64(len(batch)))
	p.flushes.Add(1)
	p.bytesSent.Add(uint64(total))
	return nil
}
