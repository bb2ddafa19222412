// Package nativeapi is caucus's lean binary protocol for the RPCs of api/caucus/v1, unary and
// streaming: a multiplexed, length-prefixed framing over one TCP connection, served on the same
// client port as HTTP (connect, gRPC, JSON) and spoken by the public Go client by default. It exists for CPU per
// request: the HTTP/2 stack costs a write syscall per response frame, header parsing and a stack
// per stream, while here a connection's writer batches every queued frame into one write.
//
// # Wire format
//
// All integers are big-endian. A connection starts with an 8-byte preface from the client:
//
//	'C' 'A' 'U' 'C' 'U' 'S' 0x00 0x01      ("CAUCUS", a zero byte, protocol version 1)
//
// The server sends no preface. Then the client sends request frames and the server answers with
// response frames, in any order, matched by call id:
//
//	request:  u32 length | u64 call id | u16 method | u32 timeout ms | protobuf request
//	response: u32 length | u64 call id | u16 status | payload
//
// length counts the bytes after itself (14 + payload for a request, 10 + payload for a
// response). A timeout of 0 means the client set none (the server's handlers apply their
// default); otherwise the server runs the call under that deadline. Status 0 is success and the
// payload is the protobuf response; any other status is a connect.Code number and the payload is
// the UTF-8 error message. Method numbers are listed in methods.registry (the generated Method
// constants of methods_gen.go); they are part of the protocol, never changed and never reused.
// Call ids are chosen by the client and must be unique among its calls and streams in flight on
// the connection; the server only echoes them.
//
// # Streams
//
// Streams (server-streaming, client-streaming and bidirectional methods) reuse both frame
// layouts, with no change to the unary frames: values from FirstFrameType (0xFF00) up in a
// client frame's method field, or a server frame's status field, are stream frame types, which
// no method number or status code reaches. A stream's frames carry its id in the call id field.
//
//	client open:        method = the streaming method, u32 = timeout ms, payload = u8 stream
//	                    version (StreamVersion, 1) | u32 the client's receive window
//	client message:     method = 0xFF01, u32 = 0, payload = protobuf message
//	client credit:      method = 0xFF02, u32 = increment in bytes, no payload
//	client close-send:  method = 0xFF03, u32 = 0, no payload (half-close: no more messages)
//	client cancel:      method = 0xFF04, u32 = 0, no payload (abandon the stream)
//	server message:     status = 0xFF01, payload = protobuf message
//	server credit:      status = 0xFF02, payload = u32 increment in bytes
//	server end:         a response frame: status 0 and no payload, or a code and its message
//
// An open is a request frame whose method is a streaming one, and an end is a response frame,
// so a server that predates streams answers an open with Unimplemented (unknown method) and the
// client's stream fails alone: the connection preface stays version 1. The stream version in
// each open lets the stream frames change later the same way; a server refuses an open of a
// version it does not know with Unimplemented.
//
// Flow control is per stream and per direction, in bytes of whole message frames (header
// included). The server may send as many bytes as the window in the open; the client may send
// nothing until the server's first credit frame, which announces the server's whole window.
// After that, each credit frame returns bytes the receiver's application has consumed: a sender
// whose next frame exceeds its credit waits, so a receiver never holds more than its window for
// a stream and a slow reader slows only its own stream's sender, never the connection. A
// message frame larger than the receiver's whole window fails its Send with ResourceExhausted.
// Receivers return credit once a quarter of the window is consumed, or when they have consumed
// everything received, so that a sender waiting for room is never stranded.
//
// The server ends a stream when its handler returns, with the handler's status; the client ends
// it early with cancel (the handler's context is canceled, and no end frame follows). Frames
// for a stream id that is not open are dropped: they may cross its end. When the connection
// closes, every stream on it ends: the handlers' contexts are canceled, and the client's streams
// fail with Unavailable.
//
// On the Go side a stream is served by the service's connect handler (the server captures the
// function connect builds around it, see captureStreaming), so one implementation serves both
// protocols; clients use Stream, or the generated stubs, which return connect's own stream types.
//
// # Invariants and limits
//
//   - A request frame larger than the server's MaxRequestBytes plus RequestHeaderLen, a
//     response frame larger than the client's MaxResponseFrame, a length below the header size,
//     or a bad preface is a protocol error: the receiver logs it and closes the connection
//     (pending client calls fail with connect.CodeUnavailable). Nothing is allocated from an
//     unchecked length.
//   - The server runs at most MaxInFlightPerConn calls per connection; at the bound its reader
//     stops reading, so a client that floods a connection is slowed by TCP flow control instead
//     of growing the server's memory.
//   - Every call's context is canceled when its connection closes, and carries the frame's
//     deadline.
//   - Each write of responses must finish within the server's WriteTimeout
//     (DefaultWriteTimeout, 10 s) or the connection is closed: a client that stops reading
//     cannot hold a connection's goroutines and in-flight slots until TCP gives up. The client
//     bounds its writes the same way (DefaultClientWriteTimeout), and on Linux bounds how long
//     written data may stay unacknowledged (UnackedTimeout, TCP_USER_TIMEOUT): a member whose
//     machine vanished fails the connection, and its calls, in seconds.
//   - Each side has one writer goroutine per connection that drains all queued frames into a
//     buffered writer and flushes only when its queue is empty: one write syscall for every
//     frame that became ready while the previous write was in progress. Before flushing it
//     yields once if other calls share the connection (server: handlers still computing;
//     client: calls pending beside those just written), because frames tend to become ready
//     together (a committed batch wakes its handlers at once) but one goroutine at a time. A
//     lone call skips the yield: it would only wake an idle P.
//   - A connection has at most MaxStreamsPerConn streams open (ServerConfig, default
//     DefaultMaxStreamsPerConn, 128); an open past it ends at once with ResourceExhausted.
//     Streams do not take in-flight slots, but their frames wait like requests while the
//     reader is stopped at that bound. The window a client asks for is at most MaxStreamWindow
//     (4 MiB; a larger one is clamped), so the stream frames a server queues on one connection
//     stay below 128 × 4 MiB; the default window is DefaultStreamWindow (1 MiB), and the
//     server's own receive window is at least its request frame limit.
//   - Violations of the stream rules close the connection: credit with a zero increment or
//     beyond the window (returning bytes never received), a message beyond the granted window or
//     after close-send, a control frame with a payload, an unknown frame type, an open with a
//     malformed payload or an id already open. An open with a zero window or an unknown stream
//     version is refused with an end frame, leaving the connection up.
//   - Split sniffs each accepted connection in its own goroutine under a bounded deadline, so a
//     slow or silent client never blocks Accept; anything that is not the native preface is
//     handed to the HTTP side with the bytes read so far replayed.
//
// # Generated code
//
// methods_gen.go (method constants, Handlers, the dispatch specs) and stubs_gen.go (clients
// implementing the caucusv1connect client interfaces) are generated from the compiled API by
// ./gen, which also numbers new RPCs in methods.registry (see internal/nativeapi/internal/apigen).
// A test fails when they are out of date; `make generate` refreshes them. Adding an RPC, unary
// or streaming, is then: edit the .proto, `make generate`, implement the method on the
// service's connect handler, which both protocols serve.
package nativeapi

//go:generate go run ./gen
