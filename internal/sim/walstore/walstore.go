// Package walstore is a durable store for internal/sim's simulated nodes built from caucus's real
// persistence: the write-ahead log (internal/wal) on the simulated disk (internal/vfs.Sim).
// Plugged in through sim.Options.NewStorage, it puts the WAL under every crash the simulator
// injects.
//
// The store keeps a reference copy of what it has made durable (sim.NewMemStorage, which also
// serves the simulator's checkers), and at every crash it crashes the simulated disk, reopens
// the WAL, replays it and requires the replay to equal the reference exactly: HardState,
// snapshot (metadata and data) and every entry. A difference is a WAL bug (or a disk model bug),
// reported as a sim.StorageFault violation.
//
// Every Save is synced, so a crash may not lose any of it; the torn-write model of vfs.Sim
// therefore only applies to the writes the WAL does not sync itself (segment preparation).
package walstore

import (
	"bytes"
	"fmt"
	"log/slog"

	"github.com/caucus/caucus/internal/sim"
	"github.com/caucus/caucus/internal/vfs"
	"github.com/caucus/caucus/internal/wal"
	"github.com/caucus/caucus/raft"
)

const (
	walDir   = "wal"
	snapFile = "snapshot" // the latest snapshot's data, replaced atomically
	// segmentBytes is small so that runs roll and release segments often.
	segmentBytes = wal.MinSegmentBytes * 4
)

// Store is a sim.Storage over a WAL on a simulated disk.
type Store struct {
	sim.Storage // the reference: what has been made durable
	fs          *vfs.Sim
	w           *wal.WAL
	opts        wal.Options
}

// New opens an empty store on a fresh simulated disk seeded by seed.
func New(seed uint64) (*Store, error) {
	fs := vfs.NewSim(seed)
	fs.SetTornWrites(true)
	s := &Store{Storage: sim.NewMemStorage(), fs: fs,
		opts: wal.Options{SegmentBytes: segmentBytes, Logger: slog.New(slog.DiscardHandler)}}
	w, err := wal.Open(fs, walDir, s.opts)
	if err != nil {
		return nil, fmt.Errorf("walstore: open: %w", err)
	}
	s.w = w
	return s, nil
}

// Factory returns a sim.Options.NewStorage that gives each node its own disk, seeded from seed
// and the node ID. A store that cannot even be created panics: the simulator reports panics as
// violations with the seed.
func Factory(seed uint64) func(id raft.NodeID) sim.Storage {
	return func(id raft.NodeID) sim.Storage {
		s, err := New(seed*1_000_003 + uint64(id))
		if err != nil {
			panic(err)
		}
		return s
	}
}

func (s *Store) writeSnapshot(snap raft.Snapshot) error {
	// The data must be durable before the WAL's marker points at it.
	if err := vfs.WriteFileDurable(s.fs, snapFile, encodeSnapshot(snap)); err != nil {
		return fmt.Errorf("walstore: write snapshot %d: %w", snap.Meta.Index, err)
	}
	if err := s.w.SaveSnapshot(snap.Meta); err != nil {
		return fmt.Errorf("walstore: snapshot marker %d: %w", snap.Meta.Index, err)
	}
	return nil
}

// Save persists a Ready: snapshot data and marker first, then entries and HardState in one
// synced WAL write.
func (s *Store) Save(hs raft.HardState, snap *raft.Snapshot, ents []raft.Entry) error {
	if snap != nil && !snap.IsEmpty() {
		if err := s.writeSnapshot(*snap); err != nil {
			return err
		}
	}
	if err := s.w.Save(hs, ents, true); err != nil {
		return fmt.Errorf("walstore: save: %w", err)
	}
	return s.Storage.Save(hs, snap, ents)
}

// SaveSnapshot persists a locally captured snapshot and releases the WAL segments it covers.
func (s *Store) SaveSnapshot(snap raft.Snapshot) error {
	if snap.Meta.Index <= s.Storage.SnapshotMeta().Index {
		return nil
	}
	if err := s.writeSnapshot(snap); err != nil {
		return err
	}
	if err := s.w.ReleaseTo(snap.Meta.Index); err != nil {
		return fmt.Errorf("walstore: release to %d: %w", snap.Meta.Index, err)
	}
	return s.Storage.SaveSnapshot(snap)
}

// Crash power-cycles the disk, replays the WAL and checks the replay against the reference.
func (s *Store) Crash() error {
	s.fs.Crash()
	w, err := wal.Open(s.fs, walDir, s.opts)
	if err != nil {
		return fmt.Errorf("walstore: reopen after crash: %w", err)
	}
	s.w = w
	got, err := w.ReadAll()
	if err != nil {
		return fmt.Errorf("walstore: replay: %w", err)
	}
	want := s.Storage.Load()
	if got.HardState != want.HardState {
		return fmt.Errorf("walstore: replayed HardState %+v, durable was %+v", got.HardState, want.HardState)
	}
	switch {
	case (got.Snapshot == nil) != (want.Snapshot == nil):
		return fmt.Errorf("walstore: replayed snapshot %v, durable was %v", got.Snapshot != nil, want.Snapshot != nil)
	case got.Snapshot != nil:
		if got.Snapshot.Index != want.Snapshot.Meta.Index || got.Snapshot.Term != want.Snapshot.Meta.Term {
			return fmt.Errorf("walstore: replayed snapshot %d@%d, durable was %d@%d", got.Snapshot.Index,
				got.Snapshot.Term, want.Snapshot.Meta.Index, want.Snapshot.Meta.Term)
		}
		b, err := vfs.ReadFile(s.fs, snapFile)
		if err != nil {
			return fmt.Errorf("walstore: read snapshot: %w", err)
		}
		if !bytes.Equal(b, encodeSnapshot(*want.Snapshot)) {
			return fmt.Errorf("walstore: snapshot file does not hold snapshot %d", want.Snapshot.Meta.Index)
		}
	}
	if len(got.Entries) != len(want.Entries) {
		return fmt.Errorf("walstore: replayed %d entries %s, durable were %d %s", len(got.Entries), span(got.Entries),
			len(want.Entries), span(want.Entries))
	}
	for k, e := range got.Entries {
		d := want.Entries[k]
		if e.Index != d.Index || e.Term != d.Term || e.Type != d.Type || !bytes.Equal(e.Data, d.Data) {
			return fmt.Errorf("walstore: replayed entry %d@%d differs from durable %d@%d", e.Index, e.Term, d.Index, d.Term)
		}
	}
	return nil
}

func span(ents []raft.Entry) string {
	if len(ents) == 0 {
		return "[]"
	}
	return fmt.Sprintf("[%d..%d]", ents[0].Index, ents[len(ents)-1].Index)
}

// encodeSnapshot frames a snapshot's identity with its data, so that a stale file is detected.
func encodeSnapshot(snap raft.Snapshot) []byte {
	return append([]byte(fmt.Sprintf("%d@%d\n", snap.Meta.Index, snap.Meta.Term)), snap.Data...)
}

var _ sim.Storage = (*Store)(nil)
