package nativeapi

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Protocol constants; see the package documentation for the layout.
const (
	// Version is the protocol version carried in the last byte of the preface.
	Version = 1
	// PrefaceLen is the length of the client's connection preface.
	PrefaceLen = 8
	// RequestHeaderLen is the size of a request frame before its payload, length prefix included.
	RequestHeaderLen = 4 + 8 + 2 + 4
	// ResponseHeaderLen is the size of a response frame before its payload, length prefix
	// included.
	ResponseHeaderLen = 4 + 8 + 2

	// MaxResponseFrame bounds a response frame the client accepts (64 MiB): far above any
	// response the server's range limits allow, low enough that a corrupt length cannot make
	// the client allocate gigabytes.
	MaxResponseFrame = 64 << 20

	// FirstFrameType is the lowest of the values reserved for stream frame types: in the
	// method field of client frames and the status field of server frames. Method numbers and
	// connect codes stay below it.
	FirstFrameType = 0xFF00
	// FrameStreamMsg carries one protobuf message of a stream (both directions).
	FrameStreamMsg = 0xFF01
	// FrameStreamCredit grants the peer more bytes to send on a stream (both directions).
	FrameStreamCredit = 0xFF02
	// FrameStreamCloseSend says the client has finished sending on a stream (client only).
	FrameStreamCloseSend = 0xFF03
	// FrameStreamCancel abandons a stream (client only): the server cancels its handler.
	FrameStreamCancel = 0xFF04

	// StreamVersion is the version of the stream frames, carried by each stream's open frame:
	// a server refuses a stream of a version it does not know, leaving the connection up.
	StreamVersion = 1
	// OpenPayloadLen is the size of an open frame's payload: the stream version (u8) and the
	// client's receive window (u32).
	OpenPayloadLen = 1 + 4
	// CreditPayloadLen is the size of a server credit frame's payload (u32 increment).
	CreditPayloadLen = 4

	// pooledBufMax is the largest buffer returned to the pools; larger ones (big ranges) are
	// left to the garbage collector so that one large response does not pin memory forever.
	pooledBufMax = 64 << 10
)

// preface is what a native client writes first.
var preface = [PrefaceLen]byte{'C', 'A', 'U', 'C', 'U', 'S', 0x00, Version}

// Preface returns the connection preface a native client sends.
func Preface() []byte { return preface[:] }

// Errors of frame decoding. They close the connection they occur on.
var (
	ErrFrameTooLarge = errors.New("nativeapi: frame exceeds the size limit")
	ErrFrameTooShort = errors.New("nativeapi: frame shorter than its header")
	ErrBadPreface    = errors.New("nativeapi: bad connection preface")
)

// RequestHeader is the fixed part of a request frame.
type RequestHeader struct {
	CallID    uint64
	Method    Method
	TimeoutMS uint32
}

// ResponseHeader is the fixed part of a response frame.
type ResponseHeader struct {
	CallID uint64
	Status uint16
}

// AppendRequestHeader appends a request header whose length field is left zero; FinishFrame
// fills it once the payload is appended.
func AppendRequestHeader(b []byte, h RequestHeader) []byte {
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint64(b, h.CallID)
	b = binary.BigEndian.AppendUint16(b, uint16(h.Method))
	return binary.BigEndian.AppendUint32(b, h.TimeoutMS)
}

// AppendResponseHeader appends a response header whose length field is left zero.
func AppendResponseHeader(b []byte, h ResponseHeader) []byte {
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint64(b, h.CallID)
	return binary.BigEndian.AppendUint16(b, h.Status)
}

// FinishFrame writes the length prefix of the frame that starts at frame[0].
func FinishFrame(frame []byte) {
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
}

// readFrame reads one frame from r into a buffer from the pool (or a fresh one when the frame is
// larger than the pool keeps) and returns the whole frame, length prefix included. A length
// below minLen or above maxLen is an error before anything is allocated for it.
func readFrame(r *bufio.Reader, minLen, maxLen int) (*[]byte, error) {
	var lenBuf [4]byte
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(lenBuf[:]))
	if n+4 < minLen {
		return nil, fmt.Errorf("%w: length %d, header needs %d", ErrFrameTooShort, n, minLen-4)
	}
	if n+4 > maxLen {
		return nil, fmt.Errorf("%w: length %d, limit %d", ErrFrameTooLarge, n+4, maxLen)
	}
	bp := getBuf(n + 4)
	b := (*bp)[:n+4]
	copy(b, lenBuf[:])
	if _, err := io.ReadFull(r, b[4:]); err != nil {
		putBuf(bp)
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("nativeapi: reading a %d-byte frame: %w", n+4, err)
	}
	*bp = b
	return bp, nil
}

// DecodeRequest splits a whole request frame (as readFrame returns it) into header and payload.
func DecodeRequest(frame []byte) (RequestHeader, []byte, error) {
	if len(frame) < RequestHeaderLen {
		return RequestHeader{}, nil, fmt.Errorf("%w: %d bytes", ErrFrameTooShort, len(frame))
	}
	if n := binary.BigEndian.Uint32(frame); int(n) != len(frame)-4 {
		return RequestHeader{}, nil, fmt.Errorf("nativeapi: frame length field %d does not match its %d bytes", n, len(frame)-4)
	}
	h := RequestHeader{
		CallID:    binary.BigEndian.Uint64(frame[4:]),
		Method:    Method(binary.BigEndian.Uint16(frame[12:])),
		TimeoutMS: binary.BigEndian.Uint32(frame[14:]),
	}
	return h, frame[RequestHeaderLen:], nil
}

// DecodeResponse splits a whole response frame into header and payload.
func DecodeResponse(frame []byte) (ResponseHeader, []byte, error) {
	if len(frame) < ResponseHeaderLen {
		return ResponseHeader{}, nil, fmt.Errorf("%w: %d bytes", ErrFrameTooShort, len(frame))
	}
	if n := binary.BigEndian.Uint32(frame); int(n) != len(frame)-4 {
		return ResponseHeader{}, nil, fmt.Errorf("nativeapi: frame length field %d does not match its %d bytes", n, len(frame)-4)
	}
	h := ResponseHeader{
		CallID: binary.BigEndian.Uint64(frame[4:]),
		Status: binary.BigEndian.Uint16(frame[12:]),
	}
	return h, frame[ResponseHeaderLen:], nil
}

// AppendOpen appends the payload of a stream's open frame.
func AppendOpen(b []byte, window uint32) []byte {
	b = append(b, StreamVersion)
	return binary.BigEndian.AppendUint32(b, window)
}

// DecodeOpen parses the payload of an open frame.
func DecodeOpen(payload []byte) (version uint8, window uint32, err error) {
	if len(payload) < 1 {
		return 0, 0, fmt.Errorf("%w: stream open frame without a version", ErrFrameTooShort)
	}
	if payload[0] != StreamVersion {
		// Checked before the length: a later version may carry more.
		return payload[0], 0, nil
	}
	if len(payload) != OpenPayloadLen {
		return payload[0], 0, fmt.Errorf("nativeapi: stream open payload of %d bytes, want %d", len(payload), OpenPayloadLen)
	}
	return payload[0], binary.BigEndian.Uint32(payload[1:]), nil
}

// bufPool recycles frame buffers of both directions: every call allocates one for its request
// and one for its response otherwise.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func getBuf(n int) *[]byte {
	if n > pooledBufMax {
		b := make([]byte, 0, n)
		return &b
	}
	bp := bufPool.Get().(*[]byte)
	if cap(*bp) < n {
		*bp = make([]byte, 0, n)
	}
	*bp = (*bp)[:0]
	return bp
}

func putBuf(bp *[]byte) {
	if bp == nil || cap(*bp) > pooledBufMax {
		return
	}
	*bp = (*bp)[:0]
	bufPool.Put(bp)
}
