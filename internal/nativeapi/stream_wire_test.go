package nativeapi

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// Tests of the stream frames on the wire: hand-built frames that no well-behaved peer sends.

// rawConn is a hand-driven native connection for frames no well-behaved client sends.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := nc.Write(Preface()); err != nil {
		t.Fatal(err)
	}
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (r *rawConn) send(id uint64, method uint16, arg uint32, payload []byte) {
	r.t.Helper()
	b := AppendRequestHeader(nil, RequestHeader{CallID: id, Method: Method(method), TimeoutMS: arg})
	b = append(b, payload...)
	FinishFrame(b)
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatalf("writing a frame: %v", err)
	}
}

// read returns the next frame from the server, or the error that ended the connection.
func (r *rawConn) read() (ResponseHeader, []byte, error) {
	if err := r.nc.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return ResponseHeader{}, nil, err
	}
	bp, err := readFrame(r.br, ResponseHeaderLen, MaxResponseFrame)
	if err != nil {
		return ResponseHeader{}, nil, err
	}
	h, p, err := DecodeResponse(*bp)
	return h, append([]byte(nil), p...), err
}

// expectClosed reads until the server closes the connection, failing on a timeout.
func (r *rawConn) expectClosed(what string) {
	r.t.Helper()
	for {
		_, _, err := r.read()
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			r.t.Fatalf("%s: the server kept the connection open", what)
		}
		return
	}
}

// expectEnd reads frames of stream id until its end frame and returns the status.
func (r *rawConn) expectEnd(id uint64) (uint16, string) {
	r.t.Helper()
	for {
		h, p, err := r.read()
		if err != nil {
			r.t.Fatalf("waiting for the end of stream %d: %v", id, err)
		}
		if h.CallID == id && h.Status < FirstFrameType {
			return h.Status, string(p)
		}
	}
}

func TestHostileStreamFramesAreRefused(t *testing.T) {
	blockingBidi(t)
	f := newStreamFixture(t, ServerConfig{MaxRequestBytes: 1024, StreamWindow: 4096}, nil)
	open := func(r *rawConn, id uint64) {
		r.send(id, uint16(methodTestBidi), 0, AppendOpen(nil, 1<<20))
		h, p, err := r.read()
		if err != nil || h.CallID != id || h.Status != FrameStreamCredit || binary.BigEndian.Uint32(p) != 4096 {
			t.Fatalf("open: %+v %x %v; want the server's 4096-byte window", h, p, err)
		}
	}
	closing := []struct {
		name string
		do   func(r *rawConn)
	}{
		{"zero credit", func(r *rawConn) { open(r, 1); r.send(1, FrameStreamCredit, 0, nil) }},
		{"credit beyond the window", func(r *rawConn) { open(r, 1); r.send(1, FrameStreamCredit, 1, nil) }},
		{"credit of 4 GiB", func(r *rawConn) { open(r, 1); r.send(1, FrameStreamCredit, 0xFFFFFFFF, nil) }},
		{"messages beyond the granted window", func(r *rawConn) {
			open(r, 1)
			for range 5 {
				r.send(1, FrameStreamMsg, 0, make([]byte, 1000))
			}
		}},
		{"control frame with a payload", func(r *rawConn) { open(r, 1); r.send(1, FrameStreamCloseSend, 0, []byte{1}) }},
		{"unknown frame type", func(r *rawConn) { open(r, 1); r.send(1, 0xFF77, 0, nil) }},
		{"stream id opened twice", func(r *rawConn) { open(r, 1); r.send(1, uint16(methodTestBidi), 0, AppendOpen(nil, 1<<20)) }},
		{"open payload too short", func(r *rawConn) { r.send(1, uint16(methodTestBidi), 0, []byte{StreamVersion, 0}) }},
		{"message after close-send", func(r *rawConn) {
			open(r, 1)
			r.send(1, FrameStreamCloseSend, 0, nil)
			r.send(1, FrameStreamMsg, 0, []byte{})
		}},
		{"message frame over the request limit", func(r *rawConn) { open(r, 1); r.send(1, FrameStreamMsg, 0, make([]byte, 2000)) }},
	}
	for _, tc := range closing {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, f.addr)
			tc.do(r)
			r.expectClosed(tc.name)
		})
	}

	// Bad opens that the server can refuse alone leave the connection up.
	r := dialRaw(t, f.addr)
	r.send(1, uint16(methodTestBidi), 0, AppendOpen(nil, 0))
	if st, msg := r.expectEnd(1); st != uint16(connect.CodeInvalidArgument) {
		t.Errorf("zero window: status %d %q, want InvalidArgument", st, msg)
	}
	r.send(2, uint16(methodTestBidi), 0, []byte{StreamVersion + 1, 1, 2, 3, 4, 5, 6})
	if st, msg := r.expectEnd(2); st != uint16(connect.CodeUnimplemented) {
		t.Errorf("unknown stream version: status %d %q, want Unimplemented", st, msg)
	}
	// Frames for streams that do not exist (any more) are dropped.
	r.send(9, FrameStreamMsg, 0, []byte("late"))
	r.send(9, FrameStreamCredit, 100, nil)
	r.send(9, FrameStreamCancel, 0, nil)
	// The connection still works for unary calls.
	r.send(3, uint16(MethodKVRange), 0, nil)
	if h, _, err := r.read(); err != nil || h.CallID != 3 || h.Status != 0 {
		t.Fatalf("unary call after refused opens: %+v %v", h, err)
	}
}

// A server that breaks the stream rules fails the client's connection, not just the stream.
func TestClientRefusesHostileServerFrames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(id uint64) []byte
	}{
		{"message without credit announced", func(id uint64) []byte {
			b := AppendResponseHeader(nil, ResponseHeader{CallID: id, Status: FrameStreamCredit})
			b = binary.BigEndian.AppendUint32(b, 4096)
			FinishFrame(b)
			// The client's window is 1024 bytes: 2000 bytes of message exceed it.
			m := AppendResponseHeader(nil, ResponseHeader{CallID: id, Status: FrameStreamMsg})
			m = append(m, make([]byte, 2000)...)
			FinishFrame(m)
			return append(b, m...)
		}},
		{"zero credit", func(id uint64) []byte {
			b := AppendResponseHeader(nil, ResponseHeader{CallID: id, Status: FrameStreamCredit})
			b = binary.BigEndian.AppendUint32(b, 0)
			FinishFrame(b)
			return b
		}},
		{"credit with a short payload", func(id uint64) []byte {
			b := AppendResponseHeader(nil, ResponseHeader{CallID: id, Status: FrameStreamCredit})
			b = append(b, 1)
			FinishFrame(b)
			return b
		}},
		{"unknown frame type", func(id uint64) []byte {
			b := AppendResponseHeader(nil, ResponseHeader{CallID: id, Status: 0xFFEE})
			FinishFrame(b)
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				defer nc.Close()
				br := bufio.NewReader(nc)
				if _, err := io.ReadFull(br, make([]byte, PrefaceLen)); err != nil {
					return
				}
				bp, err := readFrame(br, RequestHeaderLen, 1<<20)
				if err != nil {
					return
				}
				h, _, _ := DecodeRequest(*bp)
				if _, err := nc.Write(tc.reply(h.CallID)); err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, br) // until the client closes
			}()
			c := NewClient(ClientConfig{Addr: ln.Addr().String(), StreamWindow: 1024})
			defer c.Close()
			s, err := c.NewStream(context.Background(), methodTestBidi)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.Receive(&caucusv1.PutResponse{}); connect.CodeOf(err) != connect.CodeUnavailable {
				t.Fatalf("Receive = %v, want Unavailable (the connection failed)", err)
			}
			c.Close()
			wg.Wait()
		})
	}
}
