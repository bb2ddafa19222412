package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/caucus/caucus/internal/snap"
	"github.com/caucus/caucus/internal/vfs"
	"github.com/caucus/caucus/internal/wal"
	"github.com/caucus/caucus/raft"
)

// Member describes one member of the initial cluster.
type Member struct {
	ID       raft.NodeID
	Name     string
	PeerURLs []string
}

// OpenConfig says where a member keeps its data and how it joins.
type OpenConfig struct {
	Config
	DataDir string
	// WALDir holds the log; empty means DataDir/wal.
	WALDir string
	// NewCluster bootstraps a brand-new cluster from InitialMembers when the data dir is empty.
	// Otherwise the member waits to be sent the log (or a snapshot) by the leader.
	NewCluster     bool
	InitialMembers []Member
	// BootstrapContext is the Context of the bootstrap configuration change (log entry 1) of a
	// new cluster, in the application's format: every initial member must give identical bytes.
	BootstrapContext []byte
	// PersistedApplied reads the index the state machine has applied on disk without creating
	// or changing anything (0 if it has no state), so that a lost log is refused before
	// anything is written. Nil: 0.
	PersistedApplied func() (uint64, error)
	// OpenStateMachine opens the state machine once the log directory is locked. The node owns
	// it from then on and closes it after its loop exits (or if Open fails).
	OpenStateMachine func() (StateMachine, error)
	WALOptions       wal.Options
}

// Open opens (or creates) a member's data directory and restores its state: the newest valid
// snapshot, the log after it and the state machine. The node is not started: the caller creates
// the transport (which needs the node to deliver messages to), attaches it with SetTransport, and
// then calls Start.
func Open(cfg OpenConfig) (*Node, error) {
	if cfg.OpenStateMachine == nil {
		return nil, errors.New("node: OpenConfig.OpenStateMachine is nil")
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	fs := vfs.NewOS()
	logDir := cfg.WALDir
	if logDir == "" {
		logDir = walDir(cfg.DataDir)
	} else if err := checkNoOwnLog(cfg.DataDir, logDir); err != nil {
		return nil, err
	}
	for _, d := range []string{cfg.DataDir, logDir, snapDir(cfg.DataDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("node: create data directory %s: %w", d, err)
		}
	}
	unlock, err := lockLogDir(logDir)
	if err != nil {
		return nil, err
	}
	if err := checkLogNotLost(logDir, cfg.PersistedApplied); err != nil {
		unlock()
		return nil, err
	}
	wopts := cfg.WALOptions
	wopts.Logger = lg
	w, err := wal.Open(fs, logDir, wopts)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("node: open log: %w", err)
	}
	// Closing the log releases its lock, on every path from here on.
	closeLog := func() error { return errors.Join(w.Close(), unlock()) }
	rs, err := w.ReadAll()
	if err != nil {
		closeLog()
		return nil, fmt.Errorf("node: read log: %w", err)
	}
	snaps, err := snap.New(fs, snapDir(cfg.DataDir), snap.Options{Logger: lg})
	if err != nil {
		closeLog()
		return nil, fmt.Errorf("node: open snapshots: %w", err)
	}
	sm, err := cfg.OpenStateMachine()
	if err != nil {
		closeLog()
		return nil, fmt.Errorf("node: %w", err)
	}
	fail := func(err error) (*Node, error) {
		sm.Close()
		closeLog()
		return nil, err
	}
	snapshot, err := restoreState(snaps, rs, sm, logDir, lg)
	if err != nil {
		return fail(err)
	}
	rn, cfg, snapIndex, err := startRaft(cfg, rs, snapshot, sm.AppliedIndex(), lg)
	if err != nil {
		return fail(err)
	}
	n := newNode(cfg.Config, rn, w, snaps, sm, nil, cfg.Raft.Applied, snapIndex)
	n.snapDir = snapDir(cfg.DataDir)
	n.closers = append(n.closers, closeLog, sm.Close)
	return n, nil
}

// restoreState opens the newest snapshot the log (rs) records and brings sm up to it if it
// lags (it syncs lazily, or was rebuilt: the snapshot and the log are the source of truth; the
// log after the snapshot is replayed once the node runs). The snapshot's data stays on disk:
// the Raft core keeps only its metadata and size, reads chunks back when a follower needs them,
// and the state machine is restored by streaming. It refuses a log without records beside a
// state machine that applied entries by itself (checkLogNotLost's case for a log directory
// holding segments without records; not after a restore from the snapshot file alone).
func restoreState(snaps *snap.Store, rs wal.State, sm StateMachine, logDir string, lg *slog.Logger) (*raft.Snapshot, error) {
	appliedAtOpen := sm.AppliedIndex()
	var snapshot *raft.Snapshot
	snapRd, err := openRecordedSnapshot(snaps, rs.Snapshot, lg)
	switch {
	case err == nil:
		defer snapRd.Close()
		snapshot = &raft.Snapshot{Meta: snapRd.Meta, Size: snapRd.Size}
		if appliedAtOpen < snapshot.Meta.Index {
			size := int64(snapRd.Size)
			if err := sm.Restore(snapshot.Meta, size, io.NewSectionReader(snapRd, 0, size)); err != nil {
				return nil, fmt.Errorf("node: restore state machine from snapshot %d: %w", snapshot.Meta.Index, err)
			}
		}
	case errors.Is(err, snap.ErrNoSnapshot):
	default:
		return nil, fmt.Errorf("node: load snapshot: %w", err)
	}
	if rs.HardState.IsEmpty() && len(rs.Entries) == 0 && rs.Snapshot == nil && appliedAtOpen > 0 {
		return nil, lostLogError(logDir, appliedAtOpen)
	}
	return snapshot, nil
}

// SetTransport attaches the peer transport; it must be called before Start. The node adds every
// known member as a peer.
func (n *Node) SetTransport(t Transport, initial []Member) {
	n.trans = t
	for _, m := range initial {
		if m.ID != n.id {
			addr := n.cfg.PeerAddr(m.PeerURLs)
			t.AddPeer(m.ID, addr)
			n.peers[m.ID] = addr
		}
	}
	n.syncPeers()
}

func walDir(dataDir string) string { return filepath.Join(dataDir, "wal") }

// openRecordedSnapshot opens the newest snapshot the log records. A snapshot file is saved first
// and recorded in the log after, so a member stopped between the two (a crash while installing
// a snapshot from the leader, or while taking one) has a file newer than the log's record. The
// log is compacted only past a recorded snapshot, so it still holds what such a file covers:
// the file is not needed, and loading it would pair it with a log and HardState that know
// nothing of it (a new member would start with a term 0 below the snapshot's term). It is set
// aside as .unrecorded, so that pruning, which keeps the newest few files, never counts it in
// place of the recorded one.
func openRecordedSnapshot(snaps *snap.Store, recorded *raft.SnapshotMeta, lg *slog.Logger) (*snap.Reader, error) {
	for {
		r, err := snaps.Open()
		if err != nil || (recorded != nil && r.Meta.Index <= recorded.Index) {
			return r, err
		}
		r.Close()
		var recordedIndex uint64
		if recorded != nil {
			recordedIndex = recorded.Index
		}
		lg.Warn("setting aside a snapshot file the log does not record (saved just before the member stopped)",
			"index", r.Meta.Index, "term", r.Meta.Term, "recorded_index", recordedIndex)
		if err := snaps.SetAside(r.Meta.Index, r.Meta.Term, unrecordedSuffix); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
}

// lockFileName is the file, in the log directory, that a running member holds locked
// (lockLogDir; not on platforms without flock).
const lockFileName = "LOCK"

// unrecordedSuffix marks a snapshot file set aside because the log does not record it.
const unrecordedSuffix = ".unrecorded"

// checkLogNotLost refuses to start with no log beside a state machine that applied entries. A
// member applies only what its log held first, and its log keeps its HardState (term, vote) for
// good, so that means the log was lost or this is the wrong one (--wal-dir): starting would
// forget the vote and could help elect two leaders in one term. It runs before the log is
// created, so that a refused start leaves nothing behind. (A snapshot file alone is not
// evidence: a new member that crashed while installing its first snapshot has one, and had voted
// for nothing.)
func checkLogNotLost(logDir string, persistedApplied func() (uint64, error)) error {
	segs, err := filepath.Glob(filepath.Join(logDir, "*.wal"))
	if err != nil || len(segs) > 0 || persistedApplied == nil {
		return nil
	}
	applied, err := persistedApplied()
	if err != nil || applied == 0 {
		return nil // no state, or a state machine its Open will deal with (a corrupt one is rebuilt)
	}
	return lostLogError(logDir, applied)
}

func lostLogError(logDir string, applied uint64) error {
	return fmt.Errorf("node: the log in %s is empty, but the state machine has applied up to index %d: "+
		"the member lost its log or was started with the wrong --wal-dir; restore the log, "+
		"or remove the member from the cluster and add it back with an empty data directory",
		logDir, applied)
}

// checkNoOwnLog refuses a separate log directory while the data directory still has a log of its
// own: that is a member moved to --wal-dir without moving its log, which would start from the
// other, probably empty, log.
func checkNoOwnLog(dataDir, logDir string) error {
	own := walDir(dataDir)
	if filepath.Clean(logDir) == filepath.Clean(own) {
		return nil
	}
	files, err := os.ReadDir(own)
	files = slices.DeleteFunc(files, func(f os.DirEntry) bool { return f.Name() == lockFileName })
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("node: check for a log in %s: %w", own, err)
	case len(files) > 0:
		return fmt.Errorf("node: the log directory is %s (--wal-dir), but %s holds a log too: move its files to %s, or start without --wal-dir", logDir, own, logDir)
	}
	return nil
}
func snapDir(dataDir string) string { return filepath.Join(dataDir, "snap") }

// sortedMembers orders members by id: bootstrap data must be identical on every initial member.
func sortedMembers(ms []Member) []Member {
	out := append([]Member(nil), ms...)
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
