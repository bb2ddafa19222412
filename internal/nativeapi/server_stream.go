package nativeapi

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
)

// Streams reuse the connect handlers: the server builds each streaming method's connect
// handler once, with an interceptor that captures the function connect wraps around the
// service method (the code that turns a connect.StreamingHandlerConn into a
// connect.ServerStream or BidiStream and calls the implementation). Each native stream is a
// StreamingHandlerConn (serverStream) passed to that function, so one implementation serves
// both protocols.

// captureStreaming returns the implementation of a streaming method, or nil when its service
// is not configured.
func captureStreaming(spec *methodSpec, h *Handlers) connect.StreamingHandlerFunc {
	var fn connect.StreamingHandlerFunc
	if spec.newHandler(h, connect.WithInterceptors(captureInterceptor{&fn})) == nil {
		return nil
	}
	if fn == nil {
		// connect wraps handlers when it builds them; a version that stopped doing so would
		// leave streams unserved, which no test would miss.
		panic(fmt.Sprintf("nativeapi: connect did not expose the streaming handler of %s", spec.procedure))
	}
	return fn
}

type captureInterceptor struct{ fn *connect.StreamingHandlerFunc }

func (i captureInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return next }

func (i captureInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i captureInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	*i.fn = next
	return next
}

// serverStream is one stream of a connection: the connect.StreamingHandlerConn its handler
// runs on.
type serverStream struct {
	c      *serverConn
	id     uint64
	spec   *methodSpec
	ctx    context.Context // canceled by the client's cancel frame, the deadline or the connection
	cancel context.CancelFunc
	flow   *flow

	peerCanceled atomic.Bool
	queued       atomic.Int64 // bytes of this stream's frames waiting for the writer
	peakQueued   atomic.Int64

	reqHeader, respHeader, respTrailer http.Header
}

var _ connect.StreamingHandlerConn = (*serverStream)(nil)

func (st *serverStream) Spec() connect.Spec {
	return connect.Spec{StreamType: st.spec.streamType, Procedure: st.spec.procedure}
}

func (st *serverStream) Peer() connect.Peer {
	return connect.Peer{Addr: st.c.nc.RemoteAddr().String(), Protocol: ProtocolName}
}

// Headers and trailers exist for the handler's sake but are not carried (see stubs.go).
func (st *serverStream) RequestHeader() http.Header   { return st.reqHeader }
func (st *serverStream) ResponseHeader() http.Header  { return st.respHeader }
func (st *serverStream) ResponseTrailer() http.Header { return st.respTrailer }

// Receive reads the client's next message into msg; io.EOF once the client finished sending.
func (st *serverStream) Receive(msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("nativeapi: cannot receive into a %T", msg))
	}
	bp, grant, err := st.flow.next(st.ctx)
	if err != nil {
		return err
	}
	err = proto.Unmarshal((*bp)[RequestHeaderLen:], m)
	putBuf(bp)
	if grant > 0 {
		st.c.queueStreamFrame(st, appendCredit(getBuf(ResponseHeaderLen+CreditPayloadLen), st.id, grant))
	}
	if err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("decoding a %s message: %w", st.spec.procedure, err))
	}
	return nil
}

// Send sends msg to the client, waiting for credit: a client that does not read its stream
// blocks the handler here instead of growing the server's memory.
func (st *serverStream) Send(msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("nativeapi: cannot send a %T", msg))
	}
	bp := getBuf(ResponseHeaderLen + 64)
	b := AppendResponseHeader(*bp, ResponseHeader{CallID: st.id, Status: FrameStreamMsg})
	b, err := proto.MarshalOptions{}.MarshalAppend(b, m)
	*bp = b
	if err != nil {
		putBuf(bp)
		return connect.NewError(connect.CodeInternal, fmt.Errorf("encoding a %s message: %w", st.spec.procedure, err))
	}
	FinishFrame(b)
	if err := st.flow.reserve(st.ctx, int64(len(b))); err != nil {
		putBuf(bp)
		return err
	}
	st.c.queueStreamFrame(st, bp)
	return nil
}

// AbortSend makes a Send waiting for credit, and every later Send and Receive, fail with err,
// for a handler that gives up on a client that stopped reading (a server-streaming handler
// calls it from another goroutine through its stream's Conn()). The handler then returns and
// its status ends the stream as usual, after the messages already queued.
func (st *serverStream) AbortSend(err error) { st.flow.abort(err) }

// appendCredit returns a server credit frame granting n bytes on stream id, in *bp.
func appendCredit(bp *[]byte, id uint64, n uint32) *[]byte {
	b := AppendResponseHeader(*bp, ResponseHeader{CallID: id, Status: FrameStreamCredit})
	b = binary.BigEndian.AppendUint32(b, n)
	FinishFrame(b)
	*bp = b
	return bp
}

// openStream starts the stream that an open frame for a streaming method asks for, or refuses
// it with an end frame. It returns an error only for a violation that closes the connection.
func (c *serverConn) openStream(h RequestHeader, spec *methodSpec, payload []byte) error {
	version, window, err := DecodeOpen(payload)
	if err != nil {
		return err
	}
	refuse := func(code connect.Code, format string, args ...any) error {
		c.queueStreamFrame(nil, endFrame(h.CallID, connect.NewError(code, fmt.Errorf(format, args...))))
		return nil
	}
	switch {
	case version != StreamVersion:
		return refuse(connect.CodeUnimplemented, "stream version %d is not supported (this server speaks %d)", version, StreamVersion)
	case window == 0:
		return refuse(connect.CodeInvalidArgument, "stream opened with a zero receive window")
	}
	fn := c.s.streamFns[h.Method]
	if fn == nil {
		return refuse(connect.CodeUnimplemented, "%s is not served here", spec.procedure)
	}
	c.streamsMu.Lock()
	if _, dup := c.streams[h.CallID]; dup {
		c.streamsMu.Unlock()
		return fmt.Errorf("%w: stream id %d opened twice", errProtocol, h.CallID)
	}
	if len(c.streams) >= c.s.maxStreams {
		c.streamsMu.Unlock()
		return refuse(connect.CodeResourceExhausted, "the connection has %d streams open, the limit (MaxStreamsPerConn); close one first", c.s.maxStreams)
	}
	ctx, cancel := context.WithCancel(c.ctx)
	if h.TimeoutMS > 0 {
		ctx, cancel = withTimeout(ctx, cancel, time.Duration(h.TimeoutMS)*time.Millisecond)
	}
	st := &serverStream{
		c: c, id: h.CallID, spec: spec, ctx: ctx, cancel: cancel,
		flow:      newFlow(int64(c.s.streamWindow)),
		reqHeader: make(http.Header), respHeader: make(http.Header), respTrailer: make(http.Header),
	}
	st.flow.onBlock = c.s.sendBlocked
	// A larger window than the limit is clamped: the client's buffer is its own business, but
	// what the server may have queued for one stream is bounded.
	st.flow.setSendWindow(int64(min(window, MaxStreamWindow)))
	c.streams[h.CallID] = st
	c.s.wg.Add(1)
	c.streamsMu.Unlock()
	// The first credit frame announces the server's receive window.
	c.queueStreamFrame(st, appendCredit(getBuf(ResponseHeaderLen+CreditPayloadLen), h.CallID, uint32(c.s.streamWindow)))
	go st.run(fn)
	return nil
}

// withTimeout adds a deadline under ctx; the returned cancel releases both.
func withTimeout(ctx context.Context, parent context.CancelFunc, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, d)
	return ctx, func() { cancel(); parent() }
}

// run serves the stream and ends it with the handler's status, unless the client canceled it.
func (st *serverStream) run(fn connect.StreamingHandlerFunc) {
	c := st.c
	defer c.s.wg.Done()
	err := st.invokeRecovering(fn)
	st.cancel()
	c.streamsMu.Lock()
	delete(c.streams, st.id)
	c.streamsMu.Unlock()
	st.flow.abort(connect.NewError(connect.CodeCanceled, fmt.Errorf("the %s handler returned", st.spec.procedure)))
	if !st.peerCanceled.Load() {
		c.queueStreamFrame(st, endFrame(st.id, err))
	}
}

func (st *serverStream) invokeRecovering(fn connect.StreamingHandlerFunc) (err error) {
	defer func() {
		if r := recover(); r != nil {
			st.c.s.log.Error("panic serving a native stream", "procedure", st.spec.procedure, "panic", r, "stack", string(debug.Stack()))
			err = connect.NewError(connect.CodeInternal, fmt.Errorf("internal error serving %s", st.spec.procedure))
		}
	}()
	return fn(st.ctx, st)
}

func endFrame(id uint64, err error) *[]byte {
	bp := getBuf(ResponseHeaderLen + 64)
	*bp = appendEnd(*bp, id, err)
	return bp
}

// streamFrame handles a client's frame of an open stream. Frames for a stream the server does
// not know are dropped: it may have ended while they were in flight. It returns an error only
// for a violation that closes the connection.
func (c *serverConn) streamFrame(h RequestHeader, payload []byte, bp *[]byte) error {
	typ := uint16(h.Method)
	if typ != FrameStreamMsg {
		defer putBuf(bp)
		if len(payload) != 0 {
			return fmt.Errorf("%w: stream frame type %#x with a %d-byte payload", errProtocol, typ, len(payload))
		}
	}
	switch typ {
	case FrameStreamMsg, FrameStreamCredit, FrameStreamCloseSend, FrameStreamCancel:
	default:
		return fmt.Errorf("%w: unknown stream frame type %#x", errProtocol, typ)
	}
	c.streamsMu.Lock()
	st := c.streams[h.CallID]
	c.streamsMu.Unlock()
	if st == nil {
		if typ == FrameStreamMsg {
			putBuf(bp)
		}
		return nil
	}
	switch typ {
	case FrameStreamMsg:
		return st.flow.deliver(bp)
	case FrameStreamCredit:
		return st.flow.addCredit(h.TimeoutMS)
	case FrameStreamCloseSend:
		st.flow.finishRecv(io.EOF, nil)
	case FrameStreamCancel:
		st.peerCanceled.Store(true)
		st.flow.abort(connect.NewError(connect.CodeCanceled, fmt.Errorf("the client canceled the %s stream", st.spec.procedure)))
		st.cancel()
	}
	return nil
}

// streamEntry is a stream frame waiting for the writer.
type streamEntry struct {
	bp *[]byte
	st *serverStream // nil for frames of refused streams
}

// queueStreamFrame hands a stream frame to the writer. The queue is bounded by the credit
// rules: message frames by each stream's window, and at most one credit and one end frame per
// message consumed or stream.
func (c *serverConn) queueStreamFrame(st *serverStream, bp *[]byte) {
	if st != nil {
		q := st.queued.Add(int64(len(*bp)))
		for p := st.peakQueued.Load(); q > p && !st.peakQueued.CompareAndSwap(p, q); p = st.peakQueued.Load() {
		}
	}
	c.sqMu.Lock()
	c.sq = append(c.sq, streamEntry{bp, st})
	c.sqLen.Store(int32(len(c.sq)))
	c.sqMu.Unlock()
	wake(c.sqKick)
}

// takeStreamFrames returns the queued stream frames, leaving the queue empty.
func (c *serverConn) takeStreamFrames(spare []streamEntry) []streamEntry {
	c.sqMu.Lock()
	q := c.sq
	c.sq = spare[:0]
	c.sqLen.Store(0)
	c.sqMu.Unlock()
	return q
}

// closeStreams releases the frames of a closed connection's stream queue.
func (c *serverConn) closeStreams() {
	for _, e := range c.takeStreamFrames(nil) {
		putBuf(e.bp)
	}
}
