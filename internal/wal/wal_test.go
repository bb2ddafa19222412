package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/caucus/caucus/internal/vfs"
	"github.com/caucus/caucus/internal/wire"
	"github.com/caucus/caucus/raft"
)

const testDir = "/data/wal"

// smallOpts gives 4 KiB segments so that tests roll often.
func smallOpts(logs io.Writer) Options {
	if logs == nil {
		logs = io.Discard
	}
	return Options{SegmentBytes: MinSegmentBytes, MaxRecordBytes: 1024, Logger: slog.New(slog.NewTextHandler(logs, nil))}
}

func mustOpen(t testing.TB, fsys vfs.FS, opts Options) *WAL {
	t.Helper()
	w, err := Open(fsys, testDir, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return w
}

func ents(term uint64, from, to uint64, size int) []raft.Entry {
	var es []raft.Entry
	for i := from; i <= to; i++ {
		d := bytes.Repeat([]byte{byte(i)}, size)
		es = append(es, raft.Entry{Term: term, Index: i, Data: d})
	}
	return es
}

type persisted struct {
	hs   raft.HardState
	snap *raft.SnapshotMeta
	ents []raft.Entry
}

func readAll(t testing.TB, w *WAL) persisted {
	t.Helper()
	st, err := w.ReadAll()
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	return persisted{st.HardState, st.Snapshot, st.Entries}
}

func reopen(t testing.TB, fsys vfs.FS, w *WAL, opts Options) (*WAL, persisted) {
	t.Helper()
	if w != nil {
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	w = mustOpen(t, fsys, opts)
	return w, readAll(t, w)
}

func equalEntries(a, b []raft.Entry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Index != b[i].Index || a[i].Term != b[i].Term || a[i].Type != b[i].Type || !bytes.Equal(a[i].Data, b[i].Data) {
			return false
		}
	}
	return true
}

func describe(es []raft.Entry) string {
	if len(es) == 0 {
		return "[]"
	}
	return fmt.Sprintf("[%d..%d] (%d entries, last term %d)", es[0].Index, es[len(es)-1].Index, len(es), es[len(es)-1].Term)
}

func TestRoundTripAndRestart(t *testing.T) {
	fsys := vfs.NewSim(1)
	w := mustOpen(t, fsys, Options{})
	if got := readAll(t, w); !got.hs.IsEmpty() || got.snap != nil || len(got.ents) != 0 {
		t.Fatalf("new WAL not empty: %+v", got)
	}
	want := ents(1, 1, 50, 100)
	want[3].Type = raft.EntryConfChange
	want[4].Data = nil
	hs := raft.HardState{Term: 1, Vote: 3, Commit: 40}
	if err := w.Save(hs, want[:20], true); err != nil {
		t.Fatal(err)
	}
	if err := w.Save(raft.HardState{}, want[20:], true); err != nil {
		t.Fatal(err)
	}
	if w.LastIndex() != 50 {
		t.Fatalf("LastIndex %d", w.LastIndex())
	}
	w, got := reopen(t, fsys, w, Options{})
	if got.hs != hs || got.snap != nil || !equalEntries(got.ents, want) {
		t.Fatalf("after restart: hs %+v snap %v ents %s", got.hs, got.snap, describe(got.ents))
	}
	if _, err := w.ReadAll(); err == nil {
		t.Fatal("second ReadAll succeeded")
	}
	// Appending after a restart continues the same log.
	if err := w.Save(raft.HardState{Term: 2, Vote: 1, Commit: 50}, ents(2, 51, 51, 1), true); err != nil {
		t.Fatal(err)
	}
	_, got = reopen(t, fsys, w, Options{})
	if len(got.ents) != 51 || got.ents[50].Term != 2 || got.hs.Term != 2 {
		t.Fatalf("after second restart: %s hs %+v", describe(got.ents), got.hs)
	}
}

func TestTruncationOnOverwrite(t *testing.T) {
	fsys := vfs.NewSim(1)
	w := mustOpen(t, fsys, smallOpts(nil))
	readAll(t, w)
	if err := w.Save(raft.HardState{Term: 1}, ents(1, 1, 30, 200), false); err != nil {
		t.Fatal(err)
	}
	// A new leader overwrites 6.. with a shorter log: 7..30 must disappear.
	if err := w.Save(raft.HardState{Term: 2}, ents(2, 6, 6, 10), true); err != nil {
		t.Fatal(err)
	}
	if w.LastIndex() != 6 {
		t.Fatalf("LastIndex %d, want 6", w.LastIndex())
	}
	_, got := reopen(t, fsys, w, smallOpts(nil))
	want := append(ents(1, 1, 5, 200), ents(2, 6, 6, 10)...)
	if !equalEntries(got.ents, want) {
		t.Fatalf("got %s want %s", describe(got.ents), describe(want))
	}
}

func TestSaveRejectsInvalidAppends(t *testing.T) {
	fsys := vfs.NewSim(1)
	w := mustOpen(t, fsys, smallOpts(nil))
	readAll(t, w)
	if err := w.Save(raft.HardState{}, ents(1, 2, 3, 1), true); err == nil || !strings.Contains(err.Error(), "gap") {
		t.Fatalf("first entry at 2 on an empty log: %v", err)
	}
	if err := w.Save(raft.HardState{}, []raft.Entry{{Index: 1, Term: 1}, {Index: 3, Term: 1}}, true); err == nil {
		t.Fatal("non-contiguous batch accepted")
	}
	if err := w.Save(raft.HardState{}, ents(1, 1, 1, 2000), true); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("oversized entry: %v", err)
	}
	if err := w.Save(raft.HardState{}, ents(1, 1, 10, 1), true); err != nil {
		t.Fatal(err)
	}
	if err := w.SaveSnapshot(raft.SnapshotMeta{Index: 5, Term: 1}); err != nil {
		t.Fatal(err)
	}
	if err := w.Save(raft.HardState{}, ents(1, 5, 5, 1), true); err == nil || !strings.Contains(err.Error(), "snapshot") {
		t.Fatalf("entry at snapshot index accepted: %v", err)
	}
	if err := w.SaveSnapshot(raft.SnapshotMeta{Index: 4, Term: 1}); err == nil {
		t.Fatal("older snapshot marker accepted")
	}
	// Nothing invalid reached the disk.
	_, got := reopen(t, fsys, w, smallOpts(nil))
	if got.snap == nil || got.snap.Index != 5 || !equalEntries(got.ents, ents(1, 6, 10, 1)) {
		t.Fatalf("got snap %+v ents %s", got.snap, describe(got.ents))
	}
}

func TestSnapshotMarkerRules(t *testing.T) {
	conf := raft.ConfState{Voters: []raft.NodeID{1, 2, 3}, Learners: []raft.NodeID{4}}
	cases := []struct {
		name string
		meta raft.SnapshotMeta
		want []raft.Entry
	}{
		{"matching term keeps the tail", raft.SnapshotMeta{Index: 10, Term: 1, ConfState: conf}, ents(1, 11, 20, 8)},
		{"conflicting term discards the log", raft.SnapshotMeta{Index: 10, Term: 5, ConfState: conf}, nil},
		{"beyond the log discards it", raft.SnapshotMeta{Index: 100, Term: 5, ConfState: conf}, nil},
		{"at the last entry", raft.SnapshotMeta{Index: 20, Term: 1, ConfState: conf}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fsys := vfs.NewSim(1)
			w := mustOpen(t, fsys, smallOpts(nil))
			readAll(t, w)
			if err := w.Save(raft.HardState{Term: 1, Commit: 5}, ents(1, 1, 20, 8), false); err != nil {
				t.Fatal(err)
			}
			if err := w.SaveSnapshot(c.meta); err != nil {
				t.Fatal(err)
			}
			wantLast := c.meta.Index
			if len(c.want) > 0 {
				wantLast = c.want[len(c.want)-1].Index
			}
			if w.LastIndex() != wantLast {
				t.Fatalf("LastIndex %d, want %d", w.LastIndex(), wantLast)
			}
			w, got := reopen(t, fsys, w, smallOpts(nil))
			if got.snap == nil || !reflect.DeepEqual(*got.snap, c.meta) {
				t.Fatalf("snapshot meta %+v, want %+v", got.snap, c.meta)
			}
			if !equalEntries(got.ents, c.want) {
				t.Fatalf("entries %s, want %s", describe(got.ents), describe(c.want))
			}
			// The log continues right after what survived.
			if err := w.Save(raft.HardState{}, ents(6, wantLast+1, wantLast+1, 1), true); err != nil {
				t.Fatal(err)
			}
			w.Close()
		})
	}
}

func TestRolloverAndReleaseTo(t *testing.T) {
	fsys := vfs.NewSim(1)
	opts := smallOpts(nil)
	w := mustOpen(t, fsys, opts)
	readAll(t, w)
	all := ents(1, 1, 200, 300) // ~300 B each: about 12 per 4 KiB segment
	for i := 0; i < len(all); i += 7 {
		if err := w.Save(raft.HardState{Term: 1, Commit: all[i].Index}, all[i:min(i+7, len(all))], true); err != nil {
			t.Fatal(err)
		}
	}
	segs := w.Segments()
	if len(segs) < 10 {
		t.Fatalf("only %d segments for 200 entries of 300 bytes", len(segs))
	}
	for i, name := range segs {
		seq, first, ok := parseSegmentName(name)
		if !ok || seq != uint64(i+1) {
			t.Fatalf("segment %d name %q", i, name)
		}
		if i == 0 && first != 1 {
			t.Fatalf("first segment starts at %d", first)
		}
	}
	// Overwrite across segment boundaries, then snapshot and release.
	if err := w.Save(raft.HardState{Term: 2, Commit: 150}, ents(2, 150, 230, 300), true); err != nil {
		t.Fatal(err)
	}
	want := append(append([]raft.Entry(nil), all[:149]...), ents(2, 150, 230, 300)...)
	if err := w.ReleaseTo(100); err == nil {
		t.Fatal("ReleaseTo beyond the snapshot accepted")
	}
	if err := w.SaveSnapshot(raft.SnapshotMeta{Index: 120, Term: 1}); err != nil {
		t.Fatal(err)
	}
	before := len(w.Segments())
	if err := w.ReleaseTo(120); err != nil {
		t.Fatal(err)
	}
	after := w.Segments()
	if len(after) >= before {
		t.Fatalf("ReleaseTo deleted nothing: %d -> %d segments", before, len(after))
	}
	_, first, _ := parseSegmentName(after[0])
	if first > 121 {
		t.Fatalf("released too much: oldest remaining segment starts at %d", first)
	}
	names, _ := fsys.ReadDir(testDir)
	if len(names) != len(after) {
		t.Fatalf("directory has %v, WAL says %v", names, after)
	}
	w, got := reopen(t, fsys, w, opts)
	if got.snap == nil || got.snap.Index != 120 || !equalEntries(got.ents, want[120:]) || got.hs.Commit != 150 {
		t.Fatalf("after release+restart: snap %+v ents %s hs %+v", got.snap, describe(got.ents), got.hs)
	}
	// Release everything but the last segment.
	if err := w.SaveSnapshot(raft.SnapshotMeta{Index: 230, Term: 2}); err != nil {
		t.Fatal(err)
	}
	if err := w.ReleaseTo(230); err != nil {
		t.Fatal(err)
	}
	if n := len(w.Segments()); n != 1 {
		t.Fatalf("%d segments left after releasing to the last index", n)
	}
	_, got = reopen(t, fsys, w, opts)
	if got.snap.Index != 230 || len(got.ents) != 0 {
		t.Fatalf("snap %+v ents %s", got.snap, describe(got.ents))
	}
}

// TestReleaseAfterTruncationIntoReleasedRegion covers a replay that starts at a segment whose
// predecessors are gone and meets an entry that overwrote the log below that segment's first
// index.
func TestReleaseAfterTruncationIntoReleasedRegion(t *testing.T) {
	fsys := vfs.NewSim(1)
	opts := smallOpts(nil)
	w := mustOpen(t, fsys, opts)
	readAll(t, w)
	for i := uint64(1); i <= 60; i += 5 {
		if err := w.Save(raft.HardState{Term: 1}, ents(1, i, i+4, 300), true); err != nil {
			t.Fatal(err)
		}
	}
	segs := w.Segments()
	_, lastFirst, _ := parseSegmentName(segs[len(segs)-1])
	// Overwrite from below the last segment's first index, in the last segment.
	from := lastFirst - 3
	if err := w.Save(raft.HardState{Term: 2}, ents(2, from, from, 10), true); err != nil {
		t.Fatal(err)
	}
	if err := w.SaveSnapshot(raft.SnapshotMeta{Index: from - 1, Term: 1}); err != nil {
		t.Fatal(err)
	}
	if err := w.ReleaseTo(from - 1); err != nil {
		t.Fatal(err)
	}
	w, got := reopen(t, fsys, w, opts)
	if got.snap.Index != from-1 || !equalEntries(got.ents, ents(2, from, from, 10)) {
		t.Fatalf("snap %d ents %s, want snap %d and entry %d", got.snap.Index, describe(got.ents), from-1, from)
	}
	w.Close()
}

func TestOneSyncPerSave(t *testing.T) {
	fsys := vfs.NewSim(1)
	w := mustOpen(t, fsys, Options{})
	readAll(t, w)
	before := fsys.Stats()
	if err := w.Save(raft.HardState{Term: 1, Commit: 1}, ents(1, 1, 100, 64), true); err != nil {
		t.Fatal(err)
	}
	after := fsys.Stats()
	if d := after.FileSyncs - before.FileSyncs; d != 1 {
		t.Fatalf("%d fdatasyncs for one Save", d)
	}
	if d := after.Writes - before.Writes; d != 1 {
		t.Fatalf("%d writes for one Save", d)
	}
	if err := w.Save(raft.HardState{Term: 1, Commit: 2}, ents(1, 101, 110, 64), false); err != nil {
		t.Fatal(err)
	}
	if d := fsys.Stats().FileSyncs - after.FileSyncs; d != 0 {
		t.Fatalf("%d fdatasyncs for an unsynced Save", d)
	}
}

func TestSyncFailureIsSticky(t *testing.T) {
	fsys := vfs.NewSim(1)
	w := mustOpen(t, fsys, smallOpts(nil))
	readAll(t, w)
	fsys.FailSyncs(1)
	err := w.Save(raft.HardState{Term: 1}, ents(1, 1, 1, 10), true)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("Save with failing sync: %v", err)
	}
	if err2 := w.Save(raft.HardState{Term: 1}, ents(1, 2, 2, 10), true); !errors.Is(err2, syscall.EIO) {
		t.Fatalf("Save after a failed sync must keep failing, got %v", err2)
	}
}

func TestNoSpace(t *testing.T) {
	fsys := vfs.NewSim(1)
	opts := smallOpts(nil)
	w := mustOpen(t, fsys, opts)
	readAll(t, w)
	fsys.SetFull(true)
	// Writes into the preallocated segment still work on a full disk...
	var next uint64 = 1
	var err error
	for ; next < 1000; next++ {
		if err = w.Save(raft.HardState{Term: 1, Commit: next}, ents(1, next, next, 200), true); err != nil {
			break
		}
	}
	// ...until a new segment is needed.
	if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Save on a full disk: %v", err)
	}
	if next < 5 {
		t.Fatalf("full disk refused writes into preallocated space after %d entries", next-1)
	}
	if w.LastIndex() != next-1 {
		t.Fatalf("failed Save changed LastIndex to %d, want %d", w.LastIndex(), next-1)
	}
	// The WAL is still consistent: readable after reopen, and writable once space returns.
	fsys.SetFull(false)
	if err := w.Save(raft.HardState{Term: 1, Commit: next}, ents(1, next, next, 200), true); err != nil {
		t.Fatalf("Save after space came back: %v", err)
	}
	_, got := reopen(t, fsys, w, opts)
	if !equalEntries(got.ents, ents(1, 1, next, 200)) || got.hs.Commit != next {
		t.Fatalf("after ENOSPC and restart: %s hs %+v", describe(got.ents), got.hs)
	}
	// A brand-new WAL on a full disk fails cleanly.
	full := vfs.NewSim(2)
	full.SetFull(true)
	if _, err := Open(full, testDir, opts); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Open on a full disk: %v", err)
	}
}

// segmentPath returns the path of the i-th live segment.
func segmentPath(t *testing.T, fsys vfs.FS, i int) string {
	t.Helper()
	names, err := fsys.ReadDir(testDir)
	if err != nil {
		t.Fatal(err)
	}
	if i < 0 {
		i += len(names)
	}
	return filepath.Join(testDir, names[i])
}

// frameOffsets lists the offsets of the valid frames of a segment.
func frameOffsets(t *testing.T, fsys vfs.FS, name string) []int64 {
	t.Helper()
	b, err := vfs.ReadFile(fsys, name)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for off := 0; ; {
		_, _, n, st, _ := decodeFrame(b[off:])
		if st != frameOK {
			return offs
		}
		offs = append(offs, int64(off))
		off += n
	}
}

func flipByte(t *testing.T, fsys vfs.FS, name string, off int64) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestCorruptionDetected(t *testing.T) {
	build := func(t *testing.T) *vfs.Sim {
		fsys := vfs.NewSim(1)
		w := mustOpen(t, fsys, smallOpts(nil))
		readAll(t, w)
		for i := uint64(1); i <= 40; i += 4 {
			if err := w.Save(raft.HardState{Term: 1, Commit: i}, ents(1, i, i+3, 250), true); err != nil {
				t.Fatal(err)
			}
		}
		// Small records so that the last segment holds many frames.
		if err := w.Save(raft.HardState{}, ents(1, 41, 50, 10), true); err != nil {
			t.Fatal(err)
		}
		if len(w.Segments()) < 3 {
			t.Fatalf("want at least 3 segments, have %d", len(w.Segments()))
		}
		w.Close()
		return fsys
	}
	cases := []struct {
		name    string
		segment int // index into the sorted segment list
		frame   int // index into the segment's frames; negative counts from the end
	}{
		{"middle of last segment", -1, 2},
		{"last record of a non-last segment", 0, -1},
		{"middle of a non-last segment", 1, 3},
		{"segment header", 1, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fsys := build(t)
			name := segmentPath(t, fsys, c.segment)
			offs := frameOffsets(t, fsys, name)
			fi := c.frame
			if fi < 0 {
				fi += len(offs)
			}
			if fi+1 >= len(offs) && c.segment == -1 {
				t.Fatalf("segment has %d frames, need one after frame %d", len(offs), fi)
			}
			off := offs[fi]
			flipByte(t, fsys, name, off+12) // inside the record body
			_, err := Open(fsys, testDir, smallOpts(nil))
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open of corrupt log: %v", err)
			}
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.File != name || ce.Offset != off {
				t.Fatalf("error %v: want file %s offset %d", err, name, off)
			}
			if want := fmt.Sprintf("wal: corrupt record in %s at offset %d: ", name, off); !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("message %q does not start with %q", err, want)
			}
		})
	}
	t.Run("missing middle segment", func(t *testing.T) {
		fsys := build(t)
		if err := fsys.Remove(segmentPath(t, fsys, 1)); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(fsys, testDir, smallOpts(nil)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open with a missing segment: %v", err)
		}
	})
	t.Run("missing first segment", func(t *testing.T) {
		fsys := build(t) // no snapshot marker: nothing may be released
		if err := fsys.Remove(segmentPath(t, fsys, 0)); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(fsys, testDir, smallOpts(nil)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open without the first segment: %v", err)
		}
	})
}

// TestTornFinalRecordTruncated: damage confined to the final record of the last segment is a
// torn write: it is cut off with a warning naming the file and offset, and the log stays usable.
func TestTornFinalRecordTruncated(t *testing.T) {
	fsys := vfs.NewSim(1)
	opts := smallOpts(nil)
	w := mustOpen(t, fsys, opts)
	readAll(t, w)
	if err := w.Save(raft.HardState{}, ents(1, 1, 5, 100), true); err != nil {
		t.Fatal(err)
	}
	w.Close()
	name := segmentPath(t, fsys, -1)
	offs := frameOffsets(t, fsys, name)
	lastOff := offs[len(offs)-1]
	flipByte(t, fsys, name, lastOff+20)

	var logs bytes.Buffer
	w, got := reopen(t, fsys, nil, smallOpts(&logs))
	if !equalEntries(got.ents, ents(1, 1, 4, 100)) {
		t.Fatalf("entries %s after torn tail", describe(got.ents))
	}
	if s := logs.String(); !strings.Contains(s, "level=WARN") || !strings.Contains(s, name) || !strings.Contains(s, fmt.Sprintf("offset=%d", lastOff)) {
		t.Fatalf("no warning naming file and offset: %q", s)
	}
	if err := w.Save(raft.HardState{}, ents(2, 5, 6, 100), true); err != nil {
		t.Fatal(err)
	}
	_, got = reopen(t, fsys, w, opts)
	if !equalEntries(got.ents, append(ents(1, 1, 4, 100), ents(2, 5, 6, 100)...)) {
		t.Fatalf("after appending past a repaired tail: %s", describe(got.ents))
	}
}

// model is an independent, deliberately naive implementation of the log semantics the WAL
// promises, used to check it under random operations and crashes.
type model struct {
	hs   raft.HardState
	snap *raft.SnapshotMeta
	ents []raft.Entry // contiguous, after snap
}

func (m *model) clone() model {
	c := *m
	c.ents = append([]raft.Entry(nil), m.ents...)
	return c
}

func (m *model) last() uint64 {
	if len(m.ents) > 0 {
		return m.ents[len(m.ents)-1].Index
	}
	if m.snap != nil {
		return m.snap.Index
	}
	return 0
}

func (m *model) appendEntry(e raft.Entry) {
	var kept []raft.Entry
	for _, x := range m.ents {
		if x.Index < e.Index {
			kept = append(kept, x)
		}
	}
	m.ents = append(kept, e)
}

func (m *model) snapshot(meta raft.SnapshotMeta) {
	match := false
	var after []raft.Entry
	for _, x := range m.ents {
		if x.Index == meta.Index && x.Term == meta.Term {
			match = true
		}
		if x.Index > meta.Index {
			after = append(after, x)
		}
	}
	if m.snap != nil && m.snap.Index == meta.Index {
		match = true // re-save: unchanged
		after = m.ents
	}
	if !match {
		after = nil
	}
	m.snap, m.ents = &meta, after
}

func (m *model) matches(p persisted) bool {
	if p.hs != m.hs || !equalEntries(p.ents, m.ents) {
		return false
	}
	if (p.snap == nil) != (m.snap == nil) {
		return false
	}
	return p.snap == nil || (p.snap.Index == m.snap.Index && p.snap.Term == m.snap.Term)
}

// TestRandomCrashes drives the WAL with random Saves (including overwrites), snapshot markers,
// releases, restarts and crashes with torn writes, over many seeds. After every crash the
// recovered log must equal the model's state at some record boundary at or after the last
// synced one: no synced record is ever lost, and recovery never reports corruption or returns
// a state that was never written.
var (
	onlySeed  = flag.Uint64("wal.seed", 0, "run TestRandomCrashes for this seed only (with -v: trace)")
	seedCount = flag.Int("wal.seeds", 300, "number of seeds TestRandomCrashes runs")
)

func TestRandomCrashes(t *testing.T) {
	for _, reorder := range []bool{false, true} {
		t.Run(fmt.Sprintf("reordered-writeback=%t", reorder), func(t *testing.T) {
			if *onlySeed != 0 {
				runRandom(t, *onlySeed, 120, reorder)
				return
			}
			seeds := *seedCount
			if testing.Short() {
				seeds = 50
			}
			for seed := uint64(1); seed <= uint64(seeds); seed++ {
				runRandom(t, seed, 120, reorder)
			}
		})
	}
}

// runRandom runs one seed of TestRandomCrashes. With reorder, a crash lets any subset of the
// unsynced writes' pages reach the disk (vfs.Sim.SetReorderedWriteback), not just a prefix:
// recovery must still find a state written since the last sync, cutting the log at the first
// hole even when records written back out of order follow it.
func runRandom(t *testing.T, seed uint64, steps int, reorder bool) {
	rng := rand.New(rand.NewPCG(seed, 99))
	fsys := vfs.NewSim(seed)
	fsys.SetTornWrites(true)
	fsys.SetReorderedWriteback(reorder)
	opts := smallOpts(nil)
	w, err := Open(fsys, testDir, opts)
	if err != nil {
		t.Fatalf("seed %d: open: %v", seed, err)
	}
	readAll(t, w)
	var cur model
	// candidates holds the model after each record written since the last sync, starting with
	// the synced state itself.
	candidates := []model{cur.clone()}
	term := uint64(1)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d: %s", seed, fmt.Sprintf(format, args...))
	}
	trace := func(format string, args ...any) {
		if testing.Verbose() {
			t.Logf(format, args...)
		}
	}
	// recover reopens after a crash and checks the recovered state against the candidates.
	recover := func(step int) {
		t.Helper()
		w, err = Open(fsys, testDir, opts)
		if err != nil {
			dumpWAL(t, fsys)
			fail("step %d: open after crash: %v", step, err)
		}
		got := readAll(t, w)
		found := -1
		for i := range candidates {
			if candidates[i].matches(got) {
				found = i
			}
		}
		if found < 0 {
			for i, c := range candidates {
				t.Logf("candidate %d: %s hs %+v snap %v", i, describe(c.ents), c.hs, c.snap)
			}
			fail("step %d: recovered %s hs %+v snap %v is not a state written since the last sync (synced: %s hs %+v)",
				step, describe(got.ents), got.hs, got.snap, describe(candidates[0].ents), candidates[0].hs)
		}
		cur = candidates[found].clone()
		candidates = []model{cur.clone()}
		term++ // a new term after restart keeps overwrites distinguishable
	}
	// finish handles an operation's outcome: recs are the model states after each of its
	// records. A crash armed by CrashAfter may have cut it short anywhere.
	finish := func(step int, err error, recs []model, synced bool) {
		t.Helper()
		candidates = append(candidates, recs...)
		if fsys.Down() {
			trace("step %d: crashed inside the operation (%v)", step, err)
			fsys.Restart()
			recover(step)
			return
		}
		if err != nil {
			fail("step %d: %v", step, err)
		}
		if len(recs) > 0 {
			cur = recs[len(recs)-1].clone()
		}
		if synced {
			candidates = []model{cur.clone()}
		}
	}
	for step := 0; step < steps; step++ {
		if rng.IntN(10) == 0 {
			// Power fails somewhere inside the next operation (or not at all if it has fewer
			// steps): mid-write, mid-roll, between a rename and its directory sync...
			fsys.CrashAfter(rng.IntN(12))
		}
		switch r := rng.IntN(100); {
		case r < 55: // Save, sometimes overwriting a suffix
			start := cur.last() + 1
			floor := uint64(0)
			if cur.snap != nil {
				floor = cur.snap.Index
			}
			if rng.IntN(4) == 0 && cur.last() > floor {
				term++
				start = floor + 1 + uint64(rng.IntN(int(cur.last()-floor)))
			}
			n := rng.IntN(6)
			es := ents(term, start, start+uint64(n)-1, rng.IntN(400))
			hs := raft.HardState{}
			if rng.IntN(2) == 0 {
				hs = raft.HardState{Term: term, Vote: raft.NodeID(rng.IntN(4)), Commit: uint64(rng.IntN(int(start) + n))}
			}
			sync := rng.IntN(2) == 0
			trace("step %d: save %s hs %+v sync %v", step, describe(es), hs, sync)
			var recs []model
			m := cur.clone()
			if len(es) > 0 && !hs.IsEmpty() && es[len(es)-1].Term > m.hs.Term {
				// The WAL writes the new term and vote ahead of the entries (see Save).
				m.hs = raft.HardState{Term: hs.Term, Vote: hs.Vote, Commit: min(m.hs.Commit, start-1)}
				recs = append(recs, m.clone())
			}
			for _, e := range es {
				m.appendEntry(e)
				recs = append(recs, m.clone())
			}
			if !hs.IsEmpty() {
				m.hs = hs
				recs = append(recs, m.clone())
			}
			finish(step, w.Save(hs, es, sync), recs, sync)
		case r < 65: // snapshot marker: matching, conflicting, or beyond the log
			idx := cur.last()
			if cur.snap != nil && idx > cur.snap.Index {
				idx = cur.snap.Index + uint64(rng.IntN(int(idx-cur.snap.Index)+1))
			}
			if rng.IntN(5) == 0 {
				idx += uint64(rng.IntN(10))
			}
			if cur.snap != nil && idx <= cur.snap.Index {
				continue
			}
			mt := term
			for _, e := range cur.ents {
				if e.Index == idx {
					mt = e.Term
				}
			}
			if rng.IntN(5) == 0 {
				term++
				mt = term
			}
			meta := raft.SnapshotMeta{Index: idx, Term: mt, ConfState: raft.ConfState{Voters: []raft.NodeID{1, 2, 3}}}
			trace("step %d: snapshot %d/%d (last %d) segs %v", step, meta.Index, meta.Term, cur.last(), w.Segments())
			var recs []model
			m := cur.clone()
			if meta.Term > m.hs.Term {
				// The WAL raises the HardState's term to the marker's first (see SaveSnapshot).
				m.hs = raft.HardState{Term: meta.Term, Commit: m.hs.Commit}
				recs = append(recs, m.clone())
			}
			m.snapshot(meta)
			finish(step, w.SaveSnapshot(meta), append(recs, m), true)
		case r < 72:
			if cur.snap != nil {
				trace("step %d: release (snap %d) segs %v", step, cur.snap.Index, w.Segments())
				finish(step, w.ReleaseTo(cur.snap.Index-uint64(rng.IntN(3))%(cur.snap.Index+1)), nil, false)
			}
		case r < 80: // clean restart
			trace("step %d: restart", step)
			if err := w.Close(); err != nil {
				fail("step %d: close: %v", step, err)
			}
			w, err = Open(fsys, testDir, opts)
			if fsys.Down() {
				fsys.Restart()
				recover(step)
				continue
			}
			if err != nil {
				fail("step %d: restart: %v", step, err)
			}
			got := readAll(t, w)
			if !cur.matches(got) {
				fail("step %d: after restart got %s hs %+v, want %s hs %+v", step, describe(got.ents), got.hs, describe(cur.ents), cur.hs)
			}
			// Close does not sync: the unsynced records are still only in the page cache, so
			// candidates stay as they are.
		default: // crash between operations
			trace("step %d: crash", step)
			fsys.Crash()
			recover(step)
		}
		fsys.Restart() // disarm a crash the operation did not reach
	}
	w.Close()
}

func TestConcurrentUse(t *testing.T) {
	fsys := vfs.NewSim(1)
	w := mustOpen(t, fsys, smallOpts(nil))
	readAll(t, w)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := uint64(1); i <= 200; i++ {
			if err := w.Save(raft.HardState{Term: 1, Commit: i}, ents(1, i, i, 100), i%10 == 0); err != nil {
				t.Error(err)
				return
			}
			if i%50 == 0 {
				if err := w.SaveSnapshot(raft.SnapshotMeta{Index: i - 10, Term: 1}); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			_ = w.LastIndex()
			_ = w.Segments()
			_ = w.ReleaseTo(uint64(i / 2)) // fails until a snapshot covers it: fine
		}
	}()
	wg.Wait()
	_, got := reopen(t, fsys, w, smallOpts(nil))
	if !equalEntries(got.ents, ents(1, 191, 200, 100)) {
		t.Fatalf("after concurrent use: %s", describe(got.ents))
	}
}

func TestOSRoundTripAndTornTail(t *testing.T) {
	fsys := vfs.NewOS()
	dir := t.TempDir()
	opts := Options{SegmentBytes: 1 << 20}
	w, err := Open(fsys, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, w)
	if err := w.Save(raft.HardState{Term: 3, Vote: 1, Commit: 10}, ents(3, 1, 10, 1000), true); err != nil {
		t.Fatal(err)
	}
	off := w.off
	w.Close()
	// Simulate a torn append: a header claiming a record with only part of it present.
	name := filepath.Join(dir, segmentName(1, 1))
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var hdr [12]byte
	binary.LittleEndian.PutUint32(hdr[:], 500)
	binary.LittleEndian.PutUint32(hdr[4:], 0xdeadbeef)
	hdr[8] = recEntry
	if _, err := f.WriteAt(hdr[:], off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	w, err = Open(fsys, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, w)
	if !equalEntries(got.ents, ents(3, 1, 10, 1000)) || got.hs.Commit != 10 {
		t.Fatalf("got %s hs %+v", describe(got.ents), got.hs)
	}
	if fi, _ := os.Stat(name); fi.Size() != opts.SegmentBytes {
		t.Fatalf("segment size %d after repair, want preallocated %d", fi.Size(), opts.SegmentBytes)
	}
	w.Close()
}

func FuzzDecodeRecord(f *testing.F) {
	add := func(typ byte, payload []byte) {
		b, start := beginFrame(nil, typ)
		b = append(b, payload...)
		f.Add(finishFrame(b, start))
	}
	hdr := segmentHeader{seq: 1, firstIndex: 1}
	add(recSegmentHeader, hdr.append(nil))
	e := raft.Entry{Term: 1, Index: 1, Data: []byte("x")}
	add(recEntry, wire.AppendEntry(nil, &e))
	hs := raft.HardState{Term: 1, Vote: 2, Commit: 1}
	add(recHardState, wire.AppendHardState(nil, &hs))
	f.Add(appendMarkerFrame(nil, &raft.SnapshotMeta{Index: 5, Term: 2, ConfState: raft.ConfState{Voters: []raft.NodeID{1}}}, true))
	f.Add(appendSyncMark(nil, 0))
	f.Add(appendSyncMark(nil, 4096))
	f.Add([]byte{})
	f.Add(make([]byte, 16))
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, payload, n, st, why := decodeFrame(b)
		switch st {
		case frameOK:
			if n < frameHeaderBytes+1 || n%frameAlign != 0 || frameHeaderBytes+1+len(payload) > len(b) {
				t.Fatalf("frameOK with size %d payload %d input %d", n, len(payload), len(b))
			}
			// Applying a CRC-valid record must never panic, whatever it holds.
			st := logState{keep: true}
			seg := segment{seq: 1, firstIndex: 1, name: "fuzz"}
			_ = applyRecord(seg, true, 0, typ, payload, &st)
			_ = applyRecord(seg, true, 8, typ, payload, &st)
		case frameEnd:
		default:
			if why == "" {
				t.Fatalf("status %d without a reason", st)
			}
		}
	})
}

// FuzzReplayTail appends arbitrary bytes after the records of a valid last segment (as a torn,
// reordered or damaged write could leave them) and opens the log: Open must not panic, must
// either succeed with the synced records intact or fail with ErrCorrupt, and a log it opened
// must reopen to the same state.
func FuzzReplayTail(f *testing.F) {
	f.Add([]byte{}, uint16(0))
	f.Add(appendSyncMark(nil, 64), uint16(0))
	f.Add(append(make([]byte, 64), appendSyncMark(nil, 1<<20)...), uint16(8))
	e := raft.Entry{Term: 1, Index: 9, Data: []byte("after a hole")}
	b, start := beginFrame(nil, recEntry)
	b = finishFrame(wire.AppendEntry(b, &e), start)
	f.Add(append(make([]byte, 32), b...), uint16(16))
	f.Fuzz(func(t *testing.T, tail []byte, gap uint16) {
		fsys, opts, name := oneSegmentLog(t, ents(1, 1, 8, 40))
		offs := frameOffsets(t, fsys, name)
		seg, err := vfs.ReadFile(fsys, name)
		if err != nil {
			t.Fatal(err)
		}
		last := offs[len(offs)-1]
		_, _, n, _, _ := decodeFrame(seg[last:])
		at := (last + int64(n) + int64(gap)) &^ (frameAlign - 1) // the tail starts right after the records, or after a gap
		if at+int64(len(tail)) > opts.SegmentBytes {
			return
		}
		g, err := fsys.OpenFile(name, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.WriteAt(tail, at); err != nil {
			t.Fatal(err)
		}
		g.Sync()
		g.Close()
		w, err := Open(fsys, testDir, opts)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open failed without ErrCorrupt: %v", err)
			}
			return
		}
		got := readAll(t, w)
		if len(got.ents) < 8 || !equalEntries(got.ents[:8], ents(1, 1, 8, 40)) {
			t.Fatalf("synced entries lost: %s", describe(got.ents))
		}
		w.Close()
		w2, again := reopen(t, fsys, nil, opts)
		w2.Close()
		if again.hs != got.hs || !equalEntries(again.ents, got.ents) {
			t.Fatalf("reopen changed the state: %s then %s", describe(got.ents), describe(again.ents))
		}
	})
}

func BenchmarkSaveNoSync1KiB(b *testing.B) {
	for _, c := range []struct {
		name string
		fs   func(b *testing.B) (vfs.FS, string)
	}{
		{"sim", func(b *testing.B) (vfs.FS, string) { return vfs.NewSim(1), testDir }},
		{"os", func(b *testing.B) (vfs.FS, string) { return vfs.NewOS(), b.TempDir() }},
	} {
		b.Run(c.name, func(b *testing.B) {
			fsys, dir := c.fs(b)
			w, err := Open(fsys, dir, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			batch := ents(1, 1, 1, 1024)
			b.ReportAllocs()
			b.SetBytes(1024)
			var i uint64
			for b.Loop() {
				i++
				batch[0].Index = i
				if err := w.Save(raft.HardState{Term: 1, Commit: i}, batch, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestTornRecordHidingAFrame: user data may contain bytes that form a valid frame. When the
// record holding them is torn, replay must skip the record's declared length rather than find
// the embedded "frame" and call the tail corruption.
func TestTornRecordHidingAFrame(t *testing.T) {
	fsys := vfs.NewSim(1)
	opts := smallOpts(nil)
	w := mustOpen(t, fsys, opts)
	readAll(t, w)
	if err := w.Save(raft.HardState{}, ents(1, 1, 2, 50), true); err != nil {
		t.Fatal(err)
	}
	inner := raft.Entry{Term: 9, Index: 99, Data: []byte("not a real record")}
	fake, start := beginFrame(nil, recEntry)
	fake = finishFrame(wire.AppendEntry(fake, &inner), start)
	// Pad the data so that the fake frame lands on an 8-byte boundary of the segment.
	e := raft.Entry{Term: 1, Index: 3}
	recStart := w.off
	for pad := 0; ; pad++ {
		e.Data = append(make([]byte, pad), fake...)
		prefix := frameHeaderBytes + 1 + wire.EntrySize(&e) - len(e.Data)
		if (recStart+int64(prefix+pad))%frameAlign == 0 {
			break
		}
	}
	if err := w.Save(raft.HardState{}, []raft.Entry{e}, true); err != nil {
		t.Fatal(err)
	}
	w.Close()
	name := segmentPath(t, fsys, -1)
	flipByte(t, fsys, name, recStart+frameHeaderBytes+2) // damage the record before the fake frame
	w, got := reopen(t, fsys, nil, opts)
	if !equalEntries(got.ents, ents(1, 1, 2, 50)) {
		t.Fatalf("entries %s", describe(got.ents))
	}
	w.Close()
}

// raftAccepts reports why raft.New would refuse p as a restarting node's state, or "".
func raftAccepts(p persisted) string {
	last, lastTerm := uint64(0), uint64(0)
	if p.snap != nil {
		last, lastTerm = p.snap.Index, p.snap.Term
	}
	if n := len(p.ents); n > 0 {
		last, lastTerm = p.ents[n-1].Index, p.ents[n-1].Term
	}
	switch {
	case p.hs.Term < lastTerm:
		return fmt.Sprintf("HardState term %d below the last term %d", p.hs.Term, lastTerm)
	case p.hs.Commit > last:
		return fmt.Sprintf("HardState commit %d beyond the last index %d", p.hs.Commit, last)
	}
	return ""
}

// TestTornSaveKeepsHardStateAheadOfLog is the regression test for a bug the simulator found
// (caucus-sim -store wal -profile hostile, seeds 207 and 2465): a Save whose entries start a new
// term wrote them before the HardState carrying that term, so a power loss that kept the entries
// but tore the HardState left a log whose last term was above the HardState's, and raft.New
// refused to restart the node. The same held for a snapshot marker of a newer term, written
// before the HardState that follows it. Every torn prefix must now be a state Raft accepts.
func TestTornSaveKeepsHardStateAheadOfLog(t *testing.T) {
	newEntriesKept, markerKept := 0, 0
	for seed := uint64(1); seed <= 300; seed++ {
		fsys := vfs.NewSim(seed)
		fsys.SetTornWrites(true)
		w := mustOpen(t, fsys, smallOpts(nil))
		readAll(t, w)
		// Term 1, voted for 1, entries 1..3 committed through 2: synced.
		if err := w.Save(raft.HardState{Term: 1, Vote: 1, Commit: 2}, ents(1, 1, 3, 30), true); err != nil {
			t.Fatal(err)
		}
		var op string
		if seed%2 == 0 {
			// A follower hears from the leader of term 3: it overwrites entry 3 and appends,
			// committing through 4, in one Save. Power fails before the fsync.
			op = "save"
			fsys.CrashAfter(1)
			err := w.Save(raft.HardState{Term: 3, Vote: 0, Commit: 4}, ents(3, 3, 6, 30), true)
			if !errors.Is(err, vfs.ErrCrashed) {
				t.Fatalf("seed %d: save did not reach the armed crash: %v", seed, err)
			}
		} else {
			// A snapshot from the leader of term 3 at index 9: its marker is synced, and power
			// fails before the HardState of term 3 is saved.
			op = "snapshot"
			meta := raft.SnapshotMeta{Index: 9, Term: 3, ConfState: raft.ConfState{Voters: []raft.NodeID{1, 2, 3}}}
			if err := w.SaveSnapshot(meta); err != nil {
				t.Fatal(err)
			}
			fsys.Crash()
		}
		fsys.Restart()
		w, got := reopen(t, fsys, nil, smallOpts(nil))
		if why := raftAccepts(got); why != "" {
			t.Fatalf("seed %d (%s): recovered hs %+v snap %v entries %s: %s", seed, op, got.hs, got.snap, describe(got.ents), why)
		}
		if n := len(got.ents); n > 0 && got.ents[n-1].Term == 3 {
			newEntriesKept++
		}
		if got.snap != nil {
			markerKept++
		}
		w.Close()
	}
	// Without these outcomes the test would pass against the old write order too.
	if newEntriesKept == 0 || markerKept == 0 {
		t.Fatalf("no torn prefix kept entries of the new term (%d) or the marker alone (%d)", newEntriesKept, markerKept)
	}
	t.Logf("torn saves that kept entries of the new term: %d; snapshot markers kept: %d", newEntriesKept, markerKept)
}

// zeroRange overwrites n bytes at off with zeros and syncs: what a page that never reached the
// disk leaves behind in a preallocated segment.
func zeroRange(t *testing.T, fsys vfs.FS, name string, off, n int64) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, n), off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// TestOutOfOrderWritebackVersusDamage pins the recovery rule for holes in the last segment.
// A write that was never synced may reach the disk in any page order, so a hole followed by
// valid records is a torn tail when nothing proves the hole was synced: the log is cut at the
// hole, with a warning. When a later write's sync mark says the segment had been synced past
// the hole, the hole is damage to acknowledged data, and Open refuses with ErrCorrupt.
func TestOutOfOrderWritebackVersusDamage(t *testing.T) {
	opts := func(logs io.Writer) Options {
		o := smallOpts(logs)
		o.SegmentBytes = 64 << 10 // one segment holds every write
		return o
	}
	build := func(t *testing.T) (fsys *vfs.Sim, name string, secondStart int64) {
		fsys = vfs.NewSim(1)
		w := mustOpen(t, fsys, opts(nil))
		readAll(t, w)
		if err := w.Save(raft.HardState{Term: 1, Commit: 4}, ents(1, 1, 4, 100), true); err != nil {
			t.Fatal(err)
		}
		name = segmentPath(t, fsys, -1)
		offs := frameOffsets(t, fsys, name)
		secondStart = offs[len(offs)-1] + 128 // past the last frame of the first Save (a 100-byte entry)
		// The second write spans several pages; it is never synced.
		if err := w.Save(raft.HardState{}, ents(1, 5, 80, 200), false); err != nil {
			t.Fatal(err)
		}
		w.Close()
		return fsys, name, secondStart
	}
	t.Run("hole in an unsynced write is a torn tail", func(t *testing.T) {
		fsys, name, second := build(t)
		// Its first page holding entries never made it; later pages did.
		hole := (second/vfs.WritebackPage + 1) * vfs.WritebackPage
		zeroRange(t, fsys, name, hole, vfs.WritebackPage)
		var logs bytes.Buffer
		_, got := reopen(t, fsys, nil, opts(&logs))
		if n := len(got.ents); n < 4 || n >= 80 || !equalEntries(got.ents[:4], ents(1, 1, 4, 100)) {
			t.Fatalf("recovered %s: want entries 1-4 and a prefix of the torn write", describe(got.ents))
		}
		if s := logs.String(); !strings.Contains(s, "level=WARN") || !strings.Contains(s, "written back out of order") {
			t.Fatalf("no warning about records written back out of order: %q", s)
		}
	})
	t.Run("hole in synced data is damage", func(t *testing.T) {
		fsys, name, _ := build(t)
		// A third write, synced, whose mark says the segment was synced through the second.
		w, _ := reopen(t, fsys, nil, opts(nil))
		if err := w.Save(raft.HardState{Term: 1, Commit: 81}, ents(1, 81, 81, 10), true); err != nil {
			t.Fatal(err)
		}
		w.Close()
		offs := frameOffsets(t, fsys, name)
		victim := offs[len(offs)/2] // inside the synced second write
		zeroRange(t, fsys, name, victim, 16)
		_, err := Open(fsys, testDir, opts(nil))
		var ce *CorruptError
		if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) || ce.Offset != victim || !strings.Contains(err.Error(), "in synced data") {
			t.Fatalf("Open with a hole in synced data: %v; want ErrCorrupt at offset %d saying it was synced", err, victim)
		}
	})
}

// A segment of format version 1 has no sync marks, so a hole followed by valid records in it
// keeps the rule it was written under: damage, not a torn tail.
func TestVersion1SegmentKeepsStrictRule(t *testing.T) {
	fsys, opts, name := oneSegmentLog(t, ents(1, 1, 10, 100))
	// Rewrite the header as version 1.
	b, err := vfs.ReadFile(fsys, name)
	if err != nil {
		t.Fatal(err)
	}
	_, payload, n, st, _ := decodeFrame(b)
	if st != frameOK || payload[8] != segmentFormatVersion {
		t.Fatalf("unexpected segment header %v %x", st, payload)
	}
	hdr := append([]byte(nil), b[:n]...)
	hdr[frameHeaderBytes+1+8] = 1
	binary.LittleEndian.PutUint32(hdr[4:], crc32.Checksum(hdr[frameHeaderBytes:frameHeaderBytes+1+segmentHeaderPayloadBytes], castagnoli))
	f, err := fsys.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(hdr, 0); err != nil {
		t.Fatal(err)
	}
	f.Sync()
	f.Close()
	// Still readable as version 1.
	w, got := reopen(t, fsys, nil, opts)
	if !equalEntries(got.ents, ents(1, 1, 10, 100)) {
		t.Fatalf("version 1 segment replayed %s", describe(got.ents))
	}
	w.Close()
	offs := frameOffsets(t, fsys, name)
	victim := offs[len(offs)/2]
	zeroRange(t, fsys, name, victim, 16)
	if _, err := Open(fsys, testDir, opts); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "followed by a valid record") {
		t.Fatalf("Open of a version 1 segment with a hole before valid records: %v; want ErrCorrupt", err)
	}
}

// oneSegmentLog writes es (committed) with one synced Save into a new WAL whose 64 KiB segments
// hold it whole, closes it, and returns the disk, the options and the segment's name.
func oneSegmentLog(t *testing.T, es []raft.Entry) (*vfs.Sim, Options, string) {
	t.Helper()
	fsys := vfs.NewSim(1)
	opts := smallOpts(nil)
	opts.SegmentBytes = 64 << 10
	w := mustOpen(t, fsys, opts)
	readAll(t, w)
	if err := w.Save(raft.HardState{Term: 1, Commit: es[len(es)-1].Index}, es, true); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return fsys, opts, segmentPath(t, fsys, -1)
}

func TestSyncWrittenMakesUnsyncedSavesDurable(t *testing.T) {
	for _, syncIt := range []bool{false, true} {
		fsys := vfs.NewSim(1)
		w := mustOpen(t, fsys, smallOpts(nil))
		readAll(t, w)
		if err := w.Save(raft.HardState{Term: 1, Commit: 1}, ents(1, 1, 3, 100), true); err != nil {
			t.Fatal(err)
		}
		if err := w.Save(raft.HardState{}, ents(1, 4, 6, 100), false); err != nil {
			t.Fatal(err)
		}
		if syncIt {
			if err := w.SyncWritten(); err != nil {
				t.Fatal(err)
			}
		}
		fsys.Crash()
		fsys.Restart()
		w = mustOpen(t, fsys, smallOpts(nil))
		got := readAll(t, w)
		want := uint64(3)
		if syncIt {
			want = 6
		}
		if n := len(got.ents); uint64(n) != want {
			t.Fatalf("SyncWritten %v: %s survived a power loss, want entries 1..%d", syncIt, describe(got.ents), want)
		}
		w.Close()
	}
}

// gatedFS hands out files whose next Sync, once armed, signals entered and waits for release:
// a test can hold a SyncWritten inside its fdatasync while the WAL goes on.
type gatedFS struct {
	vfs.FS
	mu      sync.Mutex
	armed   bool
	entered chan string
	release chan struct{}
	closes  map[string]int
}

type gatedFile struct {
	vfs.File
	g *gatedFS
}

func (g *gatedFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	f, err := g.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &gatedFile{File: f, g: g}, nil
}

func (g *gatedFS) Create(name string) (vfs.File, error) {
	f, err := g.FS.Create(name)
	if err != nil {
		return nil, err
	}
	return &gatedFile{File: f, g: g}, nil
}

func (f *gatedFile) Sync() error {
	f.g.mu.Lock()
	armed := f.g.armed
	f.g.armed = false
	f.g.mu.Unlock()
	if armed {
		f.g.entered <- f.Name()
		<-f.g.release
	}
	return f.File.Sync()
}

func (f *gatedFile) Close() error {
	f.g.mu.Lock()
	f.g.closes[f.Name()]++
	n := f.g.closes[f.Name()]
	f.g.mu.Unlock()
	if n > 1 {
		return fmt.Errorf("%s closed %d times", f.Name(), n)
	}
	return f.File.Close()
}

// startHeldSync opens a WAL over a gated simulated disk, writes entries 1..n without syncing and
// starts a SyncWritten that the gate holds inside its fdatasync (receive from g.entered, then
// close g.release); its result arrives on res.
func startHeldSync(t *testing.T, n uint64) (*vfs.Sim, *gatedFS, *WAL, chan error) {
	t.Helper()
	sim := vfs.NewSim(1)
	g := &gatedFS{FS: sim, entered: make(chan string), release: make(chan struct{}), closes: map[string]int{}}
	w := mustOpen(t, g, smallOpts(nil))
	readAll(t, w)
	if err := w.Save(raft.HardState{Term: 1}, ents(1, 1, n, 100), false); err != nil {
		t.Fatal(err)
	}
	g.armed = true
	res := make(chan error, 1)
	go func() { res <- w.SyncWritten() }()
	return sim, g, w, res
}

// TestSyncWrittenAcrossRoll holds a SyncWritten inside its fdatasync while the writer appends
// without syncing and rolls to a new segment, then loses power: everything written before the
// SyncWritten must survive, the old segment is closed once, after the sync, and the log goes on.
func TestSyncWrittenAcrossRoll(t *testing.T) {
	sim, g, w, res := startHeldSync(t, 5)
	seg := <-g.entered
	// 4 KiB segments and 100-byte entries: this Save rolls at least once.
	if err := w.Save(raft.HardState{Term: 1, Commit: 5}, ents(1, 6, 60, 100), false); err != nil {
		t.Fatal(err)
	}
	if segs := w.Segments(); len(segs) < 2 {
		t.Fatalf("no roll: segments %v", segs)
	}
	g.mu.Lock()
	closedEarly := g.closes[seg]
	g.mu.Unlock()
	if closedEarly != 0 {
		t.Fatalf("the roll closed %s while a sync of it was running", seg)
	}
	close(g.release)
	if err := <-res; err != nil {
		t.Fatalf("SyncWritten across a roll: %v", err)
	}
	g.mu.Lock()
	closed := g.closes[seg]
	g.mu.Unlock()
	if closed != 1 {
		t.Fatalf("%s closed %d times after the sync, want once", seg, closed)
	}
	if err := w.Save(raft.HardState{Term: 1, Commit: 60}, ents(1, 61, 61, 100), true); err != nil {
		t.Fatalf("Save after SyncWritten: %v", err)
	}
	sim.Crash()
	sim.Restart()
	w = mustOpen(t, sim, smallOpts(nil))
	defer w.Close()
	got := readAll(t, w)
	if !equalEntries(got.ents, ents(1, 1, 61, 100)) {
		t.Fatalf("after a power loss: %s, want 1..61", describe(got.ents))
	}
}

func TestSyncWrittenOneAtATime(t *testing.T) {
	_, g, w, res := startHeldSync(t, 2)
	<-g.entered
	if err := w.SyncWritten(); err == nil {
		t.Fatal("a second concurrent SyncWritten was accepted")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	close(g.release)
	if err := <-res; err != nil {
		t.Fatalf("SyncWritten across Close: %v", err)
	}
	for name, n := range g.closes {
		if n != 1 {
			t.Fatalf("%s closed %d times", name, n)
		}
	}
}
