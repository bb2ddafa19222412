package nativeapi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
)

// Stream is the client side of one native stream, for a server-streaming, client-streaming or
// bidirectional method. Send and Receive may be called concurrently with each other, each from
// one goroutine at a time. Close must be called once the stream is no longer used (after
// Receive returned an error, it only releases resources).
type Stream struct {
	cc     *clientConn
	id     uint64
	method Method
	ctx    context.Context
	flow   *flow
	stop   func() bool // unregisters the context watch

	mu        sync.Mutex
	sentClose bool // CloseSend sent its frame
	ended     bool // the server's end frame arrived, or the stream was abandoned
}

// NewStream opens a stream of method m, which must be a streaming method. ctx bounds the whole
// stream: its deadline is sent to the server, and its end cancels the stream on both sides.
// Errors are *connect.Error, as for Invoke.
func (c *Client) NewStream(ctx context.Context, m Method) (*Stream, error) {
	spec, ok := lookup(m)
	if !ok || spec.streamType == connect.StreamTypeUnary {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("nativeapi: %s is not a streaming method", m))
	}
	if ctx.Err() != nil {
		return nil, contextError(ctx)
	}
	bp := getBuf(RequestHeaderLen + OpenPayloadLen)
	b := AppendRequestHeader(*bp, RequestHeader{Method: m})
	b = AppendOpen(b, uint32(c.streamWindow))
	FinishFrame(b)
	*bp = b
	for attempt := 0; ; attempt++ {
		cc, err := c.conn(ctx)
		if err != nil {
			putBuf(bp)
			return nil, opaqueEOF(err)
		}
		if !putTimeout(ctx, *bp) {
			putBuf(bp)
			return nil, connect.NewError(connect.CodeDeadlineExceeded, context.DeadlineExceeded)
		}
		s := &Stream{cc: cc, method: m, ctx: ctx, flow: newFlow(int64(c.streamWindow))}
		if err = cc.send(nil, s, bp); err == nil {
			c.Streams.Add(1)
			s.stop = context.AfterFunc(ctx, func() { s.abandon(contextError(ctx)) })
			return s, nil
		}
		// As for Invoke: the open was certainly not sent, so one fresh connection may carry it.
		if attempt == 1 {
			putBuf(bp)
			return nil, opaqueEOF(err)
		}
	}
}

// Send sends msg, waiting for credit while the server has not consumed earlier messages. It
// returns io.EOF when the server already ended the stream (Receive returns its status), and
// fails after CloseSend.
func (s *Stream) Send(msg proto.Message) error {
	if s.closedSend() {
		return errSendAfterClose(s.method)
	}
	bp := getBuf(RequestHeaderLen + 64)
	b := AppendRequestHeader(*bp, RequestHeader{CallID: s.id, Method: FrameStreamMsg})
	b, err := proto.MarshalOptions{}.MarshalAppend(b, msg)
	*bp = b
	if err != nil {
		putBuf(bp)
		return connect.NewError(connect.CodeInternal, fmt.Errorf("nativeapi: encoding a %s message: %w", s.method, err))
	}
	FinishFrame(b)
	if err := s.flow.reserve(s.ctx, int64(len(b))); err != nil {
		putBuf(bp)
		return err
	}
	// Queued under s.mu, so that a CloseSend racing with this Send goes out after the message
	// or makes it fail: a message after close-send would break the connection.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sentClose {
		putBuf(bp)
		return errSendAfterClose(s.method)
	}
	return s.cc.enqueue(bp)
}

func (s *Stream) closedSend() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sentClose
}

func errSendAfterClose(m Method) error {
	return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("nativeapi: send on %s after CloseSend", m))
}

// CloseSend tells the server the client has finished sending. It is idempotent, and a no-op
// once the stream ended.
func (s *Stream) CloseSend() error {
	return s.sendControl(FrameStreamCloseSend)
}

// sendControl sends the close-send or cancel frame, once and only while the stream lives.
func (s *Stream) sendControl(typ uint16) error {
	s.mu.Lock()
	if s.ended || (s.sentClose && typ == FrameStreamCloseSend) {
		s.mu.Unlock()
		return nil
	}
	if typ == FrameStreamCancel {
		s.ended = true
	} else {
		s.sentClose = true
	}
	bp := getBuf(RequestHeaderLen)
	b := AppendRequestHeader(*bp, RequestHeader{CallID: s.id, Method: Method(typ)})
	FinishFrame(b)
	*bp = b
	err := s.cc.enqueue(bp)
	s.mu.Unlock()
	if errors.Is(err, errConnFailed) {
		return nil // the stream is failed with the connection
	}
	return err
}

// Receive reads the server's next message into msg. It returns io.EOF when the server ended
// the stream successfully, and the server's status as a *connect.Error otherwise.
func (s *Stream) Receive(msg proto.Message) error {
	bp, grant, err := s.flow.next(s.ctx)
	if err != nil {
		return err
	}
	err = proto.Unmarshal((*bp)[ResponseHeaderLen:], msg)
	putBuf(bp)
	if grant > 0 {
		s.sendCredit(grant)
	}
	if err != nil {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("nativeapi: decoding a %s message: %w", s.method, err))
	}
	return nil
}

func (s *Stream) sendCredit(n uint32) {
	bp := getBuf(RequestHeaderLen)
	b := AppendRequestHeader(*bp, RequestHeader{CallID: s.id, Method: FrameStreamCredit, TimeoutMS: n})
	FinishFrame(b)
	*bp = b
	_ = s.cc.enqueue(bp) // a failed connection fails the stream itself
}

// Close ends the stream: if the server has not ended it yet, it is canceled (the server's
// handler sees its context canceled). Pending Send and Receive calls return Canceled.
func (s *Stream) Close() error {
	s.stop()
	_ = s.sendControl(FrameStreamCancel)
	s.cc.forgetStream(s.id)
	s.flow.abort(connect.NewError(connect.CodeCanceled, fmt.Errorf("nativeapi: %s stream closed", s.method)))
	return nil
}

// abandon cancels the stream because its context ended.
func (s *Stream) abandon(err error) {
	_ = s.sendControl(FrameStreamCancel)
	s.cc.forgetStream(s.id)
	s.flow.abort(err)
}

// Stats returns the stream's flow-control counters on this side.
func (s *Stream) Stats() FlowStats { return s.flow.stats() }

// end takes the server's end frame: Receive returns status after the queued messages, and Send
// returns io.EOF.
func (s *Stream) end(status uint16, payload []byte) {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	err := io.EOF
	if status != 0 {
		err = statusError(status, payload)
	}
	s.flow.finishRecv(err, io.EOF)
}

// opaqueEOF returns err with io.EOF cut from its chain. A stream's io.EOF means a clean end (of
// the server's messages, or of sending), and connect's stream types test for it with errors.Is:
// a connection that failed on reading io.EOF must not pass for a finished stream.
func opaqueEOF(err error) error {
	if err == nil || err == io.EOF || !errors.Is(err, io.EOF) {
		return err
	}
	msg := err.Error()
	var ce *connect.Error
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	return connect.NewError(connect.CodeOf(err), errors.New(msg))
}

// errConnFailed marks enqueue's failure on a failed connection.
var errConnFailed = errors.New("nativeapi: connection failed")

// enqueue queues a frame of an open stream. It fails (wrapping errConnFailed) once the
// connection has failed, and then releases the frame.
func (cc *clientConn) enqueue(bp *[]byte) error {
	cc.mu.Lock()
	if cc.err != nil {
		err := cc.err
		cc.mu.Unlock()
		putBuf(bp)
		return fmt.Errorf("%w: %w", errConnFailed, err)
	}
	wakeWriter := cc.queueLocked(bp)
	cc.mu.Unlock()
	if wakeWriter {
		cc.kickWriter()
	}
	return nil
}

func (cc *clientConn) forgetStream(id uint64) {
	cc.mu.Lock()
	delete(cc.streams, id)
	cc.mu.Unlock()
}

// streamFrame dispatches a server frame of a stream: a message, a credit or (status below
// FirstFrameType) the end. It returns an error only for a violation that fails the connection.
func (cc *clientConn) streamFrame(h ResponseHeader, payload []byte, bp *[]byte) error {
	cc.mu.Lock()
	s := cc.streams[h.CallID]
	if s != nil && h.Status < FirstFrameType {
		delete(cc.streams, h.CallID)
	}
	cc.mu.Unlock()
	switch {
	case h.Status < FirstFrameType:
		if s != nil {
			s.end(h.Status, payload)
		}
		putBuf(bp)
		return nil
	case h.Status == FrameStreamMsg:
		if s == nil {
			putBuf(bp) // the stream was abandoned
			return nil
		}
		return s.flow.deliver(bp)
	case h.Status == FrameStreamCredit:
		defer putBuf(bp)
		if len(payload) != CreditPayloadLen {
			return fmt.Errorf("%w: credit frame with a %d-byte payload", errProtocol, len(payload))
		}
		if s == nil {
			return nil
		}
		return s.flow.addCredit(binary.BigEndian.Uint32(payload))
	}
	putBuf(bp)
	return fmt.Errorf("%w: unknown stream frame type %#x", errProtocol, h.Status)
}

// The generated stubs serve streaming methods through connect's own client types
// (connect.ServerStreamForClient and friends), which can only be built by a connect.Client: a
// connect.Client whose interceptor replaces the HTTP connection with a native stream.

// streamClient returns a connect client for streaming method m that runs over c.
func streamClient[Req, Res any](c *Client, m Method) *connect.Client[Req, Res] {
	return connect.NewClient[Req, Res](nil, "http://native"+m.Procedure(), connect.WithInterceptors(streamInterceptor{c, m}))
}

type streamInterceptor struct {
	c *Client
	m Method
}

func (i streamInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return next }

func (i streamInterceptor) WrapStreamingClient(connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		return &streamConn{c: i.c, m: i.m, ctx: ctx, spec: spec, reqHeader: make(http.Header)}
	}
}

func (i streamInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// streamConn is a connect.StreamingClientConn over a native Stream, opened by its first use.
type streamConn struct {
	c         *Client
	m         Method
	ctx       context.Context
	spec      connect.Spec
	reqHeader http.Header

	once sync.Once
	s    *Stream
	err  error
}

var _ connect.StreamingClientConn = (*streamConn)(nil)

func (sc *streamConn) open() (*Stream, error) {
	sc.once.Do(func() { sc.s, sc.err = sc.c.NewStream(sc.ctx, sc.m) })
	return sc.s, sc.err
}

func (sc *streamConn) Spec() connect.Spec { return sc.spec }

func (sc *streamConn) Peer() connect.Peer {
	return connect.Peer{Addr: sc.c.addr, Protocol: ProtocolName}
}

func (sc *streamConn) RequestHeader() http.Header   { return sc.reqHeader }
func (sc *streamConn) ResponseHeader() http.Header  { return http.Header{} }
func (sc *streamConn) ResponseTrailer() http.Header { return http.Header{} }

// Send sends msg; a nil msg (connect's way to send headers only) just opens the stream.
func (sc *streamConn) Send(msg any) error {
	s, err := sc.open()
	if err != nil || msg == nil {
		return err
	}
	m, ok := msg.(proto.Message)
	if !ok {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("nativeapi: cannot send a %T", msg))
	}
	return s.Send(m)
}

func (sc *streamConn) CloseRequest() error {
	s, err := sc.open()
	if err != nil {
		return err
	}
	return s.CloseSend()
}

func (sc *streamConn) Receive(msg any) error {
	s, err := sc.open()
	if err != nil {
		return err
	}
	m, ok := msg.(proto.Message)
	if !ok {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("nativeapi: cannot receive into a %T", msg))
	}
	return s.Receive(m)
}

func (sc *streamConn) CloseResponse() error {
	// A stream never used is not opened just to be closed.
	sc.once.Do(func() {
		sc.err = connect.NewError(connect.CodeCanceled, fmt.Errorf("nativeapi: %s stream closed", sc.m))
	})
	if sc.s != nil {
		return sc.s.Close()
	}
	return nil
}
