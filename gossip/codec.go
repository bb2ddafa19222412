package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The encoding. Every message starts with a header:
//
//	version (1 byte, wireVersion) | label length (1 byte) | label
//
// followed by one or more parts, each a type byte and its fields. Integers are unsigned varints;
// strings and byte slices are a varint length and the bytes, each with its own limit. A packet
// holds a primary part (ping, ping-req, ack, nack) or none (a gossip packet), then as many
// membership updates (alive, suspect, dead, left) as fit in MaxPacketBytes. A stream holds exactly
// one part: a ping, an ack or a push-pull.
//
// Parts, with their fields in order:
//
//	ping      seq, target name, source name, source addr
//	ping-req  seq, target name, target addr, source addr, wants nack (1 byte)
//	ack, nack seq
//	alive     name, addr, incarnation, meta
//	suspect   name, incarnation, accuser
//	dead      name, incarnation, accuser
//	left      name, incarnation
//	push-pull flags (1 byte: join, reply), source name, source addr, count,
//	          then per member: name, addr, incarnation, state (1 byte), meta
const wireVersion = 1

// msgType numbers the parts. ONLY APPEND TO THIS LIST: the numbers are the wire format.
type msgType uint8

const (
	msgPing     msgType = 1
	msgPingReq  msgType = 2
	msgAck      msgType = 3
	msgNack     msgType = 4
	msgAlive    msgType = 5
	msgSuspect  msgType = 6
	msgDead     msgType = 7
	msgLeft     msgType = 8
	msgPushPull msgType = 9
)

const (
	ppJoin  = 1 << 0
	ppReply = 1 << 1
)

// msg is any part, decoded. Which fields a type uses is listed above.
type msg struct {
	typ      msgType
	seq      uint64
	name     string // ping/ping-req: the target; updates: the member the news is about
	addr     string // ping-req: target addr; alive: the member's addr
	from     string // ping, push-pull: source name; suspect, dead: the accuser
	fromAddr string // ping, ping-req, push-pull: where to answer
	inc      uint64
	meta     []byte
	flag     bool  // ping-req: wants a nack
	ppFlags  uint8 // push-pull
	members  []Member
}

var (
	// ErrMalformed is wrapped by every decoding error.
	ErrMalformed = errors.New("gossip: malformed message")
	// ErrLabelMismatch is returned by Step for a message of another cluster.
	ErrLabelMismatch = errors.New("gossip: cluster label mismatch")
)

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendHeader(b []byte, label string) []byte {
	b = append(b, wireVersion, byte(len(label)))
	return append(b, label...)
}

func appendMsg(b []byte, m *msg) []byte {
	b = append(b, byte(m.typ))
	switch m.typ {
	case msgPing:
		b = appendUvarint(b, m.seq)
		b = appendString(b, m.name)
		b = appendString(b, m.from)
		b = appendString(b, m.fromAddr)
	case msgPingReq:
		b = appendUvarint(b, m.seq)
		b = appendString(b, m.name)
		b = appendString(b, m.addr)
		b = appendString(b, m.fromAddr)
		b = append(b, boolByte(m.flag))
	case msgAck, msgNack:
		b = appendUvarint(b, m.seq)
	case msgAlive:
		b = appendString(b, m.name)
		b = appendString(b, m.addr)
		b = appendUvarint(b, m.inc)
		b = appendString(b, string(m.meta))
	case msgSuspect, msgDead:
		b = appendString(b, m.name)
		b = appendUvarint(b, m.inc)
		b = appendString(b, m.from)
	case msgLeft:
		b = appendString(b, m.name)
		b = appendUvarint(b, m.inc)
	case msgPushPull:
		b = append(b, m.ppFlags)
		b = appendString(b, m.from)
		b = appendString(b, m.fromAddr)
		b = appendUvarint(b, uint64(len(m.members)))
		for i := range m.members {
			b = appendMember(b, &m.members[i])
		}
	default:
		panic(fmt.Sprintf("gossip: encoding unknown message type %d", m.typ))
	}
	return b
}

func appendMember(b []byte, mb *Member) []byte {
	b = appendString(b, mb.Name)
	b = appendString(b, mb.Addr)
	b = appendUvarint(b, mb.Incarnation)
	b = append(b, byte(mb.State))
	return appendString(b, string(mb.Meta))
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// decoder reads fields, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("%s: bad varint", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail("%s: truncated", what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bytes(what string, limit int) []byte {
	n := d.uvarint(what)
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) {
		d.fail("%s: %d bytes, more than %d", what, n, limit)
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("%s: %d bytes, %d left", what, n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string(what string, limit int) string { return string(d.bytes(what, limit)) }

// name reads a non-empty name.
func (d *decoder) name(what string) string {
	s := d.string(what, MaxNameBytes)
	if d.err == nil && s == "" {
		d.fail("%s: empty", what)
	}
	return s
}

// decodeHeader checks the version and returns the label and the parts.
func decodeHeader(data []byte) (label string, body []byte, err error) {
	if len(data) < 2 {
		return "", nil, fmt.Errorf("%w: %d bytes, shorter than a header", ErrMalformed, len(data))
	}
	if data[0] != wireVersion {
		return "", nil, fmt.Errorf("%w: version %d, want %d", ErrMalformed, data[0], wireVersion)
	}
	n := int(data[1])
	if n > MaxLabelBytes || 2+n > len(data) {
		return "", nil, fmt.Errorf("%w: label of %d bytes in a %d-byte message", ErrMalformed, n, len(data))
	}
	return string(data[2 : 2+n]), data[2+n:], nil
}

// decodeParts decodes every part of a message body. Byte slices in the result alias body.
func decodeParts(body []byte) ([]msg, error) {
	d := decoder{b: body}
	var out []msg
	for len(d.b) > 0 && d.err == nil {
		var m msg
		m.typ = msgType(d.byte("type"))
		switch m.typ {
		case msgPing:
			m.seq = d.uvarint("ping seq")
			m.name = d.name("ping target")
			m.from = d.name("ping source")
			m.fromAddr = d.string("ping source addr", MaxAddrBytes)
		case msgPingReq:
			m.seq = d.uvarint("ping-req seq")
			m.name = d.name("ping-req target")
			m.addr = d.string("ping-req target addr", MaxAddrBytes)
			m.fromAddr = d.string("ping-req source addr", MaxAddrBytes)
			m.flag = d.byte("ping-req nack") != 0
		case msgAck, msgNack:
			m.seq = d.uvarint("ack seq")
		case msgAlive:
			m.name = d.name("alive name")
			m.addr = d.string("alive addr", MaxAddrBytes)
			m.inc = d.uvarint("alive incarnation")
			m.meta = d.bytes("alive meta", MaxMetaBytes)
		case msgSuspect, msgDead:
			m.name = d.name("suspect/dead name")
			m.inc = d.uvarint("suspect/dead incarnation")
			m.from = d.name("suspect/dead accuser")
		case msgLeft:
			m.name = d.name("left name")
			m.inc = d.uvarint("left incarnation")
		case msgPushPull:
			m.ppFlags = d.byte("push-pull flags")
			m.from = d.name("push-pull source")
			m.fromAddr = d.string("push-pull source addr", MaxAddrBytes)
			n := d.uvarint("push-pull count")
			// Each member takes at least 5 bytes: refuse counts the body cannot hold before
			// allocating for them.
			if d.err == nil && n > uint64(len(d.b)/5) {
				d.fail("push-pull count %d in %d bytes", n, len(d.b))
			}
			if d.err == nil {
				m.members = make([]Member, 0, n)
			}
			for i := uint64(0); i < n && d.err == nil; i++ {
				var mb Member
				mb.Name = d.name("push-pull member name")
				mb.Addr = d.string("push-pull member addr", MaxAddrBytes)
				mb.Incarnation = d.uvarint("push-pull member incarnation")
				mb.State = State(d.byte("push-pull member state"))
				mb.Meta = d.bytes("push-pull member meta", MaxMetaBytes)
				if d.err == nil && mb.State > StateLeft {
					d.fail("push-pull member state %d", mb.State)
				}
				m.members = append(m.members, mb)
			}
		default:
			d.fail("unknown type %d", m.typ)
		}
		if d.err == nil {
			out = append(out, m)
		}
	}
	return out, d.err
}
