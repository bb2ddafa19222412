package sim

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/caucus/caucus/raft"
)

// seedCounts is how many seeds TestSeeds runs per cluster size: 6,000 in all, about two minutes
// on two cores against a healthy core (a seed stops as soon as its liveness probe lands). A
// cluster of 1 grows by membership changes; it found a removed leader that vanished before the
// others learned their joint configuration was over (seeds 33, 173, 599, 2857).
var seedCounts = []struct{ nodes, seeds, short int }{
	{1, 3000, 100},
	{3, 1200, 100},
	{5, 1000, 60},
	{7, 800, 40},
}

// TestSeeds sweeps the default swarm over every cluster size. Every checker runs continuously in
// every seed; a failure names the seed and the command replaying it.
func TestSeeds(t *testing.T) {
	for _, c := range seedCounts {
		t.Run(fmt.Sprintf("nodes=%d", c.nodes), func(t *testing.T) {
			t.Parallel()
			n := c.seeds
			if testing.Short() {
				n = c.short
			}
			var total Stats
			failures := 0
			for seed := uint64(1); seed <= uint64(n); seed++ {
				res := Run(Options{Seed: seed, Nodes: c.nodes})
				total.Add(res.Stats)
				if v := res.Violation; v != nil {
					failures++
					t.Errorf("seed %d: %v", seed, v)
					if failures == 5 {
						t.Fatalf("stopping after %d failing seeds", failures)
					}
				}
			}
			// A sweep that injected nothing or checked nothing proves nothing. Half of the seeds
			// run with DeferLeaderSync: their leaders' unsynced writes must have met crashes,
			// before the sync and between the sync and its report. A third hold joint
			// configurations and cut one half off.
			if total.Faults[FaultCrash] == 0 || total.Faults[FaultPartitionSplit] == 0 || total.ReadsChecked == 0 ||
				total.Committed == 0 || total.SnapshotsInstalled == 0 || total.Faults[FaultConfChange] == 0 ||
				total.LeaderWrites == 0 || total.LeaderSyncs == 0 || total.UnsyncedCrashes == 0 || total.SyncCrashes == 0 ||
				total.Faults[FaultJointEnter] == 0 || total.Faults[FaultJointCut] == 0 {
				t.Errorf("sweep exercised too little:\n%s", total)
			}
			t.Logf("%d seeds, %d nodes:\n%s", n, c.nodes, total)
		})
	}
}

// TestSeedsDeferLeaderSync sweeps the hostile profile (frequent crashes, also between a
// leader's unsynced write, its sync and the report of the sync) with DeferLeaderSync on in
// every seed. SIM_DEFER_SEEDS=n runs n seeds per cluster size instead.
func TestSeedsDeferLeaderSync(t *testing.T) {
	seeds, short := 1000, 100
	if v, err := strconv.Atoi(os.Getenv("SIM_DEFER_SEEDS")); err == nil {
		seeds, short = v, v
	}
	for _, nodes := range []int{3, 5} {
		t.Run(fmt.Sprintf("nodes=%d", nodes), func(t *testing.T) {
			t.Parallel()
			n := seeds
			if testing.Short() {
				n = short
			}
			var total Stats
			for seed := uint64(1); seed <= uint64(n); seed++ {
				res := Run(Options{Seed: seed, Nodes: nodes, Profile: ProfileHostile, DeferLeaderSync: SwitchOn})
				total.Add(res.Stats)
				if v := res.Violation; v != nil {
					t.Fatalf("seed %d: %v", seed, v)
				}
			}
			if total.LeaderWrites == 0 || total.LeaderSyncs == 0 || total.UnsyncedCrashes == 0 || total.SyncCrashes == 0 ||
				total.Committed == 0 {
				t.Errorf("sweep exercised too little:\n%s", total)
			}
			t.Logf("%d seeds, %d nodes:\n%s", n, nodes, total)
		})
	}
}

// TestDeterminism runs seeds twice and requires identical trace hashes and statistics, and
// different seeds to give different traces.
func TestDeterminism(t *testing.T) {
	t.Parallel()
	seen := map[uint64]uint64{}
	for _, o := range []Options{
		{Seed: 1, Nodes: 3}, {Seed: 2, Nodes: 5}, {Seed: 3, Nodes: 7},
		{Seed: 4, Nodes: 3, Profile: ProfileHostile},
		{Seed: 5, Nodes: 3, Bugs: raft.Bugs{VoteForShorterLog: true}},
		{Seed: 6, Nodes: 3, Profile: ProfileHostile, DeferLeaderSync: SwitchOn},
		{Seed: 7, Nodes: 3, DeferLeaderSync: SwitchOn, DriverBugs: DriverBugs{ReportUnsyncedLeaderWrites: true}},
	} {
		a, b := Run(o), Run(o)
		if a.TraceHash != b.TraceHash || a.Stats != b.Stats {
			t.Errorf("%s: two runs differ: hash %x vs %x\n%s\nvs\n%s", ReplayCommand(o), a.TraceHash, b.TraceHash, a.Stats, b.Stats)
		}
		if (a.Violation == nil) != (b.Violation == nil) || (a.Violation != nil && a.Violation.Error() != b.Violation.Error()) {
			t.Errorf("%s: two runs report different violations: %v vs %v", ReplayCommand(o), a.Violation, b.Violation)
		}
		if prev, ok := seen[a.TraceHash]; ok {
			t.Errorf("seeds %d and %d have the same trace hash %x", prev, o.Seed, a.TraceHash)
		}
		seen[a.TraceHash] = o.Seed
		if a.Stats.Sent == 0 || a.Stats.Ticks == 0 {
			t.Errorf("%s: run did nothing: %s", ReplayCommand(o), a.Stats)
		}
	}
}

// TestTraceIsDeterministic compares the human-readable traces too, not only their hashes.
func TestTraceIsDeterministic(t *testing.T) {
	t.Parallel()
	var a, b strings.Builder
	Run(Options{Seed: 7, Nodes: 3, Ticks: 300, Trace: &a})
	Run(Options{Seed: 7, Nodes: 3, Ticks: 300, Trace: &b})
	if a.String() != b.String() {
		t.Fatal("traces of the same seed differ")
	}
	if !strings.Contains(a.String(), "LEADER") || !strings.Contains(a.String(), " ready ") {
		t.Fatalf("trace lacks elections or Readys:\n%.2000s", a.String())
	}
}

func TestReplayCommand(t *testing.T) {
	got := ReplayCommand(Options{Seed: 42, Nodes: 5, Ticks: 900, Profile: ProfileHostile,
		Bugs: raft.Bugs{VoteNotPersisted: true, ReadIndexWithoutQuorum: true}, NoAckCheck: true})
	want := "go run ./cmd/caucus-sim -seed 42 -nodes 5 -ticks 900 -profile hostile -bug VoteNotPersisted,ReadIndexWithoutQuorum -ack-check=false -v"
	if got != want {
		t.Fatalf("ReplayCommand:\n got %s\nwant %s", got, want)
	}
	got = ReplayCommand(Options{Seed: 7, Nodes: 3, DriverBugs: DriverBugs{ReportUnsyncedLeaderWrites: true}, DeferLeaderSync: SwitchOn})
	want = "go run ./cmd/caucus-sim -seed 7 -nodes 3 -bug ReportUnsyncedLeaderWrites -defer-leader-sync on -v"
	if got != want {
		t.Fatalf("ReplayCommand:\n got %s\nwant %s", got, want)
	}
	got = ReplayCommand(Options{Seed: 9, Nodes: 3, Driver: DriverNode, StateMachine: SMFSM, FSMBugs: FSMBugs{ReplayDropsEvents: true}})
	want = "go run ./cmd/caucus-sim -seed 9 -nodes 3 -driver node -sm fsm -fsm-bug ReplayDropsEvents -v"
	if got != want {
		t.Fatalf("ReplayCommand:\n got %s\nwant %s", got, want)
	}
	if fb, err := ParseFSMBugs(FormatFSMBugs(FSMBugs{ReplayDropsEvents: true})); err != nil || fb != (FSMBugs{ReplayDropsEvents: true}) {
		t.Fatalf("ParseFSMBugs: %+v, %v", fb, err)
	}
	if _, err := ParseFSMBugs("NoSuchBug"); err == nil {
		t.Fatal("ParseFSMBugs accepted an unknown bug")
	}
	b, d, err := ParseBugs("VoteNotPersisted,ReadIndexWithoutQuorum,ReportUnsyncedLeaderWrites")
	if err != nil || b != (raft.Bugs{VoteNotPersisted: true, ReadIndexWithoutQuorum: true}) || d != (DriverBugs{ReportUnsyncedLeaderWrites: true}) {
		t.Fatalf("ParseBugs: %+v, %+v, %v", b, d, err)
	}
	if _, _, err := ParseBugs("NoSuchBug"); err == nil {
		t.Fatal("ParseBugs accepted an unknown bug")
	}
	for _, w := range []Switch{SwitchRandom, SwitchOn, SwitchOff} {
		if got, err := ParseSwitch(w.String()); err != nil || got != w {
			t.Fatalf("ParseSwitch(%q) = %v, %v", w, got, err)
		}
	}
	if _, err := ParseSwitch("maybe"); err == nil {
		t.Fatal("ParseSwitch accepted an unknown value")
	}
}

// TestLivenessCheckerFails shows the liveness checker is not vacuous: a cluster whose every link
// stays cut after the faults "stop" must be reported, within the stated bound.
func TestLivenessCheckerFails(t *testing.T) {
	t.Parallel()
	for seed := uint64(1); seed <= 5; seed++ {
		o := Options{Seed: seed, Nodes: 3, Ticks: 300, isolateAtQuiesce: true}
		v := Run(o).Violation
		if v == nil || v.Kind != Liveness {
			t.Fatalf("seed %d: a fully partitioned cluster was not reported as a liveness failure: %v", seed, v)
		}
		if v.Tick <= uint64(o.Ticks)+LivenessBound {
			t.Fatalf("seed %d: liveness reported at tick %d, before the bound %d", seed, v.Tick, uint64(o.Ticks)+LivenessBound)
		}
	}
}
