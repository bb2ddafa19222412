package walstore

import (
	"testing"

	"github.com/caucus/caucus/internal/sim"
	"github.com/caucus/caucus/raft"
)

// TestSimOverWAL runs the simulator with every node's durable state in a WAL on a simulated disk.
// Every injected crash power-cycles the disk and requires the WAL's replay to equal what was made
// durable; the simulator's own checkers run as usual on top.
func TestSimOverWAL(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 8
	}
	for _, nodes := range []int{3, 5} {
		var total sim.Stats
		for seed := uint64(1); seed <= uint64(seeds); seed++ {
			res := sim.Run(sim.Options{Seed: seed, Nodes: nodes, NewStorage: Factory(seed), StorageName: "wal"})
			total.Add(res.Stats)
			if v := res.Violation; v != nil {
				t.Fatalf("seed %d, %d nodes: %v", seed, nodes, v)
			}
		}
		if total.Faults[sim.FaultCrash] == 0 || total.Compactions == 0 || total.SnapshotsInstalled == 0 {
			t.Fatalf("%d nodes: the WAL saw too little (crashes, compactions, snapshots):\n%s", nodes, total)
		}
	}
}

// TestCrashDetectsLostWrite shows the replay check can fail: a write made behind the WAL's back
// (into the reference only) must be reported at the next crash.
func TestCrashDetectsLostWrite(t *testing.T) {
	s, err := New(1)
	if err != nil {
		t.Fatal(err)
	}
	ents := []raft.Entry{{Index: 1, Term: 1, Data: []byte("a")}}
	if err := s.Save(raft.HardState{Term: 1, Commit: 1}, nil, ents); err != nil {
		t.Fatal(err)
	}
	if err := s.Crash(); err != nil {
		t.Fatalf("clean crash: %v", err)
	}
	if err := s.Storage.Save(raft.HardState{}, nil, []raft.Entry{{Index: 2, Term: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Crash(); err == nil {
		t.Fatal("an entry missing from the WAL went unnoticed")
	}
}

// TestDeterministic: a run over the WAL is as reproducible as one over memory, and persists the
// same things, so it follows the very same trace.
func TestDeterministic(t *testing.T) {
	o := sim.Options{Seed: 3, Nodes: 3, NewStorage: Factory(3), StorageName: "wal"}
	a := sim.Run(o)
	o.NewStorage = Factory(3)
	b := sim.Run(o)
	mem := sim.Run(sim.Options{Seed: 3, Nodes: 3})
	if a.TraceHash != b.TraceHash || a.Stats != b.Stats {
		t.Fatalf("two runs over the WAL differ: %x vs %x", a.TraceHash, b.TraceHash)
	}
	if a.TraceHash != mem.TraceHash {
		t.Fatalf("the run over the WAL (%x) differs from the run over memory (%x)", a.TraceHash, mem.TraceHash)
	}
}
