package transport

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"reflect"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caucus/caucus/raft"
)

// Three nodes each send N messages to both others, interleaved and in Send calls of varying
// size; every receiver must see each sender's messages complete, unaltered and in order.
func TestExchangeInOrder(t *testing.T) {
	const perPeer = 500
	nodes := []*node{newNode(t, 1, nil), newNode(t, 2, nil), newNode(t, 3, nil)}
	connect(t, nodes...)

	sent := make(map[[2]raft.NodeID][]raft.Message)
	for _, src := range nodes {
		var batch []raft.Message
		for i := range perPeer {
			for _, dst := range nodes {
				if dst == src {
					continue
				}
				m := appMsg(src.id, dst.id, uint64(i+1), i%300)
				m.Context = []byte(fmt.Sprintf("ctx-%d", i))
				sent[[2]raft.NodeID{src.id, dst.id}] = append(sent[[2]raft.NodeID{src.id, dst.id}], m)
				batch = append(batch, m)
			}
			if len(batch) >= 1+i%17 {
				src.Send(batch)
				batch = nil
			}
		}
		src.Send(batch)
	}

	for _, dst := range nodes {
		msgs := dst.in.waitFor(t, waitTimeout, fmt.Sprintf("node %d to receive all", dst.id), func(ms []raft.Message) bool {
			return len(ms) == perPeer*(len(nodes)-1)
		})
		for _, src := range nodes {
			if src == dst {
				continue
			}
			var got []raft.Message
			for _, m := range msgs {
				if m.From == src.id {
					got = append(got, m)
				}
			}
			want := sent[[2]raft.NodeID{src.id, dst.id}]
			if len(got) != len(want) {
				t.Fatalf("%d->%d: got %d messages, want %d", src.id, dst.id, len(got), len(want))
			}
			for i := range want {
				if !reflect.DeepEqual(normalize(got[i]), normalize(want[i])) {
					t.Fatalf("%d->%d: message %d differs:\n got %+v\nwant %+v", src.id, dst.id, i, got[i], want[i])
				}
			}
		}
	}
	for _, src := range nodes {
		for _, dst := range nodes {
			if dst == src {
				continue
			}
			eventually(t, "sends to be counted", func() bool { return src.Stats().Peers[dst.id].Sent == perPeer })
			ps := src.Stats().Peers[dst.id]
			if ps.Sent != perPeer || ps.Dropped != 0 || !ps.Connected || ps.Received != perPeer {
				t.Errorf("node %d stats for peer %d = %+v; want Sent=Received=%d, no drops, connected", src.id, dst.id, ps, perPeer)
			}
		}
	}
}

// normalize maps empty byte slices to nil, as the wire encoding does.
func normalize(m raft.Message) raft.Message {
	if len(m.Context) == 0 {
		m.Context = nil
	}
	m.Entries = append([]raft.Entry(nil), m.Entries...)
	for i := range m.Entries {
		if len(m.Entries[i].Data) == 0 {
			m.Entries[i].Data = nil
		}
	}
	return m
}

// One Send of many messages to a connected peer is written as a single flush, even though
// the batch is several times larger than the write buffer.
func TestBatchingOneFlushPerDrain(t *testing.T) {
	a, b := newNode(t, 1, nil), newNode(t, 2, nil)
	connect(t, a, b)

	a.Send([]raft.Message{appMsg(1, 2, 0, 10)})
	b.in.waitFor(t, waitTimeout, "first message", func(ms []raft.Message) bool { return len(ms) == 1 })
	// The receiver can see a message before the sender's Flush returns and counts it.
	eventually(t, "the first flush to be counted", func() bool { return a.Stats().Peers[2].Sent == 1 })
	if f := a.Stats().Peers[2].Flushes; f != 1 {
		t.Fatalf("flushes after one message = %d, want 1", f)
	}

	const n = 1000
	batch := make([]raft.Message, n)
	for i := range batch {
		batch[i] = appMsg(1, 2, uint64(i+1), 200)
	}
	a.Send(batch)
	b.in.waitFor(t, waitTimeout, "the batch", func(ms []raft.Message) bool { return len(ms) == n+1 })
	eventually(t, "the batch to be counted", func() bool { return a.Stats().Peers[2].Sent == n+1 })
	st := a.Stats().Peers[2]
	if st.Flushes != 2 || st.Sent != n+1 {
		t.Fatalf("after a batch of %d: Flushes=%d Sent=%d, want 2 and %d", n, st.Flushes, st.Sent, n+1)
	}
	if st.BytesSent < 3*ioBufferBytes {
		t.Fatalf("BytesSent=%d: the batch should exceed the write buffer several times", st.BytesSent)
	}
}

// Many small Sends from a busy caller are coalesced: the writer drains whatever accumulated
// while it was writing, so there are far fewer flushes than messages.
func TestBatchingCoalescesConcurrentSends(t *testing.T) {
	a, b := newNode(t, 1, nil), newNode(t, 2, nil)
	connect(t, a, b)
	const n = 20000
	for i := range n {
		a.Send([]raft.Message{appMsg(1, 2, uint64(i+1), 64)})
		if i%2000 == 1999 {
			// Stay under the queue bound: this test is about coalescing, not dropping.
			b.in.waitFor(t, waitTimeout, "progress", func(ms []raft.Message) bool { return len(ms) >= i+1-2000 })
		}
	}
	msgs := b.in.waitFor(t, waitTimeout, "all", func(ms []raft.Message) bool { return len(ms) == n })
	eventually(t, "the last flush to be counted", func() bool { return a.Stats().Peers[2].Sent == n })
	for i, m := range msgs {
		if m.Index != uint64(i+1) {
			t.Fatalf("message %d has index %d: out of order", i, m.Index)
		}
	}
	st := a.Stats().Peers[2]
	if st.Sent != n || st.Flushes >= n {
		t.Fatalf("Sent=%d Flushes=%d: want %d sent in fewer flushes", st.Sent, st.Flushes, n)
	}
	t.Logf("%d messages in %d flushes (%.1f per flush)", st.Sent, st.Flushes, float64(st.Sent)/float64(st.Flushes))
}

// When the remote node restarts on the same address, the sender notices, redials and delivers
// again without any action from the caller.
func TestReconnectAfterPeerRestart(t *testing.T) {
	a := newNode(t, 1, nil)
	b := newNode(t, 2, nil)
	connect(t, a, b)
	a.Send([]raft.Message{appMsg(1, 2, 1, 10)})
	b.in.waitFor(t, waitTimeout, "before restart", func(ms []raft.Message) bool { return len(ms) == 1 })

	addr := b.addr
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// The idle connection's monitor notices the close without anything being sent.
	eventually(t, "a to see the connection drop", func() bool { return !a.Stats().Peers[2].Connected })

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("relisten on %s: %v", addr, err)
	}
	b2 := newNode(t, 2, ln)
	// Messages sent while a is between connections may be dropped (Raft retransmits), so keep
	// sending, as Raft would, until one gets through.
	deadline := time.Now().Add(waitTimeout)
	for i := uint64(2); ; i++ {
		a.Send([]raft.Message{appMsg(1, 2, i, 10)})
		if b2.in.tryWait(20*time.Millisecond, func(ms []raft.Message) bool { return len(ms) > 0 }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message delivered after restart; a's stats: %+v", a.Stats().Peers[2])
		}
	}
	msgs := b2.in.snapshot()
	for i := 1; i < len(msgs); i++ {
		if msgs[i].Index <= msgs[i-1].Index {
			t.Fatalf("out of order after reconnect: %d then %d", msgs[i-1].Index, msgs[i].Index)
		}
	}
	if d := a.Stats().Peers[2].Dials; d < 2 {
		t.Fatalf("Dials=%d, want >= 2", d)
	}
}

// A peer whose queue is full drops further messages and is reported unreachable once per Send.
func TestQueueFullDropsAndReportsUnreachable(t *testing.T) {
	// A listener that never accepts: the TCP connect succeeds from the backlog, but the
	// handshake never completes, so the writer stays connecting and messages stay queued.
	silent := listen(t)
	defer silent.Close()
	const limit = 8
	a := newNode(t, 1, nil, func(c *Config) {
		c.QueueMessages = limit
		c.HandshakeTimeout = time.Hour
	})
	a.AddPeer(2, silent.Addr().String())
	msgs := make([]raft.Message, limit)
	for i := range msgs {
		msgs[i] = appMsg(1, 2, uint64(i), 10)
	}
	a.Send(msgs)
	select {
	case id := <-a.unreachable:
		t.Fatalf("peer %d reported unreachable with the queue not full", id)
	default:
	}
	a.Send(msgs[:5])
	select {
	case id := <-a.unreachable:
		if id != 2 {
			t.Fatalf("Unreachable(%d), want 2", id)
		}
	default:
		t.Fatal("queue-full drop did not report the peer unreachable")
	}
	select {
	case id := <-a.unreachable:
		t.Fatalf("second Unreachable(%d) for one Send call", id)
	default:
	}
	st := a.Stats().Peers[2]
	if st.Queued != limit || st.Dropped != 5 || st.Connected {
		t.Fatalf("stats %+v: want Queued=%d Dropped=5, not connected", st, limit)
	}

	// A message to a node that is not a peer is dropped and reported the same way.
	a.Send([]raft.Message{appMsg(1, 9, 1, 1)})
	if id := <-a.unreachable; id != 9 {
		t.Fatalf("Unreachable(%d), want 9", id)
	}
	if got := a.Stats().UnknownPeerDrops; got != 1 {
		t.Fatalf("UnknownPeerDrops=%d, want 1", got)
	}
}

// A peer that cannot be reached is reported unreachable; while it is down (backing off) Send
// drops at once instead of queueing stale messages.
func TestPeerDownDropsImmediately(t *testing.T) {
	ln := listen(t)
	deadAddr := ln.Addr().String()
	ln.Close()
	a := newNode(t, 1, nil, func(c *Config) { c.BackoffMin, c.BackoffMax = time.Hour, time.Hour })
	a.Send([]raft.Message{appMsg(1, 2, 1, 1)}) // unknown yet: reported, not queued
	if id := <-a.unreachable; id != 2 {
		t.Fatalf("Unreachable(%d), want 2", id)
	}
	a.AddPeer(2, deadAddr)
	a.log.waitLine(t, "cannot connect to peer", "refused")
	a.Send([]raft.Message{appMsg(1, 2, 2, 1), appMsg(1, 2, 3, 1)})
	// The dial failed and the hour-long backoff started, so this drop is synchronous.
	select {
	case id := <-a.unreachable:
		if id != 2 {
			t.Fatalf("Unreachable(%d), want 2", id)
		}
	default:
		t.Fatal("message to a down peer was not reported unreachable by Send")
	}
	st := a.Stats().Peers[2]
	if st.Connected || st.Queued != 0 || st.Sent != 0 || st.Dropped != 2 || st.Dials != 1 {
		t.Fatalf("stats %+v: want down, nothing queued or sent, 2 dropped, 1 dial", st)
	}
}

// A message larger than MaxMessageBytes is refused by Send; one that the sender allows but the
// receiver does not is refused by the receiver, which closes the connection.
func TestOversizeMessages(t *testing.T) {
	t.Run("send", func(t *testing.T) {
		a := newNode(t, 1, nil, func(c *Config) { c.MaxMessageBytes = 1024 })
		b := newNode(t, 2, nil)
		connect(t, a, b)
		a.Send([]raft.Message{appMsg(1, 2, 1, 2048), appMsg(1, 2, 2, 100)})
		if id := <-a.unreachable; id != 2 {
			t.Fatalf("Unreachable(%d), want 2", id)
		}
		a.log.waitLine(t, "oversize", "limit=1024", ErrMessageTooLarge.Error())
		msgs := b.in.waitFor(t, waitTimeout, "the small message", func(ms []raft.Message) bool { return len(ms) == 1 })
		if msgs[0].Index != 2 {
			t.Fatalf("received index %d, want 2 (the oversize one must be dropped)", msgs[0].Index)
		}
		eventually(t, "the send to be counted", func() bool { return a.Stats().Peers[2].Sent == 1 })
		if st := a.Stats().Peers[2]; st.Dropped != 1 || st.Sent != 1 {
			t.Fatalf("stats %+v: want 1 dropped, 1 sent", st)
		}
	})
	t.Run("receive", func(t *testing.T) {
		a := newNode(t, 1, nil)
		b := newNode(t, 2, nil, func(c *Config) { c.MaxMessageBytes = 1024 })
		connect(t, a, b)
		a.Send([]raft.Message{appMsg(1, 2, 1, 4096)})
		b.log.waitLine(t, "closing inbound connection", ErrMessageTooLarge.Error(), "limit 1024")
		if got := b.Stats().ProtocolErrors; got != 1 {
			t.Fatalf("ProtocolErrors=%d, want 1", got)
		}
		// The sender reconnects; small messages flow again.
		deadline := time.Now().Add(waitTimeout)
		for i := uint64(2); !b.in.tryWait(20*time.Millisecond, func(ms []raft.Message) bool { return len(ms) > 0 }); i++ {
			if time.Now().After(deadline) {
				t.Fatal("no small message delivered after the oversize frame")
			}
			a.Send([]raft.Message{appMsg(1, 2, i, 10)})
		}
		for _, m := range b.in.snapshot() {
			if len(m.Entries[0].Data) > 10 {
				t.Fatalf("oversize message delivered: %d bytes", len(m.Entries[0].Data))
			}
		}
	})
}

func goodHello() hello {
	return hello{version: ProtocolVersion, cluster: testCluster, from: 1, to: 2}
}

// Raw connections speaking a broken protocol are answered (if the handshake got far enough to
// deserve an answer) and closed; nothing they send reaches the Handler, the counters record
// them, and the transport keeps working for well-behaved peers.
func TestHostileInbound(t *testing.T) {
	b := newNode(t, 2, nil, func(c *Config) { c.MaxMessageBytes = 4096 })
	valid := encode(appMsg(1, 2, 7, 10))

	handshakeCases := []struct {
		name   string
		mutate func(h *hello)
		status ackStatus
	}{
		{"version", func(h *hello) { h.version = 99 }, ackBadVersion},
		{"reserved", func(h *hello) { h.reserved = 1 }, ackBadReserved},
		{"cluster", func(h *hello) { h.cluster = 0xBAD }, ackClusterMismatch},
		{"target", func(h *hello) { h.to = 3 }, ackWrongNode},
		{"zero sender", func(h *hello) { h.from = 0 }, ackBadSender},
		{"self sender", func(h *hello) { h.from = 2 }, ackBadSender},
	}
	wantErrors := uint64(0)
	for _, tc := range handshakeCases {
		t.Run("handshake "+tc.name, func(t *testing.T) {
			c := rawDial(t, b.addr)
			h := goodHello()
			tc.mutate(&h)
			hb := h.marshal()
			mustWrite(t, c, hb[:])
			a, err := readAck(c)
			if err != nil {
				t.Fatal(err)
			}
			if a.status != tc.status || a.id != 2 || a.cluster != testCluster {
				t.Fatalf("ack %+v, want status %v from node 2 of cluster %#x", a, tc.status, testCluster)
			}
			expectClosedByPeer(t, c)
			wantErrors++
		})
	}
	// The cluster mismatch is logged as an error naming both cluster ids.
	b.log.waitLine(t, "ERROR", "cluster id mismatch", "0xbad", fmt.Sprintf("%#x", testCluster))

	t.Run("bad magic", func(t *testing.T) {
		c := rawDial(t, b.addr)
		mustWrite(t, c, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n....."))
		expectClosedByPeer(t, c)
		wantErrors++
	})

	frameCases := []struct {
		name  string
		bytes []byte
		log   string
	}{
		{"bad checksum", func() []byte { f := frame(valid); f[len(f)-1] ^= 1; return f }(), "checksum"},
		{"zero length", make([]byte, frameHeaderBytes), "empty frame"},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, ErrMessageTooLarge.Error()},
		{"undecodable", frame([]byte{0xff, 0x01, 0x02}), "malformed"},
		{"trailing bytes", frame(append(append([]byte(nil), valid...), 0)), "trailing"},
		{"misaddressed", frame(encode(appMsg(1, 3, 7, 10))), "addressed to node 3"},
		{"valid then garbage", append(frame(valid), 0, 0, 0, 5, 1, 2, 3, 4, 9, 9, 9, 9, 9), "checksum"},
	}
	for _, tc := range frameCases {
		t.Run("frame "+tc.name, func(t *testing.T) {
			c := rawDial(t, b.addr)
			h := goodHello()
			hb := h.marshal()
			mustWrite(t, c, hb[:])
			if a, err := readAck(c); err != nil || a.status != ackOK {
				t.Fatalf("handshake: %+v %v", a, err)
			}
			mustWrite(t, c, tc.bytes)
			expectClosedByPeer(t, c)
			wantErrors++
			b.log.waitLine(t, "closing inbound connection", tc.log)
		})
	}

	t.Run("truncated frame", func(t *testing.T) {
		c := rawDial(t, b.addr)
		h := goodHello()
		hb := h.marshal()
		mustWrite(t, c, hb[:])
		if _, err := readAck(c); err != nil {
			t.Fatal(err)
		}
		f := frame(valid)
		mustWrite(t, c, f[:len(f)-3])
		c.Close() // a peer dying mid-frame: the frame is lost, not a protocol violation
		eventually(t, "the connection to be released", func() bool { return b.Stats().InboundConns == 0 })
	})

	if got := b.Stats().ProtocolErrors; got != wantErrors {
		t.Fatalf("ProtocolErrors=%d, want %d", got, wantErrors)
	}
	// Only the one valid frame (from "valid then garbage") was delivered.
	if msgs := b.in.snapshot(); len(msgs) != 1 || msgs[0].Index != 7 {
		t.Fatalf("handler received %d messages %+v, want only the valid one", len(msgs), msgs)
	}
	// The transport still serves a well-behaved peer.
	a := newNode(t, 1, nil)
	connect(t, a, b)
	a.Send([]raft.Message{appMsg(1, 2, 8, 10)})
	b.in.waitFor(t, waitTimeout, "a good message", func(ms []raft.Message) bool { return len(ms) == 2 })
}

// A connection that never completes the handshake is closed after HandshakeTimeout.
func TestHandshakeTimeout(t *testing.T) {
	b := newNode(t, 2, nil, func(c *Config) { c.HandshakeTimeout = 200 * time.Millisecond })
	c := rawDial(t, b.addr)
	mustWrite(t, c, []byte("CAUH")) // a partial hello, then silence
	expectClosedByPeer(t, c)
	if got := b.Stats().ProtocolErrors; got != 1 {
		t.Fatalf("ProtocolErrors=%d, want 1", got)
	}
	b.log.waitLine(t, "rejected inbound connection", "timeout")
}

// Connections beyond MaxInboundConns are refused at once; a freed slot can be used again.
func TestInboundConnLimit(t *testing.T) {
	b := newNode(t, 2, nil, func(c *Config) {
		c.HandshakeTimeout = time.Hour
		c.MaxInboundConns = 2
	})
	c1 := rawDial(t, b.addr)
	rawDial(t, b.addr)
	eventually(t, "two inbound connections", func() bool { return b.Stats().InboundConns == 2 })
	c3 := rawDial(t, b.addr)
	expectClosedByPeer(t, c3)
	if got := b.Stats().RejectedConns; got != 1 {
		t.Fatalf("RejectedConns=%d, want 1", got)
	}
	b.log.waitLine(t, "refusing inbound connection", "limit=2")
	c1.Close()
	eventually(t, "a slot to be released", func() bool { return b.Stats().InboundConns == 1 })
	a := newNode(t, 1, nil)
	connect(t, a, b)
	a.Send([]raft.Message{appMsg(1, 2, 1, 10)})
	b.in.waitFor(t, waitTimeout, "a message", func(ms []raft.Message) bool { return len(ms) == 1 })
}

// Nodes of different clusters refuse each other, and both sides log an error naming both ids.
func TestClusterMismatch(t *testing.T) {
	a := newNode(t, 1, nil)
	b := newNode(t, 2, nil, func(c *Config) { c.ClusterID = 0xD1FF })
	a.AddPeer(2, b.addr)
	a.Send([]raft.Message{appMsg(1, 2, 1, 1)})
	both := []string{"cluster id mismatch", "0xd1ff", fmt.Sprintf("%#x", testCluster)}
	b.log.waitLine(t, append([]string{"ERROR", "rejected inbound connection"}, both...)...)
	a.log.waitLine(t, append([]string{"ERROR", "cannot connect to peer"}, both...)...)
	if id := <-a.unreachable; id != 2 {
		t.Fatalf("Unreachable(%d), want 2", id)
	}
	if st := a.Stats().Peers[2]; st.Connected || st.Sent != 0 {
		t.Fatalf("stats %+v: want never connected", st)
	}
	if n := len(b.in.snapshot()); n != 0 {
		t.Fatalf("b received %d messages from another cluster", n)
	}
}

// A message addressed to this node is a programming error: logged, not sent, not reported.
func TestSendToSelf(t *testing.T) {
	a := newNode(t, 1, nil)
	a.Send([]raft.Message{appMsg(1, 1, 1, 1)})
	a.log.waitLine(t, "ERROR", "to self")
	select {
	case id := <-a.unreachable:
		t.Fatalf("Unreachable(%d) for a message to self", id)
	default:
	}
	if n := len(a.in.snapshot()); n != 0 {
		t.Fatalf("self-message delivered %d times", n)
	}
}

// UpdatePeer moves the connection to the new address; RemovePeer stops the writer and turns
// later messages into unknown-peer drops.
func TestUpdateAndRemovePeer(t *testing.T) {
	a := newNode(t, 1, nil)
	b1 := newNode(t, 2, nil)
	connect(t, a, b1)
	a.Send([]raft.Message{appMsg(1, 2, 1, 1)})
	b1.in.waitFor(t, waitTimeout, "b1", func(ms []raft.Message) bool { return len(ms) == 1 })

	// Node 2 moves to a new address; a process still listening on the old one must get
	// nothing sent after UpdatePeer.
	b2 := newNode(t, 2, nil)
	if err := a.UpdatePeer(2, b2.addr); err != nil {
		t.Fatal(err)
	}
	if got := a.Stats().Peers[2].Addr; got != b2.addr {
		t.Fatalf("Addr=%s, want %s", got, b2.addr)
	}
	a.Send([]raft.Message{appMsg(1, 2, 2, 1)})
	msgs := b2.in.waitFor(t, waitTimeout, "b2", func(ms []raft.Message) bool { return len(ms) == 1 })
	if msgs[0].Index != 2 {
		t.Fatalf("b2 received index %d, want 2", msgs[0].Index)
	}
	if n := len(b1.in.snapshot()); n != 1 {
		t.Fatalf("old address received %d messages, want only the one sent before UpdatePeer", n)
	}

	if err := a.UpdatePeer(5, b2.addr); err == nil {
		t.Fatal("UpdatePeer of an unknown peer succeeded")
	}
	a.RemovePeer(2)
	a.RemovePeer(2) // no-op
	// Node 2 still has an inbound connection to a, so it keeps a receive-only entry.
	if st := a.Stats().Peers[2]; st.Addr != "" || st.Sent != 0 {
		t.Fatalf("removed peer still has outbound stats: %+v", st)
	}
	for len(a.unreachable) > 0 {
		<-a.unreachable
	}
	a.Send([]raft.Message{appMsg(1, 2, 100, 1)})
	if id := <-a.unreachable; id != 2 {
		t.Fatalf("Unreachable(%d), want 2", id)
	}
}

func TestAddPeerValidationAndUpsert(t *testing.T) {
	a := newNode(t, 1, nil)
	for _, tc := range []struct {
		id   raft.NodeID
		addr string
	}{{0, "127.0.0.1:1"}, {1, "127.0.0.1:1"}, {2, ""}} {
		a.AddPeer(tc.id, tc.addr)
		a.log.waitLine(t, "ERROR", "invalid AddPeer", fmt.Sprintf("peer=%d", tc.id))
	}
	if n := len(a.Stats().Peers); n != 0 {
		t.Fatalf("%d peers after invalid AddPeers", n)
	}
	a.AddPeer(2, "127.0.0.1:1")
	a.AddPeer(2, "127.0.0.1:1")
	if st := a.Stats(); len(st.Peers) != 1 || st.Peers[2].Addr != "127.0.0.1:1" {
		t.Fatalf("peers %+v, want node 2 at 127.0.0.1:1", st.Peers)
	}
	a.AddPeer(2, "127.0.0.1:2")
	if got := a.Stats().Peers[2].Addr; got != "127.0.0.1:2" {
		t.Fatalf("AddPeer with a new address: Addr=%s, want 127.0.0.1:2", got)
	}
}

func TestNewValidation(t *testing.T) {
	ln := listen(t)
	defer ln.Close()
	ok := Config{ID: 1, ClusterID: 1, Listener: ln, Handler: func(raft.Message) {}}
	if _, err := New(ok); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"zero id":         func(c *Config) { c.ID = 0 },
		"zero cluster":    func(c *Config) { c.ClusterID = 0 },
		"no listener":     func(c *Config) { c.Listener = nil },
		"no handler":      func(c *Config) { c.Handler = nil },
		"huge max":        func(c *Config) { c.MaxMessageBytes = MaxMessageBytesLimit + 1 },
		"negative queue":  func(c *Config) { c.QueueMessages = -1 },
		"backoff min>max": func(c *Config) { c.BackoffMin, c.BackoffMax = time.Second, time.Millisecond },
		"negative dial":   func(c *Config) { c.DialTimeout = -1 },
	} {
		c := ok
		mutate(&c)
		if _, err := New(c); err == nil || !strings.HasPrefix(err.Error(), "transport: ") {
			t.Errorf("%s: New error = %v, want a transport: error", name, err)
		}
	}
}

func TestBackoff(t *testing.T) {
	minD, maxD := 10*time.Millisecond, time.Second
	r1 := rand.New(rand.NewPCG(1, 2))
	r2 := rand.New(rand.NewPCG(1, 2))
	for attempt := range 80 {
		d := backoff(attempt, minD, maxD, r1)
		if d < minD || d > maxD {
			t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, minD, maxD)
		}
		if base := min(minD<<min(attempt, 40), maxD); d < base/2 {
			t.Fatalf("attempt %d: %v below half the exponential base %v", attempt, d, base)
		}
		if d2 := backoff(attempt, minD, maxD, r2); d2 != d {
			t.Fatalf("attempt %d: same seed gave %v and %v", attempt, d, d2)
		}
	}
	// Different seeds (different node/peer pairs) spread out.
	r3 := rand.New(rand.NewPCG(1, 3))
	same := 0
	for range 20 {
		if backoff(10, minD, maxD, r1) == backoff(10, minD, maxD, r3) {
			same++
		}
	}
	if same == 20 {
		t.Fatal("jitter does not depend on the seed")
	}
}

// Close stops everything (including writers mid-dial, peers in backoff and half-open inbound
// connections), is idempotent, and leaves no goroutines behind.
func TestCloseIdempotentNoLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		nodes := []*node{newNode(t, 1, nil), newNode(t, 2, nil), newNode(t, 3, nil)}
		connect(t, nodes...)
		for _, n := range nodes {
			for _, p := range nodes {
				if p != n {
					n.Send([]raft.Message{appMsg(n.id, p.id, 1, 10)})
				}
			}
		}
		for _, n := range nodes {
			n.in.waitFor(t, waitTimeout, "exchange", func(ms []raft.Message) bool { return len(ms) == 2 })
		}
		ln := listen(t)
		dead := ln.Addr().String()
		ln.Close()
		nodes[0].AddPeer(7, dead)
		silent := listen(t) // never accepts: a writer stuck in the handshake
		defer silent.Close()
		nodes[1].AddPeer(8, silent.Addr().String())
		half := rawDial(t, nodes[2].addr) // an inbound connection that never says hello
		defer half.Close()
		eventually(t, "the half-open connection to be tracked", func() bool { return nodes[2].Stats().InboundConns >= 1 })

		for _, n := range nodes {
			if err := n.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := n.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			n.Send([]raft.Message{appMsg(n.id, 2, 1, 1)}) // must not panic or block
			n.Start()                                     // no-op
			n.AddPeer(9, "127.0.0.1:1")
			if _, ok := n.Stats().Peers[9]; ok {
				t.Fatal("AddPeer after Close added a peer")
			}
			if err := n.UpdatePeer(2, "127.0.0.1:1"); !errors.Is(err, ErrClosed) {
				t.Fatalf("UpdatePeer after Close: %v, want ErrClosed", err)
			}
			if _, err := n.cfg.Listener.Accept(); err == nil {
				t.Fatal("listener still open after Close")
			}
		}
	}()
	deadline := time.Now().Add(waitTimeout)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, want <= %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// QueueBytes bounds the queued bytes as well as the count; an empty queue still takes one
// message larger than the bound, so a big message is never refused for the bound alone.
func TestQueueBytesLimit(t *testing.T) {
	silent := listen(t)
	defer silent.Close()
	small := appMsg(1, 2, 1, 1000)
	size := len(encode(small))
	a := newNode(t, 1, nil, func(c *Config) {
		c.QueueBytes = 3*size - 1 // two fit, the third does not
		c.HandshakeTimeout = time.Hour
	})
	a.AddPeer(2, silent.Addr().String())
	a.Send([]raft.Message{small, small, small})
	if id := <-a.unreachable; id != 2 {
		t.Fatalf("Unreachable(%d), want 2", id)
	}
	if st := a.Stats().Peers[2]; st.Queued != 2 || st.QueuedBytes != 2*size || st.Dropped != 1 {
		t.Fatalf("stats %+v: want 2 queued (%d bytes), 1 dropped", st, 2*size)
	}

	b := newNode(t, 3, nil, func(c *Config) {
		c.QueueBytes = 100
		c.HandshakeTimeout = time.Hour
	})
	b.AddPeer(2, silent.Addr().String())
	b.Send([]raft.Message{appMsg(3, 2, 1, 1000), appMsg(3, 2, 2, 1)})
	if st := b.Stats().Peers[2]; st.Queued != 1 || st.Dropped != 1 {
		t.Fatalf("stats %+v: want the large message queued alone and the next dropped", st)
	}
}

// A peer that completes the handshake and then stops reading is detected by WriteTimeout: the
// stuck batch is dropped and reported, and the connection is abandoned.
func TestWriteTimeoutOnStalledPeer(t *testing.T) {
	ln := listen(t)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		// Answer the handshake, then never read again.
		if _, err := readHello(c); err == nil {
			a := ack{version: ProtocolVersion, status: ackOK, cluster: testCluster, id: 2}
			b := a.marshal()
			c.Write(b[:])
		}
		accepted <- c
	}()
	a := newNode(t, 1, nil, func(c *Config) { c.WriteTimeout = 200 * time.Millisecond })
	a.AddPeer(2, ln.Addr().String())
	select {
	case c := <-accepted:
		defer c.Close()
	case <-time.After(waitTimeout):
		t.Fatal("the transport never connected")
	}
	eventually(t, "connected", func() bool { return a.Stats().Peers[2].Connected })
	// Far more than loopback socket buffers hold.
	big := make([]raft.Message, 32)
	for i := range big {
		big[i] = appMsg(1, 2, uint64(i), 512<<10)
	}
	a.Send(big)
	select {
	case id := <-a.unreachable:
		if id != 2 {
			t.Fatalf("Unreachable(%d), want 2", id)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("stalled peer not detected; stats %+v", a.Stats().Peers[2])
	}
	a.log.waitLine(t, "connection to peer lost", "timeout")
	if st := a.Stats().Peers[2]; st.Dropped != uint64(len(big)) || st.Sent != 0 {
		t.Fatalf("stats %+v: want the whole batch dropped", st)
	}
}

// Messages larger than the read buffer take the chunked read path; they arrive intact and in
// order with the small messages around them.
func TestLargeMessages(t *testing.T) {
	a, b := newNode(t, 1, nil), newNode(t, 2, nil)
	connect(t, a, b)
	sizes := []int{ioBufferBytes - 200, ioBufferBytes + 1, 200 << 10, 3 << 20, 10, largeFrameChunkBytes + 7, 10}
	var sent []raft.Message
	for i, n := range sizes {
		m := appMsg(1, 2, uint64(i+1), n)
		sent = append(sent, m)
		a.Send([]raft.Message{m})
	}
	got := b.in.waitFor(t, waitTimeout, "all sizes", func(ms []raft.Message) bool { return len(ms) == len(sizes) })
	for i := range sent {
		if !reflect.DeepEqual(normalize(got[i]), normalize(sent[i])) {
			t.Fatalf("message %d (%d data bytes) arrived altered or out of order", i, sizes[i])
		}
	}
}

// A dialer that reaches the wrong node (a stale address now used by another member) is
// refused, and both sides say why.
func TestStaleAddressReachesWrongNode(t *testing.T) {
	a, c := newNode(t, 1, nil), newNode(t, 3, nil)
	a.AddPeer(2, c.addr) // node 2's old address, now node 3's
	a.Send([]raft.Message{appMsg(1, 2, 1, 1)})
	a.log.waitLine(t, "cannot connect to peer", "wrong target node")
	c.log.waitLine(t, "rejected inbound connection", "addressed node 2, but this is node 3")
	if n := len(c.in.snapshot()); n != 0 {
		t.Fatalf("node 3 received %d messages meant for node 2", n)
	}
}

// fakeAcceptor accepts one connection on a fresh listener and answers the hello with a, then
// runs after(conn). It returns the listener's address.
func fakeAcceptor(t *testing.T, a ack, after func(net.Conn)) string {
	done := make(chan struct{})
	t.Cleanup(func() { <-done }) // runs last: after the transport and the listener are closed
	ln := listen(t)
	t.Cleanup(func() { ln.Close() })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := readHello(c); err != nil {
			return
		}
		b := a.marshal()
		if _, err := c.Write(b[:]); err != nil {
			return
		}
		after(c)
	}()
	return ln.Addr().String()
}

// The dialer validates the ack too: an acceptor with another identity or protocol is refused,
// and one that writes after the handshake is treated as broken.
func TestDialerChecksAck(t *testing.T) {
	okAck := ack{version: ProtocolVersion, status: ackOK, cluster: testCluster, id: 2}
	for _, tc := range []struct {
		name   string
		ack    ack
		after  func(net.Conn)
		logged string
	}{
		{"wrong id", ack{version: ProtocolVersion, cluster: testCluster, id: 5}, nil, "dialed node 2 but node 5 answered"},
		{"wrong cluster", ack{version: ProtocolVersion, cluster: 0xBAD, id: 2}, nil, "cluster id mismatch"},
		{"wrong version", ack{version: 9, cluster: testCluster, id: 2}, nil, "accepted with protocol version 9"},
		{"refused", ack{version: 9, status: ackBadVersion, cluster: testCluster, id: 2}, nil, "unsupported protocol version"},
		{"writes after ack", okAck, func(c net.Conn) { c.Write([]byte{1}); io.Copy(io.Discard, c) }, "peer wrote after the handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			after := tc.after
			if after == nil {
				after = func(c net.Conn) { io.Copy(io.Discard, c) }
			}
			addr := fakeAcceptor(t, tc.ack, after)
			a := newNode(t, 1, nil, func(c *Config) { c.BackoffMin, c.BackoffMax = time.Hour, time.Hour })
			a.AddPeer(2, addr)
			a.log.waitLine(t, "peer=2", tc.logged)
		})
	}
}

// A sender's new connection replaces its previous one, which is closed: the sender has one
// outbound connection per peer, so the old one is dead or half-open.
func TestNewConnectionReplacesOld(t *testing.T) {
	b := newNode(t, 2, nil)
	handshake := func() net.Conn {
		c := rawDial(t, b.addr)
		h := goodHello()
		hb := h.marshal()
		mustWrite(t, c, hb[:])
		if a, err := readAck(c); err != nil || a.status != ackOK {
			t.Fatalf("handshake: %+v %v", a, err)
		}
		return c
	}
	old := handshake()
	mustWrite(t, old, frame(encode(appMsg(1, 2, 1, 1))))
	b.in.waitFor(t, waitTimeout, "on the old connection", func(ms []raft.Message) bool { return len(ms) == 1 })
	cur := handshake()
	expectClosedByPeer(t, old)
	mustWrite(t, cur, frame(encode(appMsg(1, 2, 2, 1))))
	b.in.waitFor(t, waitTimeout, "on the new connection", func(ms []raft.Message) bool { return len(ms) == 2 })
	if st := b.Stats(); st.Peers[1].Received != 2 || st.ProtocolErrors != 0 {
		t.Fatalf("stats %+v: want 2 received from node 1 across connections, no errors", st)
	}
}

// flakyListener fails its first Accepts with a transient error.
type flakyListener struct {
	net.Listener
	failures atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, errors.New("accept: too many open files")
	}
	return l.Listener.Accept()
}

// Transient accept errors are retried with a backoff; a listener closed behind the
// transport's back stops the accept loop with an error in the log.
func TestAcceptErrors(t *testing.T) {
	fl := &flakyListener{Listener: listen(t)}
	fl.failures.Store(3)
	b := newNode(t, 2, fl)
	a := newNode(t, 1, nil)
	connect(t, a, b)
	a.Send([]raft.Message{appMsg(1, 2, 1, 1)})
	b.in.waitFor(t, waitTimeout, "a message after accept errors", func(ms []raft.Message) bool { return len(ms) == 1 })
	b.log.waitLine(t, "accept failed; retrying", "too many open files")

	fl.Listener.Close()
	b.log.waitLine(t, "ERROR", "listener closed while the transport is open")
	if err := b.Close(); err != nil {
		t.Fatalf("Close after the listener was closed elsewhere: %v", err)
	}
}
