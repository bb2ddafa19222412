package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caucus/caucus/internal/snap"
	"github.com/caucus/caucus/internal/vfs"
	"github.com/caucus/caucus/raft"
)

// Errors returned to callers; the server maps them to API status codes.
var (
	// ErrUnavailable: the request could not be completed because this member cannot reach a
	// quorum or knows no leader. Nothing was acknowledged; for writes the outcome may be unknown
	// (a retry with the same session is safe).
	ErrUnavailable = errors.New("unavailable")
	// ErrStopped: the member is shutting down or has stopped after a fatal error.
	ErrStopped = errors.New("node: stopped")
	// errProposalLost says a write is certainly not applied: another entry committed where it
	// was appended. It is wrapped with ErrUnavailable, so clients retry it.
	errProposalLost = errors.New("the write was overwritten in the log after a leadership change and was not applied")
)

// Limits on the loop's queues, named so that saturation is visible and bounded.
const (
	// MaxQueuedPeerMessages bounds messages received from peers and not yet stepped. Excess
	// messages are dropped: Raft retransmits.
	MaxQueuedPeerMessages = 4096
	// MaxQueuedProposals bounds proposals waiting for the loop; beyond it Propose waits on its
	// context, which gives clients backpressure instead of unbounded memory.
	MaxQueuedProposals = 4096
	// MaxDrainPerIteration bounds the inputs taken in one loop iteration, so that one Ready (one
	// append, one fsync) never grows without bound.
	MaxDrainPerIteration = 1024
)

// Group commit of the state machine. Applying an entry writes into pending state
// (StateMachine.Apply); committing it costs a dozen page writes whatever it holds in caucus's
// store (measured in internal/mvcc's BenchmarkApplyPut: ~55 µs for one put, ~6 µs per put in a
// batch of 64), so the node commits applied entries in groups rather than once per Ready.
//
// Acknowledging a write before its group is committed is safe: the entry is committed in the
// Raft log (durable on a quorum), its result is deterministic, and a crash only loses the
// transaction, which the log replays (the store records its applied index atomically with the
// data). Reads are what must wait: a linearizable read is released only once its read index is
// committed to the store (a read waiting for it forces the commit at the end of the loop
// iteration), and a serializable read sees the store as of its last commit, at most
// DefaultApplyCommitInterval behind what this member has applied.
const (
	// DefaultApplyCommitInterval bounds how long applied entries stay uncommitted in the state
	// machine when nothing forces a commit.
	DefaultApplyCommitInterval = 10 * time.Millisecond
	// DefaultPromptCommitInterval replaces it while the state machine has readers waiting for
	// commits (PromptCommitter): watchers see a write only once it is committed to the store.
	// It spaces such commits, not delays them: what readers wait for is committed at once when
	// the last commit is at least this old, else when it becomes so, so an occasional write
	// reaches its watchers without waiting while a stream of them costs at most one commit per
	// interval.
	DefaultPromptCommitInterval = time.Millisecond
	// DefaultCommitBroadcastDelay is how long a leader lets a new commit index wait for the next
	// append to carry it to the followers before sending it on its own (see
	// raft.Config.DeferCommitBroadcast). A client writing in a loop sends its next write well
	// within it, so the announcement rides along; an idle cluster's followers apply this much
	// later than the leader.
	DefaultCommitBroadcastDelay = time.Millisecond
	// MaxUncommittedApplied bounds the entries applied into one open state-machine transaction
	// (the transaction's dirty pages live in memory until it commits).
	MaxUncommittedApplied = 1024
)

// LogStore is the durable Raft log. Save appends HardState and entries (truncating any persisted
// entries at or after ents[0].Index first) and, if sync, makes them durable before returning.
// SaveSnapshot records that a snapshot at meta.Index is durable in the SnapshotStore, after
// which ReleaseTo may drop log data at or below it. Implemented by internal/wal.
type LogStore interface {
	Save(hs raft.HardState, ents []raft.Entry, sync bool) error
	// SyncWritten makes everything saved before the call durable without blocking Saves
	// from other goroutines (the leader's background sync).
	SyncWritten() error
	SaveSnapshot(meta raft.SnapshotMeta) error
	ReleaseTo(index uint64) error
	Close() error
}

// SnapshotStore keeps the newest snapshots durably. Saves must be atomic: after a crash either
// the new snapshot or the previous one is loadable. SaveStream takes data written by a function
// (exactly size bytes), so that the state machine serializes itself straight to disk; OpenAt
// reads a saved snapshot back (to send it to a follower). Implemented by internal/snap.
type SnapshotStore interface {
	Save(meta raft.SnapshotMeta, data []byte) error
	SaveStream(meta raft.SnapshotMeta, size uint64, write func(io.Writer) error) error
	OpenAt(index, term uint64) (*snap.Reader, error)
}

// Transport sends Raft messages to peers without blocking. Implemented by internal/transport.
type Transport interface {
	Send(msgs []raft.Message)
	AddPeer(id raft.NodeID, addr string)
	RemovePeer(id raft.NodeID)
}

// Config configures a node. Open (open.go) opens its storage from a data directory.
type Config struct {
	Raft raft.Config
	// TickInterval is the wall-clock length of one Raft tick.
	TickInterval time.Duration
	// SnapshotEntries is how many applied entries trigger a new snapshot and log compaction.
	SnapshotEntries uint64
	// ApplyCommitInterval is the longest applied entries wait for their state-machine commit
	// when no read forces it (0 means DefaultApplyCommitInterval; see the group-commit notes).
	ApplyCommitInterval time.Duration
	// PromptCommitInterval is ApplyCommitInterval while a PromptCommitter state machine reports
	// waiting readers (0 means DefaultPromptCommitInterval).
	PromptCommitInterval time.Duration
	// CommitBroadcastDelay is the longest a leader defers announcing a commit index to the
	// followers (0 means DefaultCommitBroadcastDelay; negative: announce at once, as etcd does).
	CommitBroadcastDelay time.Duration
	// LeaderSyncDelay, if positive, lets the leader sync its own log after the followers
	// (raft.Config.DeferLeaderSync): it is how long entries that would commit on the leader's
	// own copy wait for another follower before the leader syncs. Zero or negative: the leader
	// syncs every write before it counts itself, as etcd does. See leadersync.go for when
	// each is faster.
	LeaderSyncDelay time.Duration
	// Time is the loop's source of time: the tick source, its timers, and the time it reads
	// (clock.go). Nil means the real clock; the simulator runs members on simulated time.
	Time Clock
	// Executor runs the loop's background work: the snapshot writer and the leader's log sync
	// (drive.go). Nil means goroutines; the simulator runs the work when it chooses.
	Executor Executor
	// Bugs plants driver bugs, for tests of the simulator's checkers only (bugs.go).
	Bugs DriverBugs
	// PeerAddr extracts the transport address from a member's peer URLs.
	PeerAddr func(peerURLs []string) string
	Logger   *slog.Logger
}

// Node is one running member.
type Node struct {
	cfg   Config
	id    raft.NodeID
	log   *slog.Logger
	rn    *raft.Node
	wal   LogStore
	snaps SnapshotStore
	sm    StateMachine
	trans Transport
	clock Clock
	exec  Executor
	fs    vfs.FS // holds snapDir
	// peers is the transport's peer set, as last synced from the state machine (syncPeers).
	peers  map[raft.NodeID]string
	recvc  chan raft.Message
	propc  chan *proposal
	readc  chan *readWaiter
	ctrlc  chan func()
	unreac chan raft.NodeID
	stopc  chan struct{}
	donec  chan struct{}

	nextID atomic.Uint64
	// closers release the storage the node owns, after the loop exits.
	closers []func() error

	mu       sync.Mutex
	waiters  map[uint64]*proposal
	fatalErr error
	status   raft.Status

	// Owned by the loop goroutine.
	reads readQueue
	// pending counts the entries applied to the state machine and not yet committed;
	// commitPrompt: the timer was moved to PromptCommitInterval for this group.
	commitPrompt bool
	// lastCommit is when the state machine last committed (commitApplied).
	lastCommit time.Time
	// commitTimer fires ApplyCommitInterval after the first of them was applied.
	pending     int
	commitTimer Timer
	// restored: a snapshot was installed and nothing applied since (DriverBugs).
	restored bool
	// bcastTimer fires CommitBroadcastDelay after the leader first owed a follower its commit
	// index; bcastArmed says it is running.
	bcastTimer Timer
	bcastArmed bool
	// leading: this member is the leader, as of the last Ready's SoftState.
	leading bool
	// appendedAt holds the proposals this member appended as leader and has not yet seen an
	// entry commit for at their index (see lostProposals).
	appendedAt map[uint64]appendedProposal
	// forwarded holds the ids of the proposals this member handed to the Raft core while not
	// leading (the core forwards them to the leader) and has not yet seen applied. A leader
	// may drop a forwarded proposal without a word (it stepped down before appending it), so
	// when the leadership this member knows changes, they are answered at once with an
	// unknown outcome (failForwarded) instead of waiting for their deadline.
	forwarded map[uint64]struct{}
	// lsync tracks the leader's unsynced writes and its background sync (leadersync.go).
	lsync       *leaderSync
	applied     uint64
	appliedTerm uint64
	statusDirty bool
	snapIndex   uint64
	// snapInFlight is set while a snapshot is written in the background; its result arrives on
	// snapDone (buffered, so the writer never waits for the loop) and snapWG lets the loop's exit
	// wait for it before the storage closes.
	// stepErr is a persistence error met while stepping a peer message (storing a snapshot
	// chunk); the loop stops on it.
	stepErr error
	// pendingHS is a commit-only HardState not yet written (see persist).
	pendingHS    raft.HardState
	snapInFlight bool
	// snapDir holds snapshots and the file of a snapshot being received (recv).
	snapDir string
	recv    *snapReceive
	// snapRd is the open snapshot file the leader reads chunks from (see fillSnapshotChunks).
	snapRd   *snap.Reader
	snapDone chan snapResult
	snapWG   sync.WaitGroup
	stopOnce sync.Once
}

type proposal struct {
	id   uint64
	data []byte
	cc   *raft.ConfChange
	done chan proposalResult
}

type proposalResult struct {
	res any
	err error
}

// newNode wires a node from opened storage; Start runs it.
func newNode(cfg Config, rn *raft.Node, wal LogStore, snaps SnapshotStore, sm StateMachine, trans Transport, applied, snapIndex uint64) *Node {
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	clock := clockOrReal(cfg.Time)
	n := &Node{
		cfg:        cfg,
		id:         cfg.Raft.ID,
		log:        lg.With("component", "node", "member", cfg.Raft.ID),
		rn:         rn,
		wal:        wal,
		snaps:      snaps,
		sm:         sm,
		trans:      trans,
		peers:      map[raft.NodeID]string{},
		clock:      clock,
		exec:       cfg.Executor,
		fs:         vfs.NewOS(),
		recvc:      make(chan raft.Message, MaxQueuedPeerMessages),
		propc:      make(chan *proposal, MaxQueuedProposals),
		readc:      make(chan *readWaiter, MaxQueuedProposals),
		ctrlc:      make(chan func(), 64),
		unreac:     make(chan raft.NodeID, 256),
		stopc:      make(chan struct{}),
		donec:      make(chan struct{}),
		waiters:    make(map[uint64]*proposal),
		appendedAt: make(map[uint64]appendedProposal),
		forwarded:  make(map[uint64]struct{}),
		snapDone:   make(chan snapResult, 1),
		applied:    applied,
		snapIndex:  snapIndex,
	}
	if n.cfg.ApplyCommitInterval <= 0 {
		n.cfg.ApplyCommitInterval = DefaultApplyCommitInterval
	}
	if n.cfg.PromptCommitInterval <= 0 {
		n.cfg.PromptCommitInterval = DefaultPromptCommitInterval
	}
	n.commitTimer = stoppedTimer(clock)
	n.bcastTimer = stoppedTimer(clock)
	n.lsync = newLeaderSync(cfg.Raft.DeferLeaderSync, cfg.LeaderSyncDelay, clock)
	// Proposal ids must not repeat across restarts while old entries may still be applied: seed
	// them from the clock.
	n.nextID.Store(uint64(clock.Now().UnixNano()))
	// So must read-index contexts: a leader's answer to a read of the previous process may
	// arrive after a restart, and must not confirm a new read with an older index.
	n.reads.seq = uint64(clock.Now().UnixNano())
	n.status = rn.Status()
	return n
}

// ID returns this member's id.
func (n *Node) ID() raft.NodeID { return n.id }

// NextProposalID returns a proposal id unique on this member: the application puts it in the
// entry it proposes, and returns it with the entry's result from StateMachine.Apply. Ids are
// seeded from the clock at start, so that they do not repeat across restarts while old entries
// may still be applied.
func (n *Node) NextProposalID() uint64 { return n.nextID.Add(1) }

// Step hands a message received from a peer to the loop. It never blocks: when the queue is
// full the message is dropped and Raft's retransmission recovers.
func (n *Node) Step(m raft.Message) {
	select {
	case n.recvc <- m:
	default:
	}
}

// ReportUnreachable tells the loop that a message to id could not be sent.
func (n *Node) ReportUnreachable(id raft.NodeID) {
	select {
	case n.unreac <- id:
	default:
	}
}

// Start runs the loop until Stop.
func (n *Node) Start() { go n.run() }

// Stop stops the loop and closes the storage it owns. It is idempotent.
func (n *Node) Stop() {
	n.stopOnce.Do(func() { close(n.stopc) })
	<-n.donec
}

// Done is closed when the loop has exited (after Stop or a fatal error).
func (n *Node) Done() <-chan struct{} { return n.donec }

// Err returns the fatal error that stopped the node, if any.
func (n *Node) Err() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fatalErr
}

// Status returns the Raft status as of the last loop iteration.
func (n *Node) Status() raft.Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.status
}

// Leader returns the current leader as this member knows it (None if unknown).
func (n *Node) Leader() raft.NodeID { return n.Status().SoftState.Lead }

// Propose replicates data, an entry of the application's format carrying proposal id id
// (NextProposalID), and returns the result StateMachine.Apply gave for id once applied on this
// member. The context's deadline bounds the wait; on expiry the outcome is unknown and the
// error wraps ErrUnavailable.
func (n *Node) Propose(ctx context.Context, id uint64, data []byte) (any, error) {
	p := &proposal{id: id, data: data, done: make(chan proposalResult, 1)}
	r, err := n.submit(ctx, p)
	return r.res, err
}

// ProposeConfChange proposes a membership change whose Context (the application's) carries
// proposal id id, and waits until it is applied here.
func (n *Node) ProposeConfChange(ctx context.Context, id uint64, cc raft.ConfChange) error {
	p := &proposal{id: id, cc: &cc, done: make(chan proposalResult, 1)}
	_, err := n.submit(ctx, p)
	return err
}

func (n *Node) submit(ctx context.Context, p *proposal) (proposalResult, error) {
	n.mu.Lock()
	if n.fatalErr != nil {
		n.mu.Unlock()
		return proposalResult{}, fmt.Errorf("%w: %w", ErrStopped, n.fatalErr)
	}
	n.waiters[p.id] = p
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.waiters, p.id)
		n.mu.Unlock()
	}()
	select {
	case n.propc <- p:
	case <-ctx.Done():
		return proposalResult{}, fmt.Errorf("%w: proposal queue full until deadline: %w", ErrUnavailable, ctx.Err())
	case <-n.donec:
		return proposalResult{}, ErrStopped
	}
	select {
	case r := <-p.done:
		return r, r.err
	case <-ctx.Done():
		return proposalResult{}, fmt.Errorf("%w: no quorum: not committed before the deadline (outcome unknown): %w", ErrUnavailable, ctx.Err())
	case <-n.donec:
		return proposalResult{}, ErrStopped
	}
}

// TransferLeadership asks the leader to hand leadership to id.
func (n *Node) TransferLeadership(ctx context.Context, to raft.NodeID) error {
	errc := make(chan error, 1)
	select {
	case n.ctrlc <- func() { errc <- n.rn.TransferLeadership(to) }:
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	case <-n.donec:
		return ErrStopped
	}
	select {
	case err := <-errc:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
	// The transfer completes when the target wins an election; wait for it within the deadline.
	for {
		if n.Leader() == to {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: leadership did not move to %x before the deadline: %w", ErrUnavailable, uint64(to), ctx.Err())
		case <-n.donec:
			return ErrStopped
		case <-n.clock.NewTimer(n.cfg.TickInterval).C():
		}
	}
}

func (n *Node) fail(err error) {
	n.mu.Lock()
	if n.fatalErr == nil {
		n.fatalErr = err
	}
	n.mu.Unlock()
	n.log.Error("member stopping after a fatal error", "err", err)
}

func (n *Node) run() {
	defer close(n.donec)
	defer func() {
		for _, c := range n.closers {
			if err := c(); err != nil {
				n.log.Warn("closing storage", "err", err)
			}
		}
	}()
	defer n.discardReceive()
	defer n.stopSyncer()
	if n.lsync.enabled && n.exec == nil {
		go n.runSyncer()
	}
	defer n.closeSnapshotReader()
	defer n.snapWG.Wait()
	defer n.flushHardState()
	defer n.failAllWaiters()
	defer n.finishApplied()
	ticker := n.clock.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	for {
		var err error
		select {
		case <-n.stopc:
			return
		case <-ticker.C():
			n.tick()
		case m := <-n.recvc:
			n.stepPeer(m)
		case p := <-n.propc:
			n.handleProposal(p)
		case rw := <-n.readc:
			n.reads.add(rw)
		case f := <-n.ctrlc:
			f()
		case id := <-n.unreac:
			n.rn.ReportUnreachable(id)
		case <-n.commitTimer.C():
			err = n.commitApplied()
		case <-n.bcastTimer.C():
			n.broadcastTimerFired()
		case <-n.lsync.timer.C():
			n.lsync.armed = false
		case r := <-n.lsync.res:
			err = n.finishLeaderSync(r)
		case r := <-n.snapDone:
			err = n.snapshotWritten(r)
		}
		if err == nil {
			err = n.process()
		}
		if err != nil {
			n.fail(err)
			return
		}
	}
}

// tick advances the Raft core's clock by one tick and runs the node's periodic work.
func (n *Node) tick() {
	n.rn.Tick()
	n.onTick()
	n.statusDirty = true
}

func (n *Node) broadcastTimerFired() {
	n.bcastArmed = false
	n.rn.BroadcastCommit()
}

// snapshotWritten takes the background snapshot writer's result.
func (n *Node) snapshotWritten(r snapResult) error {
	n.snapInFlight = false
	return n.finishSnapshot(r)
}

// process runs after each input the loop took: it drains the inputs already queued, handles
// every Ready, arms the timers and publishes the status. An error is fatal.
func (n *Node) process() error {
	n.drain()
	if n.stepErr != nil {
		return n.stepErr
	}
	n.reads.issue(n)
	for n.rn.HasReady() {
		if err := n.handleReady(); err != nil {
			return err
		}
	}
	n.armCommitBroadcast()
	if n.lsync.enabled {
		n.scheduleLeaderSync()
	}
	if n.pending > 0 && (n.pending >= MaxUncommittedApplied || n.reads.waitsFor(n.sm.AppliedIndex(), n.applied)) {
		if err := n.commitApplied(); err != nil {
			return err
		}
	}
	// Status builds maps and copies slices; under load the loop runs thousands of times a
	// second, so the published copy is refreshed on ticks and role or term changes only.
	if n.statusDirty {
		n.statusDirty = false
		st := n.rn.Status()
		n.mu.Lock()
		n.status = st
		n.mu.Unlock()
	}
	return nil
}

// drain takes inputs that are already queued, without blocking, so that they share one Ready.
func (n *Node) drain() {
	for i := 0; i < MaxDrainPerIteration; i++ {
		select {
		case m := <-n.recvc:
			n.stepPeer(m)
		case p := <-n.propc:
			n.handleProposal(p)
		case rw := <-n.readc:
			n.reads.add(rw)
		case id := <-n.unreac:
			n.rn.ReportUnreachable(id)
		default:
			return
		}
	}
}

func (n *Node) stepPeer(m raft.Message) {
	if m.Type == raft.MsgSnap && m.Chunk != nil && m.Snapshot != nil {
		var err error
		if m, err = n.storeSnapshotChunk(m); err != nil {
			if n.stepErr == nil {
				n.stepErr = err
			}
			return
		}
	}
	if err := n.rn.Step(m); err != nil {
		n.log.Debug("dropped peer message", "type", m.Type, "from", m.From, "err", err)
	}
}

func (n *Node) handleProposal(p *proposal) {
	var err error
	if p.cc != nil {
		err = n.rn.ProposeConfChange(*p.cc)
	} else {
		var index, term uint64
		index, term, err = n.rn.ProposeAt(p.data)
		if err == nil && index > 0 {
			n.appendedAt[index] = appendedProposal{id: p.id, term: term}
		}
	}
	if err != nil {
		p.done <- proposalResult{err: mapRaftErr(err)}
		return
	}
	if !n.leading {
		n.forwarded[p.id] = struct{}{}
	}
}

// errLeaderChanged answers forwarded proposals when the leadership changes (see forwarded).
var errLeaderChanged = errors.New("the leader changed before answering this write, which a member forwarded to it (outcome unknown)")

// failForwarded answers every forwarded proposal still waiting with errLeaderChanged: the
// leadership this member knew changed, so the leader it forwarded them to may have dropped
// them. The outcome is unknown (it may have appended them, and its successor may commit
// them): retrying is safe for writes made exactly once by a session or an idempotency key.
func (n *Node) failForwarded() {
	if len(n.forwarded) == 0 {
		return
	}
	n.mu.Lock()
	for id := range n.forwarded {
		if p, ok := n.waiters[id]; ok {
			answer(p, proposalResult{err: fmt.Errorf("%w: %w", ErrUnavailable, errLeaderChanged)})
		}
	}
	n.mu.Unlock()
	clear(n.forwarded)
}

// answer gives p its result without ever blocking the loop: a proposal may be answered twice
// (the network delivered a forwarded proposal twice and both copies were appended and applied,
// or a copy was proven lost after the other applied), and the first answer is the one that
// counts.
func answer(p *proposal, r proposalResult) {
	select {
	case p.done <- r:
	default:
	}
}

// appendedProposal is a proposal this member appended to its log as leader, at the index that
// keys it in Node.appendedAt, in term term.
type appendedProposal struct {
	id   uint64
	term uint64
}

// lostProposals returns the proposals that ents prove lost: this member appended them as
// leader at an index where ents now commit an entry of another term. Log Matching makes their
// own entry impossible to commit, so they were not applied and never will be: their callers
// learn it now instead of at their deadline (a leader that lost its leadership with writes in
// flight, whose successor overwrote them).
func (n *Node) lostProposals(ents []raft.Entry) []appendedProposal {
	if len(n.appendedAt) == 0 {
		return nil
	}
	var lost []appendedProposal
	for i := range ents {
		e := &ents[i]
		a, ok := n.appendedAt[e.Index]
		if !ok {
			continue
		}
		delete(n.appendedAt, e.Index)
		if a.term != e.Term || n.cfg.Bugs.ReportAppliedAsLost {
			lost = append(lost, a)
		}
	}
	return lost
}

// failLost answers proposals proven lost (lostProposals).
func (n *Node) failLost(lost []appendedProposal) {
	if len(lost) == 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range lost {
		if p, ok := n.waiters[a.id]; ok {
			answer(p, proposalResult{err: fmt.Errorf("%w: %w", ErrUnavailable, errProposalLost)})
		}
	}
}

func mapRaftErr(err error) error {
	var nl *raft.NotLeaderError
	if errors.As(err, &nl) {
		if nl.Leader == raft.None {
			return fmt.Errorf("%w: no leader: %w", ErrUnavailable, err)
		}
		return fmt.Errorf("%w: not leader: %w", ErrUnavailable, err)
	}
	if errors.Is(err, raft.ErrProposalDropped) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

func (n *Node) onTick() {
	n.expireReceive(n.clock.Now())
}

func (n *Node) handleReady() error {
	rd := n.rn.Ready()
	if rd.SoftState != nil || (!rd.HardState.IsEmpty() && rd.HardState.Term != n.status.HardState.Term) || rd.Snapshot != nil {
		n.statusDirty = true
	}
	if rd.SoftState != nil {
		n.log.Info("raft state changed", "state", rd.SoftState.State.String(), "leader", rd.SoftState.Lead)
		if rd.SoftState.State != raft.StateLeader {
			n.reads.failAll(fmt.Errorf("%w: leadership changed during read", ErrUnavailable))
		}
		n.failForwarded()
		n.leading = rd.SoftState.State == raft.StateLeader
	}
	// Yield to the transport only when a sync follows: otherwise (e.g. the leader's Ready that
	// commits and broadcasts the new commit index) applying and answering comes first.
	n.send(n.fillSnapshotChunks(rd.Messages), rd.MustSync)
	if rd.Snapshot != nil && !rd.Snapshot.IsEmpty() {
		if err := n.installSnapshot(rd.Snapshot); err != nil {
			return err
		}
	}
	early := n.leading && applyBeforePersist(&rd)
	if early {
		if err := n.applyReady(&rd); err != nil {
			return err
		}
	}
	if n.cfg.Bugs.AckBeforePersist {
		n.send(n.fillSnapshotChunks(rd.MessagesAfterPersist), false) // planted bug
		rd.MessagesAfterPersist = nil
	}
	if err := n.persist(rd); err != nil {
		return err
	}
	n.send(n.fillSnapshotChunks(rd.MessagesAfterPersist), true)
	if !early {
		if err := n.applyReady(&rd); err != nil {
			return err
		}
	}
	n.rn.Advance(rd)
	return n.maybeSnapshot()
}

// applyBeforePersist reports whether rd's committed entries may be applied before its log
// write. They may when this member persisted them in an earlier Ready: a committed entry is
// durable on a quorum, and nothing in it waits for the entries this Ready appends. On the
// leader, applying first lets their answers leave while the disk works, instead of after the
// fsync of the next batch; under load that fsync is most of the leader's loop (etcd applies on
// another goroutine for the same reason). A follower keeps the contract's order (handleReady):
// its acknowledgement of the new entries is on every commit's path, and its applying is not. A
// Ready that commits what it appends, or holds a snapshot, keeps it too.
func applyBeforePersist(rd *raft.Ready) bool {
	c := rd.CommittedEntries
	return len(c) > 0 && len(rd.Entries) > 0 && rd.Snapshot == nil && c[len(c)-1].Index < rd.Entries[0].Index
}

// applyReady applies rd's committed entries, then confirms and releases reads.
func (n *Node) applyReady(rd *raft.Ready) error {
	if err := n.apply(rd.CommittedEntries); err != nil {
		return err
	}
	for _, rs := range rd.ReadStates {
		n.reads.confirmed(rs)
	}
	n.reads.release(n.sm.AppliedIndex())
	return nil
}

// armCommitBroadcast starts the commit-broadcast timer when the leader newly owes a follower
// its commit index, and stops it when the debt was paid otherwise (by an append that carried
// entries, or a heartbeat), so that a loaded leader never wakes up for it.
func (n *Node) armCommitBroadcast() {
	owed := n.rn.CommitUnannounced()
	switch {
	case owed && !n.bcastArmed:
		n.bcastTimer.Reset(n.cfg.CommitBroadcastDelay)
		n.bcastArmed = true
	case !owed && n.bcastArmed:
		n.bcastTimer.Stop()
		n.bcastArmed = false
	}
}

// send hands msgs to the transport and lets its writer goroutines run before the loop goes on.
// Waking a goroutine puts it in this goroutine's P's run-next slot, where it waits until this
// goroutine blocks; if what comes next is the WAL's fsync (a syscall, which keeps the P until the
// runtime's monitor takes it back, after 20 us to 10 ms), the leader's appends would leave only
// after its own fsync, and followers would start theirs that much later: the two fsyncs of a
// commit would run one after the other instead of side by side. A Go execution trace of a
// single-client put load showed exactly that (most of the leader's scheduling latency was the
// transport's writer, woken here).
func (n *Node) send(msgs []raft.Message, yield bool) {
	if len(msgs) == 0 {
		return
	}
	n.trans.Send(msgs)
	if yield {
		runtime.Gosched()
	}
}

// persist writes rd's HardState and entries to the WAL. A HardState whose only change is the
// commit index (no entries, no term or vote: !MustSync) is not written on its own: it would cost
// a write syscall on every commit, on the path to acknowledging the write, and nothing depends on
// it being on disk (after a crash the commit index is learned again from the leader, and the
// state machine's applied index bounds what to replay). It rides on the next Save instead.
func (n *Node) persist(rd raft.Ready) error {
	hs := rd.HardState
	if !rd.MustSync && len(rd.Entries) == 0 {
		if !hs.IsEmpty() {
			n.pendingHS = hs
		}
		return nil
	}
	if hs.IsEmpty() {
		hs = n.pendingHS
	}
	if err := n.wal.Save(hs, rd.Entries, rd.MustSync && !n.cfg.Bugs.NeverSyncLog); err != nil {
		return fmt.Errorf("node: persist raft log: %w", err)
	}
	n.pendingHS = raft.HardState{}
	if rd.MustSync {
		n.lsync.synced()
	} else if len(rd.Entries) > 0 {
		n.lsync.wroteDeferred(rd.Entries, n.clock.Now())
	}
	return nil
}

// flushHardState writes a deferred commit-only HardState, so that a clean restart replays as
// little as possible.
//
// It also syncs a leader's deferred writes (leadersync.go): a clean stop syncs the state
// machine and trusts it after a reboot, so the log must hold, durably, every entry it applied.
func (n *Node) flushHardState() {
	if (n.pendingHS.IsEmpty() && !n.lsync.pending) || n.Err() != nil {
		return
	}
	if err := n.wal.Save(n.pendingHS, nil, true); err != nil {
		n.log.Warn("saving the commit index and syncing the log at stop", "err", err)
		return
	}
	n.pendingHS = raft.HardState{}
	n.lsync.synced()
}

func (n *Node) installSnapshot(s *raft.Snapshot) error {
	// Entries the snapshot covers are never applied one by one: their proposals' outcome is
	// unknown here, so they wait for their deadline as before.
	for idx := range n.appendedAt {
		if idx <= s.Meta.Index {
			delete(n.appendedAt, idx)
		}
	}
	if err := n.commitApplied(); err != nil {
		return err
	}
	if n.snapInFlight {
		// One writer at a time in the snapshot store: let the local snapshot finish first.
		n.snapInFlight = false
		if err := n.finishSnapshot(n.awaitSnapshot()); err != nil {
			return err
		}
	}
	data, err := n.receivedSnapshot(s)
	if err != nil {
		return err
	}
	defer n.discardReceive()
	size := int64(s.Len())
	err = n.snaps.SaveStream(s.Meta, uint64(size), func(w io.Writer) error {
		_, err := io.Copy(w, io.NewSectionReader(data, 0, size))
		return err
	})
	if err != nil {
		return fmt.Errorf("node: save received snapshot at index %d: %w", s.Meta.Index, err)
	}
	if err := n.wal.SaveSnapshot(s.Meta); err != nil {
		return fmt.Errorf("node: record snapshot at index %d in the log: %w", s.Meta.Index, err)
	}
	if err := n.sm.Restore(s.Meta, size, io.NewSectionReader(data, 0, size)); err != nil {
		return fmt.Errorf("node: install snapshot at index %d: %w", s.Meta.Index, err)
	}
	n.applied, n.appliedTerm = s.Meta.Index, s.Meta.Term
	n.snapIndex = s.Meta.Index
	n.restored = true
	n.syncPeers()
	n.log.Info("installed snapshot", "index", s.Meta.Index, "term", s.Meta.Term, "bytes", size)
	return nil
}

// syncPeers makes the transport's peer set match the members of the state machine's committed
// state: peers it gained (or whose address changed) are added, peers it lost are removed. It
// runs after a configuration change is applied and after a snapshot is installed. A state
// machine that knows no members yet (a member joining with an empty data directory) leaves the
// initial members (SetTransport) in place: they are how it reaches the leader.
func (n *Node) syncPeers() {
	peers := n.sm.Peers()
	if len(peers) == 0 {
		return
	}
	want := map[raft.NodeID]string{}
	for id, urls := range peers {
		if id == n.id || len(urls) == 0 {
			continue
		}
		want[id] = n.cfg.PeerAddr(urls)
	}
	for _, id := range slices.Sorted(maps.Keys(want)) {
		if old, ok := n.peers[id]; !ok || old != want[id] {
			n.trans.AddPeer(id, want[id])
		}
	}
	for _, id := range slices.Sorted(maps.Keys(n.peers)) {
		if _, ok := want[id]; !ok {
			n.trans.RemovePeer(id)
		}
	}
	n.peers = want
}

// apply hands committed entries to the state machine (see StateMachine) and answers the
// proposals this member made. The state machine commits them later, in groups (commitApplied;
// see the group-commit notes at DefaultApplyCommitInterval).
func (n *Node) apply(ents []raft.Entry) error {
	if n.cfg.Bugs.AnswerBeforeApply {
		n.answerCommitted(ents) // planted bug: answered before Apply
	}
	n.failLost(n.lostProposals(ents))
	for len(ents) > 0 && ents[0].Index <= n.applied {
		ents = ents[1:]
	}
	if len(ents) > 0 && n.restored && n.cfg.Bugs.SkipApplyAfterSnapshot {
		n.applied, n.appliedTerm = ents[0].Index, ents[0].Term // planted bug: never applied
		ents = ents[1:]
	}
	if len(ents) == 0 {
		return nil
	}
	n.restored = false
	// The state machine must see every index once, in order: a gap means entries were lost
	// between the log and the state machine (a snapshot installed at the wrong index, say).
	if ents[0].Index != n.applied+1 {
		return fmt.Errorf("node: committed entries resume at index %d, but the state machine applied up to %d", ents[0].Index, n.applied)
	}
	if n.pending == 0 {
		n.commitTimer.Reset(n.cfg.ApplyCommitInterval)
		n.commitPrompt = false
	}
	done, err := n.sm.Apply(ents)
	if err != nil {
		n.abortApplied()
		return fmt.Errorf("node: apply committed entries %d-%d: %w", ents[0].Index, ents[len(ents)-1].Index, err)
	}
	commitNow := false
	if !n.commitPrompt && n.promptCommit() {
		// Readers wait for what was just applied: commit PromptCommitInterval after the last
		// commit, which may be now (the group's deadline only moves closer).
		n.commitPrompt = true
		if wait := n.cfg.PromptCommitInterval - n.clock.Now().Sub(n.lastCommit); wait > 0 {
			n.commitTimer.Reset(wait)
		} else {
			commitNow = true
		}
	}
	last := ents[len(ents)-1]
	n.pending += len(ents)
	n.applied, n.appliedTerm = last.Index, last.Term
	for i := range ents {
		if ents[i].Type == raft.EntryConfChange {
			// Membership is read back from the committed state (Peers): commit it first.
			if err := n.commitApplied(); err != nil {
				return err
			}
			n.syncPeers()
			break
		}
	}
	if len(done) > 0 {
		n.mu.Lock()
		for _, a := range done {
			if p, ok := n.waiters[a.ID]; ok {
				answer(p, proposalResult{res: a.Result})
			}
			delete(n.forwarded, a.ID)
		}
		n.mu.Unlock()
		// Let the woken requests answer their clients before the loop's next fsync (see send).
		runtime.Gosched()
	}
	if commitNow {
		return n.commitApplied()
	}
	return nil
}

// promptCommit reports whether the state machine's readers wait for what it applied, and a
// prompt commit would come sooner than the group's.
func (n *Node) promptCommit() bool {
	p, ok := n.sm.(PromptCommitter)
	return ok && n.cfg.PromptCommitInterval < n.cfg.ApplyCommitInterval && p.PromptCommit()
}

// commitApplied commits what the state machine applied, if anything, and releases the
// linearizable reads it satisfies.
func (n *Node) commitApplied() error {
	if n.pending == 0 {
		return nil
	}
	n.pending = 0
	n.commitTimer.Stop()
	if err := n.sm.Commit(); err != nil {
		return fmt.Errorf("node: commit applied entries up to %d to the state machine: %w", n.applied, err)
	}
	n.lastCommit = n.clock.Now()
	n.reads.release(n.sm.AppliedIndex())
	return nil
}

// abortApplied discards what the state machine applied and did not commit, after a fatal error.
func (n *Node) abortApplied() {
	n.sm.Abort()
	n.pending = 0
	n.commitTimer.Stop()
}

// finishApplied runs when the loop exits: a clean stop commits what was applied (saving a replay
// on the next start); after a fatal error it is discarded and the log replays it.
func (n *Node) finishApplied() {
	if n.Err() != nil {
		n.abortApplied()
		return
	}
	if err := n.commitApplied(); err != nil {
		n.log.Warn("committing applied entries at stop; the log will replay them", "err", err)
	}
}

// maybeSnapshot starts a snapshot of the state machine every SnapshotEntries applied entries.
//
// Serializing the store is proportional to its size, so only the cheap, ordered part runs in
// the loop: commit what was applied, open a read view at exactly the applied index and note its
// term and configuration. A goroutine writes the view to the snapshot store (and syncs the state
// machine); the loop then records the snapshot in the WAL, compacts the Raft log and releases
// old segments (finishSnapshot). Meanwhile the member keeps replicating, applying and serving.
func (n *Node) maybeSnapshot() error {
	// appliedTerm is only known once this process applied an entry; until then there is nothing
	// new to capture anyway.
	if n.snapInFlight || n.cfg.SnapshotEntries == 0 || n.appliedTerm == 0 || n.applied-n.snapIndex < n.cfg.SnapshotEntries {
		return nil
	}
	if err := n.commitApplied(); err != nil {
		return err
	}
	view, err := n.sm.Snapshot()
	if err != nil {
		return fmt.Errorf("node: open snapshot view: %w", err)
	}
	if view.Index() != n.applied {
		view.Close()
		return fmt.Errorf("node: snapshot view at applied index %d, loop applied %d", view.Index(), n.applied)
	}
	meta := raft.SnapshotMeta{Index: n.applied, Term: n.appliedTerm, ConfState: n.rn.Status().ConfState}
	n.snapInFlight = true
	n.snapWG.Add(1)
	n.background(func() {
		defer n.snapWG.Done()
		snap, err := n.writeSnapshot(view, meta)
		n.snapDone <- snapResult{snap: snap, err: err}
	})
	return nil
}

type snapResult struct {
	snap raft.Snapshot
	err  error
}

// writeSnapshot runs off the loop: it serializes the view straight into the snapshot store
// (never whole in memory) and returns the snapshot as the Raft core keeps it: metadata and size,
// the data staying on disk (raft.Snapshot's held-outside form).
func (n *Node) writeSnapshot(view SnapshotView, meta raft.SnapshotMeta) (raft.Snapshot, error) {
	defer view.Close()
	// The WAL is released only up to the previous snapshot, but a synced state machine also
	// saves a long replay after a crash.
	if err := n.sm.Sync(); err != nil {
		return raft.Snapshot{}, fmt.Errorf("node: sync state machine before snapshot: %w", err)
	}
	size := uint64(view.Size())
	err := n.snaps.SaveStream(meta, size, func(w io.Writer) error {
		_, err := view.WriteTo(w)
		return err
	})
	if err != nil {
		return raft.Snapshot{}, fmt.Errorf("node: save snapshot at index %d: %w", meta.Index, err)
	}
	return raft.Snapshot{Meta: meta, Size: size}, nil
}

// fillSnapshotChunks gives the MsgSnap chunks of a snapshot held outside the Raft core their
// data, read from the snapshot store. A chunk whose snapshot is gone (pruned by a newer one) is
// dropped: the core resends or restarts the transfer with its newest snapshot.
func (n *Node) fillSnapshotChunks(msgs []raft.Message) []raft.Message {
	kept := msgs[:0]
	for _, m := range msgs {
		if m.Type == raft.MsgSnap && m.Chunk != nil && m.Chunk.Data == nil && m.Chunk.Length > 0 {
			data, err := n.readSnapshotChunk(m.Snapshot.Index, m.Snapshot.Term, m.Chunk.Offset, m.Chunk.Length)
			if err != nil {
				n.log.Warn("dropping snapshot chunk", "to", m.To, "index", m.Snapshot.Index, "offset", m.Chunk.Offset, "err", err)
				continue
			}
			c := *m.Chunk
			c.Data, c.Length = data, 0
			m.Chunk = &c
		}
		kept = append(kept, m)
	}
	return kept
}

func (n *Node) readSnapshotChunk(index, term, off, length uint64) ([]byte, error) {
	if r := n.snapRd; r == nil || r.Meta.Index != index || r.Meta.Term != term {
		n.closeSnapshotReader()
		r, err := n.snaps.OpenAt(index, term)
		if err != nil {
			return nil, err
		}
		n.snapRd = r
	}
	buf := make([]byte, length)
	if _, err := n.snapRd.ReadAt(buf, int64(off)); err != nil {
		return nil, fmt.Errorf("node: read snapshot %d at offset %d: %w", index, off, err)
	}
	return buf, nil
}

func (n *Node) closeSnapshotReader() {
	if n.snapRd != nil {
		n.snapRd.Close()
		n.snapRd = nil
	}
}

// finishSnapshot runs in the loop once a snapshot is durable in the snapshot store.
func (n *Node) finishSnapshot(r snapResult) error {
	if r.err != nil {
		return r.err
	}
	index := r.snap.Meta.Index
	if index <= n.snapIndex {
		// A newer snapshot was installed from the leader while this one was written.
		n.log.Info("local snapshot superseded by an installed one", "index", index, "installed", n.snapIndex)
		return nil
	}
	if err := n.wal.SaveSnapshot(r.snap.Meta); err != nil {
		return fmt.Errorf("node: record snapshot at index %d in the log: %w", index, err)
	}
	if err := n.rn.Compact(r.snap); err != nil {
		if errors.Is(err, raft.ErrSnapshotOutOfDate) {
			// The core took a newer snapshot from the leader, which installSnapshot is about
			// to install: this one is superseded.
			n.log.Info("local snapshot superseded by a received one", "index", index)
			return nil
		}
		return fmt.Errorf("node: compact raft log to %d: %w", index, err)
	}
	// Release the log only up to the previous snapshot: if the newest snapshot file turns out to
	// be damaged on the next start, the snapshot store falls back to the previous one, and the
	// log after it must still be there.
	if n.snapIndex > 0 {
		if err := n.wal.ReleaseTo(n.snapIndex); err != nil {
			return fmt.Errorf("node: release log segments up to %d: %w", n.snapIndex, err)
		}
	}
	n.snapIndex = index
	n.log.Info("snapshot taken", "index", index, "term", r.snap.Meta.Term, "bytes", r.snap.Len())
	return nil
}

func (n *Node) failAllWaiters() {
	err := n.Err()
	if err == nil {
		err = ErrStopped
	} else {
		err = fmt.Errorf("%w: %w", ErrStopped, err)
	}
	n.mu.Lock()
	for id, p := range n.waiters {
		select {
		case p.done <- proposalResult{err: err}:
		default:
		}
		delete(n.waiters, id)
	}
	n.mu.Unlock()
	n.reads.failAll(err)
}
