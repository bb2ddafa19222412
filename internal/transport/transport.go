// Package transport carries Raft messages between the nodes of a caucus cluster over TCP.
//
// A Transport owns one listener (inbound connections from every peer) and one long-lived
// outbound connection per peer. Outbound traffic to a peer is written by a single goroutine that
// drains the peer's bounded queue and writes everything it finds in one batch, flushing once per
// drain, so a leader's appends are pipelined instead of paying a round trip each. Messages are
// one-way: replies travel on the other node's outbound connection.
//
// # Invariants
//
//   - Send never blocks. A message that cannot be queued (unknown peer, queue full, peer known
//     to be down, larger than MaxMessageBytes) is dropped, counted, and reported through
//     Config.Unreachable. Raft tolerates loss: it retransmits, and ReportUnreachable makes the
//     leader probe again instead of pipelining into the void.
//   - Messages to one peer are written in Send order on a single TCP connection and handed to
//     Handler in that order by a single goroutine. Across a reconnect, messages may be lost but
//     are never duplicated by the transport; a receiver closes a sender's previous connection
//     when its new one completes the handshake, so at most a message or two from the old one
//     can still be in Handler while the new one's first arrive.
//   - Inbound connections are accepted from any node of the cluster, whether or not it has
//     been added as a peer: membership is the caller's business, not the transport's. There
//     is no authentication or encryption; run it on a trusted network.
//   - Every connection starts with a handshake naming the protocol version, the cluster id and
//     both node ids. A node never exchanges messages with a node of another cluster, and never
//     delivers a message addressed to another node.
//   - Every frame carries its length and a CRC-32C of its payload. A frame longer than
//     MaxMessageBytes, with a bad checksum, or that does not decode as exactly one message
//     closes the connection; nothing from it reaches Handler.
//   - Every resource is bounded: queued messages and bytes per peer (QueueMessages,
//     QueueBytes), frame size (MaxMessageBytes), inbound connections (MaxInboundConns), the
//     time a connection may take to handshake (HandshakeTimeout) and a socket write may block
//     (WriteTimeout). Memory held per inbound connection grows only with bytes received.
//   - Close stops every goroutine the transport started and closes every connection and the
//     listener before returning.
//
// # Wire format
//
// The dialer sends a fixed-size hello (magic, ProtocolVersion, cluster id, sender id, target
// id); the acceptor answers with a fixed-size ack (magic, version, status, its cluster id and
// id) and closes the connection unless the status is OK. Then the dialer sends frames
// [u32 length][u32 crc32c(payload)][payload = internal/wire encoding of one raft.Message],
// big-endian, and the acceptor never writes again.
//
// All nodes of a cluster should use the same MaxMessageBytes: a frame that the sender allows
// and the receiver does not costs a reconnect each time Raft retransmits it.
package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caucus/caucus/raft"
)

// Defaults for the zero fields of Config.
const (
	// DefaultMaxMessageBytes bounds one encoded message. The Raft core bounds appends by
	// MaxMsgBytes (1 MiB) and snapshot chunks by MaxSnapshotChunkBytes (1 MiB); 8 MiB leaves
	// room for a large single entry while keeping a hostile peer from making us buffer more.
	DefaultMaxMessageBytes = 8 << 20
	// DefaultQueueMessages bounds the messages waiting for one peer's writer. At the core's
	// default 256 inflight appends plus heartbeats and responses it is never reached by a
	// healthy peer; it is reached by a slow one, whose messages are then dropped.
	DefaultQueueMessages = 4096
	// DefaultQueueBytes bounds the encoded bytes queued for one peer, so that QueueMessages
	// large messages cannot pin gigabytes. It is twice the core's default MaxInflightBytes
	// (32 MiB), so a healthy follower's full pipeline always fits.
	DefaultQueueBytes = 64 << 20
	// DefaultDialTimeout bounds one TCP connect.
	DefaultDialTimeout = 1 * time.Second
	// DefaultHandshakeTimeout bounds the hello/ack exchange on both sides, so a connection
	// that never speaks cannot hold an inbound slot or stall a writer.
	DefaultHandshakeTimeout = 5 * time.Second
	// UnackedTimeout is how long data written to a peer may stay unacknowledged by its kernel
	// before the connection fails (TCP_USER_TIMEOUT, Linux). A peer whose machine vanished is
	// then reported unreachable (Config.Unreachable) in seconds, so that the leader probes it
	// instead of pipelining into a connection that TCP would keep retransmitting on for a
	// quarter of an hour.
	UnackedTimeout = 20 * time.Second
	// DefaultWriteTimeout bounds each socket write. A peer that stops reading for this long is
	// treated as down: the connection is dropped and redialed.
	DefaultWriteTimeout = 5 * time.Second
	// DefaultBackoffMin and DefaultBackoffMax bound the delay between dial attempts.
	DefaultBackoffMin = 50 * time.Millisecond
	DefaultBackoffMax = 2 * time.Second
	// DefaultMaxInboundConns bounds inbound connections, handshaken or not. A cluster needs one
	// per peer; the bound only matters against a misbehaving network neighbour.
	DefaultMaxInboundConns = 256

	// MaxMessageBytesLimit is the largest accepted Config.MaxMessageBytes: the frame length is
	// a u32 and wire caps byte fields at wire.MaxFieldBytes.
	MaxMessageBytesLimit = 1 << 30
)

// Internal limits.
const (
	// ioBufferBytes is the size of each connection's bufio buffer. Messages that fit are encoded
	// in place in the writer's buffer and read in place from the reader's buffer.
	ioBufferBytes = 64 << 10
	// maxRetainedBufferBytes bounds the scratch buffers kept between messages for frames
	// larger than ioBufferBytes; a larger one is allocated for that frame only, so one snapshot
	// chunk does not pin megabytes per connection forever.
	maxRetainedBufferBytes = 1 << 20
	// dropLogInterval rate-limits the warning logged when messages to a peer are dropped; the
	// counters in Stats are exact.
	dropLogInterval = time.Second
)

// Config configures a Transport. Zero durations and sizes take the defaults above.
type Config struct {
	// ID is this node's id; it must not be raft.None.
	ID raft.NodeID
	// ClusterID names the cluster; connections between nodes with different ids are refused.
	// It must not be 0, so that an unset id cannot silently match another unset id.
	ClusterID uint64
	// Listener accepts inbound connections. It is already bound (the caller owns the choice of
	// address) and the Transport closes it on Close.
	Listener net.Listener
	// Handler receives every message from every peer. It is called from the transport's
	// receive goroutines, one per inbound connection, so it must be safe for concurrent use,
	// and it should return quickly (hand the message to the node's loop): while it runs, that
	// peer's connection is not read, TCP pushes back, and the peer's queue fills and drops.
	// It must not call Close, which waits for it. Messages it receives own their byte slices.
	Handler func(raft.Message)
	// Unreachable, if set, is called with a peer's id when messages to it are dropped because
	// the peer is unknown, its connection is down, its queue is full, or a write failed. The
	// node should call ReportUnreachable. It is called from Send (on the caller's goroutine)
	// and from the writer goroutines, without transport locks held, at most once per peer per
	// Send call and once per discarded backlog. It must be safe for concurrent use, must not
	// block, and must not call RemovePeer or Close (both wait for the writer that calls it).
	Unreachable func(raft.NodeID)
	// MaxMessageBytes bounds one encoded message. Larger messages are dropped by Send and
	// larger frames close the connection that carries them. Default DefaultMaxMessageBytes.
	MaxMessageBytes int
	// QueueMessages bounds the messages queued for one peer. Default DefaultQueueMessages.
	QueueMessages int
	// QueueBytes bounds the encoded bytes queued for one peer; a message that would exceed it
	// is dropped, except that an empty queue always accepts one message. Default
	// DefaultQueueBytes.
	QueueBytes int
	// DialTimeout bounds one TCP connect. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the handshake. Default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds each write to a peer's socket (at most one 64 KiB buffer, or one
	// message larger than that): a peer that accepts nothing for this long is treated as down.
	// Default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// BackoffMin and BackoffMax bound the delay between dial attempts to a peer that is down.
	// The delay doubles per failed attempt, with jitter seeded from the node and peer ids.
	BackoffMin, BackoffMax time.Duration
	// MaxInboundConns bounds concurrent inbound connections. Default DefaultMaxInboundConns.
	MaxInboundConns int
	// Logger receives the transport's events. Nil means slog.Default().
	Logger *slog.Logger
}

func (c *Config) withDefaults() (Config, error) {
	cfg := *c
	setDefault(&cfg.MaxMessageBytes, DefaultMaxMessageBytes)
	setDefault(&cfg.QueueMessages, DefaultQueueMessages)
	setDefault(&cfg.QueueBytes, DefaultQueueBytes)
	setDefault(&cfg.DialTimeout, DefaultDialTimeout)
	setDefault(&cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	setDefault(&cfg.WriteTimeout, DefaultWriteTimeout)
	setDefault(&cfg.BackoffMin, DefaultBackoffMin)
	setDefault(&cfg.BackoffMax, max(DefaultBackoffMax, cfg.BackoffMin))
	setDefault(&cfg.MaxInboundConns, DefaultMaxInboundConns)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.ID == raft.None:
		return cfg, errors.New("transport: config: ID must not be 0 (raft.None)")
	case cfg.ClusterID == 0:
		return cfg, errors.New("transport: config: ClusterID must not be 0")
	case cfg.Listener == nil:
		return cfg, errors.New("transport: config: Listener is required")
	case cfg.Handler == nil:
		return cfg, errors.New("transport: config: Handler is required")
	case cfg.MaxMessageBytes < 0 || cfg.MaxMessageBytes > MaxMessageBytesLimit:
		return cfg, fmt.Errorf("transport: config: MaxMessageBytes %d must be in [1, %d]", cfg.MaxMessageBytes, MaxMessageBytesLimit)
	case cfg.QueueMessages < 0:
		return cfg, fmt.Errorf("transport: config: QueueMessages %d must be > 0", cfg.QueueMessages)
	case cfg.QueueBytes < 0:
		return cfg, fmt.Errorf("transport: config: QueueBytes %d must be > 0", cfg.QueueBytes)
	case cfg.MaxInboundConns < 0:
		return cfg, fmt.Errorf("transport: config: MaxInboundConns %d must be > 0", cfg.MaxInboundConns)
	case cfg.DialTimeout < 0 || cfg.HandshakeTimeout < 0 || cfg.WriteTimeout < 0:
		return cfg, errors.New("transport: config: timeouts must be > 0")
	case cfg.BackoffMin < 0 || cfg.BackoffMax < cfg.BackoffMin:
		return cfg, fmt.Errorf("transport: config: need 0 < BackoffMin %v <= BackoffMax %v", cfg.BackoffMin, cfg.BackoffMax)
	}
	return cfg, nil
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// Transport sends and receives Raft messages. Its methods are safe for concurrent use.
type Transport struct {
	cfg Config
	log *slog.Logger

	// ctx is cancelled by Close; every peer's context derives from it.
	ctx    context.Context
	cancel context.CancelFunc

	startOnce sync.Once
	closeOnce sync.Once
	closed    atomic.Bool
	closeErr  error
	wg        sync.WaitGroup // accept loop, inbound connections, peer writers

	// mu guards the maps. Lock order: mu before peer.mu. Handler and Unreachable are never
	// called with it held.
	mu      sync.RWMutex
	peers   map[raft.NodeID]*peer
	conns   map[*inConn]struct{}      // every open inbound connection, handshaken or not
	inbound map[raft.NodeID]*inConn   // the current handshaken connection per sender
	recv    map[raft.NodeID]*recvStat // per-sender receive counters, kept across connections

	unknownDrops   atomic.Uint64
	protocolErrors atomic.Uint64
	rejectedConns  atomic.Uint64
}

// New validates cfg, fills in defaults and returns a Transport that is not yet accepting
// connections (see Start). Peers may be added and messages sent before Start. On error the
// Listener is left open for the caller to close.
func New(cfg Config) (*Transport, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Transport{
		cfg:     c,
		log:     c.Logger.With("component", "transport", "member", c.ID),
		ctx:     ctx,
		cancel:  cancel,
		peers:   make(map[raft.NodeID]*peer),
		conns:   make(map[*inConn]struct{}),
		inbound: make(map[raft.NodeID]*inConn),
		recv:    make(map[raft.NodeID]*recvStat),
	}, nil
}

// Addr returns the listener's address.
func (t *Transport) Addr() net.Addr { return t.cfg.Listener.Addr() }

// Start starts accepting inbound connections. It is separate from New so that the Handler's
// owner can be wired up with the Transport before messages arrive. Calls after the first, or
// after Close, do nothing.
func (t *Transport) Start() {
	t.startOnce.Do(func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.closed.Load() {
			return
		}
		t.wg.Add(1)
		go t.acceptLoop()
	})
}

// AddPeer makes peer id reachable at addr (host:port). A new peer's writer starts at once and
// connects in the background; for a known peer with another address, AddPeer behaves as
// UpdatePeer; for a known peer with the same address it does nothing. So the caller can simply
// call AddPeer for every member whenever membership is (re)applied, as after a restart.
//
// Invalid calls (id raft.None or this node's id, an empty address, after Close) are
// programming errors: they are logged and ignored.
func (t *Transport) AddPeer(id raft.NodeID, addr string) {
	if id == raft.None || id == t.cfg.ID || addr == "" {
		t.log.Error("invalid AddPeer ignored (programming error)", "peer", id, "addr", addr)
		return
	}
	t.mu.Lock()
	if t.closed.Load() {
		t.mu.Unlock()
		t.log.Debug("AddPeer after Close ignored", "peer", id)
		return
	}
	p, ok := t.peers[id]
	if !ok {
		p = newPeer(t, id, addr)
		t.peers[id] = p
		t.wg.Add(1)
		go p.run()
	}
	t.mu.Unlock()
	if !ok {
		t.log.Info("peer added", "peer", id, "addr", addr)
	} else if p.setAddress(addr) {
		t.log.Info("peer address updated", "peer", id, "addr", addr)
	}
}

// UpdatePeer changes the address of peer id. Messages sent after it returns go to the new
// address: an open connection to the old one is closed once the batch being written (if any)
// is done, and the writer dials the new one at once.
func (t *Transport) UpdatePeer(id raft.NodeID, addr string) error {
	if addr == "" {
		return fmt.Errorf("transport: update peer %d: empty address", id)
	}
	t.mu.RLock()
	p, ok := t.peers[id]
	closed := t.closed.Load()
	t.mu.RUnlock()
	switch {
	case closed:
		return fmt.Errorf("transport: update peer %d: %w", id, ErrClosed)
	case !ok:
		return fmt.Errorf("transport: update peer %d: unknown peer", id)
	}
	if p.setAddress(addr) {
		t.log.Info("peer address updated", "peer", id, "addr", addr)
	}
	return nil
}

// RemovePeer forgets peer id: its queue is discarded (without reporting it unreachable), its
// connection closed and its writer stopped before RemovePeer returns. Later messages to it are
// dropped as to an unknown peer. Removing an unknown peer does nothing.
func (t *Transport) RemovePeer(id raft.NodeID) {
	t.mu.Lock()
	p, ok := t.peers[id]
	delete(t.peers, id)
	if t.inbound[id] == nil {
		delete(t.recv, id)
	}
	t.mu.Unlock()
	if !ok {
		return
	}
	p.cancel()
	<-p.done
	t.log.Info("peer removed", "peer", id)
}

// Send queues msgs for their recipients and returns without blocking. The messages' byte
// slices (entry data, contexts, snapshot chunks) are retained until written and must not be
// modified after Send; the Raft core never modifies them.
//
// A message is dropped, and its recipient reported to Config.Unreachable, when the recipient is
// not a known peer, when the peer's last connection attempt failed (it is down and in
// backoff), when its queue is full (QueueMessages, QueueBytes), or when it encodes to more than
// MaxMessageBytes. A message addressed to this node or to raft.None is a programming error: it
// is logged and dropped. After Close, Send drops everything silently.
func (t *Transport) Send(msgs []raft.Message) {
	if len(msgs) == 0 || t.closed.Load() {
		return
	}
	var unreachableBuf [8]raft.NodeID
	unreachable := unreachableBuf[:0]
	t.mu.RLock()
	// Consecutive messages to the same peer are queued under one lock acquisition, so the
	// writer sees them in a single drain.
	for i := 0; i < len(msgs); {
		to := msgs[i].To
		j := i + 1
		for j < len(msgs) && msgs[j].To == to {
			j++
		}
		if t.sendRun(to, msgs[i:j]) && !containsID(unreachable, to) {
			unreachable = append(unreachable, to)
		}
		i = j
	}
	t.mu.RUnlock()
	if t.cfg.Unreachable != nil {
		for _, id := range unreachable {
			t.cfg.Unreachable(id)
		}
	}
}

// sendRun queues msgs, all addressed to to, and reports whether any was dropped for a reason
// that the node should hear about. t.mu is read-locked.
func (t *Transport) sendRun(to raft.NodeID, msgs []raft.Message) (dropped bool) {
	if to == t.cfg.ID || to == raft.None {
		t.log.Error("message to self or to no node is not sent (programming error)",
			"to", to, "type", msgs[0].Type.String(), "count", len(msgs))
		return false
	}
	p := t.peers[to]
	if p == nil {
		t.unknownDrops.Add(uint64(len(msgs)))
		t.log.Debug("dropping messages to unknown peer", "peer", to, "count", len(msgs))
		return true
	}
	return p.enqueue(msgs)
}

func containsID(ids []raft.NodeID, id raft.NodeID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// Close stops accepting, closes every connection and the listener, stops every goroutine and
// waits for them, including Handler and Unreachable calls in progress (so neither may wait for
// Close). Queued messages are discarded. It is idempotent: later calls return the first call's
// result.
func (t *Transport) Close() error {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed.Store(true)
		t.cancel() // stops writers and closes their connections (context.AfterFunc in dial)
		for c := range t.conns {
			c.conn.Close()
		}
		t.mu.Unlock()
		if err := t.cfg.Listener.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.closeErr = fmt.Errorf("transport: closing listener: %w", err)
		}
		t.wg.Wait()
		t.log.Info("transport closed")
	})
	return t.closeErr
}

// PeerStats describes one peer for observability. Counters are cumulative.
type PeerStats struct {
	Addr        string // current address; empty for a node known only from inbound traffic
	Connected   bool   // the outbound connection is up (handshake done)
	Queued      int    // messages waiting for the writer
	QueuedBytes int    // their encoded size
	Sent        uint64 // messages written and flushed
	Dropped     uint64 // messages dropped: queue full, peer down, oversize, write failed, left queued on disconnect
	Flushes     uint64 // batches written; Sent/Flushes is the mean batch size
	BytesSent   uint64 // frame bytes written, headers included
	Dials       uint64 // connection attempts
	Received    uint64 // messages received from this node and handed to Handler
}

// Stats is a snapshot of the transport's counters.
type Stats struct {
	// Peers has an entry for every added peer and for every node with an open inbound
	// connection (with only Received set if it is not a peer).
	Peers map[raft.NodeID]PeerStats
	// UnknownPeerDrops counts messages dropped because their recipient was not a peer.
	UnknownPeerDrops uint64
	// ProtocolErrors counts inbound connections closed for a protocol violation or a failed
	// handshake.
	ProtocolErrors uint64
	// RejectedConns counts inbound connections refused because MaxInboundConns were open.
	RejectedConns uint64
	// InboundConns is the number of inbound connections open now.
	InboundConns int
}

// Stats returns the current counters.
func (t *Transport) Stats() Stats {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s := Stats{
		Peers:            make(map[raft.NodeID]PeerStats, len(t.peers)),
		UnknownPeerDrops: t.unknownDrops.Load(),
		ProtocolErrors:   t.protocolErrors.Load(),
		RejectedConns:    t.rejectedConns.Load(),
		InboundConns:     len(t.conns),
	}
	for id, p := range t.peers {
		s.Peers[id] = p.stats()
	}
	for id, r := range t.recv {
		ps := s.Peers[id]
		ps.Received = r.messages.Load()
		s.Peers[id] = ps
	}
	return s
}
