// Package sim is caucus's deterministic whole-cluster simulator, in the spirit of TigerBeetle's
// VOPR and FoundationDB's simulation: N raft.Node cores, their durable stores, their state
// machines and the network between them all live in one goroutine, driven by one seeded PRNG and
// a clock counted in ticks. One seed is one run, exactly reproducible: a violation found at seed
// S is replayed, with a step trace, by `go run ./cmd/caucus-sim -seed S -nodes N -v`.
//
// # What a run does
//
// Each seed first draws a "swarm" configuration (fault probabilities, message sizes, core
// options) so that different seeds explore different corners instead of all averaging the same
// mix. The run then has two phases:
//
//   - Chaos (Options.Ticks ticks): a workload of unique-valued writes and ReadIndex reads, plus
//     membership changes, leadership transfers, forced campaigns and compaction, under message
//     drops, delays, reordering, duplication, partitions (symmetric, one-way, isolated leader,
//     bridge) and crashes, including crashes between the steps of Ready handling and, with a
//     store that models a disk (SaveCrasher, SnapshotCrasher, such as package walstore), power
//     losses inside a Save or a local snapshot save that leave part of it on the disk.
//     A member removed from the configuration runs on, as a server does after applying its
//     own removal, until every voter of the new configuration has applied it (or, if it has
//     not applied its removal itself, at the latest maxLinger ticks on), and then exits for
//     good; on a third of the seeds (leaderLeavesBySeed) the leader itself may be removed or
//     demoted, and leads on until a voter replaces it. On a third of the seeds
//     (jointHoldBySeed) membership changes also replace several voters at once through a joint
//     configuration that is held, not left automatically, and the voters of one half only are
//     partitioned off or crashed the moment the first member applies it, before the others
//     learn that it committed (see joint.go).
//   - Quiesce: every fault is healed, every crashed member restarted, and a leader's deferred
//     sync completes right after the Ready that wrote it. Within LivenessBound ticks plus
//     LivenessTicksPerEntry per entry of replication backlog, a leader must exist and a probe
//     write must be applied on every live member.
//
// On half of the seeds (Options.DeferLeaderSync forces it on or off) the cores run with
// raft.Config.DeferLeaderSync, so a leader's Ready of its own appends comes without MustSync.
// The simulator writes them unsynced (Storage.Save without sync) and syncs them later, at seeded
// points: after a Ready or at a tick, more likely when a commit waits on the leader's copy
// (raft.Node.CommitWaitsOnLeaderSync), and at the latest maxLeaderSyncDelay ticks after the
// write; only then does it call raft.Node.LeaderSynced. Crashes strike between the write and the
// sync (the store keeps a seeded prefix of the unsynced writes; over package walstore, what the
// disk's write-back and tearing leave) and between the sync and its report. Pending reports die
// with the process; a report owed when its leadership ends is still made, and the core must
// ignore it.
//
// # Invariants checked (continuously, not at the end)
//
//   - Election safety: at most one leader per term over the whole run, crashes included; a node
//     never durably votes for two candidates in one term.
//   - Log matching: an (index, term) pair names one entry and one predecessor term across every
//     node's log as written (durable, or written by a leader for a later sync), so equal
//     (index, term) implies equal prefixes.
//   - Leader completeness / no lost commit: every entry applied anywhere, at a node whose term was
//     U, is in the log (or snapshot) of every leader of a term greater than U.
//   - State machine safety: every node applies the same entry at each index, and every state
//     machine image (including snapshots installed from a leader) has the same digest at the same
//     applied index.
//   - Read linearizability: a ReadIndex read served after applying through its read index reflects
//     every write acknowledged (applied on its proposer) before the read was requested.
//   - Acknowledgement durability: a granted vote or an append acknowledgement is only sent once
//     the state it acknowledges is durable (the contract's step 2 before step 3), judged by the
//     store's durable state only; and never by a node that still holds unsynced appends (a
//     leader that has just stepped down must sync them first).
//   - Liveness: after the faults stop, the cluster elects a leader and applies a new write on
//     every member within a stated bound (see LivenessBound).
//   - Apply order (state machine safety within a member): each member's state machine is handed
//     exactly the entry after the last it applied (or after the snapshot it was restored from),
//     never one it applied already, never one past a gap, never a snapshot older than its state.
//   - The core's own contract: persisted state consistent;
//     a Ready without MustSync carries entries only under DeferLeaderSync, from a leader, of its
//     own term, and never a snapshot or a new term or vote.
//
// # The node driver
//
// With Options.Driver set to DriverNode (caucus-sim -driver node) the cores are not driven by
// this package's Ready loop but by internal/node itself: each member is a real node.Node,
// opened by node.OpenFS over internal/wal and internal/snap on its own simulated disk
// (vfs.Sim, with torn writes and, on half of the disks, reordered write-back), with the
// simulated network as its node.Transport, simulated time as its node.Clock, an executor that
// runs its background work (snapshot writes, the leader's deferred sync) when the simulator
// chooses, and an in-memory node.StateMachine (memSM) that checks what it applies. The
// simulator feeds it one input at a time through node.Driver, so the driver's own behaviours
// run under every fault: applying before the log write on the leader, the deferred commit-only
// HardState, the leader's background sync, group commit and its timer, snapshots written off
// the loop, received snapshot chunks written to a file, lost-proposal fail-fast. Crashes drop
// the node without stopping it (kill -9: the disk's page cache and the state machine's
// committed image survive) or lose power (unsynced writes are lost or torn and the state
// machine is rebuilt from the snapshot and the log, as a member does after a reboot); power
// also fails inside a step's disk operations and inside a background task, and a member may
// crash after a task and before the node takes its report. Membership changes go through
// node.Driver.ProposeConfChange with the core driver's choices (nodemembers.go).
//
// The node's log is observed (trackedLog): the simulator keeps the reference of what the node's
// calls made durable (a synced Save, SyncWritten, a snapshot marker), judges acknowledgements by
// it, and checks every recovered log against it. Besides the checks above it checks that:
//
//   - an entry is applied only once a quorum of voters holds it durably (CommitDurability);
//   - a proposal is answered only after the proposing member applied it (AckBeforeApply);
//   - a proposal failed as certainly not applied (node.ProposalLost) never is (LostApplied);
//   - a crash loses nothing durable (StorageFault).
//
// node.DriverBugs plants driver bugs, each caught within a few seeds (TestPlantedNodeBugs).
//
// # The real application and its event stream
//
// With Options.StateMachine set to SMFSM as well (caucus-sim -driver node -sm fsm) each member
// runs internal/fsm over internal/mvcc instead of memSM (fsmsm.go): a bbolt file in a real
// temporary directory (under os.TempDir; bbolt needs OS files), committed without fsync as in
// production, with the log and snapshots still on the simulated disk. A process crash closes
// the file as the dead process leaves it (the open batch lost, nothing synced) and reopens it,
// which must come back at the applied index it had committed; a power loss makes the fsm's
// reboot guard (internal/fsm/unsynced.go) see another boot, so fsm.Open itself discards the
// store and the node rebuilds it from the snapshot and the log (checked: it must start empty).
// Snapshots are the bbolt views fsm.Snapshot gives, installed with fsm.Restore; the swarm's
// snapshot chunk sizes are scaled to bbolt's file sizes.
//
// The workload's writes become logpb.Command puts carrying 0 to 2 events, publishes, and
// transactions with events in one branch (fsmwork.go), each with a session of its own, so that
// a duplicated proposal applies once. Every event's payload names its write. At every commit,
// snapshot install and start, each member's new events are read from its store and checked
// against one canonical stream and the model of every write (eventcheck.go):
//
//   - every member holds the same events at the same positions (id, topic, key, payload,
//     headers, time), numbered without gaps within a revision, one whole write per revision;
//     a member that applied a write holds its events, and none of writes it has not applied
//     (EventStream);
//   - an acknowledged write's events are in the stream once, as its answer said (EventLost,
//     EventDuplicate), those of a write refused by the store or failed as certainly not
//     applied are not (EventOfFailedWrite);
//   - the writes' events follow log order, so each key's events follow the order in which
//     its writes committed (EventOrder);
//   - the stores' live keys, revision and membership agree at equal applied indexes
//     (StateMachineSafety), and a register read after a linearizable read holds a value no
//     older than the newest write of it acknowledged before the read (Linearizability).
//
// Beside the writes, two durable consumers (internal/mvcc/consumer*.go) are created early, one
// on a topic and one on topic patterns, with a small ack wait and max deliver (fsmconsumer.go).
// Fetches and acks are log commands proposed through random members with the simulated time;
// each delivery is acknowledged soon, late (after its deadline), nakked or dropped, so that
// redeliveries, stale attempts and dead letters happen. At every commit, snapshot install and
// start each member's committed consumer state (mvcc.Store.ConsumerProgress) is checked, and so
// is every answer (consumercheck.go):
//
//   - all members hold the same consumers (records, pending events, attempts, deadlines) at the
//     same applied index, every pending event between the ack floor and next (ConsumerState);
//   - a consumer's ack floor and next never go back as the applied index rises, on one member
//     or across members, crashes, power-loss rebuilds and snapshot installs (ConsumerPosition);
//   - an event whose ack was answered with success is never delivered by a later fetch, pending
//     at a later index, nor dead-lettered (ConsumerRedelivered);
//   - while an event of a key is pending, no later event of the key is out (ConsumerKeyOrder);
//   - deliveries, pending events and dead letters stand for events of the stream, as published,
//     that the consumer selects (ConsumerDelivery); the event stream checks take dead letters
//     as the events of the fetch that publishes them;
//   - once the cluster is live after the faults, the consumers are drained through the leader
//     (within drainTicks), and every selected event is then acknowledged by an applied ack,
//     dead-lettered, or still pending: none was skipped (ConsumerSkipped).
//
// FSMBugs plants bugs in the simulator's wrapper of the fsm and in its workload (an outbox that
// skips replayed entries, writes without sessions, acks lost when the log replays them, acks sent
// as naks), each caught at once (TestPlantedNodeBugs); TestEventCheckerCatches and
// TestConsumerCheckerCatches feed the checkers streams and consumer histories broken in every way
// they name.
//
// Determinism rules for this package: no goroutines, no time.Now, no map iteration that decides
// anything (maps are only used for lookups), randomness only from the run's PRNG (and from a
// store's own PRNG, seeded from the run's seed, for what a crash keeps of unsynced writes).
package sim
