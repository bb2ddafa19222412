package sim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/caucus/caucus/internal/node"
	"github.com/caucus/caucus/raft"
)

// Options selects one run. Everything that influences the run is here, so that ReplayCommand
// reproduces it exactly.
type Options struct {
	Seed  uint64
	Nodes int // initial voters: 3, 5 or 7
	// Ticks is the length of the chaos phase; 0 means DefaultTicks.
	Ticks   int
	Profile Profile // "" means ProfileSwarm
	Bugs    raft.Bugs
	// DriverBugs plants bugs in the simulator's driver of the cores (tests only).
	DriverBugs DriverBugs
	// Driver selects what drives the cores: "" or DriverCore, the simulator's own Ready loop;
	// DriverNode, real internal/node members over internal/wal on simulated disks
	// (nodedriver.go; NewStorage and the core driver's DriverBugs do not apply).
	Driver Driver
	// NodeBugs plants bugs in internal/node under DriverNode (tests only).
	NodeBugs node.DriverBugs
	// StateMachine selects the members' application under DriverNode: "" or SMRegister, the
	// simulator's in-memory register map; SMFSM, the real internal/fsm over internal/mvcc, with
	// a workload of writes that carry events and the event stream checks (fsmsm.go).
	StateMachine SMKind
	// FSMBugs plants outbox bugs in the simulator's wrapper of internal/fsm under SMFSM (tests
	// only).
	FSMBugs FSMBugs
	// DeferLeaderSync forces raft.Config.DeferLeaderSync on or off; by default the seed decides
	// (half of the seeds).
	DeferLeaderSync Switch
	// NoAckCheck disables the AckDurability checker, so that a planted persistence bug can be
	// shown to break a consequence (election safety) rather than the contract itself.
	NoAckCheck bool
	// Trace, if set, receives a human-readable step trace.
	Trace io.Writer
	// NewStorage, if set, makes each node's durable store (the seam for a WAL over a simulated
	// disk, see package walstore); nil means the in-memory store. It is called once per node ID,
	// in ID order, and must be deterministic.
	NewStorage func(id raft.NodeID) Storage
	// StorageName names NewStorage for ReplayCommand (caucus-sim's -store flag).
	StorageName string

	// isolateAtQuiesce (tests only) cuts every link when the faults are supposed to stop, so that
	// a test can show the liveness checker fails a cluster that cannot make progress.
	isolateAtQuiesce bool
}

func (o Options) withDefaults() Options {
	if o.Ticks == 0 {
		o.Ticks = DefaultTicks
	}
	if o.Profile == "" {
		o.Profile = ProfileSwarm
	}
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	return o
}

// ReplayCommand is the command line that replays o with a step trace.
func ReplayCommand(o Options) string {
	o = o.withDefaults()
	var b strings.Builder
	fmt.Fprintf(&b, "go run ./cmd/caucus-sim -seed %d -nodes %d", o.Seed, o.Nodes)
	if o.Ticks != DefaultTicks {
		fmt.Fprintf(&b, " -ticks %d", o.Ticks)
	}
	if o.Profile != ProfileSwarm {
		fmt.Fprintf(&b, " -profile %s", o.Profile)
	}
	if bugs := FormatBugs(o.Bugs, o.DriverBugs); bugs != "" {
		fmt.Fprintf(&b, " -bug %s", bugs)
	}
	if o.DeferLeaderSync != SwitchRandom {
		fmt.Fprintf(&b, " -defer-leader-sync %s", o.DeferLeaderSync)
	}
	if o.NoAckCheck {
		b.WriteString(" -ack-check=false")
	}
	if o.StorageName != "" {
		fmt.Fprintf(&b, " -store %s", o.StorageName)
	}
	if o.Driver != "" && o.Driver != DriverCore {
		fmt.Fprintf(&b, " -driver %s", o.Driver)
	}
	if nb := FormatNodeBugs(o.NodeBugs); nb != "" {
		fmt.Fprintf(&b, " -node-bug %s", nb)
	}
	if o.StateMachine != "" && o.StateMachine != SMRegister {
		fmt.Fprintf(&b, " -sm %s", o.StateMachine)
	}
	if fb := FormatFSMBugs(o.FSMBugs); fb != "" {
		fmt.Fprintf(&b, " -fsm-bug %s", fb)
	}
	b.WriteString(" -v")
	return b.String()
}

// Result is the outcome of one run.
type Result struct {
	Stats     Stats
	Violation *Violation // nil if every invariant held
	// TraceHash digests every event of the run; equal seeds must give equal hashes.
	TraceHash uint64
}

// simNode is one member: its durable store survives crashes, everything else is rebuilt.
type simNode struct {
	id      raft.NodeID
	store   Storage
	rn      *raft.Node // nil while down
	sm      *kv
	inc     uint64 // incarnation: bumped at every start
	started bool   // has ever run
	member  bool   // has ever been in a committed configuration
	removed bool   // removed from the configuration: shut down for good
	// removeAt is the earliest tick at which a member removed from the configuration exits (0:
	// not removed); it runs on until then and until the others know (othersKnowRemoved).
	removeAt uint64
	downTil  uint64

	role raft.StateType
	term uint64 // highest term seen in this incarnation's HardStates

	reads       []readReq
	unreachable []raft.NodeID // reported to the core after Advance (no calls between Ready and Advance)
	lastSnap    uint64
	confApplied uint64 // index of the last conf change applied in the current Ready

	// leader-completeness cursor, valid while the node leads in lcTerm.
	lcTerm   uint64
	lcCursor int

	// Under DeferLeaderSync: the entries this node has written but not synced (a leader's own
	// appends, contiguous; Index and Term only), and the LeaderSynced report owed for them.
	unsynced []raft.Entry
	syncDue  leaderSync
}

// leaderSync is a report owed to a leader's core once its deferred writes are synced.
type leaderSync struct {
	owed        bool
	term, index uint64 // what to report: the written entries' term and the last index
	since       uint64 // the tick of the first write not yet synced
}

// termAt is the term of entry i in n's log as written, synced or not: the log the core has
// replicated, which Log Matching is about.
func (n *simNode) termAt(i uint64) (uint64, bool) {
	if k := len(n.unsynced); k > 0 && i >= n.unsynced[0].Index && i <= n.unsynced[k-1].Index {
		return n.unsynced[i-n.unsynced[0].Index].Term, true
	}
	return n.store.Term(i)
}

// wroteUnsynced records entries written without a sync after the ones already unsynced, which
// they may overwrite.
func (n *simNode) wroteUnsynced(ents []raft.Entry) {
	if k := len(n.unsynced); k > 0 {
		first := n.unsynced[0].Index
		switch {
		case ents[0].Index <= first:
			n.unsynced = n.unsynced[:0]
		case ents[0].Index <= n.unsynced[k-1].Index:
			n.unsynced = n.unsynced[:ents[0].Index-first]
		}
	}
	for _, e := range ents {
		n.unsynced = append(n.unsynced, raft.Entry{Index: e.Index, Term: e.Term})
	}
}

func (n *simNode) up() bool { return n.rn != nil }

type readReq struct {
	ctx        uint64
	tick       uint64
	minApplied uint64 // chk.maxAcked when the read was requested
	index      uint64
	answered   bool
}

type pendingWrite struct {
	node raft.NodeID
	inc  uint64
}

// stop unwinds a run from deep inside its call stack once a violation is recorded.
type stop struct{}

// simulation is one run in progress. It is single-threaded by design.
type simulation struct {
	o     Options
	w     swarm
	rng   *rand.Rand
	now   uint64
	nodes []*simNode // by ID; nodes[0] is nil
	net   *network
	chk   *checker
	st    Stats
	hash  uint64
	viol  *Violation

	initial   []raft.NodeID
	confIndex uint64         // highest conf-change index whose configuration the sim has acted on
	conf      raft.ConfState // that configuration
	pending   map[string]pendingWrite
	writes    uint64
	readSeq   uint64
	partUntil uint64
	quiesced  bool
	probe     []byte // the liveness probe's write command
	probeVal  string // the value it writes to probeKey
	probeAt   uint64
	liveBy    uint64 // the tick by which the liveness probe must have succeeded
	logger    *slog.Logger
	joint     jointSchedule
	nr        *nodeRun // set under DriverNode
}

// Run executes one seed to completion: the chaos phase, then the quiesce phase, stopping at the
// first violation.
func Run(o Options) (res Result) {
	o = o.withDefaults()
	s := newSim(o)
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(stop); !ok {
				s.viol = &Violation{Kind: CorePanic, Seed: o.Seed, Tick: s.now,
					Detail: fmt.Sprintf("%v\n%s", r, debug.Stack()), Replay: ReplayCommand(o)}
			}
		}
		s.st.Ticks = int64(s.now)
		s.st.Seeds = 1
		if s.viol != nil {
			s.st.Violations = 1
		}
		res = Result{Stats: s.st, Violation: s.viol, TraceHash: s.hash}
	}()
	if o.Driver == DriverNode {
		s.runNodes()
	} else {
		s.run()
	}
	return res
}

func newSim(o Options) *simulation {
	s := &simulation{
		o:       o,
		rng:     rand.New(rand.NewPCG(o.Seed, 0x9e3779b97f4a7c15)),
		chk:     newChecker(),
		pending: map[string]pendingWrite{},
		hash:    14695981039346656037,
		logger:  slog.New(slog.DiscardHandler),
	}
	if o.Trace != nil {
		// The core's own log lines (elections, configuration changes) go into the trace, minus
		// the wall-clock timestamp that would make two traces of one seed differ.
		s.logger = slog.New(slog.NewTextHandler(o.Trace, &slog.HandlerOptions{
			Level: slog.LevelDebug,
			ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
				if len(groups) == 0 && a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			},
		}))
	}
	s.w = drawSwarm(s.rng, o.Profile)
	s.w.deferCommit = mix64(o.Seed^0xdefe7c0)&1 == 1
	s.w.deferLeaderSync = o.DeferLeaderSync.decide(mix64(o.Seed^0xdefe75c)&1 == 1)
	if s.w.deferLeaderSync {
		s.w.syncRate = pick(s.rng, 0.05, 0.2, 0.6)
	}
	s.drawJointSchedule()
	maxID := o.Nodes + spares
	s.net = newNetwork(maxID)
	s.nodes = make([]*simNode, maxID+1)
	for id := 1; id <= maxID; id++ {
		// The store's own seed decides what a crash keeps of its unsynced writes, so that the
		// simulator's draws do not depend on it.
		var st Storage = newMemStore(mix64(o.Seed ^ mix64(uint64(id)<<32|0x5707e)))
		if o.NewStorage != nil {
			st = o.NewStorage(raft.NodeID(id))
		}
		s.nodes[id] = &simNode{id: raft.NodeID(id), store: st}
		if id <= o.Nodes {
			s.initial = append(s.initial, raft.NodeID(id))
		}
	}
	s.probeVal = fmt.Sprintf("p%d", o.Seed)
	s.probe = encodeWrite(probeKey, s.probeVal)
	return s
}

func (s *simulation) tracef(format string, args ...any) {
	fmt.Fprintf(s.o.Trace, "t=%-6d ", s.now)
	fmt.Fprintf(s.o.Trace, format, args...)
	fmt.Fprintln(s.o.Trace)
}

// ev folds an event into the trace hash. Events are hashed as integers, never formatted, so the
// hash is cheap enough to keep on for every run.
func (s *simulation) ev(vals ...uint64) {
	h := s.hash
	for _, v := range vals {
		h = (h ^ v) * 1099511628211
		h ^= h >> 31
	}
	s.hash = h
}

// fail records the first violation and stops the run.
func (s *simulation) fail(k Kind, format string, args ...any) {
	s.viol = &Violation{Kind: k, Seed: s.o.Seed, Tick: s.now, Detail: fmt.Sprintf(format, args...), Replay: ReplayCommand(s.o)}
	if s.o.Trace != nil {
		s.tracef("VIOLATION %s: %s", k, s.viol.Detail)
	}
	panic(stop{})
}

func (s *simulation) check(k Kind, msg string) {
	if msg != "" {
		s.fail(k, "%s", msg)
	}
}

func (s *simulation) run() {
	if s.o.Trace != nil {
		s.tracef("seed %d nodes %d ticks %d profile %s bugs [%s] swarm: %s joint-hold: %s", s.o.Seed, s.o.Nodes, s.o.Ticks,
			s.o.Profile, FormatBugs(s.o.Bugs, s.o.DriverBugs), s.w, s.joint)
	}
	for _, id := range s.initial {
		n := s.nodes[id]
		n.member = true
		s.start(n)
	}
	for s.now = 1; ; s.now++ {
		if s.now == uint64(s.o.Ticks) {
			s.quiesce()
		}
		if s.quiesced {
			if s.live() {
				return
			}
			if s.now > s.liveBy {
				s.fail(Liveness, "no leader with the probe applied everywhere within %d ticks of the faults stopping: %s",
					s.liveBy-uint64(s.o.Ticks), s.clusterState())
			}
		} else {
			s.chaos()
		}
		s.ev(0xa1, s.now)
		for _, n := range s.nodes[1:] {
			if n.removeAt != 0 && s.now >= n.removeAt && (s.othersKnowRemoved(n) || s.now >= n.removeAt+maxLinger && s.unawareRemoved(n)) {
				s.exitRemoved(n)
			}
			if n.up() && n.syncDue.owed && s.syncDueNow(n) {
				s.syncLeader(n)
			}
			if n.up() {
				if s.w.deferCommit && n.rn.CommitUnannounced() && s.rng.IntN(2) == 0 {
					n.rn.BroadcastCommit()
				}
				n.rn.Tick()
				s.drain(n)
			}
		}
		s.deliver()
		for _, n := range s.nodes[1:] {
			if n.up() && n.role == raft.StateLeader {
				s.checkLeader(n)
			}
		}
	}
}

// nodeConfig is the core configuration of node id in its incarnation inc.
func (s *simulation) nodeConfig(id raft.NodeID, inc uint64) raft.Config {
	c := raft.DefaultConfig(id)
	c.ElectionTick = electionTick
	c.HeartbeatTick = s.w.heartbeatTick
	c.Seed = mix64(s.o.Seed ^ mix64(uint64(id)<<32|inc))
	c.PreVote = s.w.preVote
	c.CheckQuorum = s.w.checkQuorum
	c.MaxMsgBytes = s.w.maxMsgBytes
	c.MaxInflightMsgs = s.w.maxInflight
	c.MaxInflightBytes = 0
	c.MaxUncommittedEntriesBytes = maxUncommittedBytes
	c.MaxSnapshotChunkBytes = s.w.chunkBytes
	c.Logger = s.logger
	c.Bugs = s.o.Bugs
	c.DeferCommitBroadcast = s.w.deferCommit
	c.DeferLeaderSync = s.w.deferLeaderSync
	return c
}

// start (re)starts n from its durable state, as a real server would after a crash: the state
// machine is restored from the durable snapshot and the core replays committed entries after it.
func (s *simulation) start(n *simNode) {
	n.inc++
	ps := n.store.Load()
	cfg := s.nodeConfig(n.id, n.inc)
	fresh := ps.HardState.IsEmpty() && ps.Snapshot == nil && len(ps.Entries) == 0
	if fresh && slices.Contains(s.initial, n.id) {
		// Bootstrapping is idempotent while nothing is durable: a node that crashed before its
		// first persist has never voted or acknowledged anything.
		cfg.InitialVoters = slices.Clone(s.initial)
	}
	n.sm = newKV()
	if ps.Snapshot != nil {
		sm, err := decodeKV(ps.Snapshot.Data)
		if err != nil {
			s.fail(CoreContract, "node %d: durable snapshot at %d: %v", n.id, ps.Snapshot.Meta.Index, err)
		}
		n.sm = sm
		cfg.Applied = ps.Snapshot.Meta.Index
		n.lastSnap = ps.Snapshot.Meta.Index
	} else {
		n.lastSnap = 0
	}
	rn, err := raft.New(cfg, ps)
	if err != nil {
		s.fail(CoreContract, "node %d: raft.New rejected its durable state (hs %+v, snapshot %d, %d entries): %v",
			n.id, ps.HardState, n.lastSnap, len(ps.Entries), err)
	}
	n.rn, n.started = rn, true
	n.role, n.term = raft.StateFollower, ps.HardState.Term
	n.reads, n.unreachable, n.lcTerm = nil, nil, 0
	n.unsynced, n.syncDue = nil, leaderSync{}
	s.ev(0xb1, uint64(n.id), n.inc)
	if s.o.Trace != nil {
		s.tracef("n%d start inc=%d hs=%+v snap=%d entries=%d", n.id, n.inc, ps.HardState, n.lastSnap, len(ps.Entries))
	}
	s.drain(n)
}

// crash loses everything of n that is not durable.
func (s *simulation) crash(n *simNode, why string) {
	n.rn, n.sm, n.reads, n.unreachable = nil, nil, nil, nil
	n.role = raft.StateFollower
	if len(n.unsynced) > 0 {
		s.st.UnsyncedCrashes++
	}
	n.unsynced, n.syncDue = nil, leaderSync{} // pending reports die with the process
	if err := n.store.Crash(); err != nil {
		s.fail(StorageFault, "node %d: %v", n.id, fmt.Errorf("recovering its store after a crash: %w", err))
	}
	s.st.Faults[FaultCrash]++
	n.downTil = s.now + 1 + uint64(s.rng.IntN(s.w.maxDown))
	s.ev(0xc1, uint64(n.id))
	if s.o.Trace != nil {
		s.tracef("n%d CRASH %s (down until %d)", n.id, why, n.downTil)
	}
}

// drain handles Readys until the node has nothing left to do. A leader's deferred sync may
// complete between two Readys, as an fsync running beside the loop would; once the faults stop,
// it always does, so that commits never wait on it.
func (s *simulation) drain(n *simNode) {
	for k := 0; n.up() && n.rn.HasReady(); k++ {
		if k == 10000 {
			s.fail(CoreContract, "node %d still HasReady after %d Readys", n.id, k)
		}
		s.handleReady(n)
		if n.up() && n.syncDue.owed && (s.quiesced || s.rng.Float64() < s.w.syncRate/2) {
			s.syncLeader(n)
		}
	}
}

// syncDueNow decides, once per tick, whether n's owed leader sync completes now: always once the
// faults stop or after maxLeaderSyncDelay ticks, more likely when a commit waits on it.
func (s *simulation) syncDueNow(n *simNode) bool {
	if s.quiesced || s.now >= n.syncDue.since+maxLeaderSyncDelay {
		return true
	}
	p := s.w.syncRate
	if n.rn.CommitWaitsOnLeaderSync() {
		p = (1 + p) / 2
	}
	return s.rng.Float64() < p
}

// syncLeader completes n's deferred leader sync: it syncs the store, then reports to the core
// what the sync covered (outside Ready/Advance; the caller drains n). A crash may strike before
// the sync, losing part of the unsynced appends, or after it and before the report, so that the
// core never learns of a sync that happened. A report whose term the core no longer leads is
// made all the same: the core must ignore it.
func (s *simulation) syncLeader(n *simNode) {
	due := n.syncDue
	crashAt := 0
	if !s.quiesced && s.w.readyCrashRate > 0 && s.rng.Float64() < s.w.readyCrashRate {
		crashAt = 1 + s.rng.IntN(2)
	}
	if crashAt == 1 {
		s.crash(n, "with a leader's appends written, before their sync")
		return
	}
	if err := n.store.Sync(); err != nil {
		s.fail(StorageFault, "node %d: %v", n.id, fmt.Errorf("syncing its log: %w", err))
	}
	n.unsynced = n.unsynced[:0]
	if crashAt == 2 {
		s.st.SyncCrashes++
		s.crash(n, "after syncing a leader's appends, before LeaderSynced")
		return
	}
	n.syncDue = leaderSync{}
	s.reportSynced(n, due)
}

// reportSynced tells n's core that its log is durable through due.index.
func (s *simulation) reportSynced(n *simNode, due leaderSync) {
	n.rn.LeaderSynced(due.term, due.index)
	s.st.LeaderSyncs++
	s.ev(0xd2, uint64(n.id), due.term, due.index)
	if s.o.Trace != nil {
		s.tracef("n%d leader synced %d@%d", n.id, due.index, due.term)
	}
}

// handleReady follows the contract's five steps, with a possible crash between any two of them.
func (s *simulation) handleReady(n *simNode) {
	rd := n.rn.Ready()
	s.ev(0xd1, uint64(n.id), uint64(len(rd.Messages)), uint64(len(rd.Entries)), uint64(len(rd.CommittedEntries)),
		uint64(len(rd.MessagesAfterPersist)), rd.HardState.Term, uint64(rd.HardState.Vote), rd.HardState.Commit)
	if s.o.Trace != nil {
		s.tracef("n%d ready hs=%+v ents=%s sync=%t committed=%s msgs=%d after=%d snap=%t reads=%d", n.id, rd.HardState,
			spanOf(rd.Entries), rd.MustSync, spanOf(rd.CommittedEntries), len(rd.Messages), len(rd.MessagesAfterPersist),
			rd.Snapshot != nil, len(rd.ReadStates))
	}
	crashAt := 0
	if !s.quiesced && s.w.readyCrashRate > 0 && s.rng.Float64() < s.w.readyCrashRate {
		crashAt = 1 + s.rng.IntN(4)
	}
	// A crash due right after persisting may instead strike inside the Save, if the store can
	// model that; the store's own PRNG decides, so that the simulator's draws (and with them the
	// trace of a run over a store that never crashes inside a Save) stay the same.
	inSave := false
	if crashAt == 2 {
		if sc, ok := n.store.(SaveCrasher); ok {
			inSave = sc.CrashInNextSave()
		}
	}
	if rd.SoftState != nil {
		n.role = rd.SoftState.State
		if n.role == raft.StateLeader {
			st := n.rn.Status()
			s.st.Elections++
			s.check(ElectionSafety, s.chk.leader(st.HardState.Term, n.id, "became leader"))
			if s.o.Trace != nil {
				s.tracef("n%d LEADER term %d", n.id, st.HardState.Term)
			}
		}
	}

	// 1. Messages that depend on nothing in this Ready being durable.
	for _, m := range rd.Messages {
		s.send(n, m)
	}
	if crashAt == 1 {
		s.st.ReadyCrashes++
		s.crash(n, "after sending Messages, before persisting")
		return
	}

	// 2. Persist.
	if !s.persist(n, rd, inSave) {
		s.st.ReadyCrashes++
		s.st.SaveCrashes++
		s.crash(n, "inside Save, before it returned")
		return
	}
	if crashAt == 2 {
		s.st.ReadyCrashes++
		s.crash(n, "after persisting, before MessagesAfterPersist")
		return
	}

	// 3. Messages that acknowledge what was just persisted.
	for _, m := range rd.MessagesAfterPersist {
		s.send(n, m)
	}
	if crashAt == 3 {
		s.st.ReadyCrashes++
		s.crash(n, "after MessagesAfterPersist, before applying")
		return
	}

	// 4. Install the snapshot, apply committed entries, serve reads.
	n.confApplied = 0
	if rd.Snapshot != nil && !rd.Snapshot.IsEmpty() {
		s.install(n, *rd.Snapshot)
	}
	for _, e := range rd.CommittedEntries {
		s.apply(n, e)
	}
	if k := len(rd.CommittedEntries); k > 0 && s.o.DriverBugs.ReapplyEntry {
		s.apply(n, rd.CommittedEntries[k-1]) // planted bug: the last entry is applied again
	}
	for _, rs := range rd.ReadStates {
		if len(rs.RequestCtx) != 8 {
			continue
		}
		ctx := binary.BigEndian.Uint64(rs.RequestCtx)
		for k := range n.reads {
			if r := &n.reads[k]; r.ctx == ctx && !r.answered {
				r.answered, r.index = true, rs.Index
				s.ev(0xe1, uint64(n.id), ctx, rs.Index)
			}
		}
	}
	s.serveReads(n)
	if crashAt == 4 {
		s.st.ReadyCrashes++
		s.crash(n, "after applying, before Advance")
		return
	}

	// 5. Advance, then what may only happen outside Ready/Advance.
	n.rn.Advance(rd)
	if s.o.DriverBugs.ReportUnsyncedLeaderWrites && n.syncDue.owed {
		// Planted bug: the write is reported durable without any sync.
		due := n.syncDue
		n.syncDue = leaderSync{}
		s.reportSynced(n, due)
	}
	for _, id := range n.unreachable {
		n.rn.ReportUnreachable(id)
	}
	n.unreachable = n.unreachable[:0]
	if n.confApplied > s.confIndex {
		s.confIndex = n.confApplied
		s.onConfig(n.rn.Status().ConfState)
		if len(s.conf.VotersOutgoing) > 0 {
			s.onJointApplied(n)
		}
	}
	s.maybeCompact(n)
	if n.role == raft.StateLeader {
		s.checkLeader(n)
	}
}

func spanOf(ents []raft.Entry) string {
	if len(ents) == 0 {
		return "-"
	}
	return fmt.Sprintf("[%d@%d..%d@%d]", ents[0].Index, ents[0].Term, ents[len(ents)-1].Index, ents[len(ents)-1].Term)
}

// persist hands the Ready's durable state to the store. It returns false if the store lost power
// inside the Save (only possible when armed); the caller then crashes the node.
func (s *simulation) persist(n *simNode, rd raft.Ready, armed bool) bool {
	old := n.store.HardState()
	if hs := rd.HardState; !hs.IsEmpty() {
		if hs.Term < old.Term {
			s.fail(CoreContract, "node %d persists term %d below its durable term %d", n.id, hs.Term, old.Term)
		}
		if hs.Term == old.Term && old.Vote != raft.None && hs.Vote != old.Vote {
			s.fail(ElectionSafety, "node %d changes its durable vote in term %d from %d to %d", n.id, hs.Term, old.Vote, hs.Vote)
		}
		n.term = max(n.term, hs.Term)
	}
	// Entries without MustSync: a leader's own appends under DeferLeaderSync, and nothing else.
	deferred := !rd.MustSync && len(rd.Entries) > 0
	if deferred {
		switch {
		case !s.w.deferLeaderSync:
			s.fail(CoreContract, "node %d: a Ready of entries %s without MustSync, and DeferLeaderSync is off", n.id, spanOf(rd.Entries))
		case n.role != raft.StateLeader:
			s.fail(CoreContract, "node %d (%s) may defer the sync of entries %s: only a leader may, for its own appends",
				n.id, n.role, spanOf(rd.Entries))
		case rd.Entries[0].Term != n.term || rd.Entries[len(rd.Entries)-1].Term != n.term:
			s.fail(CoreContract, "node %d, leader in term %d, may defer the sync of entries %s: only of its own term's",
				n.id, n.term, spanOf(rd.Entries))
		}
	}
	if err := n.store.Save(rd.HardState, rd.Snapshot, rd.Entries, rd.MustSync); err != nil {
		if armed && errors.Is(err, ErrPowerLoss) {
			s.ev(0xc2, uint64(n.id))
			return false
		}
		s.fail(CoreContract, "node %d: %v", n.id, fmt.Errorf("persisting a Ready: %w", err))
	}
	if rd.MustSync {
		// The sync covered every earlier write too. An owed report stays owed: reporting it
		// later is harmless, and exercises the core's handling of late or stale reports.
		n.unsynced = n.unsynced[:0]
	}
	if deferred {
		n.wroteUnsynced(rd.Entries)
		s.st.LeaderWrites++
		last := rd.Entries[len(rd.Entries)-1]
		if !n.syncDue.owed || n.syncDue.term != last.Term {
			n.syncDue = leaderSync{owed: true, since: s.now}
		}
		n.syncDue.term, n.syncDue.index = last.Term, last.Index
	}
	if hs := n.store.HardState(); hs.Commit > n.store.LastIndex() {
		s.fail(CoreContract, "node %d: durable commit %d beyond its durable log (last index %d)", n.id, hs.Commit, n.store.LastIndex())
	}
	s.check(LogMatching, s.chk.persisted(n.id, n.termAt, rd.Entries))
	return true
}

// send checks what a message acknowledges, then puts it on the wire with the run's faults.
func (s *simulation) send(n *simNode, m raft.Message) {
	var unsynced func() string
	if k := len(n.unsynced); k > 0 {
		unsynced = func() string {
			return fmt.Sprintf("its writes of entries %d..%d", n.unsynced[0].Index, n.unsynced[k-1].Index)
		}
	}
	if s.transmit(n.id, m, n.store.HardState(), n.store.LastIndex(), unsynced, len(s.nodes)) {
		n.unreachable = append(n.unreachable, m.To)
	}
}

// deliver steps every message due by now into its destination. Latency is at least one tick, so
// messages sent while delivering wait for a later tick.
func (s *simulation) deliver() {
	for {
		from, m, ok := s.net.popDue(s.now)
		if !ok {
			return
		}
		to := s.nodes[m.To]
		if !to.up() || s.net.blocked(from, m.To) {
			s.st.Dropped++
			s.ev(0xf2, uint64(from), uint64(m.To))
			continue
		}
		s.st.Delivered++
		if s.o.Trace != nil {
			s.tracef("n%d <- n%d(via %d) %s term=%d logterm=%d idx=%d commit=%d ents=%s reject=%t", m.To, m.From, from, m.Type,
				m.Term, m.LogTerm, m.Index, m.Commit, spanOf(m.Entries), m.Reject)
		}
		if err := to.rn.Step(m); err != nil {
			s.st.StepErrors++
			if s.o.Trace != nil {
				s.tracef("n%d step error: %v", to.id, err)
			}
		}
		s.drain(to)
	}
}

func (s *simulation) install(n *simNode, snap raft.Snapshot) {
	sm, err := decodeKV(snap.Data)
	if err != nil {
		s.fail(CoreContract, "node %d handed a snapshot at %d it cannot decode: %v", n.id, snap.Meta.Index, err)
	}
	if sm.applied != snap.Meta.Index {
		s.fail(StateMachineSafety, "node %d handed a snapshot labelled %d holding state applied through %d",
			n.id, snap.Meta.Index, sm.applied)
	}
	if snap.Meta.Index < n.sm.applied {
		s.fail(ApplyOrder, "node %d handed a snapshot at %d older than its applied index %d", n.id, snap.Meta.Index, n.sm.applied)
	}
	s.check(StateMachineSafety, s.chk.image(n.id, sm.applied, sm.digest))
	n.sm = sm
	n.lastSnap = max(n.lastSnap, snap.Meta.Index)
	s.st.SnapshotsInstalled++
	s.ev(0xe2, uint64(n.id), snap.Meta.Index)
	if s.o.Trace != nil {
		s.tracef("n%d install snapshot %d@%d", n.id, snap.Meta.Index, snap.Meta.Term)
	}
}

func (s *simulation) apply(n *simNode, e raft.Entry) {
	s.check(ApplyOrder, applyNext(n.id, n.sm.applied, e.Index))
	key, val, isWrite := n.sm.apply(e)
	s.check(StateMachineSafety, s.chk.apply(n.id, n.term, e, n.sm.digest))
	s.ev(0xe3, uint64(n.id), e.Index, e.Term)
	switch {
	case e.Type == raft.EntryConfChange:
		n.confApplied = e.Index
	case isWrite:
		if p, ok := s.pending[val]; ok && p.node == n.id && p.inc == n.inc {
			// Acknowledged: the client that proposed it at n now knows it is committed.
			delete(s.pending, val)
			s.st.Committed++
			s.chk.maxAcked = max(s.chk.maxAcked, e.Index)
			if s.o.Trace != nil {
				s.tracef("n%d ack write %s=%s at %d", n.id, key, val, e.Index)
			}
		}
	}
}

// serveReads answers every read whose read index n has applied, and checks it: the state read is
// the one at n's applied index, which must include every write acknowledged before the request.
func (s *simulation) serveReads(n *simNode) {
	keep := n.reads[:0]
	for _, r := range n.reads {
		if !r.answered || n.sm.applied < r.index {
			keep = append(keep, r)
			continue
		}
		s.st.ReadsChecked++
		if n.sm.applied < r.minApplied {
			s.fail(Linearizability, "read %d requested at tick %d on node %d got read index %d and saw the state at index %d, "+
				"missing a write acknowledged at index %d before the request", r.ctx, r.tick, n.id, r.index, n.sm.applied, r.minApplied)
		}
		s.ev(0xe4, uint64(n.id), r.ctx, n.sm.applied)
	}
	n.reads = keep
}

func (s *simulation) maybeCompact(n *simNode) {
	if n.sm.applied < n.lastSnap+s.w.compactEvery || n.sm.applied == 0 {
		return
	}
	st := n.rn.Status()
	if st.Applied != n.sm.applied {
		s.fail(CoreContract, "node %d: core reports applied %d after Advance, state machine is at %d", n.id, st.Applied, n.sm.applied)
	}
	snap := raft.Snapshot{
		Meta: raft.SnapshotMeta{Index: n.sm.applied, Term: n.sm.appliedTerm, ConfState: cloneConfState(st.ConfState)},
		Data: n.sm.encode(),
	}
	armed := false
	if sc, ok := n.store.(SnapshotCrasher); ok && !s.quiesced && s.w.crashRate > 0 {
		armed = sc.CrashInNextSnapshot()
	}
	if err := n.store.SaveSnapshot(snap); err != nil {
		if armed && errors.Is(err, ErrPowerLoss) {
			s.st.SnapshotCrashes++
			s.crash(n, "inside a local snapshot save")
			return
		}
		s.fail(CoreContract, "node %d: %v", n.id, fmt.Errorf("saving a local snapshot: %w", err))
	}
	n.unsynced = n.unsynced[:0] // SaveSnapshot synced every earlier write
	if err := n.rn.Compact(snap); err != nil && !errors.Is(err, raft.ErrSnapshotOutOfDate) && !errors.Is(err, raft.ErrCompacted) {
		s.fail(CoreContract, "node %d: Compact at %d: %v", n.id, snap.Meta.Index, err)
	}
	n.lastSnap = snap.Meta.Index
	s.st.Compactions++
	s.ev(0xe5, uint64(n.id), snap.Meta.Index)
	if s.o.Trace != nil {
		s.tracef("n%d compact at %d", n.id, snap.Meta.Index)
	}
	s.drain(n)
}

func (s *simulation) checkLeader(n *simNode) {
	if n.lcTerm != n.term {
		n.lcTerm, n.lcCursor = n.term, 0
	}
	cur, msg := s.chk.leaderHolds(n.id, n.term, n.store, n.lcCursor)
	n.lcCursor = cur
	s.check(LeaderCompleteness, msg)
}

// probeKey is the register the liveness probe writes. The probe is checked in the state machine,
// not by watching applies, because a node may receive it inside a snapshot.
const probeKey = "probe"

func (s *simulation) probed(n *simNode) bool {
	return n.up() && n.sm.vals[probeKey] == s.probeVal
}

func inConf(cs raft.ConfState, id raft.NodeID) bool {
	return slices.Contains(cs.Voters, id) || slices.Contains(cs.VotersOutgoing, id) ||
		slices.Contains(cs.Learners, id) || slices.Contains(cs.LearnersNext, id)
}

// onConfig acts on a newly applied configuration: new members are started (empty, to be caught
// up by the leader), and removed members are shut down for good, as a server would exit.
func (s *simulation) onConfig(cs raft.ConfState) {
	s.conf = cs
	if s.o.Trace != nil {
		s.tracef("config %d: voters=%v outgoing=%v learners=%v next=%v", s.confIndex, cs.Voters, cs.VotersOutgoing, cs.Learners, cs.LearnersNext)
	}
	for _, n := range s.nodes[1:] {
		in := inConf(cs, n.id)
		switch {
		case in && !n.member && !n.removed:
			n.member = true
			s.start(n)
		case in && n.removeAt != 0:
			n.removeAt = 0 // added back before it exited
		case !in && n.member && !n.removed && n.removeAt == 0:
			n.removeAt = s.now + removalGrace
			if s.o.Trace != nil {
				s.tracef("n%d removed from the cluster: exits at tick %d", n.id, n.removeAt)
			}
		}
	}
}

// othersKnowRemoved reports whether every voter of the newest configuration is up and has
// applied a configuration without n: only then can n exit without the risk that they still need
// its vote (the outgoing half of a joint configuration) and can never get it. Learners never
// need a vote. A careful operator waits for the same before stopping a removed server.
func (s *simulation) othersKnowRemoved(n *simNode) bool {
	for _, m := range s.nodes[1:] {
		if m == n || m.removed || !(slices.Contains(s.conf.Voters, m.id) || slices.Contains(s.conf.VotersOutgoing, m.id)) {
			continue
		}
		if !m.up() || inConf(m.rn.Status().ConfState, n.id) {
			return false
		}
	}
	return true
}

// unawareRemoved reports whether removed member n is up and has not applied its removal: only
// such a member is stopped before the voters know (maxLinger), because it campaigns. One that
// applied its removal never does, may even lead still, handing leadership over, and may be the
// only one able to tell the voters; one that is down waits for its restart to tell which.
func (s *simulation) unawareRemoved(n *simNode) bool {
	return n.up() && inConf(n.rn.Status().ConfState, n.id)
}

// exitRemoved shuts down, for good, a removed member whose grace is over.
func (s *simulation) exitRemoved(n *simNode) {
	n.removed, n.removeAt = true, 0
	if n.up() {
		n.rn, n.sm, n.reads = nil, nil, nil
		n.unsynced, n.syncDue = nil, leaderSync{}
	}
	s.ev(0xb2, uint64(n.id))
	if s.o.Trace != nil {
		s.tracef("n%d removed from the cluster: shut down", n.id)
	}
}

// leader returns the up node that believes it leads in the highest term, or nil.
func (s *simulation) leader() *simNode {
	var l *simNode
	for _, n := range s.nodes[1:] {
		if n.up() && n.role == raft.StateLeader && (l == nil || n.term > l.term) {
			l = n
		}
	}
	return l
}

func (s *simulation) randomUp() *simNode {
	var ups []*simNode
	for _, n := range s.nodes[1:] {
		if n.up() {
			ups = append(ups, n)
		}
	}
	if len(ups) == 0 {
		return nil
	}
	return ups[s.rng.IntN(len(ups))]
}

func (s *simulation) clusterState() string {
	var b strings.Builder
	for _, n := range s.nodes[1:] {
		if !n.started {
			continue
		}
		if !n.up() {
			fmt.Fprintf(&b, "[n%d down removed=%t] ", n.id, n.removed)
			continue
		}
		st := n.rn.Status()
		fmt.Fprintf(&b, "[n%d %s term=%d lead=%d commit=%d applied=%d last=%d voters=%v learners=%v probe=%t] ",
			n.id, st.SoftState.State, st.HardState.Term, st.SoftState.Lead, st.HardState.Commit, st.Applied, st.LastIndex,
			st.ConfState.Voters, st.ConfState.Learners, s.probed(n))
		if st.SoftState.State == raft.StateLeader {
			for _, id := range slices.Sorted(maps.Keys(st.Progress)) {
				pr := st.Progress[id]
				fmt.Fprintf(&b, "{progress %d: %s match=%d next=%d inflight=%d active=%t} ", id, pr.State, pr.Match, pr.Next, pr.Inflight, pr.RecentActive)
			}
		}
	}
	return b.String()
}
