package transport

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/wire"
	"github.com/caucus/caucus/raft"
)

const (
	testCluster = 0xC0FFEE
	waitTimeout = 10 * time.Second
)

// inbox records what a Handler received and wakes waiters on every message.
type inbox struct {
	mu     sync.Mutex
	msgs   []raft.Message
	signal chan struct{}
}

func newInbox() *inbox { return &inbox{signal: make(chan struct{}, 1)} }

func (b *inbox) handle(m raft.Message) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
	select {
	case b.signal <- struct{}{}:
	default:
	}
}

func (b *inbox) snapshot() []raft.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]raft.Message(nil), b.msgs...)
}

// waitFor blocks until pred holds for the received messages, failing the test after timeout.
func (b *inbox) waitFor(t testing.TB, timeout time.Duration, what string, pred func([]raft.Message) bool) []raft.Message {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if msgs := b.snapshot(); pred(msgs) {
			return msgs
		}
		select {
		case <-b.signal:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s; have %d messages", timeout, what, len(b.snapshot()))
		}
	}
}

// tryWait is waitFor without failing: it reports whether pred held within timeout.
func (b *inbox) tryWait(timeout time.Duration, pred func([]raft.Message) bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if pred(b.snapshot()) {
			return true
		}
		select {
		case <-b.signal:
		case <-deadline.C:
			return false
		}
	}
}

func countFrom(from raft.NodeID) func([]raft.Message) int {
	return func(msgs []raft.Message) int {
		n := 0
		for _, m := range msgs {
			if m.From == from {
				n++
			}
		}
		return n
	}
}

// logRecorder is a slog.Handler that keeps every record's text and wakes waiters.
type logRecorder struct {
	mu     sync.Mutex
	lines  []string
	signal chan struct{}
	attrs  []slog.Attr
	parent *logRecorder
}

func newLogRecorder() *logRecorder { return &logRecorder{signal: make(chan struct{}, 1)} }

func (r *logRecorder) root() *logRecorder {
	if r.parent != nil {
		return r.parent
	}
	return r
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s %s", rec.Level, rec.Message)
	for _, a := range r.attrs {
		fmt.Fprintf(&sb, " %s", a)
	}
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&sb, " %s", a)
		return true
	})
	root := r.root()
	root.mu.Lock()
	root.lines = append(root.lines, sb.String())
	root.mu.Unlock()
	select {
	case root.signal <- struct{}{}:
	default:
	}
	return nil
}

func (r *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{attrs: append(append([]slog.Attr(nil), r.attrs...), as...), parent: r.root()}
}

func (r *logRecorder) WithGroup(string) slog.Handler { return r }

func (r *logRecorder) find(substrs ...string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
next:
	for _, l := range r.lines {
		for _, s := range substrs {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		return l, true
	}
	return "", false
}

// waitLine waits for a log line containing every substring.
func (r *logRecorder) waitLine(t testing.TB, substrs ...string) string {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		if l, ok := r.find(substrs...); ok {
			return l
		}
		select {
		case <-r.signal:
		case <-deadline.C:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("no log line containing %q; log:\n%s", substrs, strings.Join(r.lines, "\n"))
		}
	}
}

// node is a Transport under test with what it received and logged.
type node struct {
	*Transport
	id          raft.NodeID
	addr        string
	in          *inbox
	log         *logRecorder
	unreachable chan raft.NodeID
}

type option func(*Config)

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// newNode starts a Transport for id on ln (a fresh loopback listener if nil).
func newNode(t testing.TB, id raft.NodeID, ln net.Listener, opts ...option) *node {
	t.Helper()
	if ln == nil {
		ln = listen(t)
	}
	n := &node{
		id:          id,
		addr:        ln.Addr().String(),
		in:          newInbox(),
		log:         newLogRecorder(),
		unreachable: make(chan raft.NodeID, 1024),
	}
	cfg := Config{
		ID:          id,
		ClusterID:   testCluster,
		Listener:    ln,
		Handler:     n.in.handle,
		Unreachable: func(id raft.NodeID) { n.unreachable <- id },
		BackoffMin:  5 * time.Millisecond,
		BackoffMax:  50 * time.Millisecond,
		Logger:      slog.New(n.log),
	}
	for _, o := range opts {
		o(&cfg)
	}
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.Transport = tr
	tr.Start()
	t.Cleanup(func() { tr.Close() })
	return n
}

func connect(t testing.TB, nodes ...*node) {
	t.Helper()
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				a.AddPeer(b.id, b.addr)
			}
		}
	}
}

func appMsg(from, to raft.NodeID, index uint64, dataBytes int) raft.Message {
	data := make([]byte, dataBytes)
	for i := range data {
		data[i] = byte(index + uint64(i))
	}
	return raft.Message{
		Type: raft.MsgApp, From: from, To: to, Term: 3, LogTerm: 3, Index: index, Commit: index,
		Entries: []raft.Entry{{Term: 3, Index: index + 1, Data: data}},
	}
}

// frame builds a valid frame around payload.
func frame(payload []byte) []byte {
	f := append(make([]byte, frameHeaderBytes), payload...)
	putFrameHeader(f)
	return f
}

func encode(m raft.Message) []byte { return wire.AppendMessage(nil, &m) }

func rawDial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustWrite(t testing.TB, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// expectClosedByPeer reads until the other end closes c (EOF or reset), failing on timeout.
func expectClosedByPeer(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection not closed by the transport within %v", waitTimeout)
	}
}

// eventually polls cond until it holds, failing after waitTimeout. It is for state exposed only
// through Stats; message arrival is waited for on channels.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
