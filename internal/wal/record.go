package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/caucus/caucus/internal/wire"
)

// Record types. ONLY APPEND: the numbers are on disk.
const (
	recSegmentHeader byte = 1 // segmentHeader; always and only the first record of a segment
	recEntry         byte = 2 // wire.AppendEntry
	recHardState     byte = 3 // wire.AppendHardState
	recSnapshot      byte = 4 // wire.AppendSnapshotMeta: the snapshot marker
	// recSyncMark opens every write (format version 2): the offset, in its segment, up to which
	// the segment was fdatasynced when the write was made. Replay uses it to tell a write the
	// power loss tore out of order (holes before records that were never synced) from damage
	// to synced data.
	recSyncMark byte = 5
)

// syncMarkPayloadBytes is the payload of recSyncMark: the synced offset, u64 LE.
const syncMarkPayloadBytes = 8

// appendSyncMark appends a recSyncMark frame saying synced.
func appendSyncMark(dst []byte, synced int64) []byte {
	dst, start := beginFrame(dst, recSyncMark)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(synced))
	return finishFrame(dst, start)
}

// patchSyncMark rewrites the value of the recSyncMark frame that frame starts with.
func patchSyncMark(frame []byte, synced int64) {
	binary.LittleEndian.PutUint64(frame[frameHeaderBytes+1:], uint64(synced))
	binary.LittleEndian.PutUint32(frame[4:], crc32.Checksum(frame[frameHeaderBytes:frameHeaderBytes+1+syncMarkPayloadBytes], castagnoli))
}

const (
	// frameHeaderBytes is the [length u32][crc32c u32] prefix of every record.
	frameHeaderBytes = 8
	// frameAlign is the alignment of every frame. Frames start on 8-byte boundaries so that a
	// frame header never straddles a 512-byte sector: a header is either entirely written or
	// not at all on devices with atomic sector writes, and a torn write shows up as a bad
	// CRC or zeros, never as a half-updated length pointing into the middle of other data.
	frameAlign = 8
	// MaxRecordBytesLimit is the largest record (type byte plus payload) a reader accepts and
	// the largest Options.MaxRecordBytes allowed: one wire field at its limit plus room for
	// the entry's header fields.
	MaxRecordBytesLimit = wire.MaxFieldBytes + 64
)

// segmentMagic opens every segment header payload, so a stray file with a segment name is not
// mistaken for a segment.
var segmentMagic = [8]byte{'c', 'a', 'u', 'c', 'u', 's', 'W', 'L'}

// segmentFormatVersion is the version byte of the segment header; bump on incompatible frame or
// record changes. Version 2 added recSyncMark; version 1 segments (no marks) are still read,
// with the stricter recovery rule they were written for (see replaySegment).
const (
	segmentFormatVersion    byte = 2
	minSegmentFormatVersion byte = 1
)

const segmentHeaderPayloadBytes = 8 + 1 + 8 + 8 + 8

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// segmentHeader is the payload of recSegmentHeader.
type segmentHeader struct {
	version byte // on decode; append always writes segmentFormatVersion
	seq     uint64
	// firstIndex is one past the last index of the log when the segment was started: every
	// live entry of earlier segments is below it.
	firstIndex uint64
	// prevTerm is the term of entry firstIndex-1 (0 if none). It lets replay start at this
	// segment once earlier segments are released (see ReleaseTo).
	prevTerm uint64
}

func (h *segmentHeader) append(dst []byte) []byte {
	dst = append(dst, segmentMagic[:]...)
	dst = append(dst, segmentFormatVersion)
	dst = binary.LittleEndian.AppendUint64(dst, h.seq)
	dst = binary.LittleEndian.AppendUint64(dst, h.firstIndex)
	return binary.LittleEndian.AppendUint64(dst, h.prevTerm)
}

func decodeSegmentHeader(p []byte) (segmentHeader, error) {
	if len(p) != segmentHeaderPayloadBytes {
		return segmentHeader{}, fmt.Errorf("segment header is %d bytes, want %d", len(p), segmentHeaderPayloadBytes)
	}
	if [8]byte(p[:8]) != segmentMagic {
		return segmentHeader{}, fmt.Errorf("bad segment magic %q", p[:8])
	}
	if p[8] < minSegmentFormatVersion || p[8] > segmentFormatVersion {
		return segmentHeader{}, fmt.Errorf("unsupported segment format version %d (want %d to %d)", p[8], minSegmentFormatVersion, segmentFormatVersion)
	}
	return segmentHeader{
		version:    p[8],
		seq:        binary.LittleEndian.Uint64(p[9:]),
		firstIndex: binary.LittleEndian.Uint64(p[17:]),
		prevTerm:   binary.LittleEndian.Uint64(p[25:]),
	}, nil
}

// frameSize is the on-disk size of a frame whose record (type + payload) is n bytes.
func frameSize(n int) int { return alignUp(frameHeaderBytes + n) }

func alignUp(n int) int { return (n + frameAlign - 1) &^ (frameAlign - 1) }

// beginFrame appends a placeholder header and the type byte; the caller appends the payload and
// calls finishFrame with the offset beginFrame returned.
func beginFrame(dst []byte, typ byte) ([]byte, int) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0, typ)
	return dst, start
}

// finishFrame fills in the length and CRC of the frame starting at start and pads it with zeros
// to the frame alignment.
func finishFrame(dst []byte, start int) []byte {
	rec := dst[start+frameHeaderBytes:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(rec)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(rec, castagnoli))
	for len(dst)%frameAlign != 0 {
		dst = append(dst, 0)
	}
	return dst
}

// frameStatus classifies what decodeFrame found.
type frameStatus uint8

const (
	frameOK    frameStatus = iota
	frameEnd               // an all-zero header: the end of the written part of a segment
	frameShort             // the frame runs past the end of the input
	frameBad               // the header or the CRC is wrong: torn, or corrupt
)

// decodeFrame examines the frame at the start of b. On frameOK it returns the record type, the
// payload (aliasing b) and the frame's aligned size. On other statuses, why explains, and n is
// the frame's declared aligned size when its length field is plausible, else 0.
//
// It never panics, and allocates only to explain a failure; FuzzDecodeRecord holds it to that.
func decodeFrame(b []byte) (typ byte, payload []byte, n int, st frameStatus, why string) {
	if len(b) < frameHeaderBytes {
		if allZero(b) {
			return 0, nil, 0, frameEnd, ""
		}
		return 0, nil, 0, frameShort, "frame header cut short"
	}
	length := binary.LittleEndian.Uint32(b)
	sum := binary.LittleEndian.Uint32(b[4:])
	if length == 0 {
		if sum == 0 {
			return 0, nil, 0, frameEnd, ""
		}
		return 0, nil, 0, frameBad, "zero length with non-zero checksum"
	}
	if length > MaxRecordBytesLimit {
		return 0, nil, 0, frameBad, fmt.Sprintf("length %d exceeds MaxRecordBytesLimit %d", length, MaxRecordBytesLimit)
	}
	n = frameSize(int(length))
	if frameHeaderBytes+int(length) > len(b) {
		return 0, nil, n, frameShort, fmt.Sprintf("length %d runs past the end of the segment", length)
	}
	rec := b[frameHeaderBytes : frameHeaderBytes+int(length)]
	if got := crc32.Checksum(rec, castagnoli); got != sum {
		return 0, nil, n, frameBad, fmt.Sprintf("crc32c mismatch: stored %#08x, computed %#08x", sum, got)
	}
	return rec[0], rec[1:], n, frameOK, ""
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
