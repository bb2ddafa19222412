package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/caucus/caucus/internal/wire"
	"github.com/caucus/caucus/raft"
)

// Accept-loop backoff on transient errors (such as running out of file descriptors), so the
// loop does not spin while the condition lasts.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// largeFrameChunkBytes is how much of a frame larger than the read buffer is read at a time.
// The buffer grows only as bytes actually arrive, so a peer that announces a large frame and
// then stalls holds no more memory than it has sent.
const largeFrameChunkBytes = 1 << 20

// inConn is one inbound connection.
type inConn struct {
	conn net.Conn
	from raft.NodeID // set by register after the handshake; guarded by Transport.mu
}

// recvStat counts what one sender delivered, across its connections.
type recvStat struct {
	messages atomic.Uint64
}

func (t *Transport) acceptLoop() {
	defer t.wg.Done()
	delay := time.Duration(0)
	for {
		conn, err := t.cfg.Listener.Accept()
		if err != nil {
			if t.closed.Load() {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				t.log.Error("listener closed while the transport is open; no longer accepting", "err", err)
				return
			}
			delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
			t.log.Warn("accept failed; retrying", "err", err, "retry_in", delay)
			timer := time.NewTimer(delay)
			select {
			case <-timer.C:
			case <-t.ctx.Done():
				timer.Stop()
				return
			}
			continue
		}
		delay = 0
		c := &inConn{conn: conn}
		if !t.track(c) {
			conn.Close()
			continue
		}
		go t.serveInbound(c)
	}
}

// track registers a new inbound connection and accounts for its goroutine, or refuses it when
// the transport is closed or MaxInboundConns are open.
func (t *Transport) track(c *inConn) bool {
	t.mu.Lock()
	closed, full := t.closed.Load(), len(t.conns) >= t.cfg.MaxInboundConns
	if !closed && !full {
		t.conns[c] = struct{}{}
		t.wg.Add(1)
	}
	t.mu.Unlock()
	if full && !closed {
		// Logged for the first refusal and then every 1024th: a flood must not become a log
		// flood. The counter in Stats is exact.
		if n := t.rejectedConns.Add(1); n == 1 || n%1024 == 0 {
			t.log.Warn("refusing inbound connection: too many open", "remote", c.conn.RemoteAddr().String(),
				"limit", t.cfg.MaxInboundConns, "refused_total", n)
		}
	}
	return !closed && !full
}

// register makes c the current connection from sender and returns the sender's counters. A
// sender keeps one outbound connection to us, so a new one means the old one is dead (perhaps
// half-open after a partition); it is closed rather than left to linger until TCP keepalive.
func (t *Transport) register(c *inConn, sender raft.NodeID) *recvStat {
	t.mu.Lock()
	c.from = sender
	old := t.inbound[sender]
	t.inbound[sender] = c
	rs := t.recv[sender]
	if rs == nil {
		rs = new(recvStat)
		t.recv[sender] = rs
	}
	t.mu.Unlock()
	if old != nil {
		old.conn.Close()
		t.log.Info("new connection from peer replaces the previous one", "peer", sender)
	}
	return rs
}

// untrack forgets c. Receive counters of a sender that is not a peer are dropped with its last
// connection, so that hostile senders inventing ids cannot grow the map without bound.
func (t *Transport) untrack(c *inConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
	if c.from != raft.None && t.inbound[c.from] == c {
		delete(t.inbound, c.from)
		if t.peers[c.from] == nil {
			delete(t.recv, c.from)
		}
	}
}

func (t *Transport) serveInbound(c *inConn) {
	defer t.wg.Done()
	defer t.untrack(c)
	defer c.conn.Close()

	remote := c.conn.RemoteAddr().String()
	h, err := t.acceptHandshake(c.conn)
	if err != nil {
		if t.closed.Load() {
			return
		}
		if errors.Is(err, io.EOF) {
			// Closed before sending a byte: a port probe or health check, not a peer.
			t.log.Debug("inbound connection closed before the handshake", "remote", remote)
			return
		}
		t.protocolErrors.Add(1)
		level := slog.LevelWarn
		if errors.Is(err, ErrClusterMismatch) {
			level = slog.LevelError
		}
		t.log.Log(context.Background(), level, "rejected inbound connection", "remote", remote, "err", err)
		return
	}
	rs := t.register(c, h.from)
	t.log.Debug("inbound connection from peer", "peer", h.from, "remote", remote)

	err = t.readFrames(c.conn, h.from, rs)
	switch {
	case errors.Is(err, ErrProtocol):
		t.protocolErrors.Add(1)
		t.log.Error("closing inbound connection", "peer", h.from, "remote", remote, "err", err)
	case t.closed.Load(), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		t.log.Debug("inbound connection closed", "peer", h.from, "remote", remote, "err", err)
	default:
		t.log.Info("inbound connection failed", "peer", h.from, "remote", remote, "err", err)
	}
}

// acceptHandshake reads and answers the dialer's hello. The whole exchange is bounded by
// HandshakeTimeout so a silent connection cannot hold an inbound slot.
func (t *Transport) acceptHandshake(conn net.Conn) (hello, error) {
	if err := conn.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout)); err != nil {
		return hello{}, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	h, err := readHello(conn)
	if err != nil {
		return hello{}, err
	}
	status, checkErr := checkHello(&h, t.cfg.ID, t.cfg.ClusterID)
	a := ack{version: ProtocolVersion, status: status, cluster: t.cfg.ClusterID, id: t.cfg.ID}
	b := a.marshal()
	// The ack is sent on rejection too, so the dialer can log why instead of seeing a reset.
	_, writeErr := conn.Write(b[:])
	if checkErr != nil {
		return hello{}, checkErr
	}
	if writeErr != nil {
		return hello{}, fmt.Errorf("%w: writing ack: %w", ErrHandshake, writeErr)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return hello{}, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	return h, nil
}

// readFrames reads frames from sender until the connection fails or a frame violates the
// protocol (the error then wraps ErrProtocol), handing each message to Handler in order.
func (t *Transport) readFrames(r io.Reader, sender raft.NodeID, rs *recvStat) error {
	br := bufio.NewReaderSize(r, ioBufferBytes)
	maxBytes := t.cfg.MaxMessageBytes
	var hdr [frameHeaderBytes]byte
	var large []byte // reused for frames that do not fit in br, up to maxRetainedBufferBytes
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return err
		}
		n := int(binary.BigEndian.Uint32(hdr[0:4]))
		sum := binary.BigEndian.Uint32(hdr[4:8])
		if n == 0 {
			return fmt.Errorf("%w: empty frame from peer %d", ErrProtocol, sender)
		}
		if n > maxBytes {
			return fmt.Errorf("%w: frame of %d bytes from peer %d, limit %d: %w",
				ErrProtocol, n, sender, maxBytes, ErrMessageTooLarge)
		}

		var payload []byte
		peeked := n <= br.Size()
		if peeked {
			// Decoding copies every byte field, so the message may point into br's buffer
			// only until Discard below.
			var err error
			if payload, err = br.Peek(n); err != nil {
				return truncated(err)
			}
		} else {
			large = large[:0]
			for len(large) < n {
				chunk := min(n-len(large), largeFrameChunkBytes)
				large = slices.Grow(large, chunk)
				if _, err := io.ReadFull(br, large[len(large):len(large)+chunk]); err != nil {
					return truncated(err)
				}
				large = large[:len(large)+chunk]
			}
			payload = large
		}

		if got := crc32.Checksum(payload, castagnoli); got != sum {
			return fmt.Errorf("%w: frame of %d bytes from peer %d: checksum %#08x, header says %#08x",
				ErrProtocol, n, sender, got, sum)
		}
		m, used, err := wire.DecodeMessage(payload)
		switch {
		case err != nil:
			return fmt.Errorf("%w: frame from peer %d: %w", ErrProtocol, sender, err)
		case used != n:
			return fmt.Errorf("%w: frame from peer %d: %d trailing bytes after the message", ErrProtocol, sender, n-used)
		case m.To != t.cfg.ID:
			return fmt.Errorf("%w: peer %d sent a %v addressed to node %d", ErrProtocol, sender, m.Type, m.To)
		}
		if peeked {
			if _, err := br.Discard(n); err != nil {
				return err
			}
		} else if cap(large) > maxRetainedBufferBytes {
			large = nil
		}
		rs.messages.Add(1)
		t.cfg.Handler(m)
	}
}

// truncated turns the clean EOF of a connection closed mid-frame into ErrUnexpectedEOF. A peer
// that dies mid-write is not a protocol violation: the frame is simply lost.
func truncated(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
