package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The ConfChange encoding is part of the WAL (EntryConfChange.Data) and of the bootstrap entry,
// which every initial member must write byte for byte identically, so it is a fixed, hand-written
// format rather than a reflection-based one whose output could change with a library version:
//
//	version  byte  (confChangeVersion)
//	flags    byte  (bit 0: Joint, bit 1: AutoLeave)
//	count    uvarint, then count times: type byte, node ID uvarint
//	ctxLen   uvarint, then ctxLen bytes of Context
//
// Decoding rejects unknown versions, flags and types, truncation and trailing bytes, so that a
// corrupt entry is reported rather than half-applied.
const (
	confChangeVersion byte = 1

	confChangeFlagJoint     byte = 1 << 0
	confChangeFlagAutoLeave byte = 1 << 1

	// MaxConfChanges bounds the number of changes in one ConfChange. A real reconfiguration touches
	// a handful of members; the bound keeps a corrupt length from allocating without limit.
	MaxConfChanges = 1024
	// MaxConfChangeContextBytes bounds ConfChange.Context (an address or similar small blob).
	MaxConfChangeContextBytes = 64 << 10
)

var errConfChangeTruncated = errors.New("truncated")

// EncodeConfChange returns the deterministic binary encoding of cc, as stored in the Data of an
// EntryConfChange entry. Equal ConfChanges encode to equal bytes.
func EncodeConfChange(cc ConfChange) []byte {
	buf := make([]byte, 0, 2+binary.MaxVarintLen64*(1+2*len(cc.Changes))+len(cc.Context))
	var flags byte
	if cc.Joint {
		flags |= confChangeFlagJoint
	}
	if cc.AutoLeave {
		flags |= confChangeFlagAutoLeave
	}
	buf = append(buf, confChangeVersion, flags)
	buf = binary.AppendUvarint(buf, uint64(len(cc.Changes)))
	for _, ch := range cc.Changes {
		buf = append(buf, byte(ch.Type))
		buf = binary.AppendUvarint(buf, uint64(ch.NodeID))
	}
	buf = binary.AppendUvarint(buf, uint64(len(cc.Context)))
	buf = append(buf, cc.Context...)
	return buf
}

// DecodeConfChange decodes the Data of an EntryConfChange entry. It fails on anything
// EncodeConfChange could not have produced.
func DecodeConfChange(data []byte) (ConfChange, error) {
	var cc ConfChange
	if len(data) < 2 {
		return cc, fmt.Errorf("raft: decode conf change: header: %w", errConfChangeTruncated)
	}
	if data[0] != confChangeVersion {
		return cc, fmt.Errorf("raft: decode conf change: unknown version %d", data[0])
	}
	flags := data[1]
	if flags&^(confChangeFlagJoint|confChangeFlagAutoLeave) != 0 {
		return cc, fmt.Errorf("raft: decode conf change: unknown flags %#x", flags)
	}
	cc.Joint = flags&confChangeFlagJoint != 0
	cc.AutoLeave = flags&confChangeFlagAutoLeave != 0
	rest := data[2:]
	n, k := binary.Uvarint(rest)
	if k <= 0 {
		return cc, fmt.Errorf("raft: decode conf change: change count: %w", errConfChangeTruncated)
	}
	rest = rest[k:]
	if n > MaxConfChanges {
		return cc, fmt.Errorf("raft: decode conf change: %d changes exceed MaxConfChanges %d", n, MaxConfChanges)
	}
	if n > 0 {
		cc.Changes = make([]ConfChangeSingle, 0, n)
	}
	for i := uint64(0); i < n; i++ {
		if len(rest) < 1 {
			return cc, fmt.Errorf("raft: decode conf change: change %d type: %w", i, errConfChangeTruncated)
		}
		t := ConfChangeType(rest[0])
		if t > ConfChangeRemoveNode {
			return cc, fmt.Errorf("raft: decode conf change: change %d: unknown type %d", i, t)
		}
		id, k := binary.Uvarint(rest[1:])
		if k <= 0 {
			return cc, fmt.Errorf("raft: decode conf change: change %d node ID: %w", i, errConfChangeTruncated)
		}
		rest = rest[1+k:]
		cc.Changes = append(cc.Changes, ConfChangeSingle{Type: t, NodeID: NodeID(id)})
	}
	clen, k := binary.Uvarint(rest)
	if k <= 0 {
		return cc, fmt.Errorf("raft: decode conf change: context length: %w", errConfChangeTruncated)
	}
	rest = rest[k:]
	if clen > MaxConfChangeContextBytes {
		return cc, fmt.Errorf("raft: decode conf change: context of %d bytes exceeds MaxConfChangeContextBytes %d", clen, MaxConfChangeContextBytes)
	}
	if uint64(len(rest)) < clen {
		return cc, fmt.Errorf("raft: decode conf change: context: %w", errConfChangeTruncated)
	}
	if uint64(len(rest)) > clen {
		return cc, fmt.Errorf("raft: decode conf change: %d trailing bytes", uint64(len(rest))-clen)
	}
	if clen > 0 {
		cc.Context = append([]byte(nil), rest...)
	}
	return cc, nil
}
