package nativeapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
)

const (
	// MaxInFlightPerConn bounds the calls one connection runs at once. A client multiplexes
	// all of its callers over one connection, so this is sized for a busy client (kvbench runs
	// 64 callers per client) while keeping a misbehaving one from spawning unbounded work.
	MaxInFlightPerConn = 1024

	// DefaultMaxRequestBytes bounds a request payload when ServerConfig leaves it zero.
	DefaultMaxRequestBytes = 2 << 20

	// DefaultWriteTimeout bounds each write of responses to a connection when ServerConfig
	// leaves it zero. A client that stops reading (a hung process, a host gone without a
	// reset) would otherwise hold its connection's goroutines and in-flight slots until TCP
	// gives up, which can take a quarter of an hour, or forever.
	DefaultWriteTimeout = 10 * time.Second

	// readBufSize and writeBufSize size each connection's bufio reader and writer: large enough
	// to take many small frames per syscall.
	readBufSize  = 32 << 10
	writeBufSize = 32 << 10
)

// ServerConfig configures a Server.
type ServerConfig struct {
	Handlers Handlers
	// MaxRequestBytes bounds a request's protobuf payload; a larger frame closes the
	// connection. It should equal the connect handlers' read limit (mvcc.Limits.MaxRequestBytes).
	MaxRequestBytes int
	// WriteTimeout bounds each write to a connection (0: DefaultWriteTimeout). A write that
	// cannot finish in time closes the connection; its client's pending calls fail with
	// Unavailable and are retried as the client's policy allows.
	WriteTimeout time.Duration
	// MaxStreamsPerConn bounds the streams open at once on one connection
	// (0: DefaultMaxStreamsPerConn); an open past it is refused with ResourceExhausted.
	MaxStreamsPerConn int
	// StreamWindow is each stream's receive window for client messages (0:
	// DefaultStreamWindow). It is raised to the request frame limit if below it, so that any
	// message the server accepts fits.
	StreamWindow int
	Logger       *slog.Logger
}

// Server serves the native protocol on connections handed to it by Split (or ServeConn).
type Server struct {
	h            Handlers
	maxFrame     int
	writeTimeout time.Duration
	log          *slog.Logger
	maxStreams   int
	streamWindow int
	streamFns    []connect.StreamingHandlerFunc // by method; nil for unary or unserved ones
	sendBlocked  func()                         // tests: runs when a stream's Send waits for credit

	mu     sync.Mutex
	conns  map[*serverConn]struct{}
	closed bool
	wg     sync.WaitGroup // connection goroutines and calls
	work   *workers       // goroutines that run unary calls (workers.go)
}

// NewServer returns a server for cfg.
func NewServer(cfg ServerConfig) *Server {
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxStreamsPerConn <= 0 {
		cfg.MaxStreamsPerConn = DefaultMaxStreamsPerConn
	}
	if cfg.StreamWindow <= 0 {
		cfg.StreamWindow = DefaultStreamWindow
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	s := &Server{
		h:            cfg.Handlers,
		maxFrame:     cfg.MaxRequestBytes + RequestHeaderLen,
		writeTimeout: cfg.WriteTimeout,
		log:          lg.With("component", "nativeapi"),
		maxStreams:   cfg.MaxStreamsPerConn,
		conns:        make(map[*serverConn]struct{}),
		work:         newWorkers(),
		streamFns:    make([]connect.StreamingHandlerFunc, len(methods)),
	}
	s.streamWindow = min(max(cfg.StreamWindow, s.maxFrame), math.MaxUint32)
	for m := range methods {
		if spec := &methods[m]; spec.newHandler != nil {
			s.streamFns[m] = captureStreaming(spec, &s.h)
		}
	}
	return s
}

// ErrServerClosed is returned by ServeConn after Close.
var ErrServerClosed = errors.New("nativeapi: server closed")

// ServeConn serves nc, whose preface was already consumed; br holds any bytes read past the
// preface (nil when none were). It returns at once: the connection is served by its own
// goroutines until it fails or Close is called. It closes nc and returns ErrServerClosed after
// Close.
func (s *Server) ServeConn(nc net.Conn, br *bufio.Reader) error {
	if br == nil {
		br = bufio.NewReaderSize(nc, readBufSize)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &serverConn{
		s:      s,
		nc:     nc,
		br:     br,
		ctx:    ctx,
		cancel: cancel,
		// Every queued response holds one in-flight slot until it is queued, so the queue
		// never holds more than MaxInFlightPerConn responses and sends to it never block.
		out:     make(chan *[]byte, MaxInFlightPerConn),
		sem:     make(chan struct{}, MaxInFlightPerConn),
		streams: make(map[uint64]*serverStream),
		sqKick:  make(chan struct{}, 1),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cancel()
		nc.Close()
		return ErrServerClosed
	}
	s.conns[c] = struct{}{}
	s.wg.Add(2)
	s.mu.Unlock()
	go c.readLoop()
	go c.writeLoop()
	return nil
}

// Close closes every connection, cancels the calls in flight and waits until they returned.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	s.wg.Wait()
	s.work.stop()
	return nil
}

// serverConn is one client connection.
type serverConn struct {
	s      *Server
	nc     net.Conn
	br     *bufio.Reader
	ctx    context.Context // canceled when the connection closes; parent of every call
	cancel context.CancelFunc
	out    chan *[]byte  // encoded response frames for the writer
	sem    chan struct{} // one token per call in flight
	// handling counts calls whose response is not yet queued (writeLoop's hint to wait).
	handling atomic.Int32

	streamsMu sync.Mutex
	streams   map[uint64]*serverStream // open streams by id

	// sq holds stream frames for the writer. Unlike out it is not bounded by in-flight slots
	// but by the flow-control rules (see queueStreamFrame).
	sqMu   sync.Mutex
	sq     []streamEntry
	sqLen  atomic.Int32 // len(sq), read without the lock by the writer
	sqKick chan struct{}

	closeOnce sync.Once
}

func (c *serverConn) close() {
	c.closeOnce.Do(func() {
		c.cancel()
		c.nc.Close()
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
}

func (c *serverConn) readLoop() {
	defer c.s.wg.Done()
	defer c.close()
	for {
		// Take the in-flight slot before reading: at the bound the reader stops, and TCP flow
		// control pushes back on the client.
		select {
		case c.sem <- struct{}{}:
		case <-c.ctx.Done():
			return
		}
		bp, err := readFrame(c.br, RequestHeaderLen, c.s.maxFrame)
		if err != nil {
			<-c.sem
			c.logReadError(err)
			return
		}
		h, payload, err := DecodeRequest(*bp)
		if err != nil { // unreachable after readFrame's checks; kept as a guard
			putBuf(bp)
			<-c.sem
			c.s.log.Warn("native client sent a malformed frame; closing", "remote", c.nc.RemoteAddr().String(), "err", err)
			return
		}
		// Stream frames and opens take no in-flight slot: streams have their own bound.
		if h.Method >= FirstFrameType {
			<-c.sem
			if err := c.streamFrame(h, payload, bp); err != nil {
				c.s.log.Warn("native client broke the stream rules; closing its connection", "remote", c.nc.RemoteAddr().String(), "err", err)
				return
			}
			continue
		}
		if spec, ok := lookup(h.Method); ok && spec.streamType != connect.StreamTypeUnary {
			<-c.sem
			err := c.openStream(h, spec, payload)
			putBuf(bp)
			if err != nil {
				c.s.log.Warn("native client sent an invalid stream open; closing its connection", "remote", c.nc.RemoteAddr().String(), "err", err)
				return
			}
			continue
		}
		c.s.wg.Add(1)
		c.handling.Add(1)
		c.s.work.run(unaryCall{c: c, h: h, payload: payload, bp: bp})
	}
}

func (c *serverConn) logReadError(err error) {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), c.ctx.Err() != nil:
		// The client hung up or we are closing: normal.
		c.s.log.Debug("native connection closed", "remote", c.nc.RemoteAddr().String(), "err", err)
	case errors.Is(err, ErrFrameTooLarge), errors.Is(err, ErrFrameTooShort):
		c.s.log.Warn("native client sent an invalid frame; closing its connection", "remote", c.nc.RemoteAddr().String(), "err", err)
	default:
		c.s.log.Info("native connection failed", "remote", c.nc.RemoteAddr().String(), "err", err)
	}
}

// serve runs one call and queues its response. payload aliases *bp, which is released once the
// request is decoded.
func (c *serverConn) serve(h RequestHeader, payload []byte, bp *[]byte) {
	defer c.s.wg.Done()
	defer func() { <-c.sem }()
	ctx := c.ctx
	if h.TimeoutMS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(h.TimeoutMS)*time.Millisecond)
		defer cancel()
	}
	spec, req, err := decodeRequest(h.Method, payload)
	putBuf(bp) // the request is decoded: do not hold its frame while the handler runs
	var resp connect.AnyResponse
	if err == nil {
		resp, err = c.s.invokeRecovering(ctx, spec, req)
	}
	out := getBuf(ResponseHeaderLen + 64)
	*out = encodeResponse(*out, h.CallID, resp, err)
	c.handling.Add(-1)
	c.out <- out // never blocks: see the capacity of out
}

// decodeRequest finds method m and decodes its request. The request does not alias payload.
func decodeRequest(m Method, payload []byte) (*methodSpec, connect.AnyRequest, error) {
	spec, ok := lookup(m)
	if !ok {
		return nil, nil, connect.NewError(connect.CodeUnimplemented, fmt.Errorf("unknown method %d", uint16(m)))
	}
	req, err := spec.decode(payload)
	if err != nil {
		return nil, nil, err
	}
	return spec, req, nil
}

// invokeRecovering is invoke with a handler's panic turned into an Internal error for that call
// (logged with its stack), as net/http does for the connect handlers on the same port: one bad
// request must not take the member and every other client's calls down with it. Panics in the
// node's own goroutines are not caught here and still stop the process.
func (s *Server) invokeRecovering(ctx context.Context, spec *methodSpec, req connect.AnyRequest) (resp connect.AnyResponse, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic serving a native call", "procedure", spec.procedure, "panic", r, "stack", string(debug.Stack()))
			resp, err = nil, connect.NewError(connect.CodeInternal, fmt.Errorf("internal error serving %s", spec.procedure))
		}
	}()
	return s.invoke(ctx, spec, req)
}

// invoke runs one decoded call through the interceptor, if any, and the handler.
func (s *Server) invoke(ctx context.Context, spec *methodSpec, req connect.AnyRequest) (connect.AnyResponse, error) {
	h := &s.h
	next := func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		return spec.invoke(ctx, h, req)
	}
	if s.h.Intercept != nil {
		return s.h.Intercept(ctx, spec.procedure, req, next)
	}
	return next(ctx, req)
}

// encodeResponse appends the response frame for a call's outcome to b.
func encodeResponse(b []byte, id uint64, resp connect.AnyResponse, err error) []byte {
	if err == nil {
		msg, ok := resp.Any().(proto.Message)
		if !ok {
			err = connect.NewError(connect.CodeInternal, fmt.Errorf("handler returned a %T, not a protobuf message", resp.Any()))
		} else {
			start := len(b)
			b = AppendResponseHeader(b, ResponseHeader{CallID: id})
			var merr error
			b, merr = proto.MarshalOptions{}.MarshalAppend(b, msg)
			switch {
			case merr != nil:
				err = connect.NewError(connect.CodeInternal, fmt.Errorf("encoding the response: %w", merr))
			case len(b)-start > MaxResponseFrame:
				// The client would close the connection on it, failing every call on it:
				// fail this call alone instead.
				err = connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
					"response of %d bytes exceeds the native protocol's %d-byte frame limit; ask for fewer keys",
					len(b)-start, MaxResponseFrame))
			default:
				FinishFrame(b[start:])
				return b
			}
			b = b[:start]
		}
	}
	code, msg := errorStatus(err)
	start := len(b)
	b = AppendResponseHeader(b, ResponseHeader{CallID: id, Status: uint16(code)})
	b = append(b, msg...)
	FinishFrame(b[start:])
	return b
}

// errorStatus maps a handler error to its wire status and message, as connect does: a
// *connect.Error keeps its code and message, context errors become Canceled or
// DeadlineExceeded, and anything else is Unknown.
func errorStatus(err error) (connect.Code, string) {
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce.Code(), ce.Message()
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded, err.Error()
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled, err.Error()
	}
	return connect.CodeUnknown, err.Error()
}

// writeLoop writes queued responses. It drains the queue into the buffered writer and flushes
// only when the queue is empty, so responses that complete together share one syscall.
func (c *serverConn) writeLoop() {
	defer c.s.wg.Done()
	defer c.close()
	defer c.closeStreams()
	bw := bufio.NewWriterSize(deadlineWriter{c.nc, c.s.writeTimeout}, writeBufSize)
	var spare []streamEntry
	for {
		var bp *[]byte
		select {
		case bp = <-c.out:
		case <-c.sqKick:
		case <-c.ctx.Done():
			return
		}
		yielded := false
		for {
			if bp != nil {
				_, err := bw.Write(*bp)
				putBuf(bp)
				if err != nil {
					c.logWriteError(err)
					return
				}
			}
			if c.sqLen.Load() > 0 {
				var err error
				if spare, err = c.writeStreamFrames(bw, spare); err != nil {
					c.logWriteError(err)
					return
				}
			}
			select {
			case bp = <-c.out:
				continue
			default:
				bp = nil
			}
			if !yielded && c.handling.Load() > 0 {
				// The node answers a batch of proposals at once, waking their handlers
				// together; let those still running queue their responses before this one
				// goes out alone. Only then: a yield wakes an idle P (a futex wake-up),
				// which a lone call would pay for nothing.
				yielded = true
				runtime.Gosched()
				select {
				case bp = <-c.out:
					continue
				default:
				}
				if c.sqLen.Load() > 0 {
					continue
				}
			}
			break
		}
		if err := bw.Flush(); err != nil {
			c.logWriteError(err)
			return
		}
	}
}

// writeStreamFrames writes the queued stream frames into bw and returns the drained slice for
// reuse. Each frame stops counting as its stream's queued bytes once it is in bw.
func (c *serverConn) writeStreamFrames(bw *bufio.Writer, spare []streamEntry) ([]streamEntry, error) {
	q := c.takeStreamFrames(spare)
	for i, e := range q {
		_, err := bw.Write(*e.bp)
		if e.st != nil {
			e.st.queued.Add(-int64(len(*e.bp)))
		}
		putBuf(e.bp)
		q[i] = streamEntry{}
		if err != nil {
			for _, rest := range q[i+1:] {
				putBuf(rest.bp)
			}
			return nil, err
		}
	}
	return q[:0], nil
}

// deadlineWriter gives every write to conn (each flush of the buffered writer) its own
// deadline, so a slow reader that keeps up is never cut off and one that stopped is.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	if err := d.conn.SetWriteDeadline(time.Now().Add(d.timeout)); err != nil {
		return 0, err
	}
	return d.conn.Write(p)
}

func (c *serverConn) logWriteError(err error) {
	if c.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
		return
	}
	c.s.log.Info("native connection failed while writing", "remote", c.nc.RemoteAddr().String(), "err", err)
}
