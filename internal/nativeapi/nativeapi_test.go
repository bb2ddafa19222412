package nativeapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/internal/testutil"
)

// testKV echoes Range (key and value of the single result are the request's key and range end)
// and runs put for Put.
type testKV struct {
	caucusv1connect.UnimplementedKVHandler
	put func(ctx context.Context, req *caucusv1.PutRequest) (*caucusv1.PutResponse, error)
}

func (k *testKV) Range(_ context.Context, req *connect.Request[caucusv1.RangeRequest]) (*connect.Response[caucusv1.RangeResponse], error) {
	return connect.NewResponse(&caucusv1.RangeResponse{
		Kvs:   []*caucusv1.KeyValue{{Key: req.Msg.GetKey(), Value: req.Msg.GetRangeEnd()}},
		Count: req.Msg.GetLimit(),
	}), nil
}

func (k *testKV) Put(ctx context.Context, req *connect.Request[caucusv1.PutRequest]) (*connect.Response[caucusv1.PutResponse], error) {
	if k.put == nil {
		return connect.NewResponse(&caucusv1.PutResponse{Header: &caucusv1.ResponseHeader{Revision: 1}}), nil
	}
	resp, err := k.put(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// fixture is a split listener serving a native server and an HTTP server with the connect KV
// handler and a plain /hello route.
type fixture struct {
	addr   string
	native *Server
	logs   *testutil.LockedBuffer
}

func newFixture(t *testing.T, kv caucusv1connect.KVHandler, maxRequest int) *fixture {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.LockedBuffer{}
	lg := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	native := NewServer(ServerConfig{Handlers: Handlers{KV: kv}, MaxRequestBytes: maxRequest, Logger: lg})
	sl := Split(ln, native, SplitConfig{Logger: lg})
	mux := http.NewServeMux()
	mux.Handle(caucusv1connect.NewKVHandler(kv))
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello over http") })
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	hs := &http.Server{Handler: mux, Protocols: &protocols}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(sl) }()
	t.Cleanup(func() {
		if err := hs.Close(); err != nil {
			t.Errorf("closing the http server: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("http Serve returned %v, want ErrServerClosed", err)
		}
		native.Close()
		sl.Close()
	})
	return &fixture{addr: ln.Addr().String(), native: native, logs: logs}
}

func (f *fixture) client(t *testing.T) *Client {
	t.Helper()
	c := NewClient(ClientConfig{Addr: f.addr})
	t.Cleanup(func() { c.Close() })
	return c
}

func h2cClient() *http.Client {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &protocols}}
}

func TestOneListenerServesHTTP1H2CAndNative(t *testing.T) {
	f := newFixture(t, &testKV{}, 0)
	ctx := context.Background()

	// curl-like HTTP/1.1 on a raw connection.
	conn, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /hello HTTP/1.1\r\nHost: caucus\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("HTTP/1.1 response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	conn.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "hello over http" {
		t.Errorf("HTTP/1.1: %d %q", resp.StatusCode, body)
	}

	// connect over h2c.
	hc := h2cClient()
	defer hc.CloseIdleConnections()
	kvc := caucusv1connect.NewKVClient(hc, "http://"+f.addr)
	cr, err := kvc.Range(ctx, connect.NewRequest(&caucusv1.RangeRequest{Key: []byte("h2c"), RangeEnd: []byte("end")}))
	if err != nil {
		t.Fatalf("connect over h2c: %v", err)
	}
	if string(cr.Msg.GetKvs()[0].GetKey()) != "h2c" {
		t.Errorf("connect over h2c answered %v", cr.Msg)
	}

	// native.
	nc := f.client(t)
	nr, err := KVClient{nc}.Range(ctx, connect.NewRequest(&caucusv1.RangeRequest{Key: []byte("native"), RangeEnd: []byte("end"), Limit: 9}))
	if err != nil {
		t.Fatalf("native: %v", err)
	}
	if kv := nr.Msg.GetKvs()[0]; string(kv.GetKey()) != "native" || string(kv.GetValue()) != "end" || nr.Msg.GetCount() != 9 {
		t.Errorf("native answered %v", nr.Msg)
	}
	if nc.Calls.Load() != 1 {
		t.Errorf("native client counted %d calls, want 1", nc.Calls.Load())
	}
}

func TestSlowSnifferDoesNotBlockAccept(t *testing.T) {
	f := newFixture(t, &testKV{}, 0)
	// A connection that sends one byte of the preface and stalls...
	stalled, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := stalled.Write(Preface()[:1]); err != nil {
		t.Fatal(err)
	}
	// ...and one that sends nothing at all must not keep others from being served.
	silent, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := (KVClient{f.client(t)}).Range(ctx, connect.NewRequest(&caucusv1.RangeRequest{Key: []byte("k")})); err != nil {
		t.Fatalf("native call while other connections stall: %v", err)
	}
}

func TestDeadlinePropagates(t *testing.T) {
	deadlines := make(chan time.Duration, 1)
	kv := &testKV{put: func(ctx context.Context, _ *caucusv1.PutRequest) (*caucusv1.PutResponse, error) {
		dl, ok := ctx.Deadline()
		if !ok {
			deadlines <- -1
		} else {
			deadlines <- time.Until(dl)
		}
		return &caucusv1.PutResponse{}, nil
	}}
	f := newFixture(t, kv, 0)
	c := KVClient{f.client(t)}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, connect.NewRequest(&caucusv1.PutRequest{Key: []byte("k")})); err != nil {
		t.Fatal(err)
	}
	if left := <-deadlines; left <= 0 || left > 3*time.Second {
		t.Errorf("handler saw %v left, want a deadline within the client's 3s", left)
	}
	if _, err := c.Put(context.Background(), connect.NewRequest(&caucusv1.PutRequest{Key: []byte("k")})); err != nil {
		t.Fatal(err)
	}
	if left := <-deadlines; left != -1 {
		t.Errorf("handler saw a deadline (%v left) although the client set none", left)
	}
}

func TestClientDeadlineEndsCallAndDropsLateResponse(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	kv := &testKV{put: func(ctx context.Context, _ *caucusv1.PutRequest) (*caucusv1.PutResponse, error) {
		started <- struct{}{}
		<-release // ignore ctx: the response arrives after the client gave up
		return &caucusv1.PutResponse{}, nil
	}}
	f := newFixture(t, kv, 0)
	nc := f.client(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := KVClient{nc}.Put(ctx, connect.NewRequest(&caucusv1.PutRequest{Key: []byte("k")}))
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; connect.CodeOf(err) != connect.CodeCanceled || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want Canceled wrapping context.Canceled", err)
	}
	close(release)
	// The late response is dropped and the connection stays usable.
	if _, err := (KVClient{nc}).Range(context.Background(), connect.NewRequest(&caucusv1.RangeRequest{Key: []byte("k")})); err != nil {
		t.Fatalf("call after a dropped response: %v", err)
	}
}

func TestConnCloseCancelsCalls(t *testing.T) {
	started := make(chan struct{}, 1)
	ended := make(chan error, 1)
	kv := &testKV{put: func(ctx context.Context, _ *caucusv1.PutRequest) (*caucusv1.PutResponse, error) {
		started <- struct{}{}
		<-ctx.Done()
		ended <- ctx.Err()
		return nil, ctx.Err()
	}}
	f := newFixture(t, kv, 0)
	var conn net.Conn
	var dialed sync.WaitGroup
	dialed.Add(1)
	nc := NewClient(ClientConfig{Addr: f.addr, Dialer: func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		conn = c
		dialed.Done()
		return c, err
	}})
	defer nc.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := KVClient{nc}.Put(context.Background(), connect.NewRequest(&caucusv1.PutRequest{Key: []byte("k")}))
		errc <- err
	}()
	<-started
	dialed.Wait()
	conn.Close()
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Errorf("handler context ended with %v, want Canceled", err)
	}
	if err := <-errc; connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("pending call failed with %v, want Unavailable", err)
	}
	// The next call dials a new connection.
	dialed.Add(1)
	if _, err := (KVClient{nc}).Range(context.Background(), connect.NewRequest(&caucusv1.RangeRequest{Key: []byte("k")})); err != nil {
		t.Fatalf("call after the connection failed: %v", err)
	}
}

func TestServerCloseCancelsCalls(t *testing.T) {
	started := make(chan struct{}, 1)
	kv := &testKV{put: func(ctx context.Context, _ *caucusv1.PutRequest) (*caucusv1.PutResponse, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	f := newFixture(t, kv, 0)
	nc := f.client(t)
	errc := make(chan error, 1)
	go func() {
		_, err := KVClient{nc}.Put(context.Background(), connect.NewRequest(&caucusv1.PutRequest{Key: []byte("k")}))
		errc <- err
	}()
	<-started
	f.native.Close() // returns only once the handler returned
	if err := <-errc; connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("call pending at server close failed with %v, want Unavailable", err)
	}
}

func TestErrorsKeepCodeAndMessage(t *testing.T) {
	var fail atomic.Pointer[error]
	kv := &testKV{put: func(ctx context.Context, _ *caucusv1.PutRequest) (*caucusv1.PutResponse, error) {
		return nil, *fail.Load()
	}}
	f := newFixture(t, kv, 0)
	c := KVClient{f.client(t)}
	for _, tc := range []struct {
		err  error
		code connect.Code
		msg  string
	}{
		{connect.NewError(connect.CodeUnavailable, errors.New("not leader")), connect.CodeUnavailable, "not leader"},
		{connect.NewError(connect.CodeOutOfRange, fmt.Errorf("mvcc: %w", errors.New("required revision has been compacted"))), connect.CodeOutOfRange, "mvcc: required revision has been compacted"},
		{errors.New("plain failure"), connect.CodeUnknown, "plain failure"},
		{fmt.Errorf("waiting: %w", context.DeadlineExceeded), connect.CodeDeadlineExceeded, "waiting: context deadline exceeded"},
	} {
		fail.Store(&tc.err)
		_, err := c.Put(context.Background(), connect.NewRequest(&caucusv1.PutRequest{Key: []byte("k")}))
		var ce *connect.Error
		if !errors.As(err, &ce) {
			t.Fatalf("%v: got %v, not a connect error", tc.err, err)
		}
		if ce.Code() != tc.code || ce.Message() != tc.msg || !connect.IsWireError(err) {
			t.Errorf("%v: got code %v message %q wire %v, want %v %q wire", tc.err, ce.Code(), ce.Message(), connect.IsWireError(err), tc.code, tc.msg)
		}
	}
	// A service that is not configured and a method with no number are Unimplemented.
	if _, err := (LeaseClient{c.C}).LeaseGrant(context.Background(), connect.NewRequest(&caucusv1.LeaseGrantRequest{Ttl: 5})); connect.CodeOf(err) != connect.CodeUnimplemented {
		t.Errorf("unconfigured service: %v, want Unimplemented", err)
	}
	if err := c.C.Invoke(context.Background(), Method(999), &caucusv1.PutRequest{}, &caucusv1.PutResponse{}); connect.CodeOf(err) != connect.CodeUnimplemented {
		t.Errorf("unknown method: %v, want Unimplemented", err)
	}
}

func TestOversizeRequestClosesConnection(t *testing.T) {
	const maxRequest = 1 << 10
	f := newFixture(t, &testKV{}, maxRequest)
	c := KVClient{f.client(t)}
	_, err := c.Put(context.Background(), connect.NewRequest(&caucusv1.PutRequest{Key: []byte("k"), Value: make([]byte, 2*maxRequest)}))
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("oversize request: %v, want Unavailable (connection closed)", err)
	}
	if !strings.Contains(f.logs.String(), "invalid frame") || !strings.Contains(f.logs.String(), ErrFrameTooLarge.Error()) {
		t.Errorf("server log does not say why it closed the connection:\n%s", f.logs.String())
	}
	// Within the limit works on the redialed connection.
	if _, err := c.Put(context.Background(), connect.NewRequest(&caucusv1.PutRequest{Key: []byte("k"), Value: make([]byte, maxRequest/2)})); err != nil {
		t.Fatalf("request within the limit: %v", err)
	}
}

func TestClientRejectsInvalidResponseFrame(t *testing.T) {
	// A "server" that answers the preface like an HTTP server would.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		// Answer every connection: with -count, a stray dial from an earlier run's client may
		// reach this reused port first.
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				fmt.Fprint(conn, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
				_, _ = io.Copy(io.Discard, conn)
			}()
		}
	}()
	nc := NewClient(ClientConfig{Addr: ln.Addr().String()})
	defer nc.Close()
	_, err = KVClient{nc}.Range(context.Background(), connect.NewRequest(&caucusv1.RangeRequest{Key: []byte("k")}))
	if connect.CodeOf(err) != connect.CodeUnavailable || !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want Unavailable wrapping ErrFrameTooLarge", err)
	}
}

func TestManyConcurrentCalls(t *testing.T) {
	f := newFixture(t, &testKV{}, 0)
	nc := f.client(t)
	const workers, perWorker = 64, 200
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				key := fmt.Sprintf("w%d-%d", w, i)
				resp, err := KVClient{nc}.Range(context.Background(), connect.NewRequest(&caucusv1.RangeRequest{Key: []byte(key), RangeEnd: []byte(key + "-end"), Limit: int64(i)}))
				if err != nil {
					errs <- err
					return
				}
				kv := resp.Msg.GetKvs()[0]
				if string(kv.GetKey()) != key || string(kv.GetValue()) != key+"-end" || resp.Msg.GetCount() != int64(i) {
					errs <- fmt.Errorf("call %s got the response %v of another call", key, resp.Msg)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := nc.Calls.Load(); got != workers*perWorker {
		t.Errorf("%d calls completed, want %d", got, workers*perWorker)
	}
}

func TestInFlightBound(t *testing.T) {
	const calls = MaxInFlightPerConn + 200
	var running, peak atomic.Int64
	reached := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	kv := &testKV{put: func(ctx context.Context, _ *caucusv1.PutRequest) (*caucusv1.PutResponse, error) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if n == MaxInFlightPerConn {
			once.Do(func() { close(reached) })
		}
		<-release
		running.Add(-1)
		return &caucusv1.PutResponse{}, nil
	}}
	f := newFixture(t, kv, 0)
	nc := f.client(t)
	var wg sync.WaitGroup
	for range calls {
		wg.Go(func() {
			if _, err := (KVClient{nc}).Put(context.Background(), connect.NewRequest(&caucusv1.PutRequest{Key: []byte("k")})); err != nil {
				t.Errorf("Put: %v", err)
			}
		})
	}
	<-reached
	if p := peak.Load(); p > MaxInFlightPerConn {
		t.Errorf("%d calls ran at once on one connection, bound is %d", p, MaxInFlightPerConn)
	}
	close(release)
	wg.Wait()
	if p := peak.Load(); p > MaxInFlightPerConn {
		t.Errorf("%d calls ran at once on one connection, bound is %d", p, MaxInFlightPerConn)
	}
	if got := nc.Calls.Load(); got != calls {
		t.Errorf("%d calls completed, want %d", got, calls)
	}
}

func TestSplitCloseStopsAcceptAndSniffers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	native := NewServer(ServerConfig{})
	defer native.Close()
	sl := Split(ln, native, SplitConfig{})
	// A connection still being sniffed when the listener closes.
	stalled, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	accepted := make(chan error, 1)
	go func() {
		_, err := sl.Accept()
		accepted <- err
	}()
	if err := sl.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	// Close waited for the sniffer, which closed the stalled connection.
	if _, err := stalled.Read(make([]byte, 1)); err == nil {
		t.Error("the connection being sniffed is still open after Close")
	}
}

// BenchmarkUnaryRoundTrip compares one small Put round trip over the native protocol and over
// connect with h2c, on loopback, with parallel callers as a client would have.
func BenchmarkUnaryRoundTrip(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	kv := &testKV{}
	native := NewServer(ServerConfig{Handlers: Handlers{KV: kv}, Logger: slog.New(slog.DiscardHandler)})
	sl := Split(ln, native, SplitConfig{})
	mux := http.NewServeMux()
	mux.Handle(caucusv1connect.NewKVHandler(kv))
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	hs := &http.Server{Handler: mux, Protocols: &protocols}
	go hs.Serve(sl)
	defer func() { hs.Close(); native.Close() }()
	req := &caucusv1.PutRequest{Key: []byte("bench-key"), Value: bytes.Repeat([]byte("v"), 100)}

	run := func(b *testing.B, c caucusv1connect.KVClient) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Put(context.Background(), connect.NewRequest(req)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("native", func(b *testing.B) {
		nc := NewClient(ClientConfig{Addr: ln.Addr().String()})
		defer nc.Close()
		run(b, KVClient{nc})
	})
	b.Run("connect-h2c", func(b *testing.B) {
		hc := h2cClient()
		defer hc.CloseIdleConnections()
		run(b, caucusv1connect.NewKVClient(hc, "http://"+ln.Addr().String()))
	})
}

// TestCloseLeavesNoGoroutines checks that closing the listener, the server and the client
// waits for every goroutine they started, whatever state their connections were in.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 4)
	kv := &testKV{put: func(ctx context.Context, _ *caucusv1.PutRequest) (*caucusv1.PutResponse, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	native := NewServer(ServerConfig{Handlers: Handlers{KV: kv}, Logger: slog.New(slog.DiscardHandler)})
	sl := Split(ln, native, SplitConfig{})
	nc := NewClient(ClientConfig{Addr: ln.Addr().String()})
	// Calls blocked in a handler, a connection stalled in sniffing, and an HTTP connection
	// nobody accepts.
	errc := make(chan error, 4)
	var callers sync.WaitGroup
	for range 4 {
		callers.Go(func() {
			_, err := KVClient{nc}.Put(context.Background(), connect.NewRequest(&caucusv1.PutRequest{Key: []byte("k")}))
			errc <- err
		})
	}
	for range 4 {
		<-started
	}
	stalled, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	unaccepted, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer unaccepted.Close()
	fmt.Fprint(unaccepted, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")

	sl.Close()
	native.Close()
	for range 4 {
		if err := <-errc; connect.CodeOf(err) != connect.CodeUnavailable {
			t.Errorf("call pending at close: %v, want Unavailable", err)
		}
	}
	nc.Close()
	callers.Wait()
	checkGoroutinesBackTo(t, before)
}

// checkGoroutinesBackTo fails unless the goroutine count returns to before. Every goroutine has
// signaled its WaitGroup, but one may still be between that and its exit: yield until they are
// gone, and fail only if some remain (a real leak stays).
func checkGoroutinesBackTo(t *testing.T, before int) {
	t.Helper()
	after := runtime.NumGoroutine()
	for deadline := time.Now().Add(5 * time.Second); after > before && time.Now().Before(deadline); after = runtime.NumGoroutine() {
		runtime.Gosched()
	}
	if after > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after closing everything:\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}

func TestOversizeResponseFailsOnlyItsCall(t *testing.T) {
	huge := connect.NewResponse(&caucusv1.RangeResponse{Kvs: []*caucusv1.KeyValue{{Key: []byte("k"), Value: make([]byte, MaxResponseFrame)}}})
	frame := encodeResponse(nil, 7, huge, nil)
	h, payload, err := DecodeResponse(frame)
	if err != nil {
		t.Fatal(err)
	}
	if h.CallID != 7 || connect.Code(h.Status) != connect.CodeResourceExhausted || !strings.Contains(string(payload), "frame limit") {
		t.Errorf("oversize response encoded as %+v %q, want ResourceExhausted naming the limit", h, payload)
	}
	if len(frame) > 1<<10 {
		t.Errorf("error frame is %d bytes: the oversize payload leaked into it", len(frame))
	}
}

// A handler that panics fails its own call with Internal and leaves the connection, the server
// and every other call alone, as net/http does for the connect handlers on the same port.
func TestHandlerPanicFailsOnlyItsCall(t *testing.T) {
	kv := &testKV{put: func(ctx context.Context, req *caucusv1.PutRequest) (*caucusv1.PutResponse, error) {
		if string(req.GetKey()) == "boom" {
			panic("handler bug")
		}
		return &caucusv1.PutResponse{Header: &caucusv1.ResponseHeader{Revision: 7}}, nil
	}}
	f := newFixture(t, kv, 0)
	nc := f.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := KVClient{nc}.Put(ctx, connect.NewRequest(&caucusv1.PutRequest{Key: []byte("boom")}))
	if connect.CodeOf(err) != connect.CodeInternal {
		t.Fatalf("call whose handler panicked: %v, want Internal", err)
	}
	resp, err := KVClient{nc}.Put(ctx, connect.NewRequest(&caucusv1.PutRequest{Key: []byte("fine")}))
	if err != nil || resp.Msg.GetHeader().GetRevision() != 7 {
		t.Fatalf("next call on the same connection: %v, %v", resp, err)
	}
	if s := f.logs.String(); !strings.Contains(s, "panic serving a native call") || !strings.Contains(s, "handler bug") {
		t.Fatalf("the panic was not logged: %q", s)
	}
}

// A client that sends calls but stops reading their responses: once the socket buffers are
// full, the server's write cannot finish, and after WriteTimeout the server closes the
// connection instead of holding its goroutines and in-flight slots until TCP gives up.
func TestServerClosesConnectionThatStopsReading(t *testing.T) {
	f := newFixture(t, &testKV{}, 0)
	f.native.writeTimeout = 200 * time.Millisecond // before any connection exists
	conn, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	if _, err := conn.Write(preface[:]); err != nil {
		t.Fatal(err)
	}
	// Each Range echoes its 60 KiB range end back: 16 MiB of unread responses is more than
	// any socket buffer holds, however the kernel sizes them.
	big := bytes.Repeat([]byte{'v'}, 60<<10)
	for i := range 280 {
		b := AppendRequestHeader(nil, RequestHeader{CallID: uint64(i + 1), Method: MethodKVRange})
		b, err := proto.MarshalOptions{}.MarshalAppend(b, &caucusv1.RangeRequest{Key: []byte("k"), RangeEnd: big})
		if err != nil {
			t.Fatal(err)
		}
		FinishFrame(b)
		_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write(b); err != nil {
			break // the server stopped reading (in-flight bound) or closed: either is fine here
		}
	}
	// The connection may not even be registered yet when the writes above return: wait for
	// the server to say it closed it on a write, and to have let it go.
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.native.mu.Lock()
		n := len(f.native.conns)
		f.native.mu.Unlock()
		logged := strings.Contains(f.logs.String(), "native connection failed while writing")
		if n == 0 && logged {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after its client stopped reading (write timeout 200 ms) the server holds %d connection(s); close logged: %t", n, logged)
		}
		time.Sleep(10 * time.Millisecond) // polling the server's state with a deadline
	}
}

// A member that accepts a connection and then never reads it: once the socket buffers are
// full, the client's write cannot finish, and after WriteTimeout the connection fails, so the
// calls on it end with Unavailable long before their own deadlines.
func TestClientWriteTimeoutFailsConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
			go func() { <-stop; conn.Close() }() // accepted, never read
		}
	}()
	nc := NewClient(ClientConfig{Addr: ln.Addr().String(), WriteTimeout: 200 * time.Millisecond,
		Dialer: func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err == nil {
				_ = conn.(*net.TCPConn).SetWriteBuffer(4 << 10)
			}
			return conn, err
		}})
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	value := make([]byte, 64<<10)
	start := time.Now()
	errs := make(chan error, 32)
	for range cap(errs) {
		go func() {
			_, err := KVClient{nc}.Put(ctx, connect.NewRequest(&caucusv1.PutRequest{Key: []byte("k"), Value: value}))
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; connect.CodeOf(err) != connect.CodeUnavailable || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("call on a connection the member stopped reading: %v; want Unavailable from the write timeout", err)
		}
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("calls failed only after %s; the write timeout is 200 ms", took)
	}
}
