package raft

import (
	"errors"
	"fmt"
	"log/slog"
)

// NodeID names a member of the cluster. Zero means "no node" (None).
type NodeID uint64

// None is the zero NodeID: no leader known, no vote cast.
const None NodeID = 0

// MessageType enumerates the messages of the protocol.
//
// ONLY APPEND TO THIS LIST: the numbers are part of the wire format and the WAL.
type MessageType uint8

const (
	MsgInvalid        MessageType = 0
	MsgVote           MessageType = 1  // candidate asks for a vote; Index/LogTerm = candidate's last entry
	MsgVoteResp       MessageType = 2  // Reject=true if not granted; a refusal carries Commit and its LogTerm
	MsgPreVote        MessageType = 3  // dissertation 9.6; Term is the term the sender would campaign in
	MsgPreVoteResp    MessageType = 4  // Term echoes the MsgPreVote term when granted; a refusal as MsgVoteResp
	MsgApp            MessageType = 5  // Index/LogTerm = entry preceding Entries; Commit = leader's commit
	MsgAppResp        MessageType = 6  // Index = last index matched (or rejected Index); RejectHint/LogTerm = conflict hint
	MsgHeartbeat      MessageType = 7  // Commit = min(leader commit, follower match); Context = read-index round
	MsgHeartbeatResp  MessageType = 8  // Context echoes the heartbeat's
	MsgSnap           MessageType = 9  // one chunk of a snapshot: Snapshot meta + Chunk
	MsgSnapResp       MessageType = 10 // Index = snapshot index; Chunk.Offset = bytes received so far; Reject=true aborts the transfer
	MsgTimeoutNow     MessageType = 11 // leadership transfer: campaign now, skipping pre-vote
	MsgReadIndex      MessageType = 12 // follower asks the leader for a read index; Context identifies the request; Term 0
	MsgReadIndexResp  MessageType = 13 // Index = read index; Context echoes; Reject=true if the leader cannot serve it
	MsgProp           MessageType = 14 // a proposal forwarded from a follower to the leader; Term 0
	MsgTransferLeader MessageType = 15 // a request, forwarded to the leader, to transfer leadership to From
)

var messageTypeNames = [...]string{
	"MsgInvalid", "MsgVote", "MsgVoteResp", "MsgPreVote", "MsgPreVoteResp", "MsgApp", "MsgAppResp",
	"MsgHeartbeat", "MsgHeartbeatResp", "MsgSnap", "MsgSnapResp", "MsgTimeoutNow", "MsgReadIndex",
	"MsgReadIndexResp", "MsgProp", "MsgTransferLeader",
}

func (t MessageType) String() string {
	if int(t) < len(messageTypeNames) {
		return messageTypeNames[t]
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// EntryType says how the state machine must read an entry's Data.
//
// ONLY APPEND TO THIS LIST.
type EntryType uint8

const (
	// EntryNormal carries application data, opaque to Raft. An EntryNormal with empty Data is the
	// no-op a new leader appends to commit entries of earlier terms (paper 5.4.2, dissertation 6.4).
	EntryNormal EntryType = 0
	// EntryConfChange carries an encoded ConfChange. The core applies it itself when the caller
	// acknowledges it as applied (Advance).
	EntryConfChange EntryType = 1
)

// Entry is one record of the replicated log.
type Entry struct {
	Term  uint64
	Index uint64
	Type  EntryType
	Data  []byte
}

// HardState is the state that must be durable before any message that depends on it is sent
// (Figure 2, "Persistent state on all servers"). Commit is persisted as an optimisation: it lets a
// restarted node apply without waiting for the leader, and is never required for safety.
type HardState struct {
	Term   uint64
	Vote   NodeID
	Commit uint64
}

// IsEmpty reports whether hs carries no state.
func (hs HardState) IsEmpty() bool { return hs == HardState{} }

// StateType is a node's role.
type StateType uint8

const (
	StateFollower StateType = iota
	StateCandidate
	StateLeader
	StatePreCandidate
)

func (s StateType) String() string {
	switch s {
	case StateFollower:
		return "follower"
	case StateCandidate:
		return "candidate"
	case StateLeader:
		return "leader"
	case StatePreCandidate:
		return "pre-candidate"
	}
	return fmt.Sprintf("StateType(%d)", uint8(s))
}

// SoftState is volatile state worth reporting; it need not be persisted.
type SoftState struct {
	Lead  NodeID
	State StateType
}

// ConfState is a cluster configuration. During joint consensus (dissertation 4.3) VotersOutgoing is
// the old voter set and decisions need a majority of both Voters and VotersOutgoing. A learner
// receives the log but never votes and never counts toward a quorum (dissertation 4.2.1).
type ConfState struct {
	Voters         []NodeID
	VotersOutgoing []NodeID
	Learners       []NodeID
	// LearnersNext are voters of the outgoing config that become learners when the joint
	// configuration is left (they cannot be learners and outgoing voters at once).
	LearnersNext []NodeID
	// AutoLeave makes the leader propose the transition out of the joint configuration by itself.
	AutoLeave bool
}

// ConfChangeType is the kind of one membership change.
//
// ONLY APPEND TO THIS LIST.
type ConfChangeType uint8

const (
	ConfChangeAddVoter   ConfChangeType = 0 // add a voter, or promote a learner
	ConfChangeAddLearner ConfChangeType = 1 // add a learner, or demote a voter
	ConfChangeRemoveNode ConfChangeType = 2
)

// ConfChangeSingle is one membership change.
type ConfChangeSingle struct {
	Type   ConfChangeType
	NodeID NodeID
}

// ConfChange is a membership change proposal. Exactly one change that does not alter the voter
// majority structure beyond one voter is applied directly (dissertation 4.1, with the 4.1.1 fix:
// the new leader must commit an entry of its term before a change is accepted). Several changes
// at once go through a joint configuration (dissertation 4.3). An empty Changes list leaves the
// current joint configuration.
type ConfChange struct {
	Changes []ConfChangeSingle
	// Joint forces a joint configuration even for a single change. With AutoLeave unset the
	// application must propose an empty ConfChange to leave it.
	Joint bool
	// AutoLeave, for a joint change, makes the leader leave the joint configuration as soon as it
	// is committed (the common case).
	AutoLeave bool
	// Context is opaque to Raft (e.g. the new member's address) and handed back on apply.
	Context []byte
}

// SnapshotMeta describes the state a snapshot captures.
type SnapshotMeta struct {
	Index     uint64 // last log index the snapshot includes
	Term      uint64 // term of that entry
	ConfState ConfState
}

// Snapshot is a state-machine image plus its metadata. Data is opaque to Raft.
//
// A leader's snapshot may also be held outside the core, so that a large state machine is not
// kept in memory: Data nil and Size the length of the data, which the caller keeps (in its
// snapshot store). The MsgSnap chunks of such a snapshot carry no Data but a Length, and the
// caller fills Data with that many bytes from Offset before sending them (see SnapshotChunk).
// Followers always receive, and hand to their caller in Ready.Snapshot, the data itself.
type Snapshot struct {
	Meta SnapshotMeta
	Data []byte
	Size uint64 // length of the data when Data is nil (held by the caller); ignored otherwise
}

// Len returns the length of the snapshot's data, wherever it is held.
func (s *Snapshot) Len() uint64 {
	if s.Data != nil {
		return uint64(len(s.Data))
	}
	return s.Size
}

// IsEmpty reports whether s is the zero snapshot.
func (s *Snapshot) IsEmpty() bool { return s == nil || s.Meta.Index == 0 }

// SnapshotChunk is one slice of a snapshot's Data in a MsgSnap, or a progress report in a
// MsgSnapResp.
type SnapshotChunk struct {
	Offset uint64 // byte offset of Data within the snapshot's Data
	Total  uint64 // total size of the snapshot's Data
	Data   []byte
	Last   bool // this chunk completes the snapshot
	// Length, set only by a leader whose snapshot is held outside the core (Snapshot.Size), is
	// how many bytes from Offset the caller must put in Data before sending the message. It is
	// not sent: on the wire, len(Data) says it.
	Length uint64
}

// Message is the unit of communication between nodes. The meaning of each field per type is given
// on the MessageType constants.
type Message struct {
	Type       MessageType
	To         NodeID
	From       NodeID
	Term       uint64
	LogTerm    uint64
	Index      uint64
	Entries    []Entry
	Commit     uint64
	Reject     bool
	RejectHint uint64
	Snapshot   *SnapshotMeta
	Chunk      *SnapshotChunk
	Context    []byte
}

// ReadState answers a ReadIndex request: once the node has applied up to Index, a read of the
// state machine reflects every write acknowledged before the request was made (dissertation 6.4).
type ReadState struct {
	Index      uint64
	RequestCtx []byte
}

// Ready is what the caller must do after the core changed state. Handle it in this order:
//
//  1. Send Messages. They do not depend on anything in this Ready being durable (the leader's
//     appends and heartbeats: the leader writes its log in parallel with replication,
//     dissertation 10.2.1).
//  2. Persist HardState (if not empty), Snapshot (if not empty) and Entries, atomically enough
//     that a crash never leaves a HardState whose Vote or Term is not durable while a message
//     from step 3 is out. If MustSync, fsync before step 3. (MustSync is false with non-empty
//     Entries only under Config.DeferLeaderSync: write them now, sync them later.)
//  3. Send MessagesAfterPersist. They acknowledge state from step 2 (votes, append acks).
//  4. Install Snapshot into the state machine (if not empty), then apply CommittedEntries in order.
//  5. Call Advance(rd) with this Ready.
//
// Entries may overwrite previously persisted entries with the same or higher indexes: the caller
// must truncate its log at Entries[0].Index before appending.
type Ready struct {
	SoftState            *SoftState // nil if unchanged
	HardState            HardState  // empty if unchanged
	Entries              []Entry
	Snapshot             *Snapshot // nil unless a snapshot must be persisted and installed
	CommittedEntries     []Entry
	Messages             []Message
	MessagesAfterPersist []Message
	ReadStates           []ReadState
	MustSync             bool
}

// ReadOnlyOption selects how ReadIndex requests are confirmed.
type ReadOnlyOption uint8

const (
	// ReadOnlySafe confirms leadership with a heartbeat round to a quorum (dissertation 6.4).
	ReadOnlySafe ReadOnlyOption = iota
	// ReadOnlyLeaseBased trusts the leader's lease (dissertation 6.4.1). It depends on bounded
	// clock drift and is only allowed together with CheckQuorum.
	ReadOnlyLeaseBased
)

// Bugs plants classic Raft bugs so tests can prove the simulator's checkers catch them. Every field
// is false in production; nothing outside tests may set them.
type Bugs struct {
	// VoteForShorterLog grants votes without the up-to-date check (paper 5.4.1).
	VoteForShorterLog bool
	// CommitOldTermByCounting lets a leader commit an entry of an earlier term by counting
	// replicas (paper 5.4.2, Figure 8).
	CommitOldTermByCounting bool
	// VoteNotPersisted leaves Vote out of HardState and sends vote replies before persisting.
	VoteNotPersisted bool
	// ApplyBeforeCommit hands entries to the state machine once appended locally, before commit.
	ApplyBeforeCommit bool
	// ReadIndexWithoutQuorum answers ReadIndex at the leader's commit index without confirming
	// leadership with a quorum.
	ReadIndexWithoutQuorum bool
	// VoteCountsIncomingOnly tallies (pre-)votes in a joint configuration by the incoming voters'
	// majority alone, ignoring the outgoing half (dissertation 4.3 needs both): a candidate the
	// old configuration never agreed to can win while another leader still commits there.
	VoteCountsIncomingOnly bool
	// ReadIndexCountsIncomingOnly confirms a ReadIndex round in a joint configuration with the
	// incoming voters' majority alone: a leader already deposed by the outgoing half still
	// answers reads at its stale commit index.
	ReadIndexCountsIncomingOnly bool
}

// Config configures one node's core. Defaults come from DefaultConfig; Validate states the
// relationships between the fields.
type Config struct {
	ID NodeID
	// ElectionTick is the base election timeout in ticks. Each node randomizes its timeout in
	// [ElectionTick, 2*ElectionTick) from Seed so that split votes resolve (paper 5.2).
	ElectionTick int
	// HeartbeatTick is the leader's heartbeat interval in ticks; it must be well below
	// ElectionTick so that followers do not time out a healthy leader.
	HeartbeatTick int
	// Seed seeds the node's private random source. Nodes of one cluster should get distinct seeds.
	Seed uint64
	// PreVote enables the pre-vote phase (dissertation 9.6).
	PreVote bool
	// CheckQuorum makes a leader step down when it has not heard from a quorum for an election
	// timeout, and makes followers ignore vote requests while they hear from a live leader.
	CheckQuorum bool
	// ReadOnlyOption selects ReadIndex confirmation; ReadOnlyLeaseBased requires CheckQuorum.
	ReadOnlyOption ReadOnlyOption
	// MaxMsgBytes bounds the entry bytes in one MsgApp (at least one entry is always sent).
	MaxMsgBytes uint64
	// MaxInflightMsgs bounds the appends in flight to one follower (the pipeline depth).
	MaxInflightMsgs int
	// MaxInflightBytes bounds the entry bytes in flight to one follower; 0 means no byte bound.
	MaxInflightBytes uint64
	// MaxUncommittedEntriesBytes bounds the Data bytes of entries the leader has appended but not
	// yet committed; proposals beyond it fail with ErrTooManyUncommitted (an ErrProposalDropped).
	// A proposal into an empty budget is always accepted, so one larger than the bound still
	// goes through. 0 means no bound.
	MaxUncommittedEntriesBytes uint64
	// MaxSnapshotChunkBytes bounds the snapshot bytes in one MsgSnap.
	MaxSnapshotChunkBytes uint64
	// MaxSnapshotBytes bounds the snapshot a follower accepts to buffer while receiving chunks;
	// a larger one is refused (MsgSnapResp with Reject). 0 means no bound.
	MaxSnapshotBytes uint64
	// SnapshotReceiveOutside makes the caller keep the data of the snapshots this node receives,
	// so that a large one is never assembled in memory: before stepping a MsgSnap, the caller
	// writes its Chunk.Data at Chunk.Offset in its own storage for that snapshot (keyed by
	// sender, index and term; a chunk at offset 0 starts it afresh) and steps the message with
	// Data nil and Length set to the bytes written. The core then only counts bytes, and the
	// Ready.Snapshot it hands over has nil Data and a Size: the caller installs it from its
	// storage.
	SnapshotReceiveOutside bool
	// DeferCommitBroadcast makes the leader stop sending an append whose only news is a higher
	// commit index. Followers learn it from the next append that carries entries, from the next
	// heartbeat, or when the driver calls Node.BroadcastCommit, which it should do shortly after
	// Node.CommitUnannounced turns true (caucus servers wait a millisecond). Under load the next
	// append follows within microseconds, so this saves a message, a follower wake-up and an
	// acknowledgement per commit; it never delays the leader's own commit, its answers to
	// clients, or ReadIndex (whose heartbeat round carries the commit index). Only how soon an
	// idle follower applies changes.
	DeferCommitBroadcast bool
	// DeferLeaderSync lets the leader write the entries it appends without syncing them first.
	// A Ready whose only durable content is entries the leader appended in its current term has
	// MustSync false: the driver writes them in log order but may fsync later, and then calls
	// Node.LeaderSynced with the term and the last index the fsync covered. Until then the leader
	// does not count its own log towards committing them, so they commit on a quorum of the
	// other voters' (synced) copies, which is all Raft's safety needs: the leader's copy is one
	// vote like any follower's (dissertation 10.2.1). The driver must sync soon when the commit
	// waits on the leader's copy (Node.CommitWaitsOnLeaderSync), and at once when the followers
	// cannot form a quorum without it (Node.QuorumNeedsLeader: one or two voters, a follower
	// down).
	//
	// What this buys: on a machine whose members share a disk, a commit waits for two fsyncs
	// instead of the second-fastest of three. Every other Ready keeps MustSync as without the
	// option, and a node that stops leading syncs its unsynced writes (MustSync) before it
	// acknowledges anything again.
	DeferLeaderSync bool
	// DisableProposalForwarding makes a follower refuse proposals (*NotLeaderError) instead of
	// forwarding them to the leader.
	DisableProposalForwarding bool
	// InitialVoters bootstraps a brand-new cluster: every initial member passes the same list and
	// writes the same first entry (index 1, term 1, a ConfChange adding them). Leave it empty on a
	// node that joins an existing cluster or restarts from persisted state.
	InitialVoters []NodeID
	// InitialContext is the Context of the bootstrap ConfChange (entry 1), e.g. the initial
	// members' names and addresses. Every initial member must pass identical bytes.
	InitialContext []byte
	// Applied is the last index the state machine had applied before a restart (at least the
	// snapshot index; at most the last persisted index). Committed entries after it are handed
	// out again, and configuration entries up to it are re-applied to the snapshot's ConfState.
	Applied uint64
	// Logger receives the core's rare, important events (elections, leadership changes, config
	// changes). Nil means slog.Default().
	Logger *slog.Logger
	// Bugs is for tests only.
	Bugs Bugs
}

// DefaultConfig returns a configuration for node id with the defaults used by caucus servers.
// With a 10 ms tick: 100 ms heartbeats and a 1–2 s election timeout, as etcd.
func DefaultConfig(id NodeID) Config {
	return Config{
		ID:                         id,
		ElectionTick:               10,
		HeartbeatTick:              1,
		Seed:                       uint64(id),
		PreVote:                    true,
		CheckQuorum:                true,
		ReadOnlyOption:             ReadOnlySafe,
		MaxMsgBytes:                1 << 20,
		MaxInflightMsgs:            256,
		MaxInflightBytes:           32 << 20,
		MaxUncommittedEntriesBytes: 64 << 20,
		MaxSnapshotChunkBytes:      1 << 20,
		MaxSnapshotBytes:           8 << 30,
	}
}

// Validate reports the first relationship between fields that does not hold.
func (c *Config) Validate() error {
	switch {
	case c.ID == None:
		return errors.New("raft: config: ID must not be 0 (None)")
	case c.HeartbeatTick <= 0:
		return fmt.Errorf("raft: config: HeartbeatTick %d must be > 0", c.HeartbeatTick)
	case c.ElectionTick <= c.HeartbeatTick:
		return fmt.Errorf("raft: config: ElectionTick %d must be > HeartbeatTick %d", c.ElectionTick, c.HeartbeatTick)
	case c.MaxInflightMsgs <= 0:
		return fmt.Errorf("raft: config: MaxInflightMsgs %d must be > 0", c.MaxInflightMsgs)
	case c.MaxMsgBytes == 0:
		return errors.New("raft: config: MaxMsgBytes must be > 0")
	case c.MaxInflightBytes != 0 && c.MaxInflightBytes < c.MaxMsgBytes:
		return fmt.Errorf("raft: config: MaxInflightBytes %d must be 0 or >= MaxMsgBytes %d", c.MaxInflightBytes, c.MaxMsgBytes)
	case c.MaxSnapshotChunkBytes == 0:
		return errors.New("raft: config: MaxSnapshotChunkBytes must be > 0")
	case c.ReadOnlyOption == ReadOnlyLeaseBased && !c.CheckQuorum:
		return errors.New("raft: config: ReadOnlyLeaseBased requires CheckQuorum (a lease is only safe if the leader steps down without a quorum)")
	}
	return nil
}

// Errors returned to callers. Callers compare with errors.Is.
var (
	// ErrProposalDropped: the proposal was not appended (a leadership transfer in progress, a
	// pending configuration change, the uncommitted-bytes limit, too many pending ReadIndex
	// requests, or a leader leaving the configuration). Retry later. Without a leader, requests
	// fail with *NotLeaderError instead.
	ErrProposalDropped = errors.New("raft: proposal dropped")
	// ErrTooManyUncommitted: MaxUncommittedEntriesBytes would be exceeded. It wraps
	// ErrProposalDropped.
	ErrTooManyUncommitted = fmt.Errorf("%w: too many uncommitted bytes", ErrProposalDropped)
	// ErrConfChangePending: a configuration change is proposed while another is not yet applied.
	ErrConfChangePending = fmt.Errorf("%w: a configuration change is already pending", ErrProposalDropped)
	// ErrLeaderLeaving: the leader applied a configuration in which it is not a voter; it leads
	// only until it has handed leadership to a voter (Status.LeadTransferee), and appends
	// nothing new meanwhile. Retry on another member. It wraps ErrProposalDropped.
	ErrLeaderLeaving = fmt.Errorf("%w: the leader is not a voter of its configuration and is handing leadership over", ErrProposalDropped)
	// ErrCompacted: the requested index is at or before the last snapshot.
	ErrCompacted = errors.New("raft: requested index is compacted")
	// ErrSnapshotOutOfDate: a snapshot older than the current one was offered.
	ErrSnapshotOutOfDate = errors.New("raft: snapshot is older than the current one")
)

// NotLeaderError is returned when a request needs the leader and this node is not it. Leader is
// the node believed to lead (None if unknown), so that a client can retry there.
type NotLeaderError struct {
	Leader NodeID
	Term   uint64
}

func (e *NotLeaderError) Error() string {
	if e.Leader == None {
		return fmt.Sprintf("raft: not the leader, no leader known in term %d", e.Term)
	}
	return fmt.Sprintf("raft: not the leader, leader is %d in term %d", e.Leader, e.Term)
}

// PersistentState is what a node restarts from: the durable HardState, the latest snapshot (if
// any) and the durable log entries that follow it, in index order. The snapshot must include its
// Data, not just its metadata: a node that becomes leader sends it to lagging followers. The core
// keeps references to Data and entry Data and never modifies them.
type PersistentState struct {
	HardState HardState
	Snapshot  *Snapshot
	Entries   []Entry
}

// ProgressState is the leader's replication mode for one follower.
type ProgressState uint8

const (
	// ProgressProbe: the follower's match is unknown; one append at a time until it answers.
	ProgressProbe ProgressState = iota
	// ProgressReplicate: the follower is in sync; appends are pipelined up to the inflight limits.
	ProgressReplicate
	// ProgressSnapshot: the follower needs a snapshot, which is being sent in chunks.
	ProgressSnapshot
)

func (s ProgressState) String() string {
	switch s {
	case ProgressProbe:
		return "probe"
	case ProgressReplicate:
		return "replicate"
	case ProgressSnapshot:
		return "snapshot"
	}
	return fmt.Sprintf("ProgressState(%d)", uint8(s))
}

// PeerProgress is the leader's view of one follower, reported by Status.
type PeerProgress struct {
	Match, Next  uint64
	State        ProgressState
	RecentActive bool
	Learner      bool
	Inflight     int
}

// Status is a snapshot of a node's state for observability and tests.
type Status struct {
	ID        NodeID
	HardState HardState
	SoftState SoftState
	Applied   uint64
	LastIndex uint64
	// FirstIndex is the first index still in the log (snapshot index + 1).
	FirstIndex uint64
	ConfState  ConfState
	// Progress is only set on the leader. It has no entry for the leader itself once the
	// leader applied its own removal (see below).
	Progress map[NodeID]PeerProgress
	// LeadTransferee is the target of an ongoing leadership transfer, or None.
	//
	// A leader whose ConfState no longer lists it as a voter (it applied its own removal or
	// demotion) is leaving: it still reports StateLeader, because it still leads its term (its
	// followers see it as their leader, and it keeps replicating so that every member learns
	// the commit index), but it refuses proposals (ErrLeaderLeaving), and LeadTransferee names
	// the voter it is handing leadership to.
	LeadTransferee NodeID
}
