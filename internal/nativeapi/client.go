package nativeapi

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/sockopt"
)

// DefaultDialTimeout bounds a dial when ClientConfig leaves it zero.
const DefaultDialTimeout = 2 * time.Second

// DefaultClientWriteTimeout bounds each write of requests to the connection when ClientConfig
// leaves it zero: a member that stopped reading fails the connection (its calls end with
// Unavailable, and the next call dials again) instead of holding the writer forever.
const DefaultClientWriteTimeout = 10 * time.Second

// UnackedTimeout is how long data written to a member may stay unacknowledged by its kernel
// before the connection fails (TCP_USER_TIMEOUT, Linux): a member whose machine vanished with
// calls in flight is noticed in this time, not after TCP's quarter hour of retransmissions.
const UnackedTimeout = 20 * time.Second

// ErrClientClosed is the cause of the errors of calls made after Client.Close.
var ErrClientClosed = errors.New("nativeapi: client closed")

// ClientConfig configures a Client.
type ClientConfig struct {
	// Addr is the member's client address, host:port.
	Addr string
	// DialTimeout bounds establishing the connection (default DefaultDialTimeout).
	DialTimeout time.Duration
	// Dialer, if set, replaces the default TCP dialer (tests).
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
	// WriteTimeout bounds each write to the connection (0: DefaultClientWriteTimeout).
	WriteTimeout time.Duration
	// StreamWindow is each stream's receive window (0: DefaultStreamWindow, at most
	// MaxStreamWindow): the most a stream's unread messages can hold in the client.
	StreamWindow int
	Logger       *slog.Logger
}

// Client multiplexes calls to one member over a single connection, dialed lazily by the first
// call. When the connection fails, every call pending on it fails with connect.CodeUnavailable
// and the next call dials a new one. It is safe for concurrent use.
type Client struct {
	addr         string
	timeout      time.Duration
	writeTimeout time.Duration
	dial         func(ctx context.Context, addr string) (net.Conn, error)
	log          *slog.Logger
	streamWindow int

	mu      sync.Mutex
	cur     *clientConn // nil before the first dial and after a failure
	dialing *dialAttempt
	closed  bool
	wg      sync.WaitGroup // dial attempts and every connection's reader and writer

	// Calls counts calls that received a response frame, and Streams the streams opened;
	// tests use them to prove the native path carried their traffic.
	Calls   atomic.Uint64
	Streams atomic.Uint64
}

type dialAttempt struct {
	done chan struct{}
	cc   *clientConn
	err  error
}

// NewClient returns a client for cfg; it does not dial.
func NewClient(cfg ClientConfig) *Client {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultClientWriteTimeout
	}
	if cfg.StreamWindow <= 0 {
		cfg.StreamWindow = DefaultStreamWindow
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	c := &Client{addr: cfg.Addr, timeout: cfg.DialTimeout, writeTimeout: cfg.WriteTimeout, dial: cfg.Dialer, log: lg,
		streamWindow: min(cfg.StreamWindow, MaxStreamWindow)}
	if c.dial == nil {
		d := &net.Dialer{
			// Calls carry deadlines, but a member that vanished without a reset would keep
			// the connection "up" forever: keep-alive probes notice it within ~20s when
			// nothing is in flight, and UnackedTimeout when something is.
			KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 5 * time.Second, Count: 3},
			Control: func(_, _ string, rc syscall.RawConn) error {
				return sockopt.SetUserTimeout(rc, UnackedTimeout)
			},
		}
		c.dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	return c
}

// Close fails every pending call, closes the connection and waits for the client's goroutines
// to exit. Calls after Close fail.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	cc := c.cur
	c.cur = nil
	c.mu.Unlock()
	if cc != nil {
		cc.fail(ErrClientClosed)
	}
	c.wg.Wait()
	return nil
}

// conn returns a healthy connection, dialing one when there is none. Concurrent callers share
// one dial; each waits for it no longer than its own context allows.
func (c *Client) conn(ctx context.Context) (*clientConn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, connect.NewError(connect.CodeCanceled, ErrClientClosed)
	}
	if cc := c.cur; cc != nil && !cc.failed.Load() {
		c.mu.Unlock()
		return cc, nil
	}
	d := c.dialing
	if d == nil {
		d = &dialAttempt{done: make(chan struct{})}
		c.dialing = d
		c.wg.Add(1)
		go c.dialOnce(d)
	}
	c.mu.Unlock()
	select {
	case <-d.done:
		if d.err != nil {
			return nil, d.err
		}
		return d.cc, nil
	case <-ctx.Done():
		return nil, contextError(ctx)
	}
}

// dialOnce dials under the dial timeout (not a caller's context: other callers may be waiting
// on the same attempt) and publishes the result.
func (c *Client) dialOnce(d *dialAttempt) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	nc, err := c.dial(ctx, c.addr)
	if err == nil {
		// The preface goes out with the first request, in the writer's first flush.
		d.cc = newClientConn(c, nc)
	} else {
		// The dial error stays in the chain: callers tell "never sent" from it.
		d.err = connect.NewError(connect.CodeUnavailable, fmt.Errorf("nativeapi: dial %s: %w", c.addr, err))
	}
	c.mu.Lock()
	c.dialing = nil
	if d.cc != nil {
		if c.closed {
			d.cc.fail(ErrClientClosed)
			d.err = connect.NewError(connect.CodeCanceled, ErrClientClosed)
			d.cc = nil
		} else {
			c.cur = d.cc
		}
	}
	c.mu.Unlock()
	close(d.done)
}

// Invoke runs method with req and unmarshals the response into resp. Errors are *connect.Error:
// the server's status and message as a wire error, CodeUnavailable when the connection failed,
// and Canceled or DeadlineExceeded (wrapping ctx's error) when ctx ended first.
func (c *Client) Invoke(ctx context.Context, method Method, req, resp proto.Message) error {
	if ctx.Err() != nil {
		return contextError(ctx)
	}
	cl := callPool.Get().(*call)
	bp := getBuf(RequestHeaderLen + 64)
	b := AppendRequestHeader(*bp, RequestHeader{Method: method})
	b, err := proto.MarshalOptions{}.MarshalAppend(b, req)
	if err != nil {
		putBuf(bp)
		callPool.Put(cl)
		return connect.NewError(connect.CodeInternal, fmt.Errorf("nativeapi: encoding %s request: %w", method, err))
	}
	FinishFrame(b)
	*bp = b
	var cc *clientConn
	for attempt := 0; ; attempt++ {
		if cc, err = c.conn(ctx); err != nil {
			putBuf(bp)
			callPool.Put(cl)
			return err
		}
		// The deadline is taken after the dial so that the server's share is what is left.
		if !putTimeout(ctx, *bp) {
			putBuf(bp)
			callPool.Put(cl)
			return connect.NewError(connect.CodeDeadlineExceeded, context.DeadlineExceeded)
		}
		if err = cc.send(cl, nil, bp); err == nil {
			break
		}
		// The connection failed before the request was queued, so it was certainly not
		// sent: one fresh connection may carry it. A second failure is reported.
		if attempt == 1 {
			putBuf(bp)
			callPool.Put(cl)
			return err
		}
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		if cc.abandon(cl.id) {
			// The reader will never signal this call: it is ours again.
			callPool.Put(cl)
			return contextError(ctx)
		}
		<-cl.done // the response (or the failure) raced in: take it
	}
	return c.finish(cl, method, resp)
}

// putTimeout writes what is left of ctx's deadline, if it has one, into the timeout field of a
// request or open frame. It reports false when the deadline has passed.
func putTimeout(ctx context.Context, frame []byte) bool {
	dl, ok := ctx.Deadline()
	if !ok {
		return true
	}
	left := time.Until(dl)
	if left <= 0 {
		return false
	}
	// Round up so that a sub-millisecond remainder does not become "no timeout".
	binary.BigEndian.PutUint32(frame[14:], uint32(min((left+time.Millisecond-1)/time.Millisecond, math.MaxUint32)))
	return true
}

// finish turns a completed call into the caller's result and recycles it.
func (c *Client) finish(cl *call, method Method, resp proto.Message) error {
	defer func() {
		putBuf(cl.frame)
		cl.frame, cl.err, cl.status, cl.payload = nil, nil, 0, nil
		callPool.Put(cl)
	}()
	if cl.err != nil {
		return cl.err
	}
	c.Calls.Add(1)
	if cl.status != 0 {
		return connect.NewWireError(connect.Code(cl.status), errors.New(string(cl.payload)))
	}
	if err := proto.Unmarshal(cl.payload, resp); err != nil {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("nativeapi: decoding %s response: %w", method, err))
	}
	return nil
}

// contextError maps ctx's end to the connect error a connect client returns for it.
func contextError(ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return connect.NewError(connect.CodeCanceled, err)
}

// call is one request waiting for its response. Calls are pooled: a call goes back to the pool
// only once neither the reader nor a connection failure can signal it any more.
type call struct {
	id      uint64
	done    chan struct{} // buffered(1): signaled once per use
	frame   *[]byte       // the response frame, owned by the call
	status  uint16
	payload []byte // aliases *frame
	err     error
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// clientConn is one connection with its reader and writer goroutines.
type clientConn struct {
	c  *Client
	nc net.Conn

	mu      sync.Mutex
	pending map[uint64]*call
	streams map[uint64]*Stream
	nextID  uint64
	queue   []*[]byte // encoded requests for the writer
	spare   []*[]byte // the writer's previous batch slice, reused to avoid allocating
	err     error     // set once, by fail
	kick    chan struct{}
	failed  atomic.Bool
	closeCh chan struct{}
}

func newClientConn(c *Client, nc net.Conn) *clientConn {
	cc := &clientConn{
		c:       c,
		nc:      nc,
		pending: make(map[uint64]*call),
		streams: make(map[uint64]*Stream),
		kick:    make(chan struct{}, 1),
		closeCh: make(chan struct{}),
	}
	c.wg.Add(2)
	go cc.writeLoop()
	go cc.readLoop()
	return cc
}

// send registers a call (cl) or a stream (s) under a fresh id and queues its first frame. On
// error (the connection has failed) the frame remains the caller's.
func (cc *clientConn) send(cl *call, s *Stream, bp *[]byte) error {
	cc.mu.Lock()
	if cc.err != nil {
		err := cc.err
		cc.mu.Unlock()
		return err
	}
	cc.nextID++
	id := cc.nextID
	// The id is written into the frame under the lock so that ids are unique per connection.
	putCallID(*bp, id)
	if cl != nil {
		cl.id = id
		cc.pending[id] = cl
	} else {
		s.id = id
		cc.streams[id] = s
	}
	wakeWriter := cc.queueLocked(bp)
	cc.mu.Unlock()
	if wakeWriter {
		cc.kickWriter()
	}
	return nil
}

// queueLocked appends a frame for the writer, reporting whether the writer needs a kick; cc.mu
// must be held.
func (cc *clientConn) queueLocked(bp *[]byte) bool {
	cc.queue = append(cc.queue, bp)
	return len(cc.queue) == 1
}

func (cc *clientConn) kickWriter() {
	select {
	case cc.kick <- struct{}{}:
	default:
	}
}

func putCallID(frame []byte, id uint64) { binary.BigEndian.PutUint64(frame[4:], id) }

// abandon forgets call id if it is still pending, reporting whether it was.
func (cc *clientConn) abandon(id uint64) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if _, ok := cc.pending[id]; ok {
		delete(cc.pending, id)
		return true
	}
	return false
}

// fail closes the connection and fails every pending call with an Unavailable error naming
// cause. Only the first failure counts.
func (cc *clientConn) fail(cause error) {
	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		return
	}
	code := connect.CodeUnavailable
	if errors.Is(cause, ErrClientClosed) {
		code = connect.CodeCanceled
	}
	cc.err = connect.NewError(code, fmt.Errorf("nativeapi: connection to %s: %w", cc.c.addr, cause))
	cc.failed.Store(true)
	pending := cc.pending
	cc.pending = nil
	streams := cc.streams
	cc.streams = nil
	queue := cc.queue
	cc.queue = nil
	cc.mu.Unlock()
	close(cc.closeCh)
	cc.nc.Close()
	for _, bp := range queue {
		putBuf(bp)
	}
	for _, cl := range pending {
		cl.err = cc.err
		cl.done <- struct{}{}
	}
	for _, s := range streams {
		s.flow.abort(opaqueEOF(cc.err))
	}
	if !errors.Is(cause, ErrClientClosed) {
		cc.c.log.Debug("native connection failed", "addr", cc.c.addr, "err", cause)
	}
}

// writeLoop writes the preface, then every queued request, flushing once per drained queue.
func (cc *clientConn) writeLoop() {
	defer cc.c.wg.Done()
	bw := bufio.NewWriterSize(deadlineWriter{cc.nc, cc.c.writeTimeout}, writeBufSize)
	if _, err := bw.Write(preface[:]); err != nil {
		cc.fail(fmt.Errorf("writing the preface: %w", err))
		return
	}
	for {
		select {
		case <-cc.kick:
		case <-cc.closeCh:
			return
		}
		yielded, written := false, 0
		for {
			cc.mu.Lock()
			if len(cc.queue) == 0 && !yielded && len(cc.pending) > written {
				// Callers woken by one batch of responses send their next requests together;
				// let them queue before this flush goes out with one. Only when other calls
				// share the connection: a lone caller would pay the yield's wake-up of an
				// idle P for nothing (see serverConn.writeLoop).
				cc.mu.Unlock()
				yielded = true
				runtime.Gosched()
				cc.mu.Lock()
			}
			if len(cc.queue) == 0 {
				cc.mu.Unlock()
				break
			}
			// Swap in the previous batch's slice: senders append to it while we write.
			batch := cc.queue
			cc.queue = cc.spare[:0]
			cc.spare = nil
			cc.mu.Unlock()
			written += len(batch)
			for i, bp := range batch {
				_, err := bw.Write(*bp)
				putBuf(bp)
				batch[i] = nil
				if err != nil {
					for _, rest := range batch[i+1:] {
						putBuf(rest)
					}
					cc.fail(fmt.Errorf("writing: %w", err))
					return
				}
			}
			cc.mu.Lock()
			cc.spare = batch[:0]
			cc.mu.Unlock()
		}
		if err := bw.Flush(); err != nil {
			cc.fail(fmt.Errorf("writing: %w", err))
			return
		}
	}
}

// readLoop dispatches response frames to their calls by id.
func (cc *clientConn) readLoop() {
	defer cc.c.wg.Done()
	br := bufio.NewReaderSize(cc.nc, readBufSize)
	for {
		bp, err := readFrame(br, ResponseHeaderLen, MaxResponseFrame)
		if err != nil {
			if cc.failed.Load() {
				return
			}
			if errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrFrameTooShort) {
				// Say so loudly: this is a protocol violation, not a network failure. A
				// server that does not speak the protocol answers with HTTP, whose first
				// bytes read as an absurd length.
				cc.c.log.Warn("native server sent an invalid frame; closing the connection", "addr", cc.c.addr, "err", err)
				err = fmt.Errorf("invalid frame (does %s serve the native protocol?): %w", cc.c.addr, err)
			}
			cc.fail(fmt.Errorf("reading: %w", err))
			return
		}
		h, payload, err := DecodeResponse(*bp)
		if err != nil {
			putBuf(bp)
			cc.fail(fmt.Errorf("reading: %w", err))
			return
		}
		if h.Status >= FirstFrameType {
			if err := cc.streamFrame(h, payload, bp); err != nil {
				cc.c.log.Warn("native server broke the stream rules; closing the connection", "addr", cc.c.addr, "err", err)
				cc.fail(fmt.Errorf("reading: %w", err))
				return
			}
			continue
		}
		cc.mu.Lock()
		cl, ok := cc.pending[h.CallID]
		if ok {
			delete(cc.pending, h.CallID)
		}
		cc.mu.Unlock()
		if !ok {
			// A stream's end, or a response whose caller gave up.
			if err := cc.streamFrame(h, payload, bp); err != nil {
				cc.fail(fmt.Errorf("reading: %w", err))
				return
			}
			continue
		}
		cl.frame, cl.status, cl.payload = bp, h.Status, payload
		cl.done <- struct{}{}
	}
}
