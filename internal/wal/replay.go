package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"

	"github.com/caucus/caucus/internal/vfs"
	"github.com/caucus/caucus/internal/wire"
	"github.com/caucus/caucus/raft"
)

// readWindow is how much of a segment replay reads at a time.
const readWindow = 1 << 20

// segReader serves byte ranges of a segment through a window, so replay reads each segment
// sequentially in large reads without holding the whole file in memory.
type segReader struct {
	f      vfs.File
	size   int64
	buf    []byte
	bufOff int64
}

// at returns up to n bytes at off: fewer only at the end of the segment. The slice is valid until
// the next call.
func (r *segReader) at(off int64, n int) ([]byte, error) {
	if off >= r.size {
		return nil, nil
	}
	n = int(min(int64(n), r.size-off))
	if off >= r.bufOff && off+int64(n) <= r.bufOff+int64(len(r.buf)) {
		return r.buf[off-r.bufOff : off-r.bufOff+int64(n)], nil
	}
	want := int(min(int64(max(n, readWindow)), r.size-off))
	if cap(r.buf) < want {
		r.buf = make([]byte, want)
	}
	r.buf = r.buf[:want]
	got, err := r.f.ReadAt(r.buf, off)
	if got < want && err == nil {
		err = io.ErrUnexpectedEOF
	}
	if got < want {
		r.buf, r.bufOff = r.buf[:0], 0
		return nil, fmt.Errorf("wal: read %s at offset %d: %w", r.f.Name(), off, err)
	}
	r.bufOff = off
	return r.buf[:n], nil
}

// frameAt decodes the frame at off.
func (r *segReader) frameAt(off int64) (typ byte, payload []byte, n int, st frameStatus, why string, err error) {
	hdr, err := r.at(off, frameHeaderBytes)
	if err != nil {
		return 0, nil, 0, 0, "", err
	}
	need := frameHeaderBytes
	if len(hdr) == frameHeaderBytes {
		if l := binary.LittleEndian.Uint32(hdr); l <= MaxRecordBytesLimit {
			need += int(l)
		}
	}
	b, err := r.at(off, need)
	if err != nil {
		return 0, nil, 0, 0, "", err
	}
	typ, payload, n, st, why = decodeFrame(b)
	return typ, payload, n, st, why, nil
}

// scanAfter looks at every aligned offset from off to the end of the segment for a valid frame.
// It reports the first one found, and whether any non-zero byte was seen (frames and padding are
// 8-byte aligned, so checking every aligned header covers every byte).
func (r *segReader) scanAfter(off int64) (found int64, ok, nonZero bool, err error) {
	for off+frameHeaderBytes <= r.size {
		// Skip runs of zeros (the preallocated rest of a segment) a window at a time.
		chunk, err := r.at(off, readWindow)
		if err != nil {
			return 0, false, nonZero, err
		}
		if i := firstNonZeroWord(chunk); i != 0 {
			if i < 0 {
				off += int64(len(chunk) &^ (frameAlign - 1))
				if len(chunk) < frameAlign {
					break
				}
			} else {
				off += int64(i)
			}
			continue
		}
		nonZero = true
		hdr := chunk[:frameHeaderBytes]
		l := binary.LittleEndian.Uint32(hdr)
		sum := binary.LittleEndian.Uint32(hdr[4:])
		if l != 0 && l <= MaxRecordBytesLimit && off+frameHeaderBytes+int64(l) <= r.size {
			b, err := r.at(off+frameHeaderBytes, int(l))
			if err != nil {
				return 0, false, nonZero, err
			}
			if crc32.Checksum(b, castagnoli) == sum {
				return off, true, nonZero, nil
			}
		}
		off += frameAlign
	}
	// Bytes after the last aligned header (a file size that is not a multiple of 8).
	if off < r.size {
		b, err := r.at(off, int(r.size-off))
		if err != nil {
			return 0, false, nonZero, err
		}
		nonZero = nonZero || !allZero(b)
	}
	return 0, false, nonZero, nil
}

// firstNonZeroWord returns the offset of the first 8-byte word of b holding a non-zero byte,
// or -1 if every whole word is zero.
func firstNonZeroWord(b []byte) int {
	for i := 0; i+frameAlign <= len(b); i += frameAlign {
		if binary.LittleEndian.Uint64(b[i:]) != 0 {
			return i
		}
	}
	return -1
}

// tailInfo says where appending resumes in the last segment and whether a torn tail must be
// cut off first.
type tailInfo struct {
	off    int64
	repair bool
	why    string
}

type replayed struct {
	state logState
}

// replaySegments reads every segment in order into a logState with entries.
func replaySegments(fsys vfs.FS, segs []segment, logger *slog.Logger) (*replayed, tailInfo, error) {
	res := &replayed{state: logState{keep: true}}
	var tail tailInfo
	for i, seg := range segs {
		last := i == len(segs)-1
		t, err := replaySegment(fsys, seg, i == 0, last, &res.state)
		if err != nil {
			return nil, tailInfo{}, err
		}
		if last {
			tail = t
		}
	}
	st := &res.state
	if st.base != st.floor {
		last := segs[len(segs)-1]
		return nil, tailInfo{}, &CorruptError{File: segs[0].name, Offset: 0, Reason: fmt.Sprintf(
			"log starts after index %d but the last snapshot marker covers only up to %d: released segments are missing (last segment %s)",
			st.base, st.floor, last.name)}
	}
	logger.Debug("wal: replayed", "segments", len(segs), "entries", len(st.ents), "snapshot", st.floor, "last", st.last())
	return res, tail, nil
}

func replaySegment(fsys vfs.FS, seg segment, first, last bool, st *logState) (tailInfo, error) {
	f, err := fsys.Open(seg.name)
	if err != nil {
		return tailInfo{}, fmt.Errorf("wal: open %s: %w", seg.name, err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return tailInfo{}, fmt.Errorf("wal: size of %s: %w", seg.name, err)
	}
	r := &segReader{f: f, size: size}
	corrupt := func(off int64, cause error, format string, args ...any) error {
		return &CorruptError{File: seg.name, Offset: off, Reason: fmt.Sprintf(format, args...), Err: cause}
	}
	var off int64
	var version byte
	for {
		typ, payload, n, status, why, err := r.frameAt(off)
		if err != nil {
			return tailInfo{}, err
		}
		if off == 0 && status != frameOK {
			// Segments get their name only after the header is written and synced.
			return tailInfo{}, corrupt(0, nil, "segment header unreadable: %s", orEnd(why))
		}
		if status != frameOK && last && version >= 2 {
			// Only writes made after the last fdatasync can be torn, and the page cache may
			// have written their pages back in any order: records may follow the hole. They
			// were never synced either, unless a later write's sync mark says the hole lies
			// in synced data.
			return r.tornTail(seg.name, off, n, status, why)
		}
		switch status {
		case frameOK:
			if off == 0 && typ == recSegmentHeader && len(payload) > 8 {
				version = payload[8]
			}
			if err := applyRecord(seg, first, off, typ, payload, st); err != nil {
				return tailInfo{}, err
			}
			off += int64(n)
			continue
		case frameEnd:
			found, ok, nonZero, err := r.scanAfter(off + frameHeaderBytes)
			if err != nil {
				return tailInfo{}, err
			}
			if ok {
				return tailInfo{}, corrupt(off, nil, "end of log (zero header) followed by a valid record at offset %d", found)
			}
			if nonZero && !last {
				return tailInfo{}, corrupt(off, nil, "non-zero bytes after the end of a segment that is not the last")
			}
			return tailInfo{off: off, repair: nonZero, why: "non-zero bytes after the last record"}, nil
		default: // frameShort, frameBad
			from := off + frameHeaderBytes
			if status == frameBad && n > 0 {
				// The length field is plausible: skip the frame's body, which may hold
				// arbitrary user bytes that look like frames.
				from = off + int64(n)
			}
			found, ok, _, err := r.scanAfter(from)
			if err != nil {
				return tailInfo{}, err
			}
			if ok {
				return tailInfo{}, corrupt(off, nil, "%s; followed by a valid record at offset %d", why, found)
			}
			if !last {
				return tailInfo{}, corrupt(off, nil, "%s (in a segment that is not the last)", why)
			}
			return tailInfo{off: off, repair: true, why: why}, nil
		}
	}
}

// tornTail handles the end of the records of a last segment of format version 2 at off, where
// frameAt found status (n and why as it reported them). The tail from off on is cut off unless
// a sync mark after it proves that off lies in data that had been fdatasynced: that is damage,
// not a torn write.
func (r *segReader) tornTail(name string, off int64, n int, status frameStatus, why string) (tailInfo, error) {
	from := off + frameHeaderBytes
	if status == frameBad && n > 0 {
		from = off + int64(n) // do not look for frames inside this one's body
	}
	mark, synced, records, nonZero, err := r.syncedPast(from, off)
	if err != nil {
		return tailInfo{}, err
	}
	if mark >= 0 {
		what := orEnd(why)
		if status == frameEnd {
			what = "end of log (zero header)"
		}
		return tailInfo{}, &CorruptError{File: name, Offset: off, Reason: fmt.Sprintf(
			"%s in synced data: the sync mark at offset %d says the segment was synced up to offset %d", what, mark, synced)}
	}
	if status == frameEnd && !nonZero {
		return tailInfo{off: off}, nil // the clean end of the log
	}
	reason := orEnd(why)
	if status == frameEnd {
		reason = "non-zero bytes after the last record"
	}
	if records > 0 {
		reason = fmt.Sprintf("%s, followed by %d records written back out of order from writes never synced", reason, records)
	}
	return tailInfo{off: off, repair: true, why: reason}, nil
}

// syncedPast looks at every valid frame from offset from to the end of the segment for a sync
// mark saying the segment was synced beyond hole. It returns that mark's offset and value (mark
// -1 if there is none), how many valid frames it saw and whether it saw any non-zero byte.
func (r *segReader) syncedPast(from, hole int64) (mark, synced int64, records int, nonZero bool, err error) {
	for {
		found, ok, nz, err := r.scanAfter(from)
		nonZero = nonZero || nz
		if err != nil || !ok {
			return -1, 0, records, nonZero, err
		}
		off := found
		for {
			typ, payload, n, status, _, err := r.frameAt(off)
			if err != nil {
				return -1, 0, records, nonZero, err
			}
			if status != frameOK {
				break
			}
			records++
			if typ == recSyncMark && len(payload) == syncMarkPayloadBytes {
				if v := int64(binary.LittleEndian.Uint64(payload)); v > hole {
					return off, v, records, true, nil
				}
			}
			off += int64(n)
		}
		from = off + frameAlign
	}
}

func orEnd(why string) string {
	if why == "" {
		return "segment is empty"
	}
	return why
}

// applyRecord applies one valid frame to st. Its CRC was right, so any problem here is
// corruption (or a bug), never a torn write.
func applyRecord(seg segment, first bool, off int64, typ byte, payload []byte, st *logState) error {
	corrupt := func(cause error, format string, args ...any) error {
		return &CorruptError{File: seg.name, Offset: off, Reason: fmt.Sprintf(format, args...), Err: cause}
	}
	if (off == 0) != (typ == recSegmentHeader) {
		return corrupt(nil, "record type %d at offset %d: the segment header must be the first record and only there", typ, off)
	}
	switch typ {
	case recSegmentHeader:
		h, err := decodeSegmentHeader(payload)
		if err != nil {
			return corrupt(err, "%v", err)
		}
		if h.seq != seg.seq || h.firstIndex != seg.firstIndex {
			return corrupt(nil, "header says seq %d first index %d, file name says seq %d first index %d",
				h.seq, h.firstIndex, seg.seq, seg.firstIndex)
		}
		if h.firstIndex == 0 {
			return corrupt(nil, "segment first index is 0 (indexes start at 1)")
		}
		if first {
			// Replay starts here: everything live before firstIndex is in released segments
			// (or there is nothing before it).
			st.base, st.baseTerm, st.baseKnown = h.firstIndex-1, h.prevTerm, true
			return nil
		}
		// The previous segment was synced before this one was named, so replay has seen
		// exactly the log the writer had when it started this segment.
		if h.firstIndex != st.last()+1 {
			return corrupt(nil, "segment first index %d does not follow last index %d of the previous segments: records are missing",
				h.firstIndex, st.last())
		}
		if t, ok := st.term(h.firstIndex - 1); ok && t != h.prevTerm {
			return corrupt(nil, "segment says entry %d has term %d, the log has term %d", h.firstIndex-1, h.prevTerm, t)
		}
	case recEntry:
		e, n, err := wire.DecodeEntry(payload)
		if err != nil {
			return corrupt(err, "entry: %v", err)
		}
		if n != len(payload) {
			return corrupt(nil, "entry: %d trailing bytes", len(payload)-n)
		}
		if err := st.checkAppend(e.Index); err != nil {
			return corrupt(nil, "%v", err)
		}
		st.append(&e)
	case recHardState:
		hs, n, err := wire.DecodeHardState(payload)
		if err != nil {
			return corrupt(err, "hard state: %v", err)
		}
		if n != len(payload) {
			return corrupt(nil, "hard state: %d trailing bytes", len(payload)-n)
		}
		st.hs = hs
	case recSyncMark:
		if len(payload) != syncMarkPayloadBytes {
			return corrupt(nil, "sync mark: %d bytes, want %d", len(payload), syncMarkPayloadBytes)
		}
		if v := int64(binary.LittleEndian.Uint64(payload)); v > off {
			return corrupt(nil, "sync mark says the segment was synced up to offset %d, beyond the mark itself", v)
		}
	case recSnapshot:
		m, keep, err := decodeMarker(payload)
		if err != nil {
			return corrupt(err, "snapshot marker: %v", err)
		}
		if err := st.checkSnapshot(&m); err != nil {
			return corrupt(nil, "%v", err)
		}
		isCopy := st.snap != nil && m.Index == st.snap.Index
		if want, known := st.keepsLog(&m); known && want != keep && !isCopy {
			return corrupt(nil, "snapshot marker at %d (term %d) says the log was kept=%v, the log says %v", m.Index, m.Term, keep, want)
		}
		st.snapshot(&m, keep)
	default:
		return corrupt(nil, "unknown record type %d", typ)
	}
	return nil
}

func decodeMarker(p []byte) (raft.SnapshotMeta, bool, error) {
	if len(p) < 1 {
		return raft.SnapshotMeta{}, false, fmt.Errorf("empty payload")
	}
	if p[0]&^markerFlagKeepLog != 0 {
		return raft.SnapshotMeta{}, false, fmt.Errorf("unknown flags %#x", p[0])
	}
	m, n, err := wire.DecodeSnapshotMeta(p[1:])
	if err != nil {
		return raft.SnapshotMeta{}, false, err
	}
	if n != len(p)-1 {
		return raft.SnapshotMeta{}, false, fmt.Errorf("%d trailing bytes", len(p)-1-n)
	}
	return m, p[0]&markerFlagKeepLog != 0, nil
}
