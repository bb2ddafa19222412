package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/caucus/caucus/raft"
)

// ProtocolVersion is the transport protocol version this package speaks. It names the handshake
// and frame layout described in the package documentation, not the message encoding
// (internal/wire versions its own bytes). Bump it on any incompatible change to either layout.
const ProtocolVersion uint16 = 1

// Wire layout of the handshake and frames. All integers are big-endian.
//
//	hello (dialer -> acceptor, 32 bytes):
//	  magic "CAUH" | version u16 | reserved u16 (0) | cluster id u64 | sender id u64 | target id u64
//	ack (acceptor -> dialer, 24 bytes):
//	  magic "CAUA" | version u16 | status u16 | cluster id u64 | acceptor id u64
//	frame (dialer -> acceptor, repeated until the connection closes):
//	  length u32 | crc32c(payload) u32 | payload (wire.AppendMessage output, length bytes)
//
// The hello and the ack use different magics so that a peer which echoes bytes back (or a node
// that dialed itself) is not mistaken for a transport that accepted the connection. Connections
// are one-way: after the ack the acceptor never writes again, so the dialer treats any byte or
// EOF on the read side as the connection having died.
const (
	helloBytes       = 32
	ackBytes         = 24
	frameHeaderBytes = 8
)

var (
	helloMagic = [4]byte{'C', 'A', 'U', 'H'}
	ackMagic   = [4]byte{'C', 'A', 'U', 'A'}
)

// castagnoli is the CRC-32C table; Go uses the SSE4.2/ARMv8 instructions for it.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ackStatus is the acceptor's verdict on a hello.
type ackStatus uint16

const (
	ackOK ackStatus = iota
	ackBadVersion
	ackClusterMismatch
	ackWrongNode   // the target id is not the acceptor's id: the dialer has a stale address
	ackBadSender   // the sender id is None or the acceptor's own id
	ackBadReserved // reserved bits set: a future protocol this version does not understand
)

func (s ackStatus) String() string {
	switch s {
	case ackOK:
		return "ok"
	case ackBadVersion:
		return "unsupported protocol version"
	case ackClusterMismatch:
		return "cluster id mismatch"
	case ackWrongNode:
		return "wrong target node"
	case ackBadSender:
		return "invalid sender id"
	case ackBadReserved:
		return "reserved handshake bits set"
	}
	return fmt.Sprintf("ackStatus(%d)", uint16(s))
}

// Errors that classify connection failures. They are wrapped with details (ids, sizes), so
// compare with errors.Is.
var (
	// ErrClosed is returned by methods called after Close.
	ErrClosed = errors.New("transport: closed")
	// ErrHandshake wraps every handshake failure, on either side of a connection.
	ErrHandshake = errors.New("transport: handshake failed")
	// ErrClusterMismatch wraps ErrHandshake when the two nodes belong to different clusters.
	ErrClusterMismatch = fmt.Errorf("%w: cluster id mismatch", ErrHandshake)
	// ErrProtocol wraps every violation of the frame protocol by the remote end (bad length,
	// bad checksum, undecodable message, misaddressed message). The connection is closed.
	ErrProtocol = errors.New("transport: protocol violation")
	// ErrMessageTooLarge is the reason a message is refused on send or a frame on receive when
	// it exceeds Config.MaxMessageBytes.
	ErrMessageTooLarge = errors.New("transport: message exceeds MaxMessageBytes")
)

type hello struct {
	version  uint16
	reserved uint16
	cluster  uint64
	from     raft.NodeID
	to       raft.NodeID
}

func (h *hello) marshal() [helloBytes]byte {
	var b [helloBytes]byte
	copy(b[0:4], helloMagic[:])
	binary.BigEndian.PutUint16(b[4:6], h.version)
	binary.BigEndian.PutUint16(b[6:8], h.reserved)
	binary.BigEndian.PutUint64(b[8:16], h.cluster)
	binary.BigEndian.PutUint64(b[16:24], uint64(h.from))
	binary.BigEndian.PutUint64(b[24:32], uint64(h.to))
	return b
}

// readHello reads and parses a hello. A wrong magic is reported without a reply: the remote end
// does not speak this protocol, so there is nobody to explain the rejection to.
func readHello(r io.Reader) (hello, error) {
	var b [helloBytes]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return hello{}, fmt.Errorf("%w: reading hello: %w", ErrHandshake, err)
	}
	if [4]byte(b[0:4]) != helloMagic {
		return hello{}, fmt.Errorf("%w: bad magic %q", ErrHandshake, b[0:4])
	}
	return hello{
		version:  binary.BigEndian.Uint16(b[4:6]),
		reserved: binary.BigEndian.Uint16(b[6:8]),
		cluster:  binary.BigEndian.Uint64(b[8:16]),
		from:     raft.NodeID(binary.BigEndian.Uint64(b[16:24])),
		to:       raft.NodeID(binary.BigEndian.Uint64(b[24:32])),
	}, nil
}

type ack struct {
	version uint16
	status  ackStatus
	cluster uint64
	id      raft.NodeID
}

func (a *ack) marshal() [ackBytes]byte {
	var b [ackBytes]byte
	copy(b[0:4], ackMagic[:])
	binary.BigEndian.PutUint16(b[4:6], a.version)
	binary.BigEndian.PutUint16(b[6:8], uint16(a.status))
	binary.BigEndian.PutUint64(b[8:16], a.cluster)
	binary.BigEndian.PutUint64(b[16:24], uint64(a.id))
	return b
}

func readAck(r io.Reader) (ack, error) {
	var b [ackBytes]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return ack{}, fmt.Errorf("%w: reading ack: %w", ErrHandshake, err)
	}
	if [4]byte(b[0:4]) != ackMagic {
		return ack{}, fmt.Errorf("%w: bad ack magic %q", ErrHandshake, b[0:4])
	}
	return ack{
		version: binary.BigEndian.Uint16(b[4:6]),
		status:  ackStatus(binary.BigEndian.Uint16(b[6:8])),
		cluster: binary.BigEndian.Uint64(b[8:16]),
		id:      raft.NodeID(binary.BigEndian.Uint64(b[16:24])),
	}, nil
}

// checkHello is the acceptor's validation of a hello. It returns the status to reply with and,
// unless the status is ackOK, an error for the log that names what did not match.
func checkHello(h *hello, self raft.NodeID, cluster uint64) (ackStatus, error) {
	switch {
	case h.version != ProtocolVersion:
		return ackBadVersion, fmt.Errorf("%w: peer %d speaks protocol version %d, this node speaks %d",
			ErrHandshake, h.from, h.version, ProtocolVersion)
	case h.reserved != 0:
		return ackBadReserved, fmt.Errorf("%w: peer %d set reserved bits %#x", ErrHandshake, h.from, h.reserved)
	case h.cluster != cluster:
		return ackClusterMismatch, fmt.Errorf("%w: peer %d is in cluster %#x, this node %d is in cluster %#x",
			ErrClusterMismatch, h.from, h.cluster, self, cluster)
	case h.to != self:
		return ackWrongNode, fmt.Errorf("%w: peer %d addressed node %d, but this is node %d (stale peer address?)",
			ErrHandshake, h.from, h.to, self)
	case h.from == raft.None || h.from == self:
		return ackBadSender, fmt.Errorf("%w: invalid sender id %d (this node is %d; duplicate node ids?)",
			ErrHandshake, h.from, self)
	}
	return ackOK, nil
}

// checkAck is the dialer's validation of the acceptor's reply to a hello for node want.
func checkAck(a *ack, self, want raft.NodeID, cluster uint64) error {
	switch {
	case a.status == ackClusterMismatch || (a.status == ackOK && a.cluster != cluster):
		return fmt.Errorf("%w: peer %d is in cluster %#x, this node %d is in cluster %#x",
			ErrClusterMismatch, a.id, a.cluster, self, cluster)
	case a.status != ackOK:
		return fmt.Errorf("%w: peer %d (protocol version %d) refused the connection: %v",
			ErrHandshake, a.id, a.version, a.status)
	case a.version != ProtocolVersion:
		return fmt.Errorf("%w: peer %d accepted with protocol version %d, this node speaks %d",
			ErrHandshake, a.id, a.version, ProtocolVersion)
	case a.id != want:
		return fmt.Errorf("%w: dialed node %d but node %d answered (stale peer address?)",
			ErrHandshake, want, a.id)
	}
	return nil
}

// putFrameHeader fills the first frameHeaderBytes of frame from the payload that follows them.
func putFrameHeader(frame []byte) {
	payload := frame[frameHeaderBytes:]
	binary.BigEndian.PutUint32(frame[0:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(frame[4:8], crc32.Checksum(payload, castagnoli))
}
