package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/caucus/caucus/raft"
)

// Profile selects the distribution swarm configurations are drawn from.
type Profile string

const (
	// ProfileSwarm is the default: a wide mix, from fault-free runs to very hostile ones.
	ProfileSwarm Profile = "swarm"
	// ProfileHostile concentrates on what breaks Raft bugs out: frequent crashes (including
	// between Ready steps), partitions, forced elections, one entry per append, and the core's
	// protective options (pre-vote, check-quorum) mostly off.
	ProfileHostile Profile = "hostile"
)

const (
	// DefaultTicks is the length of the chaos phase of a run.
	DefaultTicks = 1500
	// maxUncommittedBytes caps the entry bytes a leader holds uncommitted (about 370 writes).
	maxUncommittedBytes = 4 << 10
	// electionTick is every core's base election timeout, in ticks.
	electionTick = 10
	// LivenessBound and LivenessTicksPerEntry bound how long after the faults stop the cluster has
	// to elect a leader and apply a new write on every live member:
	//
	//	LivenessBound + LivenessTicksPerEntry * backlog
	//
	// where backlog is the highest durable last index of any member minus the lowest durable
	// commit index, at the moment the faults stop: entries someone may still have to receive.
	// The base is 100 election timeouts (elections, pre-votes, snapshot transfers in small
	// chunks); the per-entry term is twice the worst replication floor the swarm allows (one
	// entry per append, a four-append pipeline, three-tick latency: about 0.67 entries per
	// tick). What it catches is a cluster that stops making progress, not a slow one.
	LivenessBound         = 100 * electionTick
	LivenessTicksPerEntry = 2
	// spares is how many node IDs beyond the initial members membership changes can add.
	spares = 2
	// quiesceLatency bounds message latency once the faults stop.
	quiesceLatency = 3
	// maxLeaderSyncDelay bounds, in ticks, how long a leader's deferred sync may stay pending
	// (raft.Config.DeferLeaderSync): a leader must sync eventually, or a commit that needs its
	// copy would wait forever.
	maxLeaderSyncDelay = 3 * electionTick
	// removalGrace is how long, in ticks, a member removed from the configuration keeps running
	// at least before it exits (etcd's servers linger about a second), and it also waits until
	// every remaining member has applied the change: until then the outgoing half of a joint
	// configuration may need its vote. A member that exited at once could leave a joint
	// configuration whose outgoing half can never form a quorum (seeds 33, 173, 599 and 2857
	// with -nodes 1 did).
	removalGrace = electionTick
	// maxLinger bounds how long after removalGrace a removed member that has not applied its
	// removal waits for the others: such a lagging member campaigns again and again, and
	// without PreVote or CheckQuorum (dissertation 4.2.3) it can keep a lagging voter from ever
	// catching up and learning of the removal. An operator stops it in the end. One that
	// applied its removal never campaigns and waits for the others as long as it takes (a
	// crashed one, until its restart tells which it is).
	maxLinger = 20 * electionTick
	// minVoters is the smallest voter set membership changes shrink the cluster to.
	minVoters = 3
)

type partitionKind uint8

const (
	partSplit partitionKind = iota
	partOneWay
	partIsolateLeader
	partBridge
	partLeaderOneWay
	numPartitionKinds
)

// swarm is one seed's randomly drawn configuration ("swarm testing": each run enables a random
// subset of features at random intensities, which finds more bugs than one average mix).
type swarm struct {
	heartbeatTick int
	preVote       bool
	checkQuorum   bool
	maxMsgBytes   uint64
	maxInflight   int
	chunkBytes    uint64

	drop, dup  float64
	maxLatency int

	partitionRate float64
	partitionLen  int
	partKinds     []partitionKind

	crashRate, readyCrashRate float64
	maxDown                   int

	proposeRate, readRate                float64
	confRate, transferRate, campaignRate float64
	compactEvery                         uint64
	keys                                 int

	// deferCommit runs the cores with raft.Config.DeferCommitBroadcast, and announces a leader's
	// owed commit index at a tick with probability 1/2 (the servers' short timer). It is derived
	// from the seed, not drawn, so that the runs of seeds without it are what they always were.
	deferCommit bool

	// deferLeaderSync runs the cores with raft.Config.DeferLeaderSync: a leader writes its own
	// appends without syncing them, and the simulator syncs them later (simulation.syncLeader).
	// Derived from the seed like deferCommit, unless Options.DeferLeaderSync forces it.
	deferLeaderSync bool
	// syncRate is, under deferLeaderSync, the chance per tick that a leader's pending sync
	// completes (more when a commit waits on it); right after each Ready the chance is half of
	// it. It is drawn only for the seeds with deferLeaderSync, so that the others' draws, and
	// with them their runs, are what they always were.
	syncRate float64
}

func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.IntN(len(xs))] }

func drawSwarm(r *rand.Rand, p Profile) swarm {
	var w swarm
	w.heartbeatTick = pick(r, 1, 2, 3)
	w.maxLatency = pick(r, 1, 2, 5, 15)
	w.partitionLen = pick(r, 10, 40, 150)
	w.proposeRate = pick(r, 0.1, 0.3, 1.0)
	w.readRate = pick(r, 0.05, 0.2, 0.5)
	w.keys = pick(r, 1, 4, 16)
	w.chunkBytes = pick[uint64](r, 16, 128, 1<<20)
	switch p {
	case ProfileHostile:
		w.preVote = r.IntN(4) == 0
		w.checkQuorum = r.IntN(4) == 0
		w.maxMsgBytes = pick[uint64](r, 1, 1, 64)
		w.maxInflight = pick(r, 1, 2, 8)
		w.drop = pick(r, 0.0, 0.02, 0.1)
		w.dup = pick(r, 0.0, 0.02)
		w.maxLatency = pick(r, 2, 5, 15, 30)
		w.partitionRate = pick(r, 0.01, 0.03, 0.06)
		w.partitionLen = pick(r, 10, 30, 80)
		w.crashRate = pick(r, 0.005, 0.01, 0.03)
		w.readyCrashRate = pick(r, 0.005, 0.02, 0.05)
		w.maxDown = pick(r, 5, 20, 60)
		w.confRate = pick(r, 0.0, 0.005)
		w.transferRate = pick(r, 0.0, 0.005, 0.02)
		w.campaignRate = pick(r, 0.005, 0.02, 0.05)
		w.compactEvery = pick[uint64](r, 8, 32, 1<<62)
	default:
		w.preVote = r.IntN(4) != 0
		w.checkQuorum = r.IntN(4) != 0
		w.maxMsgBytes = pick[uint64](r, 1, 64, 1024, 1<<20)
		w.maxInflight = pick(r, 1, 2, 8, 256)
		w.drop = pick(r, 0.0, 0.01, 0.05, 0.15)
		w.dup = pick(r, 0.0, 0.01, 0.05)
		w.partitionRate = pick(r, 0.0, 0.003, 0.01, 0.03)
		w.crashRate = pick(r, 0.0, 0.002, 0.01)
		w.readyCrashRate = pick(r, 0.0, 0.002, 0.01)
		w.maxDown = pick(r, 5, 30, 100)
		w.confRate = pick(r, 0.0, 0.005, 0.02)
		w.transferRate = pick(r, 0.0, 0.003, 0.01)
		w.campaignRate = pick(r, 0.0, 0.003, 0.01)
		w.compactEvery = pick[uint64](r, 4, 16, 64, 1<<62)
	}
	// The liveness bound is only meaningful if the backlog a recovered leader must replicate is
	// bounded and replication has a floor throughput: the leader's uncommitted log is capped by
	// maxUncommittedBytes (flow control, as in production), one-entry appends get at least a
	// four-message pipeline, and small appends come with compaction so that a follower far
	// behind is sent a snapshot instead of thousands of one-entry appends.
	if w.maxMsgBytes == 1 {
		w.maxInflight = max(w.maxInflight, 4)
	}
	if w.maxMsgBytes < 1024 && w.compactEvery > 64 {
		w.compactEvery = 64
	}
	for k := partitionKind(0); k < numPartitionKinds; k++ {
		if r.IntN(2) == 0 {
			w.partKinds = append(w.partKinds, k)
		}
	}
	if len(w.partKinds) == 0 {
		w.partKinds = append(w.partKinds, pick(r, partSplit, partIsolateLeader))
	}
	return w
}

func (w swarm) String() string {
	return fmt.Sprintf("hb=%d prevote=%t checkquorum=%t msgbytes=%d inflight=%d chunk=%d drop=%.2f dup=%.2f lat=%d "+
		"part=%.3f/%d kinds=%v crash=%.3f readycrash=%.3f down=%d propose=%.2f read=%.2f conf=%.3f transfer=%.3f "+
		"campaign=%.3f compact=%d keys=%d defercommit=%t deferleadersync=%t syncrate=%.2f",
		w.heartbeatTick, w.preVote, w.checkQuorum, w.maxMsgBytes, w.maxInflight, w.chunkBytes, w.drop, w.dup,
		w.maxLatency, w.partitionRate, w.partitionLen, w.partKinds, w.crashRate, w.readyCrashRate, w.maxDown,
		w.proposeRate, w.readRate, w.confRate, w.transferRate, w.campaignRate, w.compactEvery, w.keys, w.deferCommit,
		w.deferLeaderSync, w.syncRate)
}

// Switch forces an option of the swarm on or off, or leaves it to the seed.
type Switch uint8

const (
	SwitchRandom Switch = iota // the seed decides
	SwitchOn
	SwitchOff
)

var switchNames = [...]string{"random", "on", "off"}

func (w Switch) String() string {
	if int(w) < len(switchNames) {
		return switchNames[w]
	}
	return fmt.Sprintf("Switch(%d)", uint8(w))
}

// ParseSwitch is the inverse of Switch.String.
func ParseSwitch(name string) (Switch, error) {
	for k, n := range switchNames {
		if n == name {
			return Switch(k), nil
		}
	}
	return 0, fmt.Errorf("sim: %q is not one of %s", name, strings.Join(switchNames[:], ", "))
}

// decide applies the switch to what the seed would choose.
func (w Switch) decide(bySeed bool) bool {
	switch w {
	case SwitchOn:
		return true
	case SwitchOff:
		return false
	}
	return bySeed
}

// DriverBugs plants bugs in the simulator's own driver, the caller's side of the core's
// contract, so tests can prove the checkers catch a broken driver as well as a broken core.
// Every field is false outside tests.
type DriverBugs struct {
	// ReportUnsyncedLeaderWrites calls raft.Node.LeaderSynced for a leader's deferred write as
	// soon as it is written, without syncing it: the leader counts towards a commit a copy that
	// a crash can lose. It only acts on runs with DeferLeaderSync.
	ReportUnsyncedLeaderWrites bool
	// ReapplyEntry applies the last entry of every Ready's CommittedEntries a second time, as a
	// driver that retries an apply it believes failed would.
	ReapplyEntry bool
}

// bugNames lists raft.Config.Bugs switches, then DriverBugs switches, by the field name, in
// declaration order.
var bugNames = []string{
	"VoteForShorterLog", "CommitOldTermByCounting", "VoteNotPersisted", "ApplyBeforeCommit", "ReadIndexWithoutQuorum",
	"VoteCountsIncomingOnly", "ReadIndexCountsIncomingOnly",
	"ReportUnsyncedLeaderWrites", "ReapplyEntry",
}

// BugNames returns the names ParseBugs accepts.
func BugNames() []string { return slices.Clone(bugNames) }

func bugField(b *raft.Bugs, d *DriverBugs, name string) *bool {
	switch name {
	case "VoteForShorterLog":
		return &b.VoteForShorterLog
	case "CommitOldTermByCounting":
		return &b.CommitOldTermByCounting
	case "VoteNotPersisted":
		return &b.VoteNotPersisted
	case "ApplyBeforeCommit":
		return &b.ApplyBeforeCommit
	case "ReadIndexWithoutQuorum":
		return &b.ReadIndexWithoutQuorum
	case "VoteCountsIncomingOnly":
		return &b.VoteCountsIncomingOnly
	case "ReadIndexCountsIncomingOnly":
		return &b.ReadIndexCountsIncomingOnly
	case "ReportUnsyncedLeaderWrites":
		return &d.ReportUnsyncedLeaderWrites
	case "ReapplyEntry":
		return &d.ReapplyEntry
	}
	return nil
}

// ParseBugs turns a comma-separated list of bug names into raft.Bugs and DriverBugs.
func ParseBugs(list string) (raft.Bugs, DriverBugs, error) {
	var b raft.Bugs
	var d DriverBugs
	if list == "" {
		return b, d, nil
	}
	for _, name := range strings.Split(list, ",") {
		f := bugField(&b, &d, strings.TrimSpace(name))
		if f == nil {
			return b, d, fmt.Errorf("sim: unknown bug %q (known: %s)", name, strings.Join(bugNames, ", "))
		}
		*f = true
	}
	return b, d, nil
}

// FormatBugs is the inverse of ParseBugs.
func FormatBugs(b raft.Bugs, d DriverBugs) string {
	var on []string
	for _, name := range bugNames {
		if *bugField(&b, &d, name) {
			on = append(on, name)
		}
	}
	return strings.Join(on, ",")
}
