// Package nativeapi is caucus's lean binary protocol for the unary RPCs of api/caucus/v1: a
// multiplexed, length-prefixed framing over one TCP connection, served on the same client port as
// HTTP (connect, gRPC, JSON) and spoken by the public Go client by default. It exists for CPU per
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
// the UTF-8 error message. Method numbers are listed in methods.go (the Method constants); they
// are part of the protocol and never reused. Call ids are chosen by the client and must be unique
// among its calls in flight on the connection; the server only echoes them.
//
// Maintenance.Snapshot is server-streaming and is not carried: clients use connect for it.
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
//   - Split sniffs each accepted connection in its own goroutine under a bounded deadline, so a
//     slow or silent client never blocks Accept; anything that is not the native preface is
//     handed to the HTTP side with the bytes read so far replayed.
package nativeapi

//go:generate go run ./gen
