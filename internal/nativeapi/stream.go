package nativeapi

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"connectrpc.com/connect"
)

const (
	// DefaultStreamWindow is the receive window of a stream when the configuration leaves it
	// zero: how many bytes of message frames the peer may send before the receiver grants more.
	// It bounds what one stream can make its receiver hold, and must exceed the largest message
	// (a larger one fails its Send with ResourceExhausted): snapshot chunks are 256 KiB.
	DefaultStreamWindow = 1 << 20
	// MaxStreamWindow bounds the window a client may ask for; the server uses at most this
	// much, so that a client cannot make the server queue more for one stream. A connection's
	// stream frames waiting for its writer are thus bounded by the stream limit times this (and
	// the write timeout closes a connection whose client stopped reading it altogether).
	MaxStreamWindow = 4 << 20
	// DefaultMaxStreamsPerConn bounds the streams open at once on one connection when
	// ServerConfig leaves it zero. Streams do not count against MaxInFlightPerConn.
	DefaultMaxStreamsPerConn = 128
)

// ProtocolName is the connect.Peer protocol of calls served or made natively.
const ProtocolName = "caucus-native"

// errProtocol marks a peer's violation of the stream rules; it closes the connection.
var errProtocol = errors.New("nativeapi: stream protocol violation")

// flow is one side's state of a stream: the credit it may send with, the messages it received
// and not yet consumed, and how the stream ended. Send and Receive may run concurrently (one
// goroutine each); neither may be called concurrently with itself.
//
// Credit counts whole message frames, header included: a sender holding c bytes of credit may
// send frames totalling c bytes, and the receiver returns credit as its application consumes
// them. A receiver therefore never holds more than its window for a stream, and a sender never
// has more than the peer's window in flight.
type flow struct {
	mu sync.Mutex

	// Sending.
	credit     int64
	sendWindow int64 // the peer's whole receive window; 0 until known
	sent       int64 // bytes of message frames sent in total
	credited   int64 // bytes of credit the peer returned in total
	peakUnack  int64 // the most sent-but-not-credited bytes seen
	sendDone   error // non-nil once sending is over: what Send returns

	// Receiving.
	recvWindow   int64
	recvQ        []*[]byte // whole message frames, oldest first
	recvHead     int
	buffered     int64 // bytes in recvQ
	unreturned   int64 // consumed bytes whose credit is not yet returned
	peakBuffered int64
	recvDone     error // what Receive returns once recvQ is drained (io.EOF or the peer's status)

	aborted error // the stream ended locally (canceled, connection lost): both sides stop now

	// onBlock, if set, runs each time Send starts waiting for credit (tests).
	onBlock func()

	sendWake chan struct{}
	recvWake chan struct{}
}

func newFlow(recvWindow int64) *flow {
	return &flow{recvWindow: recvWindow, sendWake: make(chan struct{}, 1), recvWake: make(chan struct{}, 1)}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// setSendWindow sets the peer's window, all of it available.
func (f *flow) setSendWindow(w int64) {
	f.mu.Lock()
	f.sendWindow, f.credit = w, w
	f.mu.Unlock()
	wake(f.sendWake)
}

// reserve waits until n bytes of credit are available and takes them.
func (f *flow) reserve(ctx context.Context, n int64) error {
	for {
		if ctx.Err() != nil {
			return contextError(ctx)
		}
		if ok, err := f.tryReserve(n); ok || err != nil {
			return err
		}
		if f.onBlock != nil {
			f.onBlock()
		}
		select {
		case <-f.sendWake:
		case <-ctx.Done():
			return contextError(ctx)
		}
	}
}

// tryReserve takes n bytes of credit if they are available. It fails when the stream ended and
// when n exceeds the peer's whole window (it could never be sent).
func (f *flow) tryReserve(n int64) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.aborted != nil:
		return false, f.aborted
	case f.sendDone != nil:
		return false, f.sendDone
	case f.sendWindow > 0 && n > f.sendWindow:
		return false, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"nativeapi: a message frame of %d bytes exceeds the stream's %d-byte window", n, f.sendWindow))
	case f.sendWindow > 0 && f.credit >= n:
		f.credit -= n
		f.sent += n
		f.peakUnack = max(f.peakUnack, f.sent-f.credited)
		return true, nil
	}
	return false, nil
}

// addCredit takes a credit frame's increment. The first one on a flow whose window is unknown
// announces the window. Credit beyond the window means the peer returned bytes it never
// received: a protocol violation.
func (f *flow) addCredit(n uint32) error {
	if n == 0 {
		return fmt.Errorf("%w: credit frame with a zero increment", errProtocol)
	}
	f.mu.Lock()
	if f.sendWindow == 0 {
		// Any window will do: what it lets this side send, the peer holds.
		f.sendWindow, f.credit = int64(n), int64(n)
	} else {
		if f.credit+int64(n) > f.sendWindow {
			f.mu.Unlock()
			return fmt.Errorf("%w: credit of %d bytes would exceed the %d-byte window (%d available)", errProtocol, n, f.sendWindow, f.credit)
		}
		f.credit += int64(n)
		f.credited += int64(n)
	}
	f.mu.Unlock()
	wake(f.sendWake)
	return nil
}

// deliver queues a received message frame. A frame beyond the window the peer was granted, or
// after the peer said it finished sending, is a violation; the frame is released on error.
func (f *flow) deliver(bp *[]byte) error {
	n := int64(len(*bp))
	f.mu.Lock()
	if f.aborted != nil {
		f.mu.Unlock()
		putBuf(bp) // the stream is over here; the frame crossed its end
		return nil
	}
	if f.recvDone != nil {
		f.mu.Unlock()
		putBuf(bp)
		return fmt.Errorf("%w: message after the sender finished the stream", errProtocol)
	}
	if held := f.buffered + f.unreturned; held+n > f.recvWindow {
		f.mu.Unlock()
		putBuf(bp)
		return fmt.Errorf("%w: a %d-byte message frame with %d of the %d-byte window in use", errProtocol, n, held, f.recvWindow)
	}
	f.recvQ = append(f.recvQ, bp)
	f.buffered += n
	f.peakBuffered = max(f.peakBuffered, f.buffered)
	f.mu.Unlock()
	wake(f.recvWake)
	return nil
}

// next returns the oldest received frame, waiting for one, and the credit to return to the
// peer now (0: none yet). Credit goes back in batches of a quarter window, and all of it once
// the queue is empty, so that a sender waiting for room for a large message is never stranded.
func (f *flow) next(ctx context.Context) (bp *[]byte, grant uint32, err error) {
	for {
		f.mu.Lock()
		if f.aborted != nil {
			err := f.aborted
			f.mu.Unlock()
			return nil, 0, err
		}
		if f.recvHead < len(f.recvQ) {
			bp = f.recvQ[f.recvHead]
			f.recvQ[f.recvHead] = nil
			f.recvHead++
			if f.recvHead == len(f.recvQ) {
				f.recvQ, f.recvHead = f.recvQ[:0], 0
			}
			n := int64(len(*bp))
			f.buffered -= n
			f.unreturned += n
			if f.recvDone == nil && (f.buffered == 0 || f.unreturned >= f.recvWindow/4) {
				grant = uint32(f.unreturned)
				f.unreturned = 0
			}
			f.mu.Unlock()
			return bp, grant, nil
		}
		if f.recvDone != nil {
			err := f.recvDone
			f.mu.Unlock()
			return nil, 0, err
		}
		f.mu.Unlock()
		select {
		case <-f.recvWake:
		case <-ctx.Done():
			return nil, 0, contextError(ctx)
		}
	}
}

// finishRecv records that the peer sent its last message: Receive returns err after the
// queued ones. When sendToo is set, sending is over as well (Send returns io.EOF).
func (f *flow) finishRecv(err error, sendErr error) {
	f.mu.Lock()
	if f.recvDone == nil {
		f.recvDone = err
	}
	if sendErr != nil && f.sendDone == nil {
		f.sendDone = sendErr
	}
	f.mu.Unlock()
	wake(f.recvWake)
	wake(f.sendWake)
}

// abort ends the stream on this side now: pending and future Send and Receive calls return
// err, and received frames are released. Only the first abort counts.
func (f *flow) abort(err error) {
	f.mu.Lock()
	if f.aborted == nil {
		f.aborted = err
	}
	q := f.recvQ[f.recvHead:]
	f.recvQ, f.recvHead, f.buffered = nil, 0, 0
	f.mu.Unlock()
	for _, bp := range q {
		putBuf(bp)
	}
	wake(f.recvWake)
	wake(f.sendWake)
}

// FlowStats is a snapshot of one side's flow-control counters of a stream.
type FlowStats struct {
	// Sent and Credited are the bytes of message frames sent and the credit returned for them;
	// PeakUnacked is the most bytes ever sent and not yet credited: at most the peer's window.
	Sent, Credited, PeakUnacked int64
	// Buffered is the bytes received and not yet consumed; PeakBuffered the most ever.
	Buffered, PeakBuffered int64
}

func (f *flow) stats() FlowStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return FlowStats{Sent: f.sent, Credited: f.credited, PeakUnacked: f.peakUnack, Buffered: f.buffered, PeakBuffered: f.peakBuffered}
}

// statusError is the error a stream's end frame with a non-zero status stands for.
func statusError(status uint16, msg []byte) error {
	return connect.NewWireError(connect.Code(status), errors.New(string(msg)))
}

// appendEnd appends the frame that ends stream id with err's status (0 for nil): the response
// frame layout, so a server that predates streams ends one the same way.
func appendEnd(b []byte, id uint64, err error) []byte {
	start := len(b)
	if err == nil {
		b = AppendResponseHeader(b, ResponseHeader{CallID: id})
	} else {
		code, msg := errorStatus(err)
		b = AppendResponseHeader(b, ResponseHeader{CallID: id, Status: uint16(code)})
		b = append(b, msg...)
	}
	FinishFrame(b[start:])
	return b
}
