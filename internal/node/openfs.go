package node

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/caucus/caucus/internal/snap"
	"github.com/caucus/caucus/internal/vfs"
	"github.com/caucus/caucus/internal/wal"
	"github.com/caucus/caucus/raft"
)

// FSOpen is what OpenFS needs besides an OpenConfig.
type FSOpen struct {
	// FS holds the data directory (the log and the snapshots): a simulated disk, typically.
	FS vfs.FS
	// StateMachine is the member's application, as it survived the last stop: the node
	// replays the log after its AppliedIndex, restoring it from the snapshot first if it lags.
	StateMachine StateMachine
	// WrapLog, if set, wraps the opened log, so that a test or the simulator sees every write
	// and sync the node makes.
	WrapLog func(LogStore) LogStore
}

// OpenFS opens a member like Open, with its log and snapshots on o.FS and o.StateMachine, already
// open, as its application. It is how the simulator runs real members on simulated disks: it
// takes no lock, and OpenConfig's OpenStateMachine and PersistedApplied are not used. The node
// is not started: attach a transport with SetTransport, then Start it or drive it (Driver).
func OpenFS(cfg OpenConfig, o FSOpen) (*Node, error) {
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	fsys, sm := o.FS, o.StateMachine
	logDir := cfg.WALDir
	if logDir == "" {
		logDir = walDir(cfg.DataDir)
	}
	for _, d := range []string{cfg.DataDir, logDir, snapDir(cfg.DataDir)} {
		if err := vfs.MkdirAllDurable(fsys, d, 0o700); err != nil {
			return nil, fmt.Errorf("node: create data directory %s: %w", d, err)
		}
	}
	wopts := cfg.WALOptions
	wopts.Logger = lg
	w, err := wal.Open(fsys, logDir, wopts)
	if err != nil {
		return nil, fmt.Errorf("node: open log: %w", err)
	}
	rs, err := w.ReadAll()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("node: read log: %w", err), w.Close())
	}
	snaps, err := snap.New(fsys, snapDir(cfg.DataDir), snap.Options{Logger: lg})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("node: open snapshots: %w", err), w.Close())
	}
	snapshot, err := restoreState(snaps, rs, sm, logDir, lg)
	if err != nil {
		return nil, errors.Join(err, w.Close())
	}
	rn, cfg, snapIndex, err := startRaft(cfg, rs, snapshot, sm.AppliedIndex(), lg)
	if err != nil {
		return nil, errors.Join(err, w.Close())
	}
	var log LogStore = w
	if o.WrapLog != nil {
		log = o.WrapLog(w)
	}
	n := newNode(cfg.Config, rn, log, snaps, sm, nil, cfg.Raft.Applied, snapIndex)
	n.fs = fsys
	n.snapDir = snapDir(cfg.DataDir)
	n.closers = append(n.closers, w.Close, sm.Close)
	return n, nil
}

// startRaft starts the Raft core from the log's state rs, the newest recorded snapshot (if
// any) and the state machine's applied index, bootstrapping a new cluster when the member has
// no state and cfg.NewCluster says so. It returns the core, cfg completed with the core's
// configuration, and the snapshot's index.
func startRaft(cfg OpenConfig, rs wal.State, snapshot *raft.Snapshot, applied uint64, lg *slog.Logger) (*raft.Node, OpenConfig, uint64, error) {
	var snapIndex uint64
	ents := rs.Entries
	if snapshot != nil {
		snapIndex = snapshot.Meta.Index
		// The log may still hold entries the snapshot covers (segments are released lazily).
		i := 0
		for i < len(ents) && ents[i].Index <= snapIndex {
			i++
		}
		ents = ents[i:]
	}
	ps := raft.PersistentState{HardState: rs.HardState, Snapshot: snapshot, Entries: ents}
	rc := cfg.Raft
	rc.SnapshotReceiveOutside = true // see snaprecv.go
	rc.Applied = max(applied, snapIndex)
	if rc.Applied > rs.HardState.Commit && rs.HardState.Commit != 0 {
		// Applied entries were committed; a HardState that lags them was not synced yet when
		// the process died. Raft's commit index only moves forward, so trust the state machine.
		ps.HardState.Commit = rc.Applied
	}
	rc.InitialVoters = nil
	if fresh := rs.HardState.IsEmpty() && len(rs.Entries) == 0 && snapshot == nil; fresh && cfg.NewCluster {
		ids := make([]raft.NodeID, 0, len(cfg.InitialMembers))
		for _, m := range sortedMembers(cfg.InitialMembers) {
			ids = append(ids, m.ID)
		}
		rc.InitialVoters, rc.InitialContext = ids, cfg.BootstrapContext
		lg.Info("bootstrapping a new cluster", "members", len(ids))
	}
	if cfg.CommitBroadcastDelay == 0 {
		cfg.CommitBroadcastDelay = DefaultCommitBroadcastDelay
	}
	rc.DeferCommitBroadcast = cfg.CommitBroadcastDelay > 0
	rc.DeferLeaderSync = cfg.LeaderSyncDelay > 0
	cfg.Raft = rc
	rn, err := raft.New(rc, ps)
	if err != nil {
		return nil, cfg, 0, fmt.Errorf("node: start raft: %w", err)
	}
	lg.Info("opened member state", "dir", cfg.DataDir, "term", ps.HardState.Term, "commit", ps.HardState.Commit,
		"applied", rc.Applied, "snapshot", snapIndex, "entries", len(ents))
	return rn, cfg, snapIndex, nil
}
