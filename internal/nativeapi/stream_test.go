package nativeapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
)

// The API has no bidirectional RPC yet, so the tests add one to the method table: PutRequest
// in, PutResponse out, served by whatever bidiImpl holds.
const (
	methodTestBidi    Method = 1000
	testBidiProcedure        = "/caucus.test.Echo/Bidi"
	// methodTestSum is client-streaming: it answers with the number of requests and the sum
	// of their lease ids.
	methodTestSum    Method = 1001
	testSumProcedure        = "/caucus.test.Echo/Sum"
)

var bidiImpl atomic.Pointer[func(context.Context, *connect.BidiStream[caucusv1.PutRequest, caucusv1.PutResponse]) error]

func init() {
	for len(methods) <= int(methodTestSum) {
		methods = append(methods, methodSpec{})
	}
	methods[methodTestSum] = streaming(testSumProcedure, connect.StreamTypeClient, func(_ *Handlers, opts ...connect.HandlerOption) *connect.Handler {
		return connect.NewClientStreamHandler(testSumProcedure, func(ctx context.Context, s *connect.ClientStream[caucusv1.PutRequest]) (*connect.Response[caucusv1.PutResponse], error) {
			var n, sum int64
			for s.Receive() {
				n++
				sum += s.Msg().GetLease()
			}
			if err := s.Err(); err != nil {
				return nil, err
			}
			return connect.NewResponse(&caucusv1.PutResponse{Header: &caucusv1.ResponseHeader{Revision: n, RaftTerm: uint64(sum)}}), nil
		}, opts...)
	})
	methods[methodTestBidi] = streaming(testBidiProcedure, connect.StreamTypeBidi, func(_ *Handlers, opts ...connect.HandlerOption) *connect.Handler {
		return connect.NewBidiStreamHandler(testBidiProcedure, func(ctx context.Context, s *connect.BidiStream[caucusv1.PutRequest, caucusv1.PutResponse]) error {
			return (*bidiImpl.Load())(ctx, s)
		}, opts...)
	})
}

// setBidi installs the bidi handler for one test.
func setBidi(t *testing.T, f func(context.Context, *connect.BidiStream[caucusv1.PutRequest, caucusv1.PutResponse]) error) {
	bidiImpl.Store(&f)
	t.Cleanup(func() { bidiImpl.Store(nil) })
}

// testMaint serves Snapshot with snapshot and everything else unimplemented.
type testMaint struct {
	caucusv1connect.UnimplementedMaintenanceHandler
	snapshot func(context.Context, *connect.ServerStream[caucusv1.SnapshotResponse]) error
}

func (m *testMaint) Snapshot(ctx context.Context, _ *connect.Request[caucusv1.SnapshotRequest], s *connect.ServerStream[caucusv1.SnapshotResponse]) error {
	return m.snapshot(ctx, s)
}

// streamFixture is a native server (no HTTP side) with the test KV, the given Snapshot and the
// test bidi method.
type streamFixture struct {
	addr string
	srv  *Server
}

func newStreamFixture(t *testing.T, cfg ServerConfig, snapshot func(context.Context, *connect.ServerStream[caucusv1.SnapshotResponse]) error) *streamFixture {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Handlers = Handlers{KV: &testKV{}, Maintenance: &testMaint{snapshot: snapshot}}
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv := NewServer(cfg)
	f := &streamFixture{addr: ln.Addr().String(), srv: srv}
	sl := Split(ln, srv, SplitConfig{})
	t.Cleanup(func() {
		srv.Close()
		sl.Close()
	})
	return f
}

func (f *streamFixture) client(t *testing.T, cfg ClientConfig) *Client {
	cfg.Addr = f.addr
	c := NewClient(cfg)
	t.Cleanup(func() { c.Close() })
	return c
}

// openStreams returns the number of streams open on the server's connections.
func (f *streamFixture) openStreams() int {
	f.srv.mu.Lock()
	defer f.srv.mu.Unlock()
	n := 0
	for c := range f.srv.conns {
		c.streamsMu.Lock()
		n += len(c.streams)
		c.streamsMu.Unlock()
	}
	return n
}

// waitFor polls cond (state owned by other goroutines with no event to wait on) for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestServerStreamDeliversInOrder(t *testing.T) {
	const n = 2000
	f := newStreamFixture(t, ServerConfig{}, func(ctx context.Context, s *connect.ServerStream[caucusv1.SnapshotResponse]) error {
		for i := range n {
			if err := s.Send(&caucusv1.SnapshotResponse{RemainingBytes: uint64(n - 1 - i), Blob: fmt.Appendf(nil, "chunk-%d", i)}); err != nil {
				return err
			}
		}
		return nil
	})
	// A small window makes the sender wait for credit many times along the way.
	c := f.client(t, ClientConfig{StreamWindow: 1024})
	stream, err := MaintenanceClient{c}.Snapshot(context.Background(), connect.NewRequest(&caucusv1.SnapshotRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	i := 0
	for stream.Receive() {
		msg := stream.Msg()
		if want := fmt.Sprintf("chunk-%d", i); string(msg.GetBlob()) != want || msg.GetRemainingBytes() != uint64(n-1-i) {
			t.Fatalf("message %d = %q (remaining %d), want %q", i, msg.GetBlob(), msg.GetRemainingBytes(), want)
		}
		i++
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream ended with %v after %d messages", err, i)
	}
	if i != n {
		t.Fatalf("received %d messages, want %d", i, n)
	}
	if got := c.Streams.Load(); got != 1 {
		t.Errorf("client opened %d native streams, want 1", got)
	}
	waitFor(t, "the server forgot the stream", func() bool { return f.openStreams() == 0 })
}

func TestBidiEchoWithHalfClose(t *testing.T) {
	setBidi(t, func(ctx context.Context, s *connect.BidiStream[caucusv1.PutRequest, caucusv1.PutResponse]) error {
		n := int64(0)
		for {
			req, err := s.Receive()
			if errors.Is(err, io.EOF) {
				// The client half-closed: one last message says how many arrived.
				return s.Send(&caucusv1.PutResponse{Header: &caucusv1.ResponseHeader{Revision: -n}})
			}
			if err != nil {
				return err
			}
			n++
			if err := s.Send(&caucusv1.PutResponse{PrevKv: &caucusv1.KeyValue{Key: req.GetKey(), Value: req.GetValue()}}); err != nil {
				return err
			}
		}
	})
	f := newStreamFixture(t, ServerConfig{MaxRequestBytes: 1024, StreamWindow: 2048}, nil)
	c := f.client(t, ClientConfig{StreamWindow: 2048})
	bidi := streamClient[caucusv1.PutRequest, caucusv1.PutResponse](c, methodTestBidi).CallBidiStream(context.Background())
	const n = 500
	sendErr := make(chan error, 1)
	go func() {
		for i := range n {
			if err := bidi.Send(&caucusv1.PutRequest{Key: fmt.Appendf(nil, "k%d", i), Value: make([]byte, 100)}); err != nil {
				sendErr <- fmt.Errorf("send %d: %w", i, err)
				return
			}
		}
		sendErr <- bidi.CloseRequest()
	}()
	for i := range n {
		resp, err := bidi.Receive()
		if err != nil {
			t.Fatalf("receive %d: %v", i, err)
		}
		if got, want := string(resp.GetPrevKv().GetKey()), fmt.Sprintf("k%d", i); got != want {
			t.Fatalf("echo %d = %q, want %q", i, got, want)
		}
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	resp, err := bidi.Receive()
	if err != nil || resp.GetHeader().GetRevision() != -n {
		t.Fatalf("after half-close: %v, %v; want the count -%d", resp, err, n)
	}
	if _, err := bidi.Receive(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last message: %v, want io.EOF", err)
	}
	if err := bidi.CloseResponse(); err != nil {
		t.Fatal(err)
	}
}

func TestClientStreamSum(t *testing.T) {
	f := newStreamFixture(t, ServerConfig{MaxRequestBytes: 1024, StreamWindow: 2048}, nil)
	c := f.client(t, ClientConfig{})
	cs := streamClient[caucusv1.PutRequest, caucusv1.PutResponse](c, methodTestSum).CallClientStream(context.Background())
	const n = 300
	for i := range n {
		if err := cs.Send(&caucusv1.PutRequest{Key: make([]byte, 200), Lease: int64(i)}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	resp, err := cs.CloseAndReceive()
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Msg.GetHeader(); got.GetRevision() != n || got.GetRaftTerm() != n*(n-1)/2 {
		t.Fatalf("server counted %d requests summing %d, want %d and %d", got.GetRevision(), got.GetRaftTerm(), n, n*(n-1)/2)
	}
}

// blockingBidi installs a bidi handler that reports its start, waits for its context and
// reports how it ended.
func blockingBidi(t *testing.T) (started chan struct{}, ended chan error) {
	started, ended = make(chan struct{}, 16), make(chan error, 16)
	setBidi(t, func(ctx context.Context, s *connect.BidiStream[caucusv1.PutRequest, caucusv1.PutResponse]) error {
		started <- struct{}{}
		<-ctx.Done()
		ended <- ctx.Err()
		return ctx.Err()
	})
	return started, ended
}

func TestClientCancelReachesHandler(t *testing.T) {
	started, ended := blockingBidi(t)
	f := newStreamFixture(t, ServerConfig{}, nil)
	c := f.client(t, ClientConfig{})

	// Close cancels.
	s, err := c.NewStream(context.Background(), methodTestBidi)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	s.Close()
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler context ended with %v, want canceled", err)
	}
	if err := s.Receive(&caucusv1.PutResponse{}); connect.CodeOf(err) != connect.CodeCanceled {
		t.Errorf("Receive after Close = %v, want Canceled", err)
	}

	// So does the end of the stream's context, and a receiver blocked on it wakes up.
	ctx, cancel := context.WithCancel(context.Background())
	s, err = c.NewStream(ctx, methodTestBidi)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	<-started
	recvErr := make(chan error, 1)
	go func() { recvErr <- s.Receive(&caucusv1.PutResponse{}) }()
	cancel()
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler context ended with %v, want canceled", err)
	}
	if err := <-recvErr; connect.CodeOf(err) != connect.CodeCanceled {
		t.Errorf("blocked Receive = %v, want Canceled", err)
	}
	waitFor(t, "the server forgot both streams", func() bool { return f.openStreams() == 0 })
}

// The open frame's timeout becomes the handler's deadline, and the stream ends with
// DeadlineExceeded. (A raw connection: a client's own deadline would cancel the stream too.)
func TestStreamDeadlineReachesHandler(t *testing.T) {
	started, ended := blockingBidi(t)
	f := newStreamFixture(t, ServerConfig{}, nil)
	r := dialRaw(t, f.addr)
	r.send(1, uint16(methodTestBidi), 50, AppendOpen(nil, 1<<20))
	<-started
	if err := <-ended; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("handler context ended with %v, want the deadline", err)
	}
	if st, msg := r.expectEnd(1); st != uint16(connect.CodeDeadlineExceeded) {
		t.Errorf("stream ended with status %d %q, want DeadlineExceeded", st, msg)
	}
}

func TestServerErrorEndsStreamWithCode(t *testing.T) {
	f := newStreamFixture(t, ServerConfig{}, func(ctx context.Context, s *connect.ServerStream[caucusv1.SnapshotResponse]) error {
		for range 3 {
			if err := s.Send(&caucusv1.SnapshotResponse{Blob: []byte("x")}); err != nil {
				return err
			}
		}
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("database is being restored"))
	})
	c := f.client(t, ClientConfig{})
	stream, err := MaintenanceClient{c}.Snapshot(context.Background(), connect.NewRequest(&caucusv1.SnapshotRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	n := 0
	for stream.Receive() {
		n++
	}
	err = stream.Err()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeFailedPrecondition || ce.Message() != "database is being restored" {
		t.Fatalf("stream ended with %v, want FailedPrecondition with the handler's message", err)
	}
	if n != 3 {
		t.Errorf("received %d messages before the error, want all 3", n)
	}
}

func TestConnectionCloseEndsEveryStream(t *testing.T) {
	started, ended := blockingBidi(t)
	f := newStreamFixture(t, ServerConfig{}, nil)
	var conn atomic.Pointer[net.Conn]
	c := f.client(t, ClientConfig{Dialer: func(ctx context.Context, addr string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			conn.Store(&nc)
		}
		return nc, err
	}})
	const n = 5
	var streams []*Stream
	for range n {
		s, err := c.NewStream(context.Background(), methodTestBidi)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		streams = append(streams, s)
		<-started
	}
	(*conn.Load()).Close()
	for i := range n {
		if err := <-ended; !errors.Is(err, context.Canceled) {
			t.Errorf("handler %d ended with %v, want canceled", i, err)
		}
	}
	for i, s := range streams {
		if err := s.Receive(&caucusv1.PutResponse{}); connect.CodeOf(err) != connect.CodeUnavailable {
			t.Errorf("stream %d: Receive = %v, want Unavailable", i, err)
		}
		if err := s.Send(&caucusv1.PutRequest{}); connect.CodeOf(err) != connect.CodeUnavailable {
			t.Errorf("stream %d: Send = %v, want Unavailable", i, err)
		}
	}
}

// TestSlowReaderIsBoundedByWindow: a handler sends as fast as it can to a client that does not
// read. The handler must block on credit with at most the client's window outstanding, the
// server must hold no more than that for the stream, and the connection must keep serving.
func TestSlowReaderIsBoundedByWindow(t *testing.T) {
	const window = 64 << 10
	var sent atomic.Int64
	f := newStreamFixture(t, ServerConfig{}, func(ctx context.Context, s *connect.ServerStream[caucusv1.SnapshotResponse]) error {
		for {
			if err := s.Send(&caucusv1.SnapshotResponse{Blob: make([]byte, 4000)}); err != nil {
				return err
			}
			sent.Add(1)
		}
	})
	blocked := make(chan struct{}, 1)
	f.srv.sendBlocked = func() {
		select {
		case blocked <- struct{}{}:
		default:
		}
	}
	c := f.client(t, ClientConfig{StreamWindow: window})
	stream, err := MaintenanceClient{c}.Snapshot(context.Background(), connect.NewRequest(&caucusv1.SnapshotRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	serverStream := func() *serverStream {
		f.srv.mu.Lock()
		defer f.srv.mu.Unlock()
		for sc := range f.srv.conns {
			sc.streamsMu.Lock()
			defer sc.streamsMu.Unlock()
			for _, st := range sc.streams {
				return st
			}
		}
		return nil
	}
	check := func(phase string) {
		t.Helper()
		st := serverStream()
		if st == nil {
			t.Fatalf("%s: the server has no stream", phase)
		}
		fs := st.flow.stats()
		if fs.PeakUnacked > window {
			t.Errorf("%s: the server had %d bytes unacknowledged on the stream, over the %d-byte window", phase, fs.PeakUnacked, window)
		}
		if q := st.peakQueued.Load(); q > window {
			t.Errorf("%s: the server queued up to %d bytes for the stream, over the %d-byte window", phase, q, window)
		}
		c.mu.Lock()
		cs := c.cur.streams[st.id].Stats()
		c.mu.Unlock()
		if cs.PeakBuffered > window {
			t.Errorf("%s: the client buffered up to %d bytes, over its %d-byte window", phase, cs.PeakBuffered, window)
		}
		t.Logf("%s: %d messages sent; server peak unacked %d, peak queued %d; client peak buffered %d",
			phase, sent.Load(), fs.PeakUnacked, st.peakQueued.Load(), cs.PeakBuffered)
	}
	for round := range 3 {
		select {
		case <-blocked:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the handler never blocked on credit (%d messages sent)", round, sent.Load())
		}
		// Each message frame is 4000 bytes of blob plus its header and tags; the reader
		// consumed window/4096 messages per earlier round.
		if s, consumed := sent.Load(), int64(round*window/4096); (s-consumed)*4000 > window {
			t.Fatalf("round %d: %d messages went out, %d read, to a reader that holds %d bytes at most", round, s, consumed, window)
		}
		check(fmt.Sprintf("round %d", round))
		// The connection still serves other calls while the stream is stalled.
		for i := range 20 {
			var resp caucusv1.RangeResponse
			if err := c.Invoke(context.Background(), MethodKVRange, &caucusv1.RangeRequest{Key: fmt.Appendf(nil, "k%d", i)}, &resp); err != nil {
				t.Fatalf("unary call beside the stalled stream: %v", err)
			}
		}
		// Read a window's worth: the handler proceeds and blocks again.
		for range window / 4096 {
			if !stream.Receive() {
				t.Fatalf("stream ended: %v", stream.Err())
			}
		}
	}
	check("end")
}

func TestStreamLimitPerConnection(t *testing.T) {
	started, _ := blockingBidi(t)
	const limit = 3
	f := newStreamFixture(t, ServerConfig{MaxStreamsPerConn: limit}, nil)
	c := f.client(t, ClientConfig{})
	var open []*Stream
	for range limit {
		s, err := c.NewStream(context.Background(), methodTestBidi)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, s)
		<-started
	}
	s, err := c.NewStream(context.Background(), methodTestBidi)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Receive(&caucusv1.PutResponse{})
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted || !strings.Contains(ce.Message(), "MaxStreamsPerConn") {
		t.Fatalf("stream past the limit: %v, want ResourceExhausted naming the limit", err)
	}
	s.Close()
	// Unary calls are not affected, and a closed stream frees its place.
	var resp caucusv1.RangeResponse
	if err := c.Invoke(context.Background(), MethodKVRange, &caucusv1.RangeRequest{Key: []byte("k")}, &resp); err != nil {
		t.Fatalf("unary call at the stream limit: %v", err)
	}
	open[0].Close()
	waitFor(t, "the server forgot the closed stream", func() bool { return f.openStreams() == limit-1 })
	s, err = c.NewStream(context.Background(), methodTestBidi)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	s.Close()
	for _, s := range open[1:] {
		s.Close()
	}
}

// A message that could never fit the receiver's window fails its Send at once.
func TestMessageLargerThanWindowFailsSend(t *testing.T) {
	f := newStreamFixture(t, ServerConfig{}, func(ctx context.Context, s *connect.ServerStream[caucusv1.SnapshotResponse]) error {
		return s.Send(&caucusv1.SnapshotResponse{Blob: make([]byte, 5000)})
	})
	c := f.client(t, ClientConfig{StreamWindow: 4096})
	stream, err := MaintenanceClient{c}.Snapshot(context.Background(), connect.NewRequest(&caucusv1.SnapshotRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if stream.Receive() {
		t.Fatal("received a message larger than the window")
	}
	if code := connect.CodeOf(stream.Err()); code != connect.CodeResourceExhausted {
		t.Fatalf("stream ended with %v, want ResourceExhausted", stream.Err())
	}
}

func TestNewStreamRejectsUnaryMethod(t *testing.T) {
	c := NewClient(ClientConfig{Addr: "127.0.0.1:1"})
	defer c.Close()
	if _, err := c.NewStream(context.Background(), MethodKVPut); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("NewStream(unary method) = %v, want InvalidArgument", err)
	}
}

// TestCloseWithOpenStreamsLeavesNoGoroutines closes the server and the client while streams
// are blocked in every way: handlers waiting for messages, and one waiting for credit.
func TestCloseWithOpenStreamsLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	started, _ := blockingBidi(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	blocked := make(chan struct{}, 1)
	srv := NewServer(ServerConfig{Logger: slog.New(slog.DiscardHandler), Handlers: Handlers{Maintenance: &testMaint{
		snapshot: func(ctx context.Context, s *connect.ServerStream[caucusv1.SnapshotResponse]) error {
			for {
				if err := s.Send(&caucusv1.SnapshotResponse{Blob: make([]byte, 1000)}); err != nil {
					return err
				}
			}
		},
	}}})
	srv.sendBlocked = func() {
		select {
		case blocked <- struct{}{}:
		default:
		}
	}
	sl := Split(ln, srv, SplitConfig{})
	c := NewClient(ClientConfig{Addr: ln.Addr().String(), StreamWindow: 8192})
	var streams []*Stream
	for range 3 {
		s, err := c.NewStream(context.Background(), methodTestBidi)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
		<-started
	}
	snap, err := MaintenanceClient{c}.Snapshot(context.Background(), connect.NewRequest(&caucusv1.SnapshotRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	<-blocked
	sl.Close()
	srv.Close()
	for i, s := range streams {
		if err := s.Receive(&caucusv1.PutResponse{}); connect.CodeOf(err) != connect.CodeUnavailable {
			t.Errorf("stream %d after the server closed: %v, want Unavailable", i, err)
		}
		s.Close()
	}
	for snap.Receive() {
	}
	if connect.CodeOf(snap.Err()) != connect.CodeUnavailable {
		t.Errorf("snapshot stream after the server closed: %v, want Unavailable", snap.Err())
	}
	snap.Close()
	c.Close()
	checkGoroutinesBackTo(t, before)
}
