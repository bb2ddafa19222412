package walstore

import (
	"errors"
	"slices"
	"testing"

	"github.com/caucus/caucus/internal/sim"
	"github.com/caucus/caucus/raft"
)

// collecting is Factory that also keeps the stores it makes, so a test can read their Stats.
func collecting(seed uint64, opts Options, into *[]*Store) func(id raft.NodeID) sim.Storage {
	return func(id raft.NodeID) sim.Storage {
		s, err := New(seed*1_000_003+uint64(id), opts)
		if err != nil {
			panic(err)
		}
		*into = append(*into, s)
		return s
	}
}

// TestSimOverWAL runs the simulator with every node's durable state in a WAL on a simulated disk
// that loses unsynced writes, tears writes (in order or not) and loses power inside Saves and
// local snapshot saves. Every crash restarts the
// node from what the disk recovered, checked against what was made durable; the simulator's own
// checkers run as usual on top. The sweep must have hit every fault, or it proves nothing.
func TestSimOverWAL(t *testing.T) {
	seeds := 60
	if testing.Short() {
		seeds = 10
	}
	for _, nodes := range []int{3, 5} {
		var total sim.Stats
		var st Stats
		for seed := uint64(1); seed <= uint64(seeds); seed++ {
			var stores []*Store
			profile := sim.ProfileSwarm
			if seed%3 == 0 {
				profile = sim.ProfileHostile
			}
			res := sim.Run(sim.Options{Seed: seed, Nodes: nodes, Profile: profile,
				NewStorage: collecting(seed, Options{}, &stores), StorageName: "wal"})
			total.Add(res.Stats)
			if v := res.Violation; v != nil {
				t.Fatalf("seed %d, %d nodes: %v", seed, nodes, v)
			}
			for _, s := range stores {
				st.UnsyncedSaves += s.stats.UnsyncedSaves
				st.DeferredSaves += s.stats.DeferredSaves
				st.Syncs += s.stats.Syncs
				st.SaveCrashes += s.stats.SaveCrashes
				st.SnapshotCrashes += s.stats.SnapshotCrashes
				st.Recoveries += s.stats.Recoveries
				st.LostWrites += s.stats.LostWrites
				st.TornSaves += s.stats.TornSaves
			}
		}
		t.Logf("%d nodes, %d seeds: %+v\n%s", nodes, seeds, st, total)
		// Half of the seeds run with DeferLeaderSync: leaders' appends reach the WAL unsynced,
		// and crashes strike before their sync (the disk loses or tears them) and after it.
		if total.Faults[sim.FaultCrash] == 0 || total.Compactions == 0 || total.SnapshotsInstalled == 0 ||
			total.SaveCrashes == 0 || total.SnapshotCrashes == 0 || st.UnsyncedSaves == 0 || st.LostWrites == 0 || st.TornSaves == 0 ||
			st.DeferredSaves == 0 || st.Syncs == 0 || total.UnsyncedCrashes == 0 || total.SyncCrashes == 0 {
			t.Fatalf("%d nodes: the WAL saw too little (crashes, compactions, snapshots, disk faults, deferred syncs): %+v\n%s", nodes, st, total)
		}
		if int64(st.SaveCrashes) != total.SaveCrashes || int64(st.SnapshotCrashes) != total.SnapshotCrashes {
			t.Fatalf("%d nodes: stores report %d power losses inside a Save and %d inside a snapshot save, the simulator %d and %d",
				nodes, st.SaveCrashes, st.SnapshotCrashes, total.SaveCrashes, total.SnapshotCrashes)
		}
	}
}

// TestCrashDetectsLostWrite shows the recovery check can fail: a write made behind the WAL's
// back (into the reference only) must be reported at the next crash.
func TestCrashDetectsLostWrite(t *testing.T) {
	s, err := New(1, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ents := []raft.Entry{{Index: 1, Term: 1, Data: []byte("a")}}
	if err := s.Save(raft.HardState{Term: 1, Commit: 1}, nil, ents, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Crash(); err != nil {
		t.Fatalf("clean crash: %v", err)
	}
	if err := s.Storage.Save(raft.HardState{}, nil, []raft.Entry{{Index: 2, Term: 1}}, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Crash(); err == nil {
		t.Fatal("an entry missing from the WAL went unnoticed")
	}
}

// TestUnsyncedCommitMayBeLost: a Save that only advances the commit index is not fsynced, so a
// crash keeps it or loses it (seeded); the synced entries and term always survive, and the
// accessors never report the unsynced commit as durable.
func TestUnsyncedCommitMayBeLost(t *testing.T) {
	kept, lost := 0, 0
	for seed := uint64(1); seed <= 64; seed++ {
		s, err := New(seed, Options{})
		if err != nil {
			t.Fatal(err)
		}
		ents := []raft.Entry{{Index: 1, Term: 2, Data: []byte("a")}, {Index: 2, Term: 2, Data: []byte("b")}}
		if err := s.Save(raft.HardState{Term: 2, Vote: 1, Commit: 1}, nil, ents, true); err != nil {
			t.Fatal(err)
		}
		if err := s.Save(raft.HardState{Term: 2, Vote: 1, Commit: 2}, nil, nil, false); err != nil {
			t.Fatal(err)
		}
		if c := s.HardState().Commit; c != 1 {
			t.Fatalf("seed %d: durable commit %d before any fsync of commit 2", seed, c)
		}
		if err := s.Crash(); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		ps := s.Load()
		if ps.HardState.Term != 2 || ps.HardState.Vote != 1 || len(ps.Entries) != 2 {
			t.Fatalf("seed %d: lost synced state: %+v, %d entries", seed, ps.HardState, len(ps.Entries))
		}
		switch ps.HardState.Commit {
		case 1:
			lost++
		case 2:
			kept++
		default:
			t.Fatalf("seed %d: recovered commit %d was never written", seed, ps.HardState.Commit)
		}
	}
	if kept == 0 || lost == 0 {
		t.Fatalf("an unsynced commit was kept %d times and lost %d times in 64 seeds: the crash is not random", kept, lost)
	}
}

// TestDeferredWriteMayBeLost: entries saved without sync (a leader's appends under
// raft.Config.DeferLeaderSync) are not durable until Sync: the accessors do not show them, and a
// crash keeps a prefix of them, some seeds none, some part, some all. After Sync, a crash keeps
// them all; a later synced Save makes earlier unsynced ones durable too.
func TestDeferredWriteMayBeLost(t *testing.T) {
	outcomes := map[uint64]int{} // recovered last index -> seeds
	for seed := uint64(1); seed <= 64; seed++ {
		s, err := New(seed, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Save(raft.HardState{Term: 2, Vote: 1, Commit: 0}, nil, []raft.Entry{{Index: 1, Term: 2, Data: []byte("a")}}, true); err != nil {
			t.Fatal(err)
		}
		for i := uint64(2); i <= 5; i++ {
			ent := []raft.Entry{{Index: i, Term: 2, Data: make([]byte, 300)}}
			if err := s.Save(raft.HardState{Term: 2, Vote: 1, Commit: i - 1}, nil, ent, false); err != nil {
				t.Fatal(err)
			}
		}
		if s.LastIndex() != 1 || s.HardState().Commit != 0 {
			t.Fatalf("seed %d: unsynced entries visible: last %d, %+v", seed, s.LastIndex(), s.HardState())
		}
		if err := s.Crash(); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		ps := s.Load()
		if len(ps.Entries) == 0 || ps.HardState.Term != 2 || ps.HardState.Vote != 1 {
			t.Fatalf("seed %d: lost synced state: %+v, %d entries", seed, ps.HardState, len(ps.Entries))
		}
		last := ps.Entries[len(ps.Entries)-1].Index
		if ps.HardState.Commit > last {
			t.Fatalf("seed %d: recovered commit %d beyond the recovered log %d", seed, ps.HardState.Commit, last)
		}
		outcomes[last]++

		// Synced, the same writes survive any crash.
		ent := []raft.Entry{{Index: last + 1, Term: 2, Data: []byte("z")}}
		if err := s.Save(raft.HardState{}, nil, ent, false); err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		ent = []raft.Entry{{Index: last + 2, Term: 2, Data: []byte("y")}}
		if err := s.Save(raft.HardState{}, nil, ent, false); err != nil {
			t.Fatal(err)
		}
		if err := s.Save(raft.HardState{Term: 2, Vote: 1, Commit: last}, nil, nil, true); err != nil {
			t.Fatal(err)
		}
		if s.LastIndex() != last+2 {
			t.Fatalf("seed %d: durable last index %d after the syncs, want %d", seed, s.LastIndex(), last+2)
		}
		if err := s.Crash(); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if s.LastIndex() != last+2 || s.HardState().Commit != last {
			t.Fatalf("seed %d: a crash after the syncs lost writes: last %d, %+v", seed, s.LastIndex(), s.HardState())
		}
	}
	if outcomes[1] == 0 || outcomes[5] == 0 || len(outcomes) < 3 {
		t.Fatalf("crashes kept too uniform a part of the unsynced entries (recovered last index -> seeds): %v", outcomes)
	}
	s, err := New(1, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(raft.HardState{Term: 2, Vote: 1}, nil, nil, false); err == nil {
		t.Fatal("an unsynced new term was accepted")
	}
}

// TestCrashInsideSave arms a power loss inside Saves of new entries: the Save reports
// sim.ErrPowerLoss, and the recovered log is the old one plus a prefix of the new entries, some
// seeds keeping none, some part, some all.
func TestCrashInsideSave(t *testing.T) {
	outcomes := map[int]int{} // new entries kept -> seeds
	for seed := uint64(1); seed <= 200; seed++ {
		s, err := New(seed, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Save(raft.HardState{Term: 1, Commit: 0}, nil, []raft.Entry{{Index: 1, Term: 1, Data: []byte("x")}}, true); err != nil {
			t.Fatal(err)
		}
		for !s.CrashInNextSave() {
		}
		var ents []raft.Entry
		for i := uint64(2); i <= 9; i++ {
			ents = append(ents, raft.Entry{Index: i, Term: 2, Data: make([]byte, 100)})
		}
		err = s.Save(raft.HardState{Term: 2, Vote: 3, Commit: 1}, nil, ents, true)
		if err == nil {
			continue // the crash point lay beyond the Save
		}
		if !errors.Is(err, sim.ErrPowerLoss) {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if err := s.Crash(); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		ps := s.Load()
		if len(ps.Entries) == 0 || ps.Entries[0].Index != 1 {
			t.Fatalf("seed %d: lost the synced entry 1: %+v", seed, ps.Entries)
		}
		if n := len(ps.Entries); ps.Entries[n-1].Term > ps.HardState.Term {
			t.Fatalf("seed %d: recovered entry of term %d with HardState term %d", seed, ps.Entries[n-1].Term, ps.HardState.Term)
		}
		outcomes[len(ps.Entries)-1]++
	}
	if outcomes[0] == 0 || outcomes[8] == 0 || len(outcomes) < 3 {
		t.Fatalf("power losses inside a Save kept too uniform a part of it (new entries kept -> seeds): %v", outcomes)
	}
}

// TestDeterministic: a run over the faulty WAL is as reproducible as one over memory; without
// faults, it persists the same things as memory, so it follows the very same trace.
//
// The comparison with memory runs without DeferLeaderSync: with it, the in-memory store loses
// part of a leader's unsynced appends at a crash (by its own seed), which a fault-free disk
// never does, so the two runs rightly differ.
func TestDeterministic(t *testing.T) {
	for _, w := range []sim.Switch{sim.SwitchOn, sim.SwitchOff} {
		o := sim.Options{Seed: 1, Nodes: 3, Profile: sim.ProfileHostile, DeferLeaderSync: w, NewStorage: Factory(1, Options{}), StorageName: "wal"}
		a := sim.Run(o)
		o.NewStorage = Factory(1, Options{})
		b := sim.Run(o)
		if a.TraceHash != b.TraceHash || a.Stats != b.Stats {
			t.Fatalf("defer-leader-sync %s: two runs over the WAL differ: %x vs %x", w, a.TraceHash, b.TraceHash)
		}
	}
	o := sim.Options{Seed: 1, Nodes: 3, Profile: sim.ProfileHostile, DeferLeaderSync: sim.SwitchOff, NewStorage: Factory(1, Options{}), StorageName: "wal"}
	a := sim.Run(o)
	if a.Stats.SaveCrashes == 0 {
		t.Fatalf("seed 1 (hostile) never lost power inside a Save; pick a seed that does:\n%s", a.Stats)
	}
	o.NewStorage = Factory(1, Options{NoFaults: true})
	clean := sim.Run(o)
	mem := sim.Run(sim.Options{Seed: 1, Nodes: 3, Profile: sim.ProfileHostile, DeferLeaderSync: sim.SwitchOff})
	if clean.TraceHash != mem.TraceHash {
		t.Fatalf("the run over the fault-free WAL (%x) differs from the run over memory (%x)", clean.TraceHash, mem.TraceHash)
	}
	if a.TraceHash == mem.TraceHash {
		t.Fatal("the disk faults changed nothing in the run")
	}
}

// TestPlantedBugAckBeforeSync shows that the disk faults matter: a store that reports a Save
// durable before fsyncing it (deferring the fsync to the next Save) is caught within a bound of
// seeds, first by the recovery check, and, with that check off, by the simulator's Raft checkers
// once the lost votes and entries reach the cluster. The same seed without the bug is clean.
// (With the check off, the core's own panic on a leader's commit beyond its log - it lost
// acknowledged entries - often comes first; it is counted, but a safety checker must fire.)
func TestPlantedBugAckBeforeSync(t *testing.T) {
	cases := []struct {
		name   string
		opts   Options
		bound  int
		expect []sim.Kind
	}{
		{"recovery-check", Options{bug: bugAckBeforeSync}, 5, []sim.Kind{sim.StorageFault}},
		{"consequence", Options{bug: bugAckBeforeSync, noRecoveryCheck: true}, 100,
			[]sim.Kind{sim.ElectionSafety, sim.LeaderCompleteness, sim.StateMachineSafety, sim.LogMatching, sim.Linearizability}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			other := map[sim.Kind]int{}
			for seed := uint64(1); seed <= uint64(c.bound); seed++ {
				o := sim.Options{Seed: seed, Nodes: 3, Profile: sim.ProfileHostile, NewStorage: Factory(seed, c.opts), StorageName: "wal"}
				v := sim.Run(o).Violation
				if v == nil {
					continue
				}
				if !slices.Contains(c.expect, v.Kind) {
					other[v.Kind]++
					continue
				}
				o.NewStorage = Factory(seed, Options{})
				if cv := sim.Run(o).Violation; cv != nil {
					t.Fatalf("seed %d fails even without the bug: %v", seed, cv)
				}
				t.Logf("caught at seed %d (bound %d): %s: %.300s (other kinds seen first: %v)", seed, c.bound, v.Kind, v.Detail, other)
				return
			}
			t.Fatalf("bugAckBeforeSync not caught as any of %v within %d seeds (other violations: %v)", c.expect, c.bound, other)
		})
	}
}

// TestPlantedDriverBugOverWAL: a driver that reports a leader's deferred appends synced without
// syncing them (sim.DriverBugs.ReportUnsyncedLeaderWrites) is caught over the real WAL too. The
// store itself behaves (its recovery check passes): the lost commit surfaces in the
// simulator's Raft checkers. The same seed with a correct driver is clean.
func TestPlantedDriverBugOverWAL(t *testing.T) {
	const bound = 50
	expect := []sim.Kind{sim.LeaderCompleteness, sim.StateMachineSafety, sim.Linearizability, sim.AckDurability}
	other := map[sim.Kind]int{}
	for seed := uint64(1); seed <= bound; seed++ {
		o := sim.Options{Seed: seed, Nodes: 3, DeferLeaderSync: sim.SwitchOn,
			DriverBugs: sim.DriverBugs{ReportUnsyncedLeaderWrites: true}, NewStorage: Factory(seed, Options{}), StorageName: "wal"}
		v := sim.Run(o).Violation
		if v == nil {
			continue
		}
		if !slices.Contains(expect, v.Kind) {
			other[v.Kind]++
			continue
		}
		o.DriverBugs, o.NewStorage = sim.DriverBugs{}, Factory(seed, Options{})
		if cv := sim.Run(o).Violation; cv != nil {
			t.Fatalf("seed %d fails even without the bug: %v", seed, cv)
		}
		t.Logf("caught at seed %d (bound %d): %s: %.300s\nreplay: %s (other kinds seen first: %v)", seed, bound, v.Kind, v.Detail, v.Replay, other)
		return
	}
	t.Fatalf("ReportUnsyncedLeaderWrites not caught over the WAL as any of %v within %d seeds (other violations: %v)", expect, bound, other)
}

// TestPlantedBugMarkerBeforeSnapshot shows that power losses inside snapshot saves matter: a
// store that records a snapshot's WAL marker before the snapshot file is durable is caught by
// the recovery (the marker names a file that is not there) within a bound of seeds, and the same
// seed without the bug is clean.
func TestPlantedBugMarkerBeforeSnapshot(t *testing.T) {
	const bound = 20
	for seed := uint64(1); seed <= bound; seed++ {
		o := sim.Options{Seed: seed, Nodes: 3, Profile: sim.ProfileHostile,
			NewStorage: Factory(seed, Options{bug: bugMarkerBeforeSnapshot}), StorageName: "wal"}
		v := sim.Run(o).Violation
		if v == nil {
			continue
		}
		if v.Kind != sim.StorageFault {
			t.Fatalf("seed %d: %s: %.300s; want a storage fault", seed, v.Kind, v.Detail)
		}
		o.NewStorage = Factory(seed, Options{})
		if cv := sim.Run(o).Violation; cv != nil {
			t.Fatalf("seed %d fails even without the bug: %v", seed, cv)
		}
		t.Logf("caught at seed %d (bound %d): %.300s", seed, bound, v.Detail)
		return
	}
	t.Fatalf("bugMarkerBeforeSnapshot not caught within %d seeds", bound)
}
