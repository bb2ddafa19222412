// Package wal is caucus's write-ahead log for Raft: it makes HardState, log entries and snapshot
// markers durable, and replays them after a restart.
//
// # Layout
//
// A WAL is a directory of segment files named <seq>-<firstIndex>.wal, both 16 lowercase hex
// digits: seq numbers segments 1, 2, 3, ... without gaps; firstIndex is one past the last entry
// index when the segment was started. Every live entry of an earlier segment is below it (an
// entry written later at a lower index overwrites the ones it replaces only once durable, and the
// earlier segment was synced before this one existed), which is what ReleaseTo relies on.
// Each segment is preallocated to Options.SegmentBytes so that appends do not change the file
// size and fdatasync needs no metadata journal commit.
//
// A segment is a sequence of frames, each starting on an 8-byte boundary:
//
//	[length u32 LE][crc32c u32 LE][type u8][payload][zero padding to 8 bytes]
//
// length counts type+payload; the CRC (Castagnoli) covers type+payload. The end of the written
// part of a segment is an all-zero header (the preallocated space). Record types:
//
//   - segment header, always the first record: magic, format version, seq, firstIndex and the
//     term of entry firstIndex-1; checked against the file name on replay;
//   - entry: wire.AppendEntry;
//   - hard state: wire.AppendHardState;
//   - snapshot marker: a flags byte (whether the log after the snapshot was kept, see below)
//     and wire.AppendSnapshotMeta. The snapshot data itself lives in internal/snap;
//   - sync mark (format version 2), the first record of every write: the offset up to which
//     the segment had been fdatasynced when the write was made. See recovery below.
//
// Each new segment starts, after its header, with copies of the current snapshot marker and
// HardState, so a segment never depends on earlier ones for state and ReleaseTo can delete whole
// segments.
//
// # Why the CRCs are not chained
//
// etcd chains each record's CRC to the previous one's so that a lost or reordered record breaks
// the chain. We check each record on its own instead, so that releasing old segments needs no
// carried-over seed and a torn tail is recognised locally. What chaining would have caught is
// caught otherwise: segment headers bind seq and firstIndex to the file name; replay checks that
// entry indexes are contiguous and that each segment's firstIndex/prevTerm agree with the log so
// far; segment files are never reused (a new segment is created zero-filled), and a repaired
// tail is truncated and re-preallocated so that stale frames beyond it can never be read as new.
//
// # Durability and recovery
//
// Save appends its records with one write and, if asked, one fdatasync: the caller passes a whole
// Raft Ready so that its HardState and entries share one sync (group commit). A Save that crosses
// a segment boundary also writes and syncs once per segment it fills. Entries are
// written before the HardState, so any surviving prefix of a Save holds every entry the
// HardState's Commit refers to. Raft also requires the HardState's term to be at least the term
// of every entry and snapshot in the log (raft.New refuses anything else), so a Save whose
// entries carry a term above the last HardState's first writes its HardState's term and vote
// with the previous commit index, and SaveSnapshot raises the HardState's term (with no vote) to
// a marker's higher term in the same write: any surviving prefix is then a state Raft accepts.
// A segment is fdatasynced before the next one gets its name, and
// a new segment is fully written and synced under a temporary name before the rename, so every
// segment but the last is complete.
//
// Open replays all segments. Only the last segment may end in a torn write: a record cut short,
// with a bad CRC, a hole of zeros, or garbage after the end. The page cache writes dirty pages
// back in any order, so a power loss during an unsynced write can keep a later page of it and
// lose an earlier one: valid records may follow the hole. They were never synced either, unless
// a later write's sync mark says the segment had been synced past the hole. So the tail from
// the first damaged record on is truncated (logged at Warn with the file, offset and how many
// records after the hole were dropped) when no sync mark after it proves it synced, and Open
// fails with ErrCorrupt naming the file and offset when one does. Damage in an earlier segment
// (each was synced before the next was named), a gap in the indexes, or a bad record followed
// by a valid one in a segment of format version 1 (which has no sync marks) also fail Open.
// Damage inside the last synced write, with no later write to say it was synced, cannot be told
// from a torn write and is truncated like one, as damage to a final record always was; Raft
// then fetches the lost entries from the leader. Nothing is ever skipped silently.
//
// Replay follows Raft's rules: an entry at an index at or below the last one overwrites it and
// drops everything after (paper 5.3); a snapshot marker drops the entries it covers, and keeps
// the ones after it only if the log held the snapshot's last entry with the same term (Figure
// 13). That decision is recorded in the marker because after ReleaseTo the entry it depended on
// may be gone.
//
// # Errors
//
// A write or sync error is fatal for the WAL: after a failed fdatasync the kernel may have
// dropped the unwritten pages, so nothing since the last successful sync can be trusted (see
// internal/vfs). Every later call returns the same error; the caller must stop and reopen. The
// exception is running out of space while preparing a new segment, which happens before any
// byte of the call is written: that error wraps ErrNoSpace and syscall.ENOSPC, and the WAL stays
// usable.
//
// A WAL is safe for concurrent use, but Save calls are serialised.
package wal

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/caucus/caucus/internal/vfs"
	"github.com/caucus/caucus/internal/wire"
	"github.com/caucus/caucus/raft"
)

// Limits and defaults.
const (
	// DefaultSegmentBytes is the default size of a segment file (as etcd).
	DefaultSegmentBytes = 64 << 20
	// MinSegmentBytes is the smallest Options.SegmentBytes accepted; small segments are for
	// tests that exercise rollover.
	MinSegmentBytes = 4 << 10
	// DefaultMaxRecordBytes is the default largest record (type byte plus encoded entry,
	// HardState or marker) Save accepts. It must be at most SegmentBytes/4, so that a segment's
	// header records and one record of any size always fit in a fresh segment; with small
	// segments the default shrinks to SegmentBytes/4.
	DefaultMaxRecordBytes = 16 << 20
)

var (
	// ErrCorrupt is wrapped by every error reporting damaged or inconsistent log contents.
	ErrCorrupt = errors.New("wal: corrupt")
	// ErrNoSpace is wrapped, together with syscall.ENOSPC, when the disk is full.
	ErrNoSpace = errors.New("wal: no space left on device")
	// ErrRecordTooLarge is wrapped when a record would exceed Options.MaxRecordBytes.
	ErrRecordTooLarge = errors.New("wal: record too large")
	// ErrClosed is returned by calls on a closed WAL.
	ErrClosed = errors.New("wal: closed")
)

// CorruptError reports damaged log contents. It wraps ErrCorrupt.
type CorruptError struct {
	File   string
	Offset int64
	Reason string
	Err    error // underlying cause, if any
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("wal: corrupt record in %s at offset %d: %s", e.File, e.Offset, e.Reason)
}

func (e *CorruptError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrCorrupt, e.Err}
	}
	return []error{ErrCorrupt}
}

// Options configures a WAL. The zero value gives the defaults.
type Options struct {
	// SegmentBytes is the preallocated size of each segment. 0 means DefaultSegmentBytes.
	SegmentBytes int64
	// MaxRecordBytes bounds one record written; larger entries are refused with
	// ErrRecordTooLarge. 0 means min(DefaultMaxRecordBytes, SegmentBytes/4). Reading accepts
	// records up to MaxRecordBytesLimit regardless, so lowering it never makes a log unreadable.
	MaxRecordBytes int
	// Logger receives recovery events (torn tails truncated). Nil means slog.Default().
	Logger *slog.Logger
}

func (o *Options) fill() error {
	if o.SegmentBytes == 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	if o.SegmentBytes < MinSegmentBytes {
		return fmt.Errorf("wal: options: SegmentBytes %d is below MinSegmentBytes %d", o.SegmentBytes, MinSegmentBytes)
	}
	if o.SegmentBytes > 1<<40 {
		return fmt.Errorf("wal: options: SegmentBytes %d is absurdly large", o.SegmentBytes)
	}
	if o.MaxRecordBytes == 0 {
		o.MaxRecordBytes = int(min(DefaultMaxRecordBytes, o.SegmentBytes/4))
	}
	if o.MaxRecordBytes < 64 || int64(o.MaxRecordBytes) > o.SegmentBytes/4 || o.MaxRecordBytes > MaxRecordBytesLimit {
		return fmt.Errorf("wal: options: MaxRecordBytes %d must be in [64, min(SegmentBytes/4=%d, MaxRecordBytesLimit=%d)]",
			o.MaxRecordBytes, o.SegmentBytes/4, MaxRecordBytesLimit)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

type segment struct {
	seq, firstIndex uint64
	name            string // path
}

func segmentName(seq, firstIndex uint64) string {
	return fmt.Sprintf("%016x-%016x.wal", seq, firstIndex)
}

// parseSegmentName returns ok=false for names that are not segments.
func parseSegmentName(name string) (seq, firstIndex uint64, ok bool) {
	if len(name) != 16+1+16+4 || name[16] != '-' || !strings.HasSuffix(name, ".wal") {
		return 0, 0, false
	}
	seq, err1 := strconv.ParseUint(name[:16], 16, 64)
	first, err2 := strconv.ParseUint(name[17:33], 16, 64)
	if err1 != nil || err2 != nil || name != segmentName(seq, first) {
		return 0, 0, false
	}
	return seq, first, true
}

const tmpSuffix = ".tmp"

// WAL is an open write-ahead log. See the package documentation.
type WAL struct {
	mu   sync.Mutex
	fs   vfs.FS
	dir  string
	opts Options
	log  *slog.Logger

	segs []segment // live segments, oldest first; the last is open for appending
	f    vfs.File  // the last segment
	off  int64     // append offset in f
	// synced is the offset in f up to which it is known durable (fdatasynced, or read back at
	// Open and then synced). Every write starts with a recSyncMark saying it.
	synced int64
	state  logState // the log as written; no entry data

	spares   []spare // preallocated, synced files ready to become the next segments
	spareSeq uint64

	replay *State // what Open read, until ReadAll hands it out
	buf    []byte
	frames []frameSpan
	err    error // sticky: set by any failed write or sync
	closed bool

	// bgFile is the segment a SyncWritten is syncing outside the lock; a roll or Close leaves
	// closing it to SyncWritten (bgClose), so that the fdatasync never races a close.
	bgFile  vfs.File
	bgClose bool
}

type spare struct {
	f    vfs.File
	name string
}

// Open opens the WAL in dir, creating it if needed, and replays it: ReadAll returns what it
// found. A torn tail of the last segment is truncated; any other damage fails with an error
// wrapping ErrCorrupt.
func Open(fsys vfs.FS, dir string, opts Options) (*WAL, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	w := &WAL{fs: fsys, dir: dir, opts: opts, log: opts.Logger}
	if err := vfs.MkdirAllDurable(fsys, dir, 0o755); err != nil {
		return nil, fmt.Errorf("wal: create directory %s: %w", dir, err)
	}
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("wal: list %s: %w", dir, err)
	}
	removedTmp := false
	for _, name := range names {
		if strings.HasSuffix(name, tmpSuffix) {
			// A segment being prepared when the process died; it never got its final name.
			if err := fsys.Remove(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("wal: remove leftover %s: %w", name, err)
			}
			removedTmp = true
			continue
		}
		if seq, first, ok := parseSegmentName(name); ok {
			w.segs = append(w.segs, segment{seq: seq, firstIndex: first, name: filepath.Join(dir, name)})
		}
	}
	if removedTmp {
		if err := fsys.SyncDir(dir); err != nil {
			return nil, fmt.Errorf("wal: sync %s: %w", dir, err)
		}
	}
	slices.SortFunc(w.segs, func(a, b segment) int { return compareU64(a.seq, b.seq) })
	for i := 1; i < len(w.segs); i++ {
		if w.segs[i].seq != w.segs[i-1].seq+1 {
			return nil, &CorruptError{File: w.segs[i].name, Offset: 0,
				Reason: fmt.Sprintf("segment sequence gap: %d follows %d", w.segs[i].seq, w.segs[i-1].seq)}
		}
	}

	if len(w.segs) == 0 {
		// A new log: its first segment goes through the same prepare-and-rename path as every
		// later one, so a crash here leaves either nothing or a complete segment.
		if err := w.prepareSpares(1); err != nil {
			w.closeFiles()
			return nil, err
		}
		if err := w.roll(1, 0, raft.HardState{}); err != nil {
			w.closeFiles()
			return nil, err
		}
		w.replay = &State{}
		return w, nil
	}

	res, tail, err := replaySegments(fsys, w.segs, opts.Logger)
	if err != nil {
		return nil, err
	}
	last := w.segs[len(w.segs)-1]
	f, err := fsys.OpenFile(last.name, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("wal: open %s: %w", last.name, err)
	}
	w.f = f
	if tail.repair {
		opts.Logger.Warn("wal: truncating torn tail of last segment",
			"file", last.name, "offset", tail.off, "reason", tail.why)
		if err := f.Truncate(tail.off); err != nil {
			w.closeFiles()
			return nil, fmt.Errorf("wal: truncate torn tail of %s at offset %d: %w", last.name, tail.off, err)
		}
	}
	// Re-preallocating after a truncation gives back zeros past the tail, so no stale frame can
	// ever follow a record appended there. It is a no-op on an intact segment.
	if err := f.Preallocate(opts.SegmentBytes); err != nil {
		if !errors.Is(err, syscall.ENOSPC) {
			w.closeFiles()
			return nil, fmt.Errorf("wal: preallocate %s: %w", last.name, err)
		}
		// Reading must still work on a full disk; appends past the file's end will report
		// ENOSPC themselves.
		opts.Logger.Warn("wal: cannot preallocate last segment, disk full", "file", last.name, "err", err)
	}
	// Synced even when intact: after a kill -9 without a power loss the page cache may still
	// hold writes that never reached the disk, and the sync marks of the writes that follow
	// must be able to say that everything before them is durable.
	if err := f.Sync(); err != nil {
		w.closeFiles()
		return nil, fmt.Errorf("wal: sync %s after replay: %w", last.name, err)
	}
	w.off, w.synced = tail.off, tail.off
	w.state = res.state
	w.state.keep, w.state.ents = false, nil
	w.replay = &State{HardState: res.state.hs, Snapshot: res.state.snap, Entries: res.state.ents}
	return w, nil
}

// State is what a WAL holds: the last HardState, the last snapshot marker (nil if none) and
// the log entries after the marker, in index order.
type State struct {
	HardState raft.HardState
	Snapshot  *raft.SnapshotMeta
	Entries   []raft.Entry
}

// ReadAll returns the State that Open replayed. It hands the entries over and can be called
// once, before or after writes (which it does not reflect).
func (w *WAL) ReadAll() (State, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return State{}, ErrClosed
	}
	if w.replay == nil {
		return State{}, errors.New("wal: ReadAll called twice")
	}
	r := w.replay
	w.replay = nil
	return *r, nil
}

// LastIndex returns the index of the last entry written (the snapshot index if none follow).
func (w *WAL) LastIndex() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state.last()
}

// frameSpan is one encoded frame in w.buf, with what a segment created just before it would
// need in its header.
type frameSpan struct {
	start, end int
	// nextIndex and prevTerm: the index of the next entry to be written at this point and the
	// term of the entry before it.
	nextIndex, prevTerm uint64
	// hs is the HardState in force at this point, which a new segment copies.
	hs raft.HardState
}

// Save appends ents (which must be contiguous, starting at most one past the last index and
// after the snapshot) and hs (unless empty), in that order, then fdatasyncs once if sync.
// Entries at or below the last index overwrite the log from there (Raft truncation).
func (w *WAL) Save(hs raft.HardState, ents []raft.Entry, sync bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if len(ents) == 0 && hs.IsEmpty() {
		if sync {
			return w.syncLocked()
		}
		return nil
	}
	if len(ents) > 0 {
		if err := w.state.checkAppend(ents[0].Index); err != nil {
			return fmt.Errorf("wal: save: %w", err)
		}
		for i := 1; i < len(ents); i++ {
			if ents[i].Index != ents[i-1].Index+1 {
				return fmt.Errorf("wal: save: entry %d has index %d after %d: entries must be contiguous", i, ents[i].Index, ents[i-1].Index)
			}
		}
	}

	w.startWrite()
	cur := w.state.hs // the HardState in force as the frames are written
	if len(ents) > 0 && !hs.IsEmpty() && ents[len(ents)-1].Term > cur.Term {
		// Without this, a crash that keeps some of the entries but not the HardState after
		// them would leave entries of a term the HardState has not reached. The commit index
		// stays the previous one, clamped below the first entry (which may overwrite), because
		// the entries it would cover may not survive.
		pre := raft.HardState{Term: hs.Term, Vote: hs.Vote, Commit: min(cur.Commit, ents[0].Index-1)}
		var start int
		w.buf, start = beginFrame(w.buf, recHardState)
		w.buf = wire.AppendHardState(w.buf, &pre)
		w.buf = finishFrame(w.buf, start)
		w.frames = append(w.frames, frameSpan{start: start, end: len(w.buf), nextIndex: w.state.last() + 1,
			prevTerm: w.lastTerm(), hs: cur})
		cur = pre
	}
	for i := range ents {
		e := &ents[i]
		if n := 1 + wire.EntrySize(e); n > w.opts.MaxRecordBytes {
			return fmt.Errorf("wal: save: entry %d (index %d) is %d bytes: %w (MaxRecordBytes %d)", i, e.Index, n, ErrRecordTooLarge, w.opts.MaxRecordBytes)
		}
		// If a segment starts before this entry, its firstIndex must bound the live entries of
		// the earlier segments, which are synced by then. Before the first entry of the batch
		// that is the current last index + 1, not e.Index: if e overwrites, the entries it
		// replaces stay live on disk until e itself is durable.
		next, prevTerm := w.state.last()+1, w.lastTerm()
		if i > 0 {
			next, prevTerm = e.Index, ents[i-1].Term
		}
		var start int
		w.buf, start = beginFrame(w.buf, recEntry)
		w.buf = wire.AppendEntry(w.buf, e)
		w.buf = finishFrame(w.buf, start)
		w.frames = append(w.frames, frameSpan{start: start, end: len(w.buf), nextIndex: next, prevTerm: prevTerm, hs: cur})
	}
	if !hs.IsEmpty() {
		next, prevTerm := w.state.last()+1, w.lastTerm()
		if len(ents) > 0 {
			next, prevTerm = ents[len(ents)-1].Index+1, ents[len(ents)-1].Term
		}
		var start int
		w.buf, start = beginFrame(w.buf, recHardState)
		w.buf = wire.AppendHardState(w.buf, &hs)
		w.buf = finishFrame(w.buf, start)
		w.frames = append(w.frames, frameSpan{start: start, end: len(w.buf), nextIndex: next, prevTerm: prevTerm, hs: cur})
	}
	if err := w.writeFrames(sync); err != nil {
		return err
	}
	for i := range ents {
		w.state.append(&ents[i])
	}
	if !hs.IsEmpty() {
		w.state.hs = hs
	}
	return nil
}

// SyncWritten makes everything written before the call durable, as Save with sync and nothing
// to add would, but fdatasyncs without holding the WAL's lock: Saves from another goroutine go
// on meanwhile (whether the sync covers them is unspecified). A leader syncs its own appends
// this way under raft.Config.DeferLeaderSync, beside the loop that keeps writing. Only one
// SyncWritten may run at a time. A failed sync is fatal, as in Save.
func (w *WAL) SyncWritten() error {
	w.mu.Lock()
	if err := w.usable(); err != nil {
		w.mu.Unlock()
		return err
	}
	if w.bgFile != nil {
		w.mu.Unlock()
		return errors.New("wal: SyncWritten called while another is running")
	}
	if w.synced == w.off {
		w.mu.Unlock()
		return nil
	}
	f, off := w.f, w.off
	w.bgFile = f
	w.mu.Unlock()

	err := f.Sync()

	w.mu.Lock()
	defer w.mu.Unlock()
	w.bgFile = nil
	if w.bgClose {
		// A roll synced the rest of this segment and moved on, or Close ran.
		w.bgClose = false
		if cerr := f.Close(); cerr != nil && err == nil && !w.closed {
			err = cerr
		}
	}
	if err != nil {
		return w.fail(fmt.Errorf("wal: sync %s: %w", f.Name(), err))
	}
	if w.f == f {
		w.synced = max(w.synced, off)
	}
	return nil
}

// closeSegment closes f, or leaves that to a SyncWritten that is syncing it.
func (w *WAL) closeSegment(f vfs.File) error {
	if f == w.bgFile {
		w.bgClose = true
		return nil
	}
	return f.Close()
}

// SaveSnapshot appends a snapshot marker for meta and fdatasyncs. Call it once the snapshot
// itself is durable (internal/snap), and before Save of the entries that follow it.
func (w *WAL) SaveSnapshot(meta raft.SnapshotMeta) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if err := w.state.checkSnapshot(&meta); err != nil {
		return fmt.Errorf("wal: save snapshot: %w", err)
	}
	keep, _ := w.state.keepsLog(&meta) // always known to the writer
	if n := 2 + wire.SnapshotMetaSize(&meta); n > w.opts.MaxRecordBytes {
		return fmt.Errorf("wal: save snapshot at index %d: marker is %d bytes: %w (MaxRecordBytes %d)", meta.Index, n, ErrRecordTooLarge, w.opts.MaxRecordBytes)
	}
	w.startWrite()
	hs := w.state.hs
	if meta.Term > hs.Term {
		// The caller's HardState for this term comes in a later Save, which a crash may
		// prevent: raise the term here so that the marker never survives alone above it. No
		// vote is recorded in the new term, which is what Raft itself does on learning it.
		hs = raft.HardState{Term: meta.Term, Commit: hs.Commit}
		var start int
		w.buf, start = beginFrame(w.buf, recHardState)
		w.buf = wire.AppendHardState(w.buf, &hs)
		w.buf = finishFrame(w.buf, start)
		w.frames = append(w.frames, frameSpan{start: start, end: len(w.buf), nextIndex: w.state.last() + 1,
			prevTerm: w.lastTerm(), hs: w.state.hs})
	}
	start := len(w.buf)
	w.buf = appendMarkerFrame(w.buf, &meta, keep)
	w.frames = append(w.frames, frameSpan{start: start, end: len(w.buf), nextIndex: w.state.last() + 1, prevTerm: w.lastTerm(), hs: hs})
	if err := w.writeFrames(true); err != nil {
		return err
	}
	w.state.hs = hs
	w.state.snapshot(&meta, keep)
	return nil
}

const markerFlagKeepLog = 1

func appendMarkerFrame(dst []byte, meta *raft.SnapshotMeta, keep bool) []byte {
	dst, start := beginFrame(dst, recSnapshot)
	var flags byte
	if keep {
		flags |= markerFlagKeepLog
	}
	dst = append(dst, flags)
	dst = wire.AppendSnapshotMeta(dst, meta)
	return finishFrame(dst, start)
}

func (w *WAL) lastTerm() uint64 {
	t, _ := w.state.term(w.state.last()) // the writer always knows it: base == floor
	return t
}

func (w *WAL) usable() error {
	if w.closed {
		return ErrClosed
	}
	return w.err
}

// fail records a fatal error: see the package documentation.
func (w *WAL) fail(err error) error {
	w.err = err
	return err
}

// startWrite begins a write's buffer with its sync mark, whose value writeFrames fills in for
// the segment the mark lands in.
func (w *WAL) startWrite() {
	w.buf, w.frames = appendSyncMark(w.buf[:0], 0), w.frames[:0]
	w.frames = append(w.frames, frameSpan{start: 0, end: len(w.buf), nextIndex: w.state.last() + 1,
		prevTerm: w.lastTerm(), hs: w.state.hs})
}

// writeFrames writes w.frames (encoded in w.buf, the first of them the sync mark) to the log,
// rolling to new segments where a frame does not fit, and syncs if asked. New segments are
// prepared before anything is written, so running out of space leaves the log untouched.
func (w *WAL) writeFrames(sync bool) error {
	// Plan the rolls.
	rolls, off := 0, w.off
	for _, fr := range w.frames {
		n := int64(fr.end - fr.start)
		if off+n > w.opts.SegmentBytes {
			rolls++
			off = w.maxSegmentHeaderBytes(&fr.hs)
		}
		off += n
	}
	if err := w.prepareSpares(rolls); err != nil {
		return err
	}
	// Write: one WriteAt per segment touched.
	chunkStart := 0
	for _, fr := range w.frames {
		n := int64(fr.end - fr.start)
		if w.off+int64(fr.start-chunkStart)+n <= w.opts.SegmentBytes {
			continue
		}
		w.markChunk(chunkStart)
		if err := w.writeChunk(w.buf[chunkStart:fr.start]); err != nil {
			return err
		}
		chunkStart = fr.start
		if err := w.roll(fr.nextIndex, fr.prevTerm, fr.hs); err != nil {
			return err
		}
	}
	w.markChunk(chunkStart)
	if err := w.writeChunk(w.buf[chunkStart:]); err != nil {
		return err
	}
	if sync {
		return w.syncLocked()
	}
	return nil
}

// markChunk fills in the sync mark if the chunk about to be written starts with it: the synced
// offset of the segment it goes to (after a roll that is the new segment's, not the old one's).
func (w *WAL) markChunk(chunkStart int) {
	if chunkStart == 0 {
		patchSyncMark(w.buf, w.synced)
	}
}

func (w *WAL) writeChunk(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := w.f.WriteAt(b, w.off); err != nil {
		err = fmt.Errorf("wal: write %d bytes to %s at offset %d: %w", len(b), w.f.Name(), w.off, err)
		if errors.Is(err, syscall.ENOSPC) {
			err = fmt.Errorf("%w: %w", ErrNoSpace, err)
		}
		return w.fail(err)
	}
	w.off += int64(len(b))
	return nil
}

func (w *WAL) syncLocked() error {
	if err := w.f.Sync(); err != nil {
		return w.fail(fmt.Errorf("wal: sync %s: %w", w.f.Name(), err))
	}
	w.synced = w.off
	return nil
}

// maxSegmentHeaderBytes bounds what roll writes before the first record of a new segment.
func (w *WAL) maxSegmentHeaderBytes(hs *raft.HardState) int64 {
	n := frameSize(1 + segmentHeaderPayloadBytes)
	if w.state.snap != nil {
		n += frameSize(2 + wire.SnapshotMetaSize(w.state.snap))
	}
	if !hs.IsEmpty() {
		n += frameSize(1 + wire.HardStateSize(hs))
	}
	return int64(n)
}

// prepareSpares makes sure n spare segment files exist: created under a temporary name,
// preallocated and synced. This is the only step of a write that needs new disk space, and it
// runs before the write starts.
func (w *WAL) prepareSpares(n int) error {
	for len(w.spares) < n {
		w.spareSeq++
		name := filepath.Join(w.dir, fmt.Sprintf("spare-%d%s", w.spareSeq, tmpSuffix))
		f, err := w.fs.Create(name)
		if err != nil {
			return w.noSpaceOrFatal(fmt.Errorf("wal: create %s: %w", name, err))
		}
		if err := f.Preallocate(w.opts.SegmentBytes); err != nil {
			_ = f.Close()
			_ = w.fs.Remove(name)
			return w.noSpaceOrFatal(fmt.Errorf("wal: preallocate %s to %d bytes: %w", name, w.opts.SegmentBytes, err))
		}
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return w.fail(fmt.Errorf("wal: sync %s: %w", name, err))
		}
		w.spares = append(w.spares, spare{f: f, name: name})
	}
	return nil
}

// noSpaceOrFatal returns ENOSPC errors as recoverable (nothing was written) and makes any other
// error fatal.
func (w *WAL) noSpaceOrFatal(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return w.fail(err)
}

// roll turns the first spare into the next segment, its header records carrying the current
// snapshot marker and hs (the HardState in force at that point of the write), and makes it the
// one appended to. The current segment is synced first: its name is already durable, and it must
// be complete before a later segment exists, because replay only forgives a torn tail in the
// last segment.
func (w *WAL) roll(firstIndex, prevTerm uint64, hs raft.HardState) error {
	if w.f != nil {
		if err := w.syncLocked(); err != nil {
			return err
		}
	}
	var seq uint64 = 1
	if len(w.segs) > 0 {
		seq = w.segs[len(w.segs)-1].seq + 1
	}
	sp := w.spares[0]
	hdr := segmentHeader{seq: seq, firstIndex: firstIndex, prevTerm: prevTerm}
	b, start := beginFrame(nil, recSegmentHeader)
	b = hdr.append(b)
	b = finishFrame(b, start)
	if w.state.snap != nil {
		b = appendMarkerFrame(b, w.state.snap, true) // a copy never changes the log
	}
	if !hs.IsEmpty() {
		b, start = beginFrame(b, recHardState)
		b = wire.AppendHardState(b, &hs)
		b = finishFrame(b, start)
	}
	if _, err := sp.f.WriteAt(b, 0); err != nil {
		return w.fail(fmt.Errorf("wal: write segment header to %s: %w", sp.name, err))
	}
	if err := sp.f.Sync(); err != nil {
		return w.fail(fmt.Errorf("wal: sync %s: %w", sp.name, err))
	}
	name := filepath.Join(w.dir, segmentName(seq, firstIndex))
	if err := w.fs.Rename(sp.name, name); err != nil {
		return w.fail(fmt.Errorf("wal: rename %s to %s: %w", sp.name, name, err))
	}
	if err := w.fs.SyncDir(w.dir); err != nil {
		return w.fail(fmt.Errorf("wal: sync directory %s: %w", w.dir, err))
	}
	if w.f != nil {
		if err := w.closeSegment(w.f); err != nil {
			return w.fail(fmt.Errorf("wal: close %s: %w", w.f.Name(), err))
		}
	}
	w.spares = w.spares[1:]
	w.f, w.off, w.synced = sp.f, int64(len(b)), int64(len(b)) // the header was synced above
	w.segs = append(w.segs, segment{seq: seq, firstIndex: firstIndex, name: name})
	return nil
}

// ReleaseTo deletes the oldest segments whose live entries are all at or below index, which
// must not exceed the last snapshot marker's index (the snapshot covers what is deleted). The
// last segment is never deleted. Deletion stops at the first segment that must stay, so the
// remaining segments are always a contiguous run.
func (w *WAL) ReleaseTo(index uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if w.state.snap == nil || index > w.state.snap.Index {
		var snapIndex uint64
		if w.state.snap != nil {
			snapIndex = w.state.snap.Index
		}
		return fmt.Errorf("wal: release to %d: beyond the last snapshot marker at %d", index, snapIndex)
	}
	// Live entries of segment i are all below segs[i+1].firstIndex (see the package
	// documentation), so segment i may go once that is at most index+1.
	n := 0
	for n+1 < len(w.segs) && w.segs[n+1].firstIndex <= index+1 {
		n++
	}
	if n == 0 {
		return nil
	}
	for _, s := range w.segs[:n] {
		if err := w.fs.Remove(s.name); err != nil {
			return w.fail(fmt.Errorf("wal: release %s: %w", s.name, err))
		}
	}
	if err := w.fs.SyncDir(w.dir); err != nil {
		return w.fail(fmt.Errorf("wal: sync directory %s: %w", w.dir, err))
	}
	w.segs = slices.Delete(w.segs, 0, n)
	return nil
}

// Segments returns the names of the live segment files, oldest first (for tests and tools).
func (w *WAL) Segments() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	names := make([]string, len(w.segs))
	for i, s := range w.segs {
		names[i] = filepath.Base(s.name)
	}
	return names
}

// Close closes the WAL's files. It does not sync: call Save with sync first if needed.
func (w *WAL) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	w.closed = true
	return w.closeFiles()
}

func (w *WAL) closeFiles() error {
	var errs []error
	if w.f != nil {
		if err := w.closeSegment(w.f); err != nil {
			errs = append(errs, fmt.Errorf("wal: close %s: %w", w.f.Name(), err))
		}
		w.f = nil
	}
	for _, sp := range w.spares {
		_ = sp.f.Close()
		_ = w.fs.Remove(sp.name) // best effort: Open removes leftovers anyway
	}
	w.spares = nil
	return errors.Join(errs...)
}

func compareU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
