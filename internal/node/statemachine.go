package node

import (
	"io"

	"github.com/caucus/caucus/raft"
)

// StateMachine is the replicated application the node drives: it receives every committed
// entry, normal and configuration change, in log order, and answers the proposals this member
// made. The node knows nothing of what an entry means; the application decodes its own log
// format (internal/fsm).
//
// Every method except AppliedIndex is called from the node's loop goroutine only, never
// concurrently with another. AppliedIndex may be called from any goroutine.
//
// The contract, in the order the node relies on it:
//
//   - Apply takes committed entries in index order, without gaps, starting right after the
//     index the state machine had applied when the node opened it (AppliedIndex then, or the
//     index of the last Restore). It never sees an index twice. It applies them to pending
//     state: invisible to readers and lost by a crash until Commit. Configuration-change entries
//     (raft.EntryConfChange) are applied too, to record membership; the Raft core switches its
//     configuration by itself when the node advances past them. An error is fatal: the node
//     stops, calls Abort, and the log replays the entries on the next start.
//   - Apply returns, for each applied entry that answers a proposal made through this node
//     (Node.Propose or Node.ProposeConfChange, matched by the id the application put in the
//     entry), the proposal id and its result. The node hands the result to the waiting caller
//     as is, only after Apply returned.
//   - Commit makes everything applied so far visible to readers and durable against a process
//     crash (not necessarily a power loss). AppliedIndex moves only on Commit and Restore: it
//     is what readers see, and what the node's linearizable reads wait for.
//   - Sync makes everything committed durable against a power loss. The node calls it before a
//     snapshot lets the log drop entries.
//   - Snapshot opens a consistent view of the committed state at AppliedIndex, which may be
//     written out on another goroutine while the loop keeps applying and committing.
//   - Restore replaces the whole state with a snapshot's data (size bytes from r) taken at
//     meta.Index; nothing is pending when it is called. Afterwards AppliedIndex is meta.Index.
//   - Peers returns the peer URLs of every member the committed state knows, so that the node's
//     transport reaches them; it is read after Restore, and after a batch with a configuration
//     change, which the node commits first. A state machine that knows no members (nil) leaves
//     the transport's peers as they are.
//   - Close releases the state machine once the loop has exited.
type StateMachine interface {
	Apply(ents []raft.Entry) ([]Applied, error)
	Commit() error
	Abort()
	AppliedIndex() uint64
	Sync() error
	Snapshot() (SnapshotView, error)
	Restore(meta raft.SnapshotMeta, size int64, r io.Reader) error
	Peers() map[raft.NodeID][]string
	Close() error
}

// SnapshotView is a read-only view of a state machine's committed state, taken by
// StateMachine.Snapshot. WriteTo and Close are called from one goroutine, not necessarily the
// loop's.
type SnapshotView interface {
	// Index is the applied index the view reflects.
	Index() uint64
	// Size is the exact number of bytes WriteTo writes.
	Size() int64
	WriteTo(w io.Writer) (int64, error)
	Close() error
}

// Applied is the result of one proposal made through this node, returned by
// StateMachine.Apply.
type Applied struct {
	// ID is the proposal id given to Node.Propose or Node.ProposeConfChange.
	ID uint64
	// Result is handed to the waiting caller as it is.
	Result any
}

// PromptCommitter is implemented by a state machine whose readers wait for commits (watchers of
// new revisions): asked after each Apply, on the loop, whether readers wait for what was applied
// since it last answered, it makes the node commit the group within
// Config.PromptCommitInterval instead of Config.ApplyCommitInterval. It must be cheap.
type PromptCommitter interface {
	PromptCommit() bool
}
