package node

import (
	"fmt"
	"io"
	"runtime"

	"github.com/caucus/caucus/internal/cmdpb"
	"github.com/caucus/caucus/raft"
)

// The node drives either the key-value store (*mvcc.Store, the production member today) or any
// application behind the StateMachine interface (statemachine.go; the simulator's in-memory
// state machine, opened by OpenFS). This file is the StateMachine side of the apply path: it
// keeps the key-value side's structure (entries applied into pending state, committed in
// groups by the commit timer or a waiting read, a configuration change committed on its own,
// snapshots opened in the loop and written in the background) with the StateMachine's calls in
// place of the store's.

// smPath is the node's StateMachine, if it runs one.
type smPath struct {
	sm StateMachine
	// open: entries were applied and not yet committed (the commit timer runs).
	open bool
	// restored: a snapshot was installed and nothing applied since (DriverBugs).
	restored bool
}

// uncommitted reports whether applied entries wait for their state-machine commit.
func (n *Node) uncommitted() bool { return n.batch != nil || n.smp.open }

// visibleIndex is the applied index readers of the state machine see.
func (n *Node) visibleIndex() uint64 {
	if n.smp.sm != nil {
		return n.smp.sm.AppliedIndex()
	}
	return n.store.AppliedIndex()
}

// applySM applies committed entries to the StateMachine's pending state and answers the
// proposals this member made. A configuration change is committed on its own, after everything
// before it, so that Peers reflects it.
func (n *Node) applySM(ents []raft.Entry) error {
	if n.cfg.Bugs.AnswerBeforeApply {
		n.answerCommitted(ents) // planted bug: answered before Apply
	}
	n.failLost(n.lostProposals(ents))
	i := 0
	for i < len(ents) && ents[i].Index <= n.applied {
		i++
	}
	ents = ents[i:]
	if len(ents) > 0 && n.smp.restored && n.cfg.Bugs.SkipApplyAfterSnapshot {
		n.applied, n.appliedTerm = ents[0].Index, ents[0].Term // planted bug: never applied
		ents = ents[1:]
	}
	for len(ents) > 0 {
		k := 0
		for k < len(ents)-1 && ents[k].Type != raft.EntryConfChange {
			k++
		}
		chunk := ents[:k+1]
		ents = ents[k+1:]
		if !n.smp.open {
			n.smp.open = true
			n.batchLen = 0
			n.commitTimer.Reset(n.cfg.ApplyCommitInterval)
		}
		done, err := n.smp.sm.Apply(chunk)
		if err != nil {
			n.abortSM()
			return fmt.Errorf("node: apply committed entries %d..%d: %w", chunk[0].Index, chunk[len(chunk)-1].Index, err)
		}
		n.smp.restored = false
		last := chunk[len(chunk)-1]
		n.batchLen += len(chunk)
		n.applied, n.appliedTerm = last.Index, last.Term
		if last.Type == raft.EntryConfChange {
			if err := n.commitSM(); err != nil {
				return err
			}
			if err := n.confChangedSM(last); err != nil {
				return err
			}
		}
		n.answer(done)
	}
	return nil
}

// answer hands the state machine's results to the proposals waiting for them.
func (n *Node) answer(done []Applied) {
	if len(done) == 0 {
		return
	}
	n.mu.Lock()
	for _, a := range done {
		if p, ok := n.waiters[a.ID]; ok {
			// Never block the loop: a proposal delivered twice (a forwarded proposal the
			// network duplicated) is applied twice, and only its first result is its answer.
			select {
			case p.done <- proposalResult{val: a.Result}:
			default:
			}
		}
	}
	n.mu.Unlock()
	// Let the woken requests answer their clients before the loop's next fsync (see send).
	runtime.Gosched()
}

// answerCommitted is DriverBugs.AnswerBeforeApply: it answers the proposals this member
// appended at the indexes of ents, without a result, before they are applied.
func (n *Node) answerCommitted(ents []raft.Entry) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, e := range ents {
		a, ok := n.appendedAt[e.Index]
		if !ok || a.term != e.Term || e.Index <= n.applied {
			continue
		}
		if p, ok := n.waiters[a.id]; ok {
			select {
			case p.done <- proposalResult{}:
			default:
			}
			delete(n.waiters, a.id) // the real answer finds no one waiting
		}
	}
}

// confChangedSM updates the transport after a configuration change was applied and committed.
func (n *Node) confChangedSM(e raft.Entry) error {
	cc, err := raft.DecodeConfChange(e.Data)
	if err != nil {
		return fmt.Errorf("node: decode committed conf change %d: %w", e.Index, err)
	}
	for _, ch := range cc.Changes {
		if ch.Type == raft.ConfChangeRemoveNode && ch.NodeID != n.id {
			n.trans.RemovePeer(ch.NodeID)
		}
	}
	n.syncPeersSM()
	n.log.Info("applied membership change", "index", e.Index, "changes", len(cc.Changes))
	return nil
}

// commitSM commits what was applied and releases the linearizable reads it satisfies.
func (n *Node) commitSM() error {
	if !n.smp.open {
		return nil
	}
	n.smp.open, n.batchLen = false, 0
	n.commitTimer.Stop()
	if err := n.smp.sm.Commit(); err != nil {
		return fmt.Errorf("node: commit applied entries up to %d to the state machine: %w", n.applied, err)
	}
	n.reads.release(n.smp.sm.AppliedIndex())
	return nil
}

// abortSM discards applied, uncommitted entries after a fatal error.
func (n *Node) abortSM() {
	if n.smp.open {
		n.smp.sm.Abort()
		n.smp.open, n.batchLen = false, 0
		n.commitTimer.Stop()
	}
}

// syncPeersSM makes the transport's peer set match the members the state machine knows.
func (n *Node) syncPeersSM() {
	for id, urls := range n.smp.sm.Peers() {
		if id == n.id {
			continue
		}
		n.trans.AddPeer(id, n.cfg.PeerAddr(&cmdpb.MemberContext{Id: uint64(id), PeerUrls: urls}))
	}
}

// restore replaces the state machine with a received snapshot's data.
func (n *Node) restore(meta raft.SnapshotMeta, size int64, r io.Reader) error {
	if n.smp.sm != nil {
		n.smp.restored = true
		return n.smp.sm.Restore(meta, size, r)
	}
	return n.store.Restore(r)
}

// snapshotView is a consistent view of the committed state, written out by writeSnapshot.
type snapshotView interface {
	AppliedIndex() uint64
	Size() int64
	WriteTo(w io.Writer) (int64, error)
	Close()
}

// openSnapshotView opens a view of the state machine at its applied index.
func (n *Node) openSnapshotView() (snapshotView, error) {
	if n.smp.sm != nil {
		v, err := n.smp.sm.Snapshot()
		if err != nil {
			return nil, err
		}
		return smView{v, n}, nil
	}
	return n.store.BeginSnapshot()
}

// syncStateMachine makes the state machine's committed state durable against a power loss.
func (n *Node) syncStateMachine() error {
	if n.smp.sm != nil {
		return n.smp.sm.Sync()
	}
	return n.store.Sync()
}

// smView adapts a SnapshotView to snapshotView.
type smView struct {
	SnapshotView
	n *Node
}

func (v smView) AppliedIndex() uint64 { return v.Index() }

func (v smView) Close() {
	if err := v.SnapshotView.Close(); err != nil {
		v.n.log.Warn("closing a state machine snapshot view", "err", err)
	}
}
