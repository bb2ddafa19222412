package transport

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caucus/caucus/raft"
)

// BenchmarkSendMsgApp1KiB measures throughput of 1 KiB MsgApps from one node to another over
// loopback, end to end (Send to Handler), in Send calls of 64 messages as a leader's Ready
// would carry. Allocations include the receiver's decoding (wire copies entry data).
func BenchmarkSendMsgApp1KiB(b *testing.B) {
	batch := make([]raft.Message, 64)
	for i := range batch {
		batch[i] = appMsg(1, 2, uint64(i), 1024)
	}
	benchmarkSend(b, batch)
}

// BenchmarkSendHeartbeat is the same for small messages, where per-message overhead dominates.
func BenchmarkSendHeartbeat(b *testing.B) {
	batch := make([]raft.Message, 64)
	for i := range batch {
		batch[i] = raft.Message{Type: raft.MsgHeartbeat, From: 1, To: 2, Term: 7, Commit: uint64(i)}
	}
	benchmarkSend(b, batch)
}

// benchmarkSend sends b.N messages, cycling through batch. The sender keeps at most a window
// of messages in flight so the queue never overflows: drops would make the numbers meaningless.
func benchmarkSend(b *testing.B, batch []raft.Message) {
	perSend := len(batch)
	const window = 2048
	var received atomic.Int64
	progress := make(chan struct{}, 1)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	mk := func(id raft.NodeID, handler func(raft.Message)) *Transport {
		tr, err := New(Config{ID: id, ClusterID: 1, Listener: listen(b), Handler: handler, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		tr.Start()
		b.Cleanup(func() { tr.Close() })
		return tr
	}
	a := mk(1, func(raft.Message) {})
	dst := mk(2, func(raft.Message) {
		received.Add(1)
		select {
		case progress <- struct{}{}:
		default:
		}
	})
	a.AddPeer(2, dst.Addr().String())

	waitUntil := func(n int64) {
		deadline := time.NewTimer(waitTimeout)
		defer deadline.Stop()
		for received.Load() < n {
			select {
			case <-progress:
			case <-deadline.C:
				b.Fatalf("stalled at %d of %d received; stats %+v", received.Load(), n, a.Stats().Peers[2])
			}
		}
	}
	// Warm up: connect and size the buffers.
	a.Send(batch)
	waitUntil(int64(perSend))
	received.Store(0)
	flushes0 := a.Stats().Peers[2].Flushes

	b.SetBytes(int64(appMsgSize(batch[0])))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for sent := 0; sent < b.N; {
		n := min(perSend, b.N-sent)
		waitUntil(int64(sent + n - window))
		a.Send(batch[:n])
		sent += n
	}
	waitUntil(int64(b.N))
	elapsed := time.Since(start)
	b.StopTimer()

	st := a.Stats().Peers[2]
	if st.Dropped != 0 {
		b.Fatalf("%d messages dropped", st.Dropped)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	if f := st.Flushes - flushes0; f > 0 {
		b.ReportMetric(float64(b.N)/float64(f), "msgs/flush")
	}
}

func appMsgSize(m raft.Message) int { return frameHeaderBytes + len(encode(m)) }

// discardConn is a net.Conn whose writes vanish; only what writeBatch uses is implemented.
type discardConn struct{ net.Conn }

func (discardConn) Write(b []byte) (int, error)      { return len(b), nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }

// The steady-state send path (Send's enqueue, the writer's take, encode, flush and recycle)
// allocates nothing per message.
func TestSendPathDoesNotAllocate(t *testing.T) {
	ln := listen(t)
	defer ln.Close()
	tr, err := New(Config{ID: 1, ClusterID: 1, Listener: ln, Handler: func(raft.Message) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	p := newPeer(tr, 2, "127.0.0.1:1") // its writer is not started: the test drives it
	batch := make([]raft.Message, 64)
	for i := range batch {
		batch[i] = appMsg(1, 2, uint64(i), 1024)
	}
	bw := bufio.NewWriterSize(discardConn{}, ioBufferBytes)
	step := func() {
		if p.enqueue(batch) {
			t.Fatal("dropped")
		}
		q := p.take()
		if err := p.writeBatch(discardConn{}, bw, q); err != nil {
			t.Fatal(err)
		}
		p.recycle(q)
	}
	step() // size the queues
	if allocs := testing.AllocsPerRun(100, step); allocs != 0 {
		t.Fatalf("%.1f allocations per batch of %d, want 0", allocs, len(batch))
	}
	// step ran once above, once as AllocsPerRun's warm-up and 100 times measured.
	if got, want := p.sent.Load(), 102*uint64(len(batch)); got != want {
		t.Fatalf("sent %d, want %d", got, want)
	}
}
