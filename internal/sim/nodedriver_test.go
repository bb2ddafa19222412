package sim

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/caucus/caucus/internal/node"
)

// nodeSeedCounts is how many seeds TestSeedsNodeDriver runs per cluster size (SIM_NODE_SEEDS=n
// runs n each instead): about 20 seconds on two cores. Longer sweeps: caucus-sim -driver node.
var nodeSeedCounts = []struct{ nodes, seeds, short int }{
	{3, 120, 20},
	{5, 50, 10},
}

// TestSeedsNodeDriver sweeps the default swarm with real internal/node members: their Ready
// loop, apply path, group commit, leader sync, snapshot writer and receiver, over internal/wal
// and internal/snap on simulated disks that lose power.
func TestSeedsNodeDriver(t *testing.T) {
	for _, c := range nodeSeedCounts {
		t.Run(fmt.Sprintf("nodes=%d", c.nodes), func(t *testing.T) {
			t.Parallel()
			n := c.seeds
			if testing.Short() {
				n = c.short
			}
			if v, err := strconv.Atoi(os.Getenv("SIM_NODE_SEEDS")); err == nil {
				n = v
			}
			var total Stats
			for seed := uint64(1); seed <= uint64(n); seed++ {
				res := Run(Options{Seed: seed, Nodes: c.nodes, Driver: DriverNode})
				total.Add(res.Stats)
				if v := res.Violation; v != nil {
					t.Fatalf("seed %d: %v", seed, v)
				}
			}
			// A sweep that injected nothing or checked nothing proves nothing.
			if total.Faults[FaultCrash] == 0 || total.SaveCrashes == 0 || total.SnapshotCrashes == 0 || total.Faults[FaultConfChange] == 0 ||
				total.Faults[FaultPartitionSplit] == 0 || total.ReadsChecked == 0 || total.Committed == 0 ||
				total.SnapshotsInstalled == 0 || total.LeaderWrites == 0 || total.LeaderSyncs == 0 ||
				total.UnsyncedCrashes == 0 || total.SyncCrashes == 0 || total.LostProposals == 0 {
				t.Errorf("sweep exercised too little:\n%s", total)
			}
			t.Logf("%d seeds, %d nodes:\n%s", n, c.nodes, total)
		})
	}
}

// fsmSeedCounts is how many seeds TestSeedsFSM runs per cluster size (SIM_FSM_SEEDS=n runs n
// each instead): about 15 seconds on two cores with the bbolt files on a tmpfs (TestMain). Longer
// sweeps: make sim-fsm.
var fsmSeedCounts = []struct{ nodes, seeds, short int }{
	{3, 24, 6},
	{5, 12, 3},
}

// TestSeedsFSM sweeps the default swarm with real internal/node members running the real
// internal/fsm over internal/mvcc, under a workload of writes that carry events and of durable
// consumers: every member's event stream and consumers are checked at every commit, restore and
// start, and at the end (eventcheck.go, consumercheck.go).
func TestSeedsFSM(t *testing.T) {
	for _, c := range fsmSeedCounts {
		t.Run(fmt.Sprintf("nodes=%d", c.nodes), func(t *testing.T) {
			t.Parallel()
			n := c.seeds
			if testing.Short() {
				n = c.short
			}
			if v, err := strconv.Atoi(os.Getenv("SIM_FSM_SEEDS")); err == nil {
				n = v
			}
			var total Stats
			for seed := uint64(1); seed <= uint64(n); seed++ {
				res := Run(Options{Seed: seed, Nodes: c.nodes, Driver: DriverNode, StateMachine: SMFSM})
				total.Add(res.Stats)
				if v := res.Violation; v != nil {
					t.Fatalf("seed %d: %v", seed, v)
				}
			}
			// Events must have been published, read back from members' stores and acknowledged,
			// through crashes, stores rebuilt after power losses and installed snapshots.
			if total.EventsPublished == 0 || total.EventsChecked <= total.EventsPublished || total.EventsAcked == 0 ||
				total.RegisterReads == 0 || total.Faults[FaultCrash] == 0 || total.FSMRebuilds == 0 ||
				total.SnapshotsInstalled == 0 || total.Faults[FaultConfChange] == 0 || total.Faults[FaultPartitionSplit] == 0 ||
				// and the consumers must have redelivered, refused stale acks and dead-lettered.
				total.ConsumerDeliveries == 0 || total.ConsumerRedeliveries == 0 || total.ConsumerAcks == 0 ||
				total.ConsumerAcksRefused == 0 || total.ConsumerDeadLetters == 0 || total.ConsumerStates == 0 {
				t.Errorf("sweep exercised too little:\n%s", total)
			}
			t.Logf("%d seeds, %d nodes:\n%s", n, c.nodes, total)
		})
	}
}

// TestNodeDriverRegressions replays the seeds on which the node driver found bugs in
// internal/node, now fixed: a local snapshot superseded by a received one stopped the member
// (3 members, seed 12); read-index contexts repeated after a restart, so that a leader's answer
// to the previous process's read confirmed a new read with a stale index (seeds 16, 124); a
// deposed leader's delayed snapshot chunk discarded the current transfer's file (5 members,
// seed 84).
func TestNodeDriverRegressions(t *testing.T) {
	for _, c := range []struct {
		nodes int
		seed  uint64
	}{{3, 12}, {3, 16}, {3, 124}, {5, 84}} {
		if v := Run(Options{Seed: c.seed, Nodes: c.nodes, Driver: DriverNode}).Violation; v != nil {
			t.Errorf("%d members, seed %d: %v", c.nodes, c.seed, v)
		}
	}
}

// TestNodeDriverDeterminism: a seed's run with real nodes is as reproducible as with the core
// driver, so that a failing seed replays.
func TestNodeDriverDeterminism(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		o := Options{Seed: seed, Nodes: 3, Driver: DriverNode, Profile: ProfileHostile}
		if seed > 4 {
			o.StateMachine = SMFSM
		}
		a, b := Run(o), Run(o)
		if a.TraceHash != b.TraceHash || a.Stats != b.Stats {
			t.Fatalf("seed %d: two runs differ: hash %x vs %x\n%s\nvs\n%s", seed, a.TraceHash, b.TraceHash, a.Stats, b.Stats)
		}
	}
}

// plantedNodeBugs pairs each node.DriverBugs switch with the options that expose it, the seeds
// within which a violation of an expected kind must be reported, and those kinds.
var plantedNodeBugs = []struct {
	name   string
	opts   Options
	bound  int
	expect []Kind
}{
	{
		// A follower's acknowledgement (and a vote) leaves before the write it acknowledges.
		name: "AckBeforePersist", opts: Options{NodeBugs: node.DriverBugs{AckBeforePersist: true}},
		bound: 10, expect: []Kind{AckDurability},
	},
	{
		// The leader counts its own unsynced copy: an entry commits on one durable copy of three.
		name: "ReportUnsyncedLeaderSync", opts: Options{DeferLeaderSync: SwitchOn,
			NodeBugs: node.DriverBugs{ReportUnsyncedLeaderSync: true}},
		bound: 10, expect: []Kind{CommitDurability},
	},
	{
		// Its consequence, with the durability checkers off: the leader loses power with the
		// committed entry unsynced, and a leader without it is elected.
		name: "ReportUnsyncedLeaderSync/consequence", opts: Options{DeferLeaderSync: SwitchOn, NoAckCheck: true,
			NodeBugs: node.DriverBugs{ReportUnsyncedLeaderSync: true}},
		bound: 100, expect: []Kind{LeaderCompleteness, StateMachineSafety, Linearizability, CorePanic},
	},
	{
		// The first entry after an installed snapshot is never applied.
		name: "SkipApplyAfterSnapshot", opts: Options{NodeBugs: node.DriverBugs{SkipApplyAfterSnapshot: true}},
		bound: 20, expect: []Kind{StateMachineSafety},
	},
	{
		// A proposal is answered when its entry commits, before it is applied.
		name: "AnswerBeforeApply", opts: Options{NodeBugs: node.DriverBugs{AnswerBeforeApply: true}},
		bound: 10, expect: []Kind{AckBeforeApply},
	},
	{
		// A Ready loop that never fsyncs its log: acknowledgements of nothing durable.
		name: "NeverSyncLog", opts: Options{NodeBugs: node.DriverBugs{NeverSyncLog: true}},
		bound: 10, expect: []Kind{AckDurability},
	},
	{
		// Its consequence, with the durability checkers off: power losses take acknowledged
		// entries and votes away. The core panics on a commit index past its log ("was the log
		// lost?"), or a leader lacks a committed entry.
		name: "NeverSyncLog/power-loss", opts: Options{Profile: ProfileHostile, NoAckCheck: true,
			NodeBugs: node.DriverBugs{NeverSyncLog: true}},
		bound: 20, expect: []Kind{CorePanic, LeaderCompleteness, StateMachineSafety, Linearizability, ElectionSafety},
	},
	{
		// A committed proposal failed as certainly not applied: its client would retry it
		// without a session and write twice.
		name: "ReportAppliedAsLost", opts: Options{NodeBugs: node.DriverBugs{ReportAppliedAsLost: true}},
		bound: 10, expect: []Kind{LostApplied},
	},
	{
		// With internal/fsm: an outbox that skips the events of the entries the log replays
		// after a restart (its "published up to" mark kept apart from the data). The member
		// that replayed them lacks events the others hold, or an acknowledged write's events.
		name: "fsm/ReplayDropsEvents", opts: Options{StateMachine: SMFSM, FSMBugs: FSMBugs{ReplayDropsEvents: true}},
		bound: 5, expect: []Kind{EventStream, EventLost},
	},
	{
		// With internal/fsm: writes without sessions. A proposal the network duplicates is
		// applied twice and its events are published twice.
		name: "fsm/SessionlessWrites", opts: Options{StateMachine: SMFSM, FSMBugs: FSMBugs{SessionlessWrites: true}},
		bound: 5, expect: []Kind{EventDuplicate},
	},
	{
		// With internal/fsm: acks lost when the log replays them after a restart. The member
		// that replayed them holds other consumer state than the others at the same index.
		name: "fsm/ReplayDropsAcks", opts: Options{StateMachine: SMFSM, FSMBugs: FSMBugs{ReplayDropsAcks: true}},
		bound: 5, expect: []Kind{ConsumerState, ConsumerPosition, ConsumerRedelivered},
	},
	{
		// With internal/fsm: an ack answered with success that leaves the delivery pending
		// (sent as a nak): the acknowledged event goes out again.
		name: "fsm/AcksAsNaks", opts: Options{StateMachine: SMFSM, FSMBugs: FSMBugs{AcksAsNaks: true}},
		bound: 5, expect: []Kind{ConsumerRedelivered},
	},
}

func TestPlantedNodeBugs(t *testing.T) {
	for _, c := range plantedNodeBugs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			other := map[Kind]int{}
			for seed := uint64(1); seed <= uint64(c.bound); seed++ {
				o := c.opts
				o.Seed, o.Nodes, o.Driver = seed, 3, DriverNode
				v := Run(o).Violation
				if v == nil {
					continue
				}
				if !slices.Contains(c.expect, v.Kind) {
					other[v.Kind]++
					continue
				}
				// Differential check: the same seed without the bug must not break the same
				// invariant, or the violation is not the planted bug's doing.
				clean := o
				clean.NodeBugs, clean.FSMBugs = node.DriverBugs{}, FSMBugs{}
				if cv := Run(clean).Violation; cv != nil {
					t.Fatalf("seed %d fails even without the bug: %v", seed, cv)
				}
				t.Logf("caught at seed %d (bound %d): %s: %.300s\nreplay: %s (other kinds seen first: %v)",
					seed, c.bound, v.Kind, v.Detail, v.Replay, other)
				return
			}
			t.Fatalf("%s not caught as any of %v within %d seeds (other violations: %v)", c.name, c.expect, c.bound, other)
		})
	}
}
