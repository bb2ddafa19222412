// Package walstore is a durable store for internal/sim's simulated nodes built from caucus's real
// persistence: the write-ahead log (internal/wal) on the simulated disk (internal/vfs.Sim).
// Plugged in through sim.Options.NewStorage, it puts the WAL under every crash the simulator
// injects, with the disk faults a power loss really causes.
//
// # Faults
//
//   - Lost unsynced writes. A Save fsyncs only when the simulator asks, which is when Raft
//     requires it (raft.Ready.MustSync: new entries, a snapshot, or a new term or vote). A Save
//     that only advances the commit index is written and left unsynced, as internal/node does,
//     and so, under raft.Config.DeferLeaderSync, are a leader's own appends, until Sync (or a
//     later synced Save or snapshot) fsyncs the log. A crash keeps what was fsynced, plus a
//     seeded random prefix of the unsynced writes, the last one possibly torn mid-record
//     (vfs.Sim.SetTornWrites); on half of the disks (by seed) any subset of their pages
//     instead, as a kernel writing dirty pages back in its own order leaves them
//     (vfs.Sim.SetReorderedWriteback): holes with surviving records after them.
//   - Power loss inside a local snapshot save (sim.SnapshotCrasher): while the snapshot file
//     is written or renamed, around its WAL marker, or while covered segments are removed.
//   - Power loss inside a Save (sim.SaveCrasher). When the simulator would crash a node right
//     after a Save, the store may instead arm vfs.Sim.CrashAfter so that the power fails before
//     one of the Save's own disk operations: before the log write, between the write and its
//     fsync (leaving a torn write), around a segment roll, or while the snapshot file is
//     replaced.
//
// After a crash the node restarts from what the disk holds: the WAL is reopened (its recovery
// truncates a torn tail) and replayed, the snapshot named by its last marker is read back, and
// Load hands exactly that to raft.New.
//
// # The recovery check
//
// The store keeps a reference of what is guaranteed durable (a sim.NewMemStorage holding every
// Save up to the last fsync, which also serves the accessors the checkers read) and the Saves
// written since (pending). A recovered state must lie between the two, or the WAL lost or
// invented something, reported as a sim.StorageFault violation:
//
//   - the snapshot and the log equal the reference with some prefix of the pending Saves
//     applied, where a Save applies as its snapshot, then its entries one at a time, in the
//     order the WAL writes them;
//   - the HardState's term and vote are those of the reference or of a pending Save (or the
//     term of a pending snapshot with no vote), and so is its commit index: the WAL writes a
//     Save's new term and vote ahead of its entries with the previous commit index, and raises
//     the term to a newer snapshot marker's (see internal/wal).
//
// Raft's own requirements on the recovered state (commit within the log, HardState term not
// below the last entry's) are checked by raft.New when the node restarts.
package walstore

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/caucus/caucus/internal/sim"
	"github.com/caucus/caucus/internal/vfs"
	"github.com/caucus/caucus/internal/wal"
	"github.com/caucus/caucus/raft"
)

const (
	walDir = "wal"
	// snapPrefix starts the name of a snapshot file: snapPrefix + index + "-" + term in hex.
	// Each snapshot gets its own file, so that a crash between writing a new snapshot and
	// recording its marker in the WAL leaves the one the WAL still points at intact.
	snapPrefix = "snap-"
	// segmentBytes is small so that runs roll and release segments often.
	segmentBytes = wal.MinSegmentBytes * 4
)

// Options configures a Store. The zero value injects every fault.
type Options struct {
	// NoFaults makes every Save synced and never crashes inside one. The store then persists
	// exactly what the in-memory store does for cores that never defer a sync, so a run without
	// raft.Config.DeferLeaderSync follows the very same trace. (With it, the in-memory store
	// loses part of a leader's unsynced appends at a crash, and a fault-free disk none.)
	NoFaults bool

	bug bug // test-only: a planted durability bug
	// noRecoveryCheck (test-only) adopts whatever the disk recovered without comparing it with
	// the reference, so that a planted bug's lost writes reach the simulator's Raft checkers.
	noRecoveryCheck bool
}

// bug is a deliberately broken durability behaviour, planted by tests to show that the
// simulator catches what the faults above expose.
type bug uint8

const (
	bugNone bug = iota
	// bugAckBeforeSync: Save writes its records and reports them durable without the fsync,
	// deferring it to the next Save (a "lazy group commit" done wrong).
	bugAckBeforeSync
	// bugMarkerBeforeSnapshot: a snapshot's WAL marker is made durable before the snapshot
	// file, so a power loss in between leaves a marker naming a file that is not there.
	bugMarkerBeforeSnapshot
)

// Stats counts the faults a Store went through, so tests can show they happened.
type Stats struct {
	UnsyncedSaves   int // Saves written without an fsync
	DeferredSaves   int // of which carried entries (a leader's appends under DeferLeaderSync)
	Syncs           int // Syncs that found unsynced Saves to make durable
	SaveCrashes     int // power losses that struck inside a Save
	SnapshotCrashes int // power losses that struck inside a local SaveSnapshot
	Recoveries      int // crashes recovered from
	// LostWrites counts recoveries that lost part of what had been written (unsynced Saves, or
	// the Save a power loss cut short); TornSaves those that kept part of a Save but not all.
	LostWrites, TornSaves int
}

// pendingSave is a Save written but not yet known to be fsynced.
type pendingSave struct {
	hs   raft.HardState
	snap *raft.Snapshot
	ents []raft.Entry
}

// Store is a sim.Storage over a WAL on a simulated disk.
type Store struct {
	sim.Storage // the reference: what is guaranteed durable; see the package documentation
	pending     []pendingSave
	written     raft.HardState // the last HardState written, durable or not
	fs          *vfs.Sim
	w           *wal.WAL
	walOpts     wal.Options
	opts        Options
	rng         *rand.Rand
	armed       bool // CrashAfter is armed for the Save in progress
	stats       Stats
}

// Stats returns the store's fault counts.
func (s *Store) Stats() Stats { return s.stats }

// New opens an empty store on a fresh simulated disk whose random choices derive from seed.
func New(seed uint64, opts Options) (*Store, error) {
	fs := vfs.NewSim(seed)
	fs.SetTornWrites(true)
	// Half of the disks write dirty pages back in any order, the other half in order, so
	// that both the common torn tail (a prefix) and holes before surviving records are seen.
	fs.SetReorderedWriteback(seed&1 == 1)
	s := &Store{Storage: sim.NewMemStorage(), fs: fs, opts: opts,
		rng:     rand.New(rand.NewPCG(seed, 0x77a1_5707e)),
		walOpts: wal.Options{SegmentBytes: segmentBytes, Logger: slog.New(slog.DiscardHandler)}}
	w, err := wal.Open(fs, walDir, s.walOpts)
	if err != nil {
		return nil, fmt.Errorf("walstore: open: %w", err)
	}
	s.w = w
	return s, nil
}

// Factory returns a sim.Options.NewStorage that gives each node its own disk, seeded from seed
// and the node ID. A store that cannot even be created panics: the simulator reports panics as
// violations with the seed.
func Factory(seed uint64, opts Options) func(id raft.NodeID) sim.Storage {
	return func(id raft.NodeID) sim.Storage {
		s, err := New(seed*1_000_003+uint64(id), opts)
		if err != nil {
			panic(err)
		}
		return s
	}
}

// CrashInNextSave implements sim.SaveCrasher: half of the time, it arms a power loss inside the
// next Save. The Save picks the point once it knows what it writes (see armCrash).
func (s *Store) CrashInNextSave() bool {
	if s.opts.NoFaults || s.rng.IntN(2) == 0 {
		return false
	}
	s.armed = true
	return true
}

// armCrash makes the power fail before one of the disk operations the Save is about to make,
// counted as vfs.Sim.CrashAfter counts them (write, fsync, create, preallocate, rename, remove,
// directory sync). A plain Save makes two, the log write and its fsync: a crash before the
// fsync leaves the write torn at a random point. Snapshot replacement adds the file's create,
// write, fsync, rename and directory sync, the marker's write and fsync, and the removal of the
// old file. Segment rolls add more operations than counted here; a crash point beyond the
// Save's last operation does not fire, and the simulator crashes the node right after the Save
// as it would have anyway.
func (s *Store) armCrash(snap bool, sync bool) {
	ops := 1
	if sync {
		ops++
	}
	if snap {
		ops += 8
	}
	s.fs.CrashAfter(s.rng.IntN(ops))
}

func snapName(meta raft.SnapshotMeta) string {
	return fmt.Sprintf("%s%016x-%016x", snapPrefix, meta.Index, meta.Term)
}

// writeSnapshot makes the snapshot's file durable, then records its marker in the WAL (which
// fsyncs the log, and with it every pending Save), then drops older snapshot files.
func (s *Store) writeSnapshot(snap raft.Snapshot) error {
	name := snapName(snap.Meta)
	if s.opts.bug == bugMarkerBeforeSnapshot {
		if err := s.w.SaveSnapshot(snap.Meta); err != nil {
			return fmt.Errorf("walstore: snapshot marker %d: %w", snap.Meta.Index, err)
		}
		if err := vfs.WriteFileDurable(s.fs, name, encodeSnapshot(snap)); err != nil {
			return fmt.Errorf("walstore: write snapshot %d: %w", snap.Meta.Index, err)
		}
		return s.removeSnapshotsExcept(name)
	}
	if err := vfs.WriteFileDurable(s.fs, name, encodeSnapshot(snap)); err != nil {
		return fmt.Errorf("walstore: write snapshot %d: %w", snap.Meta.Index, err)
	}
	if err := s.w.SaveSnapshot(snap.Meta); err != nil {
		return fmt.Errorf("walstore: snapshot marker %d: %w", snap.Meta.Index, err)
	}
	// Older files are garbage now; a crash before their removal is durable leaves them for the
	// next recovery to delete.
	return s.removeSnapshotsExcept(name)
}

func (s *Store) removeSnapshotsExcept(keep string) error {
	names, err := s.fs.ReadDir(".")
	if err != nil {
		return fmt.Errorf("walstore: list snapshots: %w", err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, snapPrefix) && n != keep {
			if err := s.fs.Remove(n); err != nil {
				return fmt.Errorf("walstore: remove old snapshot %s: %w", n, err)
			}
		}
	}
	return nil
}

// Save persists a Ready: snapshot file and marker first, then entries and HardState in one WAL
// write, fsynced if sync (always with Options.NoFaults). An armed power loss that strikes makes
// it return an error wrapping sim.ErrPowerLoss.
func (s *Store) Save(hs raft.HardState, snap *raft.Snapshot, ents []raft.Entry, sync bool) error {
	err := s.save(hs, snap, ents, sync || s.opts.NoFaults) // arms the crash point inside, if armed
	return s.settle(err, &s.stats.SaveCrashes, "save")
}

// Sync fsyncs the log (wal.Save with nothing to add and sync, which covers every earlier write:
// the WAL fsyncs a segment before it starts the next), making every pending Save durable.
func (s *Store) Sync() error {
	if err := s.w.Save(raft.HardState{}, nil, true); err != nil {
		return fmt.Errorf("walstore: sync: %w", err)
	}
	if len(s.pending) > 0 {
		s.stats.Syncs++
	}
	return s.flushPending()
}

// settle ends an operation a power loss may have been armed in: if it struck, the error wraps
// sim.ErrPowerLoss and counter counts it; a crash point beyond the operation is disarmed.
func (s *Store) settle(err error, counter *int, op string) error {
	armed := s.armed
	s.armed = false
	if armed {
		if s.fs.Down() {
			*counter++
			return fmt.Errorf("walstore: %s: %w: %w", op, sim.ErrPowerLoss, err)
		}
		s.fs.Restart()
	}
	return err
}

func (s *Store) save(hs raft.HardState, snap *raft.Snapshot, ents []raft.Entry, sync bool) error {
	if !sync {
		// What the contract never leaves unsynced (sim.Storage): a caller that does is broken.
		if snap != nil && !snap.IsEmpty() {
			return fmt.Errorf("walstore: an unsynced save carries snapshot %d", snap.Meta.Index)
		}
		if !hs.IsEmpty() && (hs.Term != s.written.Term || hs.Vote != s.written.Vote) {
			return fmt.Errorf("walstore: an unsynced save moves term %d vote %d to term %d vote %d",
				s.written.Term, s.written.Vote, hs.Term, hs.Vote)
		}
	}
	p := pendingSave{hs: hs, ents: cloneEntries(ents)}
	if snap != nil && !snap.IsEmpty() {
		c := *snap
		c.Data = bytes.Clone(snap.Data)
		p.snap = &c
	}
	if s.opts.bug == bugAckBeforeSync {
		// The previous Save's fsync, late: what it reported durable was not until now.
		if err := s.w.Save(raft.HardState{}, nil, true); err != nil {
			return fmt.Errorf("walstore: deferred sync: %w", err)
		}
		sync = false
	}
	if hs.IsEmpty() && p.snap == nil && len(ents) == 0 {
		return nil
	}
	if s.armed {
		s.armCrash(p.snap != nil, sync)
	}
	// Recorded before any byte is written: a crash inside the writes below may keep part of it.
	s.pending = append(s.pending, p)
	if p.snap != nil {
		if err := s.writeSnapshot(*p.snap); err != nil {
			return err
		}
	}
	if err := s.w.Save(hs, ents, sync); err != nil {
		return fmt.Errorf("walstore: save: %w", err)
	}
	if !hs.IsEmpty() {
		s.written = hs
	}
	if sync || s.opts.bug == bugAckBeforeSync {
		return s.flushPending()
	}
	s.stats.UnsyncedSaves++
	if len(ents) > 0 {
		s.stats.DeferredSaves++
	}
	return nil
}

// flushPending moves every pending Save into the reference: an fsync of the log made them all
// durable (the WAL fsyncs a segment before it starts the next, so one fsync covers every write
// before it).
func (s *Store) flushPending() error {
	for _, p := range s.pending {
		if err := s.Storage.Save(p.hs, p.snap, p.ents, true); err != nil {
			return fmt.Errorf("walstore: reference: %w", err)
		}
	}
	s.pending = s.pending[:0]
	return nil
}

// CrashInNextSnapshot implements sim.SnapshotCrasher: one time in eight it arms a power
// loss before one of the next SaveSnapshot's disk operations (the snapshot file's create,
// write, fsync, rename and directory sync, the marker's write and fsync, the removal of the
// old file, segment removals); a point past its last operation does not fire.
func (s *Store) CrashInNextSnapshot() bool {
	if s.opts.NoFaults || s.rng.IntN(8) != 0 {
		return false
	}
	s.fs.CrashAfter(s.rng.IntN(12))
	s.armed = true
	return true
}

// SaveSnapshot persists a locally captured snapshot and releases the WAL segments it covers.
// An armed power loss that strikes makes it return an error wrapping sim.ErrPowerLoss; the
// recovery then finds the old snapshot or the new one, with a prefix of the Saves before it.
func (s *Store) SaveSnapshot(snap raft.Snapshot) error {
	err := s.saveSnapshot(snap) // CrashInNextSnapshot armed the crash point, if any
	return s.settle(err, &s.stats.SnapshotCrashes, "save snapshot")
}

func (s *Store) saveSnapshot(snap raft.Snapshot) error {
	if snap.Meta.Index <= s.Storage.SnapshotMeta().Index {
		return nil
	}
	// Recorded before any byte is written, after the unsynced Saves it follows: a crash may
	// keep a prefix of them, and the snapshot (a local one keeps the log after it, as the
	// reference's install of it does) only if its marker was written.
	c := snap
	c.Data = bytes.Clone(snap.Data)
	s.pending = append(s.pending, pendingSave{snap: &c})
	if err := s.writeSnapshot(snap); err != nil {
		return err
	}
	if err := s.flushPending(); err != nil { // the marker's fsync covered them all
		return err
	}
	if err := s.w.ReleaseTo(snap.Meta.Index); err != nil {
		return fmt.Errorf("walstore: release to %d: %w", snap.Meta.Index, err)
	}
	return nil
}

// Crash power-cycles the disk (unless a power loss inside a Save already did), recovers the WAL
// and the snapshot from it, checks them against the reference and the pending Saves, and makes
// them the store's state: what the node restarts from.
func (s *Store) Crash() error {
	if s.fs.Down() {
		s.fs.Restart()
	} else {
		s.fs.Crash()
	}
	s.armed = false
	s.stats.Recoveries++
	w, err := wal.Open(s.fs, walDir, s.walOpts)
	if err != nil {
		return fmt.Errorf("walstore: reopen after crash: %w", err)
	}
	s.w = w
	got, err := w.ReadAll()
	if err != nil {
		return fmt.Errorf("walstore: replay: %w", err)
	}
	rec := raft.PersistentState{HardState: got.HardState, Entries: got.Entries}
	keep := ""
	if got.Snapshot != nil {
		keep = snapName(*got.Snapshot)
		snap, err := readSnapshot(s.fs, *got.Snapshot)
		if err != nil {
			return err
		}
		rec.Snapshot = &snap
	}
	// Snapshot files newer than the marker were written by a Save the crash cut short.
	if err := s.removeSnapshotsExcept(keep); err != nil {
		return err
	}
	if !s.opts.noRecoveryCheck {
		if err := s.checkRecovered(rec); err != nil {
			return err
		}
	}
	ref := sim.NewMemStorage()
	if err := ref.Save(rec.HardState, rec.Snapshot, rec.Entries, true); err != nil {
		return fmt.Errorf("walstore: rebuild reference from the recovered state: %w", err)
	}
	s.Storage, s.pending, s.written = ref, s.pending[:0], rec.HardState
	return nil
}

// checkRecovered reports a recovered state that is not the reference plus a prefix of the
// pending Saves (see the package documentation).
func (s *Store) checkRecovered(rec raft.PersistentState) error {
	cand := sim.NewMemStorage()
	ref := s.Storage.Load()
	if err := cand.Save(ref.HardState, ref.Snapshot, ref.Entries, true); err != nil {
		return fmt.Errorf("walstore: copy reference: %w", err)
	}
	hsOK := func(h raft.HardState) bool { return h.Term == rec.HardState.Term && h.Vote == rec.HardState.Vote }
	termVote, commit := hsOK(ref.HardState), ref.HardState.Commit == rec.HardState.Commit
	// match is the last candidate log the recovered one equals (-1: none); steps counts them.
	match, steps := -1, 0
	try := func() {
		if sameLog(cand.Load(), rec) {
			match = steps
		}
		steps++
	}
	try()
	var final raft.HardState
	for _, p := range s.pending {
		if !p.hs.IsEmpty() {
			termVote = termVote || hsOK(p.hs)
			commit = commit || p.hs.Commit == rec.HardState.Commit
			final = p.hs
		}
		if p.snap != nil {
			// The WAL raises the HardState's term, with no vote, to a newer marker's.
			termVote = termVote || hsOK(raft.HardState{Term: p.snap.Meta.Term})
			if err := cand.Save(raft.HardState{}, p.snap, nil, true); err != nil {
				return fmt.Errorf("walstore: replay pending snapshot %d on the reference: %w", p.snap.Meta.Index, err)
			}
			try()
		}
		for k := range p.ents {
			if err := cand.Save(raft.HardState{}, nil, p.ents[k:k+1], true); err != nil {
				return fmt.Errorf("walstore: replay pending entry %d on the reference: %w", p.ents[k].Index, err)
			}
			try()
		}
	}
	logOK := match >= 0
	if logOK && len(s.pending) > 0 {
		hsAll := final.IsEmpty() || final == rec.HardState
		if match < steps-1 || !hsAll {
			s.stats.LostWrites++
		}
		if (match > 0 || rec.HardState != ref.HardState) && (match < steps-1 || !hsAll) {
			s.stats.TornSaves++
		}
	}
	if !logOK {
		return fmt.Errorf("walstore: recovered snapshot %d and entries %s are not the durable ones (snapshot %d, entries %s) "+
			"plus a prefix of the %d unsynced Saves", snapIndex(rec), span(rec.Entries), snapIndex(ref), span(ref.Entries), len(s.pending))
	}
	if !termVote || !commit {
		return fmt.Errorf("walstore: recovered HardState %+v is neither the durable one %+v nor one of the %d unsynced Saves'",
			rec.HardState, ref.HardState, len(s.pending))
	}
	return nil
}

func snapIndex(ps raft.PersistentState) uint64 {
	if ps.Snapshot == nil {
		return 0
	}
	return ps.Snapshot.Meta.Index
}

// sameLog reports whether a and b hold the same snapshot (metadata and data) and entries.
func sameLog(a, b raft.PersistentState) bool {
	if (a.Snapshot == nil) != (b.Snapshot == nil) {
		return false
	}
	if a.Snapshot != nil {
		am, bm := a.Snapshot.Meta, b.Snapshot.Meta
		if am.Index != bm.Index || am.Term != bm.Term || !bytes.Equal(a.Snapshot.Data, b.Snapshot.Data) ||
			!slices.Equal(am.ConfState.Voters, bm.ConfState.Voters) || !slices.Equal(am.ConfState.Learners, bm.ConfState.Learners) ||
			!slices.Equal(am.ConfState.VotersOutgoing, bm.ConfState.VotersOutgoing) ||
			!slices.Equal(am.ConfState.LearnersNext, bm.ConfState.LearnersNext) || am.ConfState.AutoLeave != bm.ConfState.AutoLeave {
			return false
		}
	}
	return slices.EqualFunc(a.Entries, b.Entries, func(x, y raft.Entry) bool {
		return x.Index == y.Index && x.Term == y.Term && x.Type == y.Type && bytes.Equal(x.Data, y.Data)
	})
}

func span(ents []raft.Entry) string {
	if len(ents) == 0 {
		return "[]"
	}
	return fmt.Sprintf("[%d..%d]", ents[0].Index, ents[len(ents)-1].Index)
}

func cloneEntries(ents []raft.Entry) []raft.Entry {
	if len(ents) == 0 {
		return nil
	}
	c := make([]raft.Entry, len(ents))
	for k, e := range ents {
		e.Data = bytes.Clone(e.Data)
		c[k] = e
	}
	return c
}

// encodeSnapshot frames a snapshot's identity with its data, so that a file holding another
// snapshot is detected.
func encodeSnapshot(snap raft.Snapshot) []byte {
	return append([]byte(fmt.Sprintf("%d@%d\n", snap.Meta.Index, snap.Meta.Term)), snap.Data...)
}

var errSnapshot = errors.New("walstore: snapshot file")

// readSnapshot reads back the snapshot the WAL's marker meta points at.
func readSnapshot(fsys vfs.FS, meta raft.SnapshotMeta) (raft.Snapshot, error) {
	name := snapName(meta)
	b, err := vfs.ReadFile(fsys, name)
	if err != nil {
		return raft.Snapshot{}, fmt.Errorf("walstore: read snapshot %d named by the WAL: %w", meta.Index, err)
	}
	hdr := fmt.Appendf(nil, "%d@%d\n", meta.Index, meta.Term)
	if !bytes.HasPrefix(b, hdr) {
		return raft.Snapshot{}, fmt.Errorf("%w %s does not hold snapshot %d@%d", errSnapshot, name, meta.Index, meta.Term)
	}
	return raft.Snapshot{Meta: meta, Data: b[len(hdr):]}, nil
}

var (
	_ sim.Storage     = (*Store)(nil)
	_ sim.SaveCrasher = (*Store)(nil)
)
