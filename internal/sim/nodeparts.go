package sim

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/caucus/caucus/internal/node"
	"github.com/caucus/caucus/raft"
)

// The pieces a real internal/node member runs on in the simulator (nodedriver.go): its state
// machine, the observer of its log and the executor of its background work (its time is a
// node.ManualClock).

// appSM is a member's application as the node driver sees it: memSM (the register map) or, with
// Options.StateMachine = SMFSM, fsmSM (the real internal/fsm).
type appSM interface {
	node.StateMachine
	// appliedAt returns the index at which this incarnation applied proposal id (first).
	appliedAt(id uint64) (uint64, bool)
	// lastConf is the index of the last configuration change applied here.
	lastConf() uint64
	// probed reports whether the committed state holds the liveness probe.
	probed() bool
	// kill drops the state machine with its process (kill -9): what is pending is lost, what is
	// committed stays, unless powerLoss, when the machine's unsynced state is lost too.
	kill(powerLoss bool)
}

// memSM is a member's application: the simulator's register map (kv) behind node.StateMachine,
// checked as it applies. Applied entries are pending until Commit; the committed image is what
// survives a process crash (the member's image field), as a state machine committed without
// fsync survives in the page cache; a power loss loses it, as the production member discards
// its state machine after a reboot (internal/fsm/unsynced.go) and rebuilds it from the
// snapshot and the log.
type memSM struct {
	r       *nodeRun
	m       *member
	cur     *kv           // everything applied, pending included
	visible atomic.Uint64 // the applied index of the committed image
	// ids maps the proposal ids applied here (pending included) to their index, so that an
	// answer can be checked against what was applied.
	ids map[uint64]uint64
	// confApplied is the index of the last configuration change applied here.
	confApplied uint64
}

func newMemSM(r *nodeRun, m *member) (*memSM, error) {
	sm := &memSM{r: r, m: m, cur: newKV(), ids: map[uint64]uint64{}}
	if m.image != nil {
		img, err := decodeKV(m.image)
		if err != nil {
			return nil, fmt.Errorf("decoding the committed state machine image: %w", err)
		}
		sm.cur = img
	}
	sm.visible.Store(sm.cur.applied)
	return sm, nil
}

// Write values name their proposal: "<id>@<proposer>/<tag>".
func writeValue(id uint64, proposer raft.NodeID, tag string) string {
	return fmt.Sprintf("%d@%d/%s", id, proposer, tag)
}

func parseWriteValue(val string) (id uint64, proposer raft.NodeID, ok bool) {
	ids, rest, ok1 := strings.Cut(val, "@")
	ps, _, ok2 := strings.Cut(rest, "/")
	i, err1 := strconv.ParseUint(ids, 10, 64)
	p, err2 := strconv.ParseUint(ps, 10, 64)
	if !ok1 || !ok2 || err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return i, raft.NodeID(p), true
}

// Apply implements node.StateMachine.
func (sm *memSM) Apply(ents []raft.Entry) ([]node.Applied, error) {
	r, m := sm.r, sm.m
	st := m.d.Status()
	obsTerm := st.HardState.Term
	var done []node.Applied
	for _, e := range ents {
		if e.Index != sm.cur.applied+1 {
			r.fail(StateMachineSafety, "node %d: the node applies entry %d@%d after %d (entries skipped or repeated)",
				m.id, e.Index, e.Term, sm.cur.applied)
		}
		_, val, isWrite := sm.cur.apply(e)
		r.check(StateMachineSafety, r.chk.apply(m.id, obsTerm, e, sm.cur.digest))
		r.checkCommitDurable(e, st.ConfState)
		r.ev(0xe3, uint64(m.id), e.Index, e.Term)
		if e.Type == raft.EntryConfChange {
			sm.confApplied = e.Index
			if id, proposer, ok := confProposal(e); ok {
				sm.ids[id] = e.Index
				if proposer == m.id {
					done = append(done, node.Applied{ID: id, Result: e.Index})
				}
			}
			continue
		}
		if !isWrite {
			continue
		}
		if id, proposer, ok := parseWriteValue(val); ok {
			if r.lost[id] {
				r.fail(LostApplied, "node %d applies proposal %d at %d, which was reported certainly not applied", m.id, id, e.Index)
			}
			r.applied[id] = true
			if _, dup := sm.ids[id]; !dup {
				sm.ids[id] = e.Index // a duplicated proposal's answer is its first application
			}
			if proposer == m.id {
				done = append(done, node.Applied{ID: id, Result: e.Index})
			}
		}
	}
	return done, nil
}

func (sm *memSM) appliedAt(id uint64) (uint64, bool) { idx, ok := sm.ids[id]; return idx, ok }
func (sm *memSM) lastConf() uint64                   { return sm.confApplied }
func (sm *memSM) probed() bool                       { return sm.cur.vals[probeKey] != "" }

// kill: the committed image is the member's (crash drops it on a power loss).
func (sm *memSM) kill(bool) {}

// Commit implements node.StateMachine.
func (sm *memSM) Commit() error {
	sm.m.image = sm.cur.encode()
	sm.visible.Store(sm.cur.applied)
	return nil
}

// Abort implements node.StateMachine.
func (sm *memSM) Abort() {
	img := newKV()
	if sm.m.image != nil {
		var err error
		if img, err = decodeKV(sm.m.image); err != nil {
			sm.r.fail(CoreContract, "node %d: its committed image does not decode: %v", sm.m.id, err)
		}
	}
	sm.cur = img
}

// AppliedIndex implements node.StateMachine.
func (sm *memSM) AppliedIndex() uint64 { return sm.visible.Load() }

// Sync implements node.StateMachine. A power loss discards the image whatever its syncs (see
// memSM), so there is nothing to do.
func (sm *memSM) Sync() error { return nil }

// Snapshot implements node.StateMachine.
func (sm *memSM) Snapshot() (node.SnapshotView, error) {
	sm.r.st.Compactions++ // the node takes a local snapshot and compacts its log after it
	return &memView{index: sm.visible.Load(), data: bytes.Clone(sm.m.image)}, nil
}

// Restore implements node.StateMachine: the image is checked against the state every member
// had at that index.
func (sm *memSM) Restore(meta raft.SnapshotMeta, size int64, rd io.Reader) error {
	r, m := sm.r, sm.m
	data := make([]byte, size)
	if _, err := io.ReadFull(rd, data); err != nil {
		return fmt.Errorf("sim: read snapshot %d: %w", meta.Index, err)
	}
	img, err := decodeKV(data)
	if err != nil {
		r.fail(StateMachineSafety, "node %d: snapshot %d@%d does not decode: %v", m.id, meta.Index, meta.Term, err)
	}
	if img.applied != meta.Index {
		r.fail(StateMachineSafety, "node %d: snapshot labelled %d holds the state applied through %d", m.id, meta.Index, img.applied)
	}
	r.check(StateMachineSafety, r.chk.image(m.id, img.applied, img.digest))
	sm.cur, sm.ids = img, map[uint64]uint64{}
	m.image = data
	sm.visible.Store(img.applied)
	r.st.SnapshotsInstalled++
	r.ev(0xe2, uint64(m.id), meta.Index)
	if r.o.Trace != nil {
		r.tracef("n%d restore snapshot %d@%d", m.id, meta.Index, meta.Term)
	}
	return nil
}

// Peers implements node.StateMachine: the simulated network routes by ID.
func (sm *memSM) Peers() map[raft.NodeID][]string { return nil }

// Close implements node.StateMachine.
func (sm *memSM) Close() error { return nil }

// memView is a snapshot of a committed image.
type memView struct {
	index uint64
	data  []byte
}

func (v *memView) Index() uint64 { return v.index }
func (v *memView) Size() int64   { return int64(len(v.data)) }
func (v *memView) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(v.data)
	return int64(n), err
}
func (v *memView) Close() error { return nil }

// trackedLog is a member's log as the node sees it (the real WAL) and, beside it, the
// simulator's reference of what the node's calls made durable: every Save with sync, sync and
// snapshot marker makes everything written before it durable, nothing else does. The checkers
// judge acknowledgements and commits by the reference, and a recovery by comparing the log the
// disk gives back with it. It survives crashes; startMember rebuilds it from the recovered log.
type trackedLog struct {
	r       *nodeRun
	id      raft.NodeID
	inner   node.LogStore
	durable *memStore // the reference
	written *memStore // every write, durable or not (or cut short by a power loss)
	// saveErr is a write the reference refused (a new term or vote written without sync).
	saveErr error
}

func newTrackedLog(r *nodeRun, id raft.NodeID) *trackedLog {
	return &trackedLog{r: r, id: id, durable: newMemStore(0), written: newMemStore(0)}
}

// Save implements node.LogStore.
func (l *trackedLog) Save(hs raft.HardState, ents []raft.Entry, sync bool) error {
	// written takes the write before the log does: a power loss inside it may leave any
	// part of it on the disk.
	if err := l.written.Save(hs, nil, ents, true); err != nil {
		l.r.fail(CoreContract, "node %d: %v", l.id, fmt.Errorf("writing its log: %w", err))
	}
	if err := l.inner.Save(hs, ents, sync); err != nil {
		return err
	}
	if err := l.durable.Save(hs, nil, ents, sync); err != nil && !l.r.o.NoAckCheck {
		l.r.fail(AckDurability, "node %d: %v", l.id, err)
	}
	if !sync && len(ents) > 0 {
		l.r.st.LeaderWrites++
	}
	l.r.check(LogMatching, l.r.chk.persisted(l.id, l.written.Term, ents))
	return nil
}

// SyncWritten implements node.LogStore.
func (l *trackedLog) SyncWritten() error {
	if err := l.inner.SyncWritten(); err != nil {
		return err
	}
	l.r.st.LeaderSyncs++
	return l.durable.Sync()
}

// SaveSnapshot implements node.LogStore: the marker is synced with everything before it.
func (l *trackedLog) SaveSnapshot(meta raft.SnapshotMeta) error {
	if err := l.inner.SaveSnapshot(meta); err != nil {
		return err
	}
	snap := raft.Snapshot{Meta: meta}
	for _, st := range []*memStore{l.written, l.durable} {
		if err := st.Save(raft.HardState{}, &snap, nil, true); err != nil {
			l.r.fail(CoreContract, "node %d: %v", l.id, fmt.Errorf("recording snapshot %d in its log: %w", meta.Index, err))
		}
	}
	return nil
}

// ReleaseTo implements node.LogStore.
func (l *trackedLog) ReleaseTo(index uint64) error { return l.inner.ReleaseTo(index) }

// Close implements node.LogStore.
func (l *trackedLog) Close() error { return l.inner.Close() }

// unsynced reports whether the node holds written entries not yet durable.
func (l *trackedLog) unsynced() bool {
	for _, w := range l.durable.unsynced {
		if len(w.ents) > 0 {
			return true
		}
	}
	return false
}

// simExec is a member's node.Executor: tasks wait until the simulator runs them (runTask), or
// until the node waits for them (Flush). A crash drops the tasks not yet run.
type simExec struct {
	tasks []func()
}

func (e *simExec) Go(task func()) { e.tasks = append(e.tasks, task) }

func (e *simExec) Flush() {
	for len(e.tasks) > 0 {
		t := e.tasks[0]
		e.tasks = e.tasks[1:]
		t()
	}
}

// run runs task k.
func (e *simExec) run(k int) {
	t := e.tasks[k]
	e.tasks = append(e.tasks[:k], e.tasks[k+1:]...)
	t()
}
