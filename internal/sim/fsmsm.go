package sim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/fsm"
	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/internal/node"
	"github.com/caucus/caucus/raft"
)

// The real application under the node driver (Options.StateMachine = SMFSM): every member runs
// internal/fsm over internal/mvcc, a bbolt file in a real temporary directory (bbolt needs OS
// files; the log and the snapshots stay on the member's simulated disk). The store commits
// without fsync (mvcc.Options.NoSync), as production does by default, and a crash loses what
// the real world would:
//
//   - A process crash (kill -9) keeps the file as bbolt last committed it: the page cache
//     survives. The simulator closes the bbolt handle without committing the open batch (what
//     was applied since the last commit is lost, as in a dead process) and without the clean
//     close's sync and disarming of the reboot guard, and reopens the same file: the store must
//     come back at the applied index it had committed, and the node replays the log after it.
//   - A power loss makes the file untrustworthy (bbolt may have written a meta page whose tree
//     pages never reached the disk). The simulator does not delete the file: it makes the
//     reboot guard's marker (internal/fsm/unsynced.go) name another boot, as the kernel after a
//     reboot would, so that fsm.Open itself moves the file aside and the node rebuilds the
//     store from the snapshot and the log. That the store then starts empty is checked: it
//     proves the guard ran. (Deleting the file instead would model a lost disk and bypass the
//     guard.)
//
// Snapshots go through the seam like memSM's: fsm.Snapshot's bbolt view is written by the
// node's snapshot task into the simulated disk, and fsm.Restore installs received ones (and the
// newest one at a start, when the store lags it).
//
// fsmSM wraps the fsm with the checks memSM makes as it applies (apply order, state machine
// safety of the entries, commit durability, lost proposals), and, at every commit, restore and
// start, a digest of the store's live keys compared with every other member's at the same
// applied index, and the event stream checks of eventcheck.go.

// SMKind names a member's application under the node driver.
type SMKind string

const (
	// SMRegister is the simulator's in-memory register map (memSM), the default.
	SMRegister SMKind = "register"
	// SMFSM is internal/fsm over internal/mvcc, with events (fsmsm.go, fsmwork.go,
	// eventcheck.go).
	SMFSM SMKind = "fsm"
)

// FSMBugs plants bugs in the simulator's wrapper of internal/fsm, so that tests can show the
// event stream checks catch a broken outbox. Every field is false outside tests.
type FSMBugs struct {
	// ReplayDropsEvents strips the events of every entry a member applies again after a
	// restart (an index at or below the highest it had applied before): an outbox that keeps
	// its "published up to" mark apart from the data, so that a crash between the two makes
	// it skip the events of the entries the log replays.
	ReplayDropsEvents bool
	// SessionlessWrites proposes the workload's writes without sessions, as a client that
	// retries without one: a proposal the network or a forwarding follower duplicates is
	// applied twice, and publishes its events twice.
	SessionlessWrites bool
	// ReplayDropsAcks empties the ack commands a member applies again after a restart (so the
	// store refuses them): a consumer that keeps its acknowledgements apart from the store, so
	// that the ones the log replays are lost. The member's consumers then differ from the
	// others' at the same index, and hand acknowledged events out again.
	ReplayDropsAcks bool
	// AcksAsNaks sends the workload's acks as naks, while the checker takes them for acks: an
	// ack that does not remove the delivery, so the acknowledged event is delivered again.
	AcksAsNaks bool
}

var fsmBugNames = []string{"ReplayDropsEvents", "SessionlessWrites", "ReplayDropsAcks", "AcksAsNaks"}

// FSMBugNames returns the names ParseFSMBugs accepts.
func FSMBugNames() []string { return slices.Clone(fsmBugNames) }

func fsmBugField(b *FSMBugs, name string) *bool {
	switch name {
	case "ReplayDropsEvents":
		return &b.ReplayDropsEvents
	case "SessionlessWrites":
		return &b.SessionlessWrites
	case "ReplayDropsAcks":
		return &b.ReplayDropsAcks
	case "AcksAsNaks":
		return &b.AcksAsNaks
	}
	return nil
}

// ParseFSMBugs turns a comma-separated list of FSMBugs field names into the switches.
func ParseFSMBugs(list string) (FSMBugs, error) {
	var b FSMBugs
	if list == "" {
		return b, nil
	}
	for _, name := range strings.Split(list, ",") {
		f := fsmBugField(&b, strings.TrimSpace(name))
		if f == nil {
			return b, fmt.Errorf("sim: unknown fsm bug %q (known: %s)", name, strings.Join(fsmBugNames, ", "))
		}
		*f = true
	}
	return b, nil
}

// FormatFSMBugs is the inverse of ParseFSMBugs.
func FormatFSMBugs(b FSMBugs) string {
	var on []string
	for _, name := range fsmBugNames {
		if *fsmBugField(&b, name) {
			on = append(on, name)
		}
	}
	return strings.Join(on, ",")
}

// fsmDisk is what a member's state machine directory holds across crashes, as the simulator
// knows it.
type fsmDisk struct {
	dir string // "" until the member first starts
	// committed is the store's applied index when its process last died.
	committed uint64
	// lostPower: the machine lost power since the store was last opened.
	lostPower bool
	opened    bool
	// highApplied is the highest index any incarnation applied (FSMBugs.ReplayDropsEvents).
	highApplied uint64
}

// fsmMmapBytes is the stores' bbolt map. A member maps its store once, as large as its quota
// (internal/embed), because growing the map waits for every read transaction: a remap while the
// node's snapshot task holds a view would wait for a task the simulator runs on the same
// goroutine, for ever. The simulated stores stay far below it (checked at every checkpoint).
const fsmMmapBytes = 256 << 20

// unsyncedMarker is the reboot guard's marker beside the store (internal/fsm/unsynced.go).
const unsyncedMarker = fsm.StoreFile + ".unsynced"

// canReadBootID reports whether the fsm's reboot guard can tell reboots here: without a boot id
// it arms no marker, and a power loss is then modelled by removing the store file.
var canReadBootID = func() bool {
	_, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return err == nil
}()

// fsmAnswer is the result fsmSM gives the node for a proposal: the index it was applied at and,
// for a command, the store's result.
type fsmAnswer struct {
	index uint64
	res   *mvcc.Result
}

// fsmSM is a member's internal/fsm, checked as it applies.
type fsmSM struct {
	r *nodeRun
	m *member
	f *fsm.FSM
	// last is the index applied through, pending included.
	last        uint64
	ids         map[uint64]uint64
	confApplied uint64
	views       []*fsmView
	// checked is the applied index of the last checkpoint (0: none since the last open or
	// restore); stream is what of the event stream this store has been checked to hold.
	checked   uint64
	stream    memberStream
	killed    bool
	restoring bool
}

// openFSM opens member m's state machine, as a server does at start.
func (r *nodeRun) openFSM(m *member) *fsmSM {
	d := &m.fsm
	if d.dir == "" {
		if r.fsmRoot == "" {
			root, err := os.MkdirTemp("", "caucus-sim-fsm-")
			if err != nil {
				r.fail(CoreContract, "creating the state machines' directory: %v", err)
			}
			r.fsmRoot = root
		}
		d.dir = filepath.Join(r.fsmRoot, fmt.Sprintf("n%d", m.id))
		if err := os.Mkdir(d.dir, 0o700); err != nil {
			r.fail(CoreContract, "node %d: creating its state machine directory: %v", m.id, err)
		}
	}
	f, err := fsm.Open(fsm.Options{ID: m.id, DataDir: d.dir, Logger: r.logger,
		Store: mvcc.Options{NoSync: true, InitialMmapSize: fsmMmapBytes}})
	if err != nil {
		r.fail(StorageFault, "node %d: %v", m.id, fmt.Errorf("opening its state machine: %w", err))
	}
	applied := f.AppliedIndex()
	switch {
	case d.lostPower:
		if applied != 0 {
			r.fail(StorageFault, "node %d: its state machine, committed without fsync, survived a power loss at applied index %d: the reboot guard did not discard it", m.id, applied)
		}
		// The guard moved the old file aside for inspection; nobody inspects it here.
		aside, _ := filepath.Glob(filepath.Join(d.dir, fsm.StoreFile+".discarded-*"))
		for _, p := range aside {
			os.Remove(p)
		}
		if d.opened {
			r.st.FSMRebuilds++
		}
	case d.opened && applied != d.committed:
		r.fail(StorageFault, "node %d: its state machine reopened at applied index %d after a process crash, but had committed %d", m.id, applied, d.committed)
	}
	d.lostPower, d.opened = false, true
	return &fsmSM{r: r, m: m, f: f, last: applied, ids: map[uint64]uint64{}}
}

// opened runs once the node has opened (and, if the store lagged its snapshot, restored) the
// state machine.
func (sm *fsmSM) opened() {
	sm.last = sm.f.AppliedIndex()
	sm.checkpoint()
}

func (sm *fsmSM) appliedAt(id uint64) (uint64, bool) { idx, ok := sm.ids[id]; return idx, ok }
func (sm *fsmSM) lastConf() uint64                   { return sm.confApplied }

func (sm *fsmSM) probed() bool {
	resp, err := sm.f.Store().Range(&logpb.RangeRequest{Key: []byte(probeKey), CountOnly: true})
	return err == nil && resp.Count > 0
}

// Apply implements node.StateMachine: the entries are checked as memSM checks them, then
// applied by the fsm.
func (sm *fsmSM) Apply(ents []raft.Entry) ([]node.Applied, error) {
	r, m := sm.r, sm.m
	st := m.d.Status()
	obsTerm := st.HardState.Term
	give, cloned := ents, false
	for i, e := range ents {
		if e.Index != sm.last+1 {
			r.fail(StateMachineSafety, "node %d: the node applies entry %d@%d after %d (entries skipped or repeated)",
				m.id, e.Index, e.Term, sm.last)
		}
		sm.last = e.Index
		// The store's state is compared at commits (checkpoint); here only the entries.
		r.check(StateMachineSafety, r.chk.apply(m.id, obsTerm, e, 0))
		r.checkCommitDurable(e, st.ConfState)
		r.ev(0xe3, uint64(m.id), e.Index, e.Term)
		switch e.Type {
		case raft.EntryConfChange:
			sm.confApplied = e.Index
			if id, _, ok := changeProposal(e); ok {
				if _, dup := sm.ids[id]; !dup {
					sm.ids[id] = e.Index
				}
			}
		case raft.EntryNormal:
			if len(e.Data) == 0 {
				continue
			}
			var cmd logpb.Command
			if err := proto.Unmarshal(e.Data, &cmd); err != nil {
				continue // the fsm refuses it below
			}
			id := cmd.Id
			if r.lost[id] {
				r.fail(LostApplied, "node %d applies proposal %d at %d, which was reported certainly not applied", m.id, id, e.Index)
			}
			r.applied[id] = true
			if _, dup := sm.ids[id]; !dup {
				sm.ids[id] = e.Index // a duplicated proposal's answer is its first application
			}
			r.evs.appliedAt(id, e.Index)
			if a := cmd.GetAck(); a != nil {
				r.cons.ackApplied(a)
			}
			replayed := e.Index <= m.fsm.highApplied
			if r.o.FSMBugs.ReplayDropsEvents && replayed && stripEvents(&cmd) ||
				r.o.FSMBugs.ReplayDropsAcks && replayed && stripAcks(&cmd) {
				// Planted bug: the replayed entry's events are taken as published already.
				data, err := proto.MarshalOptions{Deterministic: true}.Marshal(&cmd)
				if err != nil {
					return nil, fmt.Errorf("sim: re-encode entry %d: %w", e.Index, err)
				}
				if !cloned {
					give, cloned = slices.Clone(ents), true // the node's entries stay as they are
				}
				give[i].Data = data
			}
		}
	}
	if len(ents) > 0 {
		m.fsm.highApplied = max(m.fsm.highApplied, ents[len(ents)-1].Index)
	}
	done, err := sm.f.Apply(give)
	for k, a := range done {
		fa := fsmAnswer{index: sm.ids[a.ID]}
		if res, ok := a.Result.(mvcc.Result); ok {
			fa.res = &res
		}
		done[k].Result = fa
	}
	return done, err
}

// stripAcks empties an ack command and reports whether it was one.
func stripAcks(cmd *logpb.Command) bool {
	a := cmd.GetAck()
	if a == nil {
		return false
	}
	a.Acks, a.Naks = nil, nil
	return true
}

// stripEvents removes every event cmd carries and reports whether there were any.
func stripEvents(cmd *logpb.Command) bool {
	had := false
	strip := func(evs *[]*logpb.Event) {
		had = had || len(*evs) > 0
		*evs = nil
	}
	switch op := cmd.GetOp().(type) {
	case *logpb.Command_Put:
		strip(&op.Put.Events)
	case *logpb.Command_Publish:
		strip(&op.Publish.Events)
	case *logpb.Command_Txn:
		for _, ops := range [][]*logpb.RequestOp{op.Txn.Success, op.Txn.Failure} {
			for _, o := range ops {
				switch r := o.GetRequest().(type) {
				case *logpb.RequestOp_RequestPut:
					strip(&r.RequestPut.Events)
				case *logpb.RequestOp_RequestPublish:
					strip(&r.RequestPublish.Events)
				}
			}
		}
	}
	return had
}

// Commit implements node.StateMachine.
func (sm *fsmSM) Commit() error {
	if err := sm.f.Commit(); err != nil {
		return err
	}
	sm.checkpoint()
	return nil
}

// checkpoint checks the committed store, if it moved since the last checkpoint: its digest
// against every other member's at the same applied index, and its event stream.
func (sm *fsmSM) checkpoint() {
	st := sm.f.Store()
	a := st.AppliedIndex()
	if sm.checked != 0 && a == sm.checked {
		return
	}
	sm.checked = a
	if n := st.Size(); n > fsmMmapBytes/2 {
		sm.r.fail(CoreContract, "node %d: its state machine file is %d bytes, too close to the simulator's map of %d", sm.m.id, n, fsmMmapBytes)
	}
	prog := sm.r.cons.read(sm.m.id, st, a)
	sm.r.evs.read(sm)
	sm.r.evs.digestAt(sm.m.id, st, a, false)
	sm.r.cons.check(sm.m.id, a, prog)
}

// Abort implements node.StateMachine.
func (sm *fsmSM) Abort() {
	sm.f.Abort()
	sm.last = sm.f.AppliedIndex()
}

// AppliedIndex implements node.StateMachine.
func (sm *fsmSM) AppliedIndex() uint64 { return sm.f.AppliedIndex() }

// Sync implements node.StateMachine.
func (sm *fsmSM) Sync() error { return sm.f.Sync() }

// Snapshot implements node.StateMachine.
func (sm *fsmSM) Snapshot() (node.SnapshotView, error) {
	sm.r.st.Compactions++ // the node takes a local snapshot and compacts its log after it
	sm.checkpoint()       // the view's state is the committed one: its digest is on record
	v, err := sm.f.Snapshot()
	if err != nil {
		return nil, err
	}
	sm.views = slices.DeleteFunc(sm.views, func(v *fsmView) bool { return v.closed })
	w := &fsmView{SnapshotView: v}
	sm.views = append(sm.views, w)
	return w, nil
}

// Restore implements node.StateMachine: the restored store is checked against the state every
// member had at that index, and its event stream from the start.
func (sm *fsmSM) Restore(meta raft.SnapshotMeta, size int64, rd io.Reader) error {
	r, m := sm.r, sm.m
	for _, v := range sm.views {
		if !v.closed {
			// mvcc.Store.Restore would wait for the view forever.
			r.fail(CoreContract, "node %d: restoring snapshot %d@%d while a snapshot view is open", m.id, meta.Index, meta.Term)
		}
	}
	sm.restoring = true
	err := sm.f.Restore(meta, size, rd)
	sm.restoring = false
	if err != nil {
		return err
	}
	st := sm.f.Store()
	sm.last, sm.ids = meta.Index, map[uint64]uint64{}
	r.evs.digestAt(m.id, st, meta.Index, true)
	sm.checked, sm.stream = 0, memberStream{}
	sm.checkpoint()
	r.st.SnapshotsInstalled++
	r.ev(0xe2, uint64(m.id), meta.Index)
	if r.o.Trace != nil {
		r.tracef("n%d restore snapshot %d@%d (store revision %d)", m.id, meta.Index, meta.Term, st.Rev())
	}
	return nil
}

// Peers implements node.StateMachine: the fsm's membership table (the simulated network routes
// by ID whatever the URLs).
func (sm *fsmSM) Peers() map[raft.NodeID][]string { return sm.f.Peers() }

// Close implements node.StateMachine (a clean stop; the simulator never stops a node cleanly).
func (sm *fsmSM) Close() error { return sm.f.Close() }

// kill implements appSM.
func (sm *fsmSM) kill(powerLoss bool) {
	if err := sm.drop(); err != nil {
		sm.r.fail(StorageFault, "node %d: %v", sm.m.id, err)
	}
	if powerLoss {
		sm.r.losePower(sm.m)
	}
}

// drop closes the store as a dead process leaves it: the open batch and the snapshot views
// are gone, nothing is synced, the reboot guard stays armed.
func (sm *fsmSM) drop() error {
	if sm.killed {
		return nil
	}
	sm.killed = true
	sm.f.Abort()
	for _, v := range sm.views {
		v.Close()
	}
	st := sm.f.Store()
	sm.m.fsm.committed = st.AppliedIndex()
	if err := st.Close(); err != nil {
		return fmt.Errorf("closing its state machine at a crash: %w", err)
	}
	return nil
}

// losePower makes member m's store what a reboot makes of it: the reboot guard's marker names
// another boot than the one fsm.Open will see.
func (r *nodeRun) losePower(m *member) {
	d := &m.fsm
	d.lostPower = true
	if !canReadBootID {
		if err := os.Remove(filepath.Join(d.dir, fsm.StoreFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
			r.fail(CoreContract, "node %d: removing its state machine at a power loss: %v", m.id, err)
		}
		return
	}
	marker := filepath.Join(d.dir, unsyncedMarker)
	if _, err := os.Stat(marker); err != nil {
		r.fail(StorageFault, "node %d: no reboot marker beside its state machine committed without fsync (%v): a power loss would go unnoticed", m.id, err)
	}
	if err := os.WriteFile(marker, []byte("the-boot-before-the-power-loss\n"), 0o600); err != nil {
		r.fail(CoreContract, "node %d: rewriting its reboot marker: %v", m.id, err)
	}
}

// closeFSMs closes every state machine still open and removes their directory at the end of a
// run, violation or not (so it never fails the run itself).
func (r *nodeRun) closeFSMs() {
	for _, m := range r.members[1:] {
		if sm, ok := m.sm.(*fsmSM); ok && !sm.restoring {
			_ = sm.drop() // a store interrupted inside Restore holds its lock: leave it
		}
	}
	if r.fsmRoot != "" {
		os.RemoveAll(r.fsmRoot)
	}
}

// fsmView is a snapshot view the simulator can close at a crash (the node's task that would
// have closed it dies with the process).
type fsmView struct {
	node.SnapshotView
	closed bool
}

func (v *fsmView) Close() error {
	if v.closed {
		return nil
	}
	v.closed = true
	return v.SnapshotView.Close()
}

// peerURL is a member's (unused) peer URL in the fsm's membership table.
func peerURL(id raft.NodeID) string { return fmt.Sprintf("sim://n%d", id) }

// bootstrapContext is the bootstrap configuration change's context under SMFSM: the initial
// members as fsm.BootstrapContext encodes them. The register map takes none.
func (r *nodeRun) bootstrapContext(initial []node.Member) []byte {
	if r.evs == nil {
		return nil
	}
	ms := slices.Clone(initial)
	for i := range ms {
		ms[i].PeerURLs = []string{peerURL(ms[i].ID)}
	}
	b, err := fsm.BootstrapContext(ms)
	if err != nil {
		r.fail(CoreContract, "%v", err)
	}
	return b
}

// changeContext is a membership change's context: the proposal and proposer, in the format of
// the members' application (logpb.ConfChangeContext for the fsm, with the member added).
func (r *nodeRun) changeContext(id uint64, proposer raft.NodeID, cc raft.ConfChange) []byte {
	if r.evs == nil {
		return confContext(id, proposer)
	}
	c := &logpb.ConfChangeContext{ProposalId: id, Proposer: uint64(proposer)}
	for _, ch := range cc.Changes {
		if ch.Type == raft.ConfChangeAddVoter || ch.Type == raft.ConfChangeAddLearner {
			c.Member = &logpb.MemberContext{Id: uint64(ch.NodeID), Name: fmt.Sprintf("n%d", ch.NodeID), PeerUrls: []string{peerURL(ch.NodeID)}}
			break
		}
	}
	if c.Member == nil && len(cc.Changes) > 0 {
		c.Member = &logpb.MemberContext{Id: uint64(cc.Changes[0].NodeID)}
	}
	b, err := proto.Marshal(c)
	if err != nil {
		r.fail(CoreContract, "encoding a conf change context: %v", err)
	}
	return b
}

// changeProposal decodes the proposal an fsm configuration-change entry answers (not the
// bootstrap configuration, nor a leader's automatic leave of a joint one).
func changeProposal(e raft.Entry) (id uint64, proposer raft.NodeID, ok bool) {
	if e.Index == 1 {
		return 0, 0, false
	}
	cc, err := raft.DecodeConfChange(e.Data)
	if err != nil || len(cc.Context) == 0 {
		return 0, 0, false
	}
	var c logpb.ConfChangeContext
	if proto.Unmarshal(cc.Context, &c) != nil || c.ProposalId == 0 {
		return 0, 0, false
	}
	return c.ProposalId, raft.NodeID(c.Proposer), true
}
