package fsm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/internal/node"
	"github.com/caucus/caucus/raft"
)

// StoreFile is the state machine's file in a member's data directory.
const StoreFile = "kv.db"

// Options configure the state machine of one member.
type Options struct {
	// ID is this member's id: Apply answers the proposals whose proposer it is.
	ID raft.NodeID
	// DataDir holds the state machine file (StoreFile).
	DataDir string
	// Store configures the key-value store. With Store.NoSync the file is committed without
	// fsync and guarded against a reboot (unsynced.go). Store.Limits apply until the log sets
	// replicated settings: give every member of a cluster the same (the release's defaults).
	Store mvcc.Options
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// FSM is the replicated key-value application. It implements node.StateMachine: every method
// but AppliedIndex and Store runs on the node's loop goroutine.
type FSM struct {
	id      raft.NodeID
	dataDir string
	store   *mvcc.Store
	noSync  bool
	log     *slog.Logger
	// batch holds applied, uncommitted entries; nil when everything applied is committed.
	batch *mvcc.Batch
}

var _ node.StateMachine = (*FSM)(nil)

// Open opens (creating if needed) the state machine file of a member. A file written without
// fsync before a reboot, or one bbolt cannot open, is moved aside (never deleted) and a new one
// is created: the node restores it from the snapshot and replays the log.
func Open(opts Options) (*FSM, error) {
	lg := opts.Logger
	if lg == nil {
		lg = slog.Default()
	}
	path := filepath.Join(opts.DataDir, StoreFile)
	if opts.Store.NoSync {
		if _, err := guardUnsynced(opts.DataDir, path, lg); err != nil {
			return nil, err
		}
	}
	if opts.Store.Logger == nil {
		opts.Store.Logger = lg
	}
	store, err := mvcc.Open(path, opts.Store)
	if errors.Is(err, mvcc.ErrCorrupt) {
		aside, merr := moveAside(path, "corrupt")
		if merr != nil {
			return nil, fmt.Errorf("fsm: move aside the corrupt state machine (%v): %w", err, merr)
		}
		lg.Error("the state machine file is corrupt; moved it aside, rebuilding it from the snapshot and the log",
			"moved_aside", aside, "err", err)
		store, err = mvcc.Open(path, opts.Store)
	}
	if err != nil {
		return nil, fmt.Errorf("fsm: open state machine: %w", err)
	}
	return &FSM{id: opts.ID, dataDir: opts.DataDir, store: store, noSync: opts.Store.NoSync, log: lg.With("component", "fsm")}, nil
}

// PersistedAppliedIndex reads the applied index of the state machine file in dataDir without
// opening it for writing (0 if there is none), for node.OpenConfig.PersistedApplied.
func PersistedAppliedIndex(dataDir string) (uint64, error) {
	return mvcc.ReadAppliedIndex(filepath.Join(dataDir, StoreFile))
}

// Store returns the key-value store, for reads. Safe from any goroutine.
func (f *FSM) Store() *mvcc.Store { return f.store }

// AppliedIndex implements node.StateMachine.
func (f *FSM) AppliedIndex() uint64 { return f.store.AppliedIndex() }

// Apply implements node.StateMachine: it decodes each entry and applies it in the open batch.
// The results of this member's proposals are mvcc.Result values (nil for a membership change).
func (f *FSM) Apply(ents []raft.Entry) ([]node.Applied, error) {
	var done []node.Applied
	for i := range ents {
		e := &ents[i]
		switch e.Type {
		case raft.EntryNormal:
			b := f.open()
			if len(e.Data) == 0 {
				b.Noop(e.Index) // a new leader's empty entry
				continue
			}
			var cmd logpb.Command
			if err := proto.Unmarshal(e.Data, &cmd); err != nil {
				return done, fmt.Errorf("fsm: decode committed entry %d (term %d): %w", e.Index, e.Term, err)
			}
			if err := logpb.CheckVersion(e.Index, &cmd); err != nil {
				return done, fmt.Errorf("fsm: %w", err)
			}
			res := applyCommand(b, e.Index, &cmd, len(e.Data))
			if raft.NodeID(cmd.Proposer) == f.id {
				done = append(done, node.Applied{ID: cmd.Id, Result: res})
			}
		case raft.EntryConfChange:
			pid, proposer, err := f.applyConfChange(e)
			if err != nil {
				return done, err
			}
			if proposer == f.id && pid != 0 {
				done = append(done, node.Applied{ID: pid})
			}
		default:
			return done, fmt.Errorf("fsm: committed entry %d has unknown type %d", e.Index, e.Type)
		}
	}
	return done, nil
}

// open returns the open batch, beginning one if there is none.
func (f *FSM) open() *mvcc.Batch {
	if f.batch == nil {
		f.batch = f.store.Begin()
	}
	return f.batch
}

// Commit implements node.StateMachine.
func (f *FSM) Commit() error {
	if f.batch == nil {
		return nil
	}
	b := f.batch
	f.batch = nil
	if err := b.Commit(); err != nil {
		return fmt.Errorf("fsm: commit applied entries: %w", err)
	}
	return nil
}

// Abort implements node.StateMachine.
func (f *FSM) Abort() {
	if f.batch != nil {
		f.batch.Rollback()
		f.batch = nil
	}
}

// PromptCommit implements node.PromptCommitter: when watchers select what the open batch wrote,
// or consumer fetches wait (they see writes only once committed to the store), the node commits
// sooner than its group-commit interval.
func (f *FSM) PromptCommit() bool { return f.batch != nil && f.batch.PromptReaders() }

// Sync implements node.StateMachine.
func (f *FSM) Sync() error { return f.store.Sync() }

// Snapshot implements node.StateMachine: a bbolt read view, written out as the file itself.
func (f *FSM) Snapshot() (node.SnapshotView, error) {
	s, err := f.store.BeginSnapshot()
	if err != nil {
		return nil, fmt.Errorf("fsm: open snapshot view: %w", err)
	}
	return snapshotView{s}, nil
}

type snapshotView struct{ s *mvcc.Snapshot }

func (v snapshotView) Index() uint64                      { return v.s.AppliedIndex() }
func (v snapshotView) Size() int64                        { return v.s.Size() }
func (v snapshotView) WriteTo(w io.Writer) (int64, error) { return v.s.WriteTo(w) }
func (v snapshotView) Close() error                       { v.s.Close(); return nil }

// Restore implements node.StateMachine.
func (f *FSM) Restore(meta raft.SnapshotMeta, size int64, r io.Reader) error {
	f.Abort()
	if err := f.store.Restore(io.LimitReader(r, size)); err != nil {
		return fmt.Errorf("fsm: restore snapshot at index %d: %w", meta.Index, err)
	}
	if got := f.store.AppliedIndex(); got != meta.Index {
		return fmt.Errorf("fsm: snapshot at index %d holds a state machine at applied index %d", meta.Index, got)
	}
	return nil
}

// Close implements node.StateMachine. With an unsynced store it syncs and disarms the reboot
// guard, so that the next start trusts the file.
func (f *FSM) Close() error {
	f.Abort()
	if f.noSync {
		return errors.Join(releaseUnsynced(f.dataDir, f.store), f.store.Close())
	}
	return f.store.Close()
}
