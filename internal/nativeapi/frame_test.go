package nativeapi

import (
	"connectrpc.com/connect"

	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

func TestRequestFrameRoundTrip(t *testing.T) {
	payload := []byte("some protobuf bytes")
	want := RequestHeader{CallID: 0x0102030405060708, Method: MethodKVTxn, TimeoutMS: 1234}
	frame := append(AppendRequestHeader(nil, want), payload...)
	FinishFrame(frame)
	if got := binary.BigEndian.Uint32(frame); int(got) != 14+len(payload) {
		t.Fatalf("length field %d, want %d", got, 14+len(payload))
	}
	bp, err := readFrame(bufio.NewReader(bytes.NewReader(frame)), RequestHeaderLen, 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	h, p, err := DecodeRequest(*bp)
	if err != nil {
		t.Fatal(err)
	}
	if h != want || !bytes.Equal(p, payload) {
		t.Errorf("decoded %+v %q, want %+v %q", h, p, want, payload)
	}
}

func TestResponseFrameRoundTrip(t *testing.T) {
	want := ResponseHeader{CallID: 42, Status: 14}
	frame := append(AppendResponseHeader(nil, want), "no quorum"...)
	FinishFrame(frame)
	h, p, err := DecodeResponse(frame)
	if err != nil {
		t.Fatal(err)
	}
	if h != want || string(p) != "no quorum" {
		t.Errorf("decoded %+v %q, want %+v %q", h, p, want, "no quorum")
	}
}

func TestReadFrameLimits(t *testing.T) {
	frameOf := func(length uint32, body int) []byte {
		b := binary.BigEndian.AppendUint32(nil, length)
		return append(b, make([]byte, body)...)
	}
	for _, tc := range []struct {
		name  string
		input []byte
		want  error
	}{
		{"shorter than header", frameOf(RequestHeaderLen-5, RequestHeaderLen-5), ErrFrameTooShort},
		{"over the limit", frameOf(1<<20, 0), ErrFrameTooLarge},
		{"truncated body", frameOf(100, 10), io.ErrUnexpectedEOF},
		{"clean EOF", nil, io.EOF},
	} {
		_, err := readFrame(bufio.NewReader(bytes.NewReader(tc.input)), RequestHeaderLen, 1<<10)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	// Exactly at the limit is accepted.
	frame := AppendRequestHeader(nil, RequestHeader{CallID: 1})
	frame = append(frame, make([]byte, 1<<10-RequestHeaderLen)...)
	FinishFrame(frame)
	if _, err := readFrame(bufio.NewReader(bytes.NewReader(frame)), RequestHeaderLen, 1<<10); err != nil {
		t.Errorf("frame of exactly the limit: %v", err)
	}
}

// FuzzDecodeFrames feeds arbitrary bytes to the decoders both sides run on untrusted input. They
// must never panic, never accept a frame outside the limits, and whatever they accept must
// re-encode to the same bytes.
func FuzzDecodeFrames(f *testing.F) {
	req := AppendRequestHeader(nil, RequestHeader{CallID: 7, Method: MethodKVPut, TimeoutMS: 5000})
	req = append(req, 0x0a, 0x01, 'k')
	FinishFrame(req)
	f.Add(req)
	resp := append(AppendResponseHeader(nil, ResponseHeader{CallID: 7, Status: 3}), "bad"...)
	FinishFrame(resp)
	f.Add(resp)
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	const limit = 4 << 10
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReader(bytes.NewReader(data))
		for {
			bp, err := readFrame(br, RequestHeaderLen, limit)
			if err != nil {
				break
			}
			frame := *bp
			if len(frame) < RequestHeaderLen || len(frame) > limit {
				t.Fatalf("accepted a %d-byte frame outside [%d, %d]", len(frame), RequestHeaderLen, limit)
			}
			h, payload, err := DecodeRequest(frame)
			if err != nil {
				t.Fatalf("readFrame accepted a frame DecodeRequest rejects: %v", err)
			}
			again := append(AppendRequestHeader(nil, h), payload...)
			FinishFrame(again)
			if !bytes.Equal(again, frame) {
				t.Fatalf("re-encoding %x gave %x", frame, again)
			}
			if rh, rp, err := DecodeResponse(frame); err == nil {
				back := append(AppendResponseHeader(nil, rh), rp...)
				FinishFrame(back)
				if !bytes.Equal(back, frame) {
					t.Fatalf("response re-encoding %x gave %x", frame, back)
				}
			}
			putBuf(bp)
		}
		// The decoders on raw input must reject rather than panic.
		_, _, _ = DecodeRequest(data)
		_, _, _ = DecodeResponse(data)
	})
}

// TestMethodTableCoversAPI pins the method table to the API: every RPC of api/caucus/v1,
// unary or streaming, has exactly one number with the right kind, and the numbers are below the
// stream frame types.
func TestMethodTableCoversAPI(t *testing.T) {
	numbered := make(map[string]Method)
	for m := range methods {
		if p := Method(m).Procedure(); p != "" && Method(m) != methodTestBidi && Method(m) != methodTestSum {
			if prev, dup := numbered[p]; dup {
				t.Errorf("%s has two numbers: %d and %d", p, prev, m)
			}
			if m >= FirstFrameType {
				t.Errorf("%s has number %#x, in the stream frame types", p, m)
			}
			numbered[p] = Method(m)
		}
	}
	services := caucusv1.File_caucus_v1_caucus_proto.Services()
	rpcs := 0
	for i := range services.Len() {
		svc := services.Get(i)
		for j := range svc.Methods().Len() {
			md := svc.Methods().Get(j)
			proc := "/" + string(svc.FullName()) + "/" + string(md.Name())
			m, has := numbered[proc]
			if !has {
				t.Errorf("%s has no native method number", proc)
				continue
			}
			rpcs++
			streaming := md.IsStreamingClient() || md.IsStreamingServer()
			if got := methods[m].streamType != connect.StreamTypeUnary; got != streaming {
				t.Errorf("%s: streaming in the table = %v, in the API = %v", proc, got, streaming)
			}
		}
	}
	if rpcs != len(numbered) {
		t.Errorf("%d numbered methods, %d RPCs in the API", len(numbered), rpcs)
	}
}
