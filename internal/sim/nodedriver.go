package sim

import (
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/caucus/caucus/internal/node"
	"github.com/caucus/caucus/internal/vfs"
	"github.com/caucus/caucus/internal/wal"
	"github.com/caucus/caucus/raft"
)

// Driver names what drives the Raft cores in a run.
type Driver string

const (
	// DriverCore is the simulator's own Ready loop around raft.Node (sim.go).
	DriverCore Driver = "core"
	// DriverNode runs every member as a real internal/node.Node (this file): its Ready loop,
	// its apply path and group commit, its leader sync, its snapshot writer and receiver, over
	// internal/wal and internal/snap on a simulated disk (vfs.Sim).
	DriverNode Driver = "node"
)

// Kinds of violation only the node driver checks.
const (
	// AckBeforeApply: a proposal was answered before its entry was applied on the member that
	// answered it.
	AckBeforeApply Kind = "ack-before-apply"
	// CommitDurability: an entry was applied (so committed) while fewer than a quorum of
	// voters held it durably, as judged by the calls their nodes made to their logs.
	CommitDurability Kind = "commit-not-durable"
	// LostApplied: a proposal failed as certainly not applied (node.ProposalLost), and was
	// applied all the same.
	LostApplied Kind = "lost-proposal-applied"
)

const (
	// nodeTick is the simulated length of a Raft tick (node.Config.TickInterval). The node's
	// shorter timers (group commit, commit broadcast, leader sync) fire at the next tick.
	nodeTick = 10 * time.Millisecond
	// nodeDataDir is each member's data directory on its own simulated disk.
	nodeDataDir = "data"
)

// nodeRun is one run of the node driver. It shares the swarm, network, checker, statistics and
// trace of the core driver's simulation; members replace its nodes.
type nodeRun struct {
	*simulation
	members []*member // by ID; [0] is nil
	epoch   time.Time
	// Per-run node options drawn from the seed.
	applyCommit, leaderSyncDelay, bcastDelay time.Duration
	taskRate                                 float64 // chance a pending background task runs after a step
	nextID                                   uint64  // proposal ids, unique over the run
	durChecked                               uint64  // entries up to here passed checkCommitDurable
	// lost holds the proposals a node reported certainly not applied (node.ProposalLost), and
	// applied those some member applied: no id may be in both.
	lost, applied map[uint64]bool
	// confs are the last configurations some member applied, newest last: an entry is
	// committed under one of them.
	confs []raft.ConfState
	// evs checks the event stream under SMFSM (nil otherwise); fsmRoot is the temporary
	// directory holding the members' state machine files.
	evs     *eventCheck
	fsmRoot string
	// cons checks the durable consumers under SMFSM and cw is their workload (fsmconsumer.go);
	// nil otherwise.
	cons *consumerCheck
	cw   *consWork
	// wasLive: the liveness probe succeeded; the consumers drain after it.
	wasLive bool
}

// member is one simulated server: its disk and its state machine's committed image outlive
// crashes; the node and everything attached to it do not.
type member struct {
	id    raft.NodeID
	fs    *vfs.Sim
	image []byte // the state machine's committed image (memSM)
	log   *trackedLog

	n     *node.Node // nil while down
	d     *node.Driver
	sm    appSM
	clock *node.ManualClock
	exec  *simExec
	inc   uint64

	fsm fsmDisk // the state machine's directory under SMFSM (fsmsm.go)

	started bool // has ever run
	joined  bool // has been in a committed configuration
	removed bool // removed from the configuration: shut down for good
	// removeAt is the earliest tick at which a removed member exits (0: not removed).
	removeAt uint64

	downTil  uint64
	role     raft.StateType
	term     uint64
	props    []nodeProp
	reads    []nodeRead
	unreach  []raft.NodeID // reported to the node after the step that noticed them
	lcTerm   uint64
	lcCursor int
}

type nodeProp struct {
	id uint64
	p  *node.Proposal
}

type nodeRead struct {
	r          *node.Read
	minApplied uint64
	tick       uint64
	// Under SMFSM: the register read once the read is answered, and the log index of the
	// newest write to it acknowledged before the read was requested.
	key         string
	minKeyIndex uint64
}

func (m *member) up() bool { return m.n != nil }

// runNodes is Run for DriverNode.
func (s *simulation) runNodes() {
	r := &nodeRun{simulation: s, epoch: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), lost: map[uint64]bool{}, applied: map[uint64]bool{}}
	s.nr = r
	if s.o.StateMachine == SMFSM {
		r.evs = newEventCheck(r)
		r.cw = r.newConsWork()
		r.cons = r.cw.c
		defer r.closeFSMs()
	}
	r.applyCommit = pick(s.rng, time.Millisecond, 3*nodeTick)
	r.bcastDelay = -1
	if s.w.deferCommit {
		r.bcastDelay = node.DefaultCommitBroadcastDelay
	}
	if s.w.deferLeaderSync {
		r.leaderSyncDelay = pick(s.rng, time.Millisecond, 2*nodeTick)
	}
	r.taskRate = pick(s.rng, 0.1, 0.5, 1.0)
	r.members = make([]*member, s.o.Nodes+spares+1)
	for id := 1; id < len(r.members); id++ {
		seed := mix64(s.o.Seed ^ mix64(uint64(id)<<32|0xd15c))
		fs := vfs.NewSim(seed)
		fs.SetTornWrites(true)
		fs.SetReorderedWriteback(seed&1 == 1)
		r.members[id] = &member{id: raft.NodeID(id), fs: fs, log: newTrackedLog(r, raft.NodeID(id))}
	}
	if s.o.Trace != nil {
		s.tracef("seed %d nodes %d ticks %d profile %s driver node bugs [%s] node bugs %+v swarm: %s; apply commit %s, leader sync delay %s, task rate %.1f",
			s.o.Seed, s.o.Nodes, s.o.Ticks, s.o.Profile, FormatBugs(s.o.Bugs, s.o.DriverBugs), s.o.NodeBugs, s.w,
			r.applyCommit, r.leaderSyncDelay, r.taskRate)
	}
	r.confs = []raft.ConfState{{Voters: slices.Clone(s.initial)}}
	for _, id := range s.initial {
		m := r.members[id]
		m.joined = true
		r.startMember(m)
	}
	for s.now = 1; ; s.now++ {
		if s.now == uint64(s.o.Ticks) {
			r.quiesce()
		}
		if s.quiesced {
			if !r.wasLive && r.live() {
				r.wasLive = true
				if r.cw != nil {
					r.cw.startDrain()
				}
			}
			if r.wasLive && (r.cw == nil || r.cw.drainTick()) {
				if r.evs != nil {
					r.evs.final()
					r.cw.final()
				}
				return
			}
			if !r.wasLive && s.now > s.liveBy {
				s.fail(Liveness, "no leader with the probe applied everywhere within %d ticks of the faults stopping: %s",
					s.liveBy-uint64(s.o.Ticks), r.clusterState())
			}
		} else {
			r.chaos()
		}
		s.ev(0xa1, s.now)
		now := r.epoch.Add(time.Duration(s.now) * nodeTick)
		for _, m := range r.members[1:] {
			if m.removeAt != 0 && s.now >= m.removeAt && (r.othersKnowRemoved(m) || s.now >= m.removeAt+maxLinger && r.unawareRemoved(m)) {
				r.exitRemoved(m)
			}
			if !m.up() {
				continue
			}
			m.clock.Set(now)
			r.poll(m)
			if m.up() {
				r.step(m, "tick", m.d.Tick)
			}
		}
		r.deliver()
		for _, m := range r.members[1:] {
			if m.up() && m.role == raft.StateLeader {
				r.checkLeader(m)
			}
		}
	}
}

// nodeConfig is the configuration of member m's next incarnation.
func (r *nodeRun) nodeConfig(m *member) node.OpenConfig {
	rc := r.simulation.nodeConfig(m.id, m.inc)
	if r.evs != nil {
		// A bbolt snapshot is tens to hundreds of KiB where the register map's is a few
		// hundred bytes: the swarm's chunk sizes, scaled alike, keep its three regimes (many
		// chunks, a few, one) without transfers of thousands of chunks.
		rc.MaxSnapshotChunkBytes = min(rc.MaxSnapshotChunkBytes*256, 1<<20)
	}
	snapEntries := r.w.compactEvery
	if snapEntries > 1<<20 {
		snapEntries = 0 // the swarm's "never"
	}
	initial := make([]node.Member, 0, len(r.initial))
	for _, id := range r.initial {
		initial = append(initial, node.Member{ID: id, Name: fmt.Sprintf("n%d", id)})
	}
	return node.OpenConfig{
		Config: node.Config{
			Raft:                 rc,
			TickInterval:         nodeTick,
			SnapshotEntries:      snapEntries,
			ApplyCommitInterval:  r.applyCommit,
			CommitBroadcastDelay: r.bcastDelay,
			LeaderSyncDelay:      r.leaderSyncDelay,
			Time:                 m.clock,
			Executor:             m.exec,
			Bugs:                 r.o.NodeBugs,
			PeerAddr:             func([]string) string { return "" },
			Logger:               r.logger,
		},
		DataDir:          nodeDataDir,
		NewCluster:       slices.Contains(r.initial, m.id), // an added member waits for the leader
		InitialMembers:   initial,
		BootstrapContext: r.bootstrapContext(initial),
		WALOptions:       wal.Options{SegmentBytes: wal.MinSegmentBytes * 4, Logger: slog.New(slog.DiscardHandler)},
	}
}

// startMember (re)starts m from its disk, as a server does after a crash, once the recovered
// log has been checked against what the node had made durable.
func (r *nodeRun) startMember(m *member) {
	m.inc++
	m.started = true
	rec, err := recoverLog(m.fs)
	if err != nil {
		r.fail(StorageFault, "node %d: %v", m.id, err)
	}
	r.check(StorageFault, checkRecovered(m.id, m.log.durable, m.log.written, rec))
	m.log = newTrackedLog(r, m.id)
	for _, st := range []*memStore{m.log.durable, m.log.written} {
		if err := st.Save(rec.HardState, rec.Snapshot, rec.Entries, true); err != nil {
			r.fail(StorageFault, "node %d: the recovered log is inconsistent: %v", m.id, err)
		}
	}
	m.clock = node.NewManualClock(r.epoch.Add(time.Duration(r.now) * nodeTick))
	m.exec = &simExec{}
	m.d = nil // the state machine reads the driver; set below before anything is applied
	var sm appSM
	if r.evs != nil {
		sm = r.openFSM(m)
	} else {
		msm, err := newMemSM(r, m)
		if err != nil {
			r.fail(CoreContract, "node %d: %v", m.id, err)
		}
		sm = msm
	}
	m.sm = sm
	cfg := r.nodeConfig(m)
	n, err := node.OpenFS(cfg, node.FSOpen{FS: m.fs, StateMachine: sm, WrapLog: func(l node.LogStore) node.LogStore {
		m.log.inner = l
		return m.log
	}})
	if err != nil {
		r.fail(StorageFault, "node %d: %v", m.id, fmt.Errorf("reopening after a crash: %w", err))
	}
	if f, ok := sm.(*fsmSM); ok {
		f.opened()
	}
	n.SetTransport(&simTransport{r: r, m: m}, nil)
	m.n, m.d = n, node.NewDriver(n)
	m.role, m.term = raft.StateFollower, rec.HardState.Term
	m.props, m.reads, m.unreach, m.lcTerm = nil, nil, nil, 0
	r.ev(0xb1, uint64(m.id), m.inc)
	if r.o.Trace != nil {
		r.tracef("n%d start inc=%d hs=%+v snap=%d entries=%d sm applied=%d", m.id, m.inc, rec.HardState,
			snapIndexOf(rec), len(rec.Entries), sm.AppliedIndex())
	}
}

func snapIndexOf(ps raft.PersistentState) uint64 {
	if ps.Snapshot == nil {
		return 0
	}
	return ps.Snapshot.Meta.Index
}

// recoverLog reads what the member's log holds after a crash, as the node will on opening it.
func recoverLog(fs vfs.FS) (raft.PersistentState, error) {
	if _, err := fs.Stat(nodeDataDir + "/wal"); err != nil {
		return raft.PersistentState{}, nil // never opened
	}
	w, err := wal.Open(fs, nodeDataDir+"/wal", wal.Options{SegmentBytes: wal.MinSegmentBytes * 4, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return raft.PersistentState{}, fmt.Errorf("recovering its log: %w", err)
	}
	rs, err := w.ReadAll()
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return raft.PersistentState{}, fmt.Errorf("recovering its log: %w", err)
	}
	ps := raft.PersistentState{HardState: rs.HardState}
	var snap uint64
	if rs.Snapshot != nil {
		ps.Snapshot = &raft.Snapshot{Meta: *rs.Snapshot}
		snap = rs.Snapshot.Index
	}
	for _, e := range rs.Entries {
		if e.Index > snap {
			ps.Entries = append(ps.Entries, e)
		}
	}
	return ps, nil
}

// checkRecovered checks that a recovered log holds everything the reference says was durable:
// the term and vote, and every durable entry that no later write (written, durable or not)
// overwrote. From the first overwritten index on, the recovered log may hold either version,
// or end early: a power loss may keep any prefix of the overwriting write.
func checkRecovered(id raft.NodeID, ref, written *memStore, rec raft.PersistentState) string {
	hs := ref.HardState()
	if rec.HardState.Term < hs.Term || rec.HardState.Term == hs.Term && hs.Vote != raft.None && rec.HardState.Vote != hs.Vote {
		return fmt.Sprintf("node %d recovered term %d vote %d, but term %d vote %d were durable",
			id, rec.HardState.Term, rec.HardState.Vote, hs.Term, hs.Vote)
	}
	recSnap := snapIndexOf(rec)
	if ref.SnapshotMeta().Index > recSnap {
		return fmt.Sprintf("node %d lost its durable snapshot marker at %d (recovered snapshot %d)", id, ref.SnapshotMeta().Index, recSnap)
	}
	overwritten := false
	for i := recSnap + 1; i <= ref.LastIndex(); i++ {
		want, _ := ref.Term(i)
		other, ok := written.Term(i)
		overwritten = overwritten || !ok || other != want
		k := i - recSnap - 1
		switch {
		case k < uint64(len(rec.Entries)) && (rec.Entries[k].Term == want || overwritten && ok && rec.Entries[k].Term == other):
		case k >= uint64(len(rec.Entries)) && overwritten:
		default:
			return fmt.Sprintf("node %d lost durable entry %d@%d in a crash (its log recovered %d entries after snapshot %d)",
				id, i, want, len(rec.Entries), recSnap)
		}
	}
	return ""
}

// step runs one input of m's node (what), with a power loss possibly armed inside its disk
// operations, then takes what the node answered.
func (r *nodeRun) step(m *member, what string, f func() error) {
	armed := !r.quiesced && r.w.readyCrashRate > 0 && r.rng.Float64() < r.w.readyCrashRate
	if armed {
		m.fs.CrashAfter(r.rng.IntN(6))
	}
	err := f()
	if armed {
		if m.fs.Down() {
			r.st.ReadyCrashes++
			r.st.SaveCrashes++
			r.crash(m, true, "power loss inside "+what)
			return
		}
		m.fs.Restart() // disarm
	}
	if err != nil {
		r.fail(StorageFault, "node %d stopped on %s: %v", m.id, what, err)
	}
	r.settle(m)
}

// settle takes the answers m's node gave, reports unreachable peers, updates the view of its
// role and runs its background work at seeded points.
func (r *nodeRun) settle(m *member) {
	st := m.n.Status()
	if st.SoftState.State != m.role || st.HardState.Term != m.term {
		m.role, m.term = st.SoftState.State, st.HardState.Term
		if m.role == raft.StateLeader {
			r.st.Elections++
			r.check(ElectionSafety, r.chk.leader(m.term, m.id, "became leader"))
			if r.o.Trace != nil {
				r.tracef("n%d LEADER term %d", m.id, m.term)
			}
		}
	}
	r.answers(m)
	if c := m.sm.lastConf(); c > r.confIndex {
		r.confIndex = c
		r.onConfig(m.d.Status().ConfState)
	}
	if len(m.unreach) > 0 {
		ids := m.unreach
		m.unreach = nil
		for _, id := range ids {
			r.step(m, "unreachable report", func() error { return m.d.ReportUnreachable(id) })
			if !m.up() {
				return
			}
		}
	}
	if len(m.exec.tasks) > 0 && (r.quiesced || r.rng.Float64() < r.taskRate) {
		r.runTask(m)
	}
}

// runTask runs one of m's background tasks (a snapshot write or a leader sync), possibly losing
// power inside it, or crashing after it and before the node takes its report.
func (r *nodeRun) runTask(m *member) {
	k := r.rng.IntN(len(m.exec.tasks))
	armed := !r.quiesced && r.w.readyCrashRate > 0 && r.rng.Float64() < r.w.readyCrashRate
	crashAfter := !r.quiesced && r.w.readyCrashRate > 0 && r.rng.Float64() < r.w.readyCrashRate
	if armed {
		m.fs.CrashAfter(r.rng.IntN(8))
	}
	m.exec.run(k)
	r.ev(0xd3, uint64(m.id), uint64(k))
	if armed {
		if m.fs.Down() {
			r.st.SnapshotCrashes++
			r.crash(m, true, "power loss inside a background task")
			return
		}
		m.fs.Restart()
	}
	if crashAfter {
		r.st.SyncCrashes++
		r.crash(m, r.rng.IntN(2) == 0, "after a background task, before the node took its report")
		return
	}
	r.poll(m)
}

// poll lets m's node take its fired timers and background reports.
func (r *nodeRun) poll(m *member) {
	for m.up() {
		var more bool
		r.step(m, "timer or report", func() error {
			var err error
			more, err = m.d.Poll()
			return err
		})
		if !more {
			return
		}
	}
}

// answers checks the answers m's node gave to proposals and reads.
func (r *nodeRun) answers(m *member) {
	keep := m.props[:0]
	for _, p := range m.props {
		res, err, ok := p.p.Result()
		if !ok {
			keep = append(keep, p)
			continue
		}
		if err != nil {
			if node.ProposalLost(err) {
				r.st.LostProposals++
				if r.applied[p.id] {
					r.fail(LostApplied, "node %d reported proposal %d certainly not applied, but it was applied: %v", m.id, p.id, err)
				}
				r.lost[p.id] = true
				if r.evs != nil {
					r.evs.lost(p.id)
				}
			}
			r.ev(0x26, uint64(m.id), p.id)
			continue
		}
		idx, _ := res.(uint64)
		fa, isFSM := res.(fsmAnswer)
		if isFSM {
			idx = fa.index
		}
		if got, applied := m.sm.appliedAt(p.id); !applied || got != idx || idx == 0 {
			r.fail(AckBeforeApply, "node %d answered proposal %d (result %v) before applying it", m.id, p.id, res)
		}
		if isFSM && fa.res != nil {
			r.evs.answered(m.id, p.id, idx, *fa.res)
			r.cw.answered(m.id, p.id, idx, *fa.res)
		}
		r.st.Committed++
		r.chk.maxAcked = max(r.chk.maxAcked, idx)
		r.ev(0x27, uint64(m.id), p.id, idx)
		if r.o.Trace != nil {
			r.tracef("n%d ack proposal %d at %d", m.id, p.id, idx)
		}
	}
	m.props = keep
	kept := m.reads[:0]
	for _, rd := range m.reads {
		seen, err, ok := rd.r.Result()
		if !ok {
			kept = append(kept, rd)
			continue
		}
		if err != nil {
			continue
		}
		r.st.ReadsChecked++
		if seen < rd.minApplied {
			r.fail(Linearizability, "read requested at tick %d on node %d saw the state at index %d, missing a write acknowledged at index %d before the request",
				rd.tick, m.id, seen, rd.minApplied)
		}
		if rd.key != "" {
			r.evs.checkRead(m, rd)
		}
		r.ev(0xe4, uint64(m.id), seen)
	}
	m.reads = kept
}

// checkCommitDurable checks, at the first application of e anywhere, that a quorum of the
// voters hold it durably (or a durable snapshot covering it): what committing it required.
func (r *nodeRun) checkCommitDurable(e raft.Entry, cur raft.ConfState) {
	if r.o.NoAckCheck || e.Index <= r.durChecked {
		return
	}
	if e.Index == 1 && e.Type == raft.EntryConfChange {
		return // the bootstrap configuration: every initial member commits it by itself
	}
	r.durChecked = e.Index
	if !r.heldByQuorum(e, cur) {
		r.fail(CommitDurability, "entry %d@%d is applied but no recent configuration (%v, %v) has a quorum holding it durably",
			e.Index, e.Term, r.confs, cur)
	}
}

// crash drops m's node without stopping it (kill -9) and, on a power loss, the disk's unsynced
// writes and the state machine's image too.
func (r *nodeRun) crash(m *member, powerLoss bool, why string) {
	if m.log.unsynced() {
		r.st.UnsyncedCrashes++
	}
	m.sm.kill(powerLoss)
	m.n, m.d, m.sm, m.clock, m.exec = nil, nil, nil, nil, nil
	m.props, m.reads, m.unreach = nil, nil, nil
	m.role = raft.StateFollower
	if powerLoss {
		if m.fs.Down() {
			m.fs.Restart() // CrashAfter already lost the volatile state
		} else {
			m.fs.Crash()
		}
		m.image = nil
	}
	r.st.Faults[FaultCrash]++
	m.downTil = r.now + 1 + uint64(r.rng.IntN(r.w.maxDown))
	r.ev(0xc1, uint64(m.id), b2u(powerLoss))
	if r.o.Trace != nil {
		r.tracef("n%d CRASH (power loss %t) %s (down until %d)", m.id, powerLoss, why, m.downTil)
	}
}

// simTransport is a member's node.Transport: the simulated network, with the checks of what a
// message acknowledges made at the moment the node sends it.
type simTransport struct {
	r *nodeRun
	m *member
}

func (t *simTransport) AddPeer(raft.NodeID, string) {}
func (t *simTransport) RemovePeer(raft.NodeID)      {}

func (t *simTransport) Send(msgs []raft.Message) {
	r, m := t.r, t.m
	var unsynced func() string
	if m.log.unsynced() {
		unsynced = func() string { return "written entries" }
	}
	for _, msg := range msgs {
		if r.transmit(m.id, msg, m.log.durable.HardState(), m.log.durable.LastIndex(), unsynced, len(r.members)) {
			m.unreach = append(m.unreach, msg.To)
		}
	}
}

// deliver steps every message due by now into its destination's node.
func (r *nodeRun) deliver() {
	for {
		from, msg, ok := r.net.popDue(r.now)
		if !ok {
			return
		}
		to := r.members[msg.To]
		if !to.up() || r.net.blocked(from, msg.To) {
			r.st.Dropped++
			r.ev(0xf2, uint64(from), uint64(msg.To))
			continue
		}
		r.st.Delivered++
		if r.o.Trace != nil {
			r.tracef("n%d <- n%d(via %d) %s term=%d logterm=%d idx=%d commit=%d ents=%s reject=%t%s", msg.To, msg.From, from, msg.Type,
				msg.Term, msg.LogTerm, msg.Index, msg.Commit, spanOf(msg.Entries), msg.Reject, chunkOf(msg))
		}
		r.step(to, "a "+msg.Type.String(), func() error { return to.d.Step(msg) })
	}
}

// leaderID and memberIDs give the fault injectors shared with the core driver (partition) the
// node driver's view.
func (s *simulation) leaderID() raft.NodeID {
	if s.nr != nil {
		if l := s.nr.leader(); l != nil {
			return l.id
		}
		return raft.None
	}
	if l := s.leader(); l != nil {
		return l.id
	}
	return raft.None
}

// chunkOf describes a snapshot message's chunk and snapshot for the trace ("" for others).
func chunkOf(m raft.Message) string {
	if m.Chunk == nil {
		return ""
	}
	s := fmt.Sprintf(" chunk=%d+%d/%d last=%t", m.Chunk.Offset, m.Chunk.Length+uint64(len(m.Chunk.Data)), m.Chunk.Total, m.Chunk.Last)
	if m.Snapshot != nil {
		s += fmt.Sprintf(" snap=%d@%d", m.Snapshot.Index, m.Snapshot.Term)
	}
	return s
}
