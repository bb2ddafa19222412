package node

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/caucus/caucus/raft"
)

func TestLeaderSyncDue(t *testing.T) {
	t0 := time.Unix(1000, 0)
	oldest := t0.Add(-5 * time.Millisecond)
	delay := time.Millisecond
	cases := []struct {
		name        string
		waitSince   time.Time
		needsLeader bool
		waits       bool
		due         time.Time
		wantSince   time.Time
	}{
		{"no quorum without the leader: now", time.Time{}, true, false, t0, time.Time{}},
		{"a commit starts waiting: after the delay", time.Time{}, false, true, t0.Add(delay), t0},
		{"a commit kept waiting: from when it started", t0.Add(-3 * time.Millisecond), false, true, t0.Add(-2 * time.Millisecond), t0.Add(-3 * time.Millisecond)},
		{"nothing waits: the lag bound from the oldest write", t0.Add(-time.Millisecond), false, false, oldest.Add(maxLeaderSyncLag), time.Time{}},
	}
	for _, c := range cases {
		due, since := leaderSyncDue(t0, oldest, c.waitSince, delay, c.needsLeader, c.waits)
		if !due.Equal(c.due) || !since.Equal(c.wantSince) {
			t.Errorf("%s: due %v waiting since %v, want %v and %v", c.name, due.Sub(t0), since, c.due.Sub(t0), c.wantSince)
		}
	}
}

// countingLog counts the ways the node makes its log durable.
type countingLog struct {
	LogStore
	syncedSaves, deferredSaves, bgSyncs atomic.Int64
}

func (c *countingLog) Save(hs raft.HardState, ents []raft.Entry, sync bool) error {
	if sync {
		c.syncedSaves.Add(1)
	} else if len(ents) > 0 {
		c.deferredSaves.Add(1)
	}
	return c.LogStore.Save(hs, ents, sync)
}

func (c *countingLog) SyncWritten() error {
	c.bgSyncs.Add(1)
	return c.LogStore.SyncWritten()
}

// TestSingleMemberSyncsAtOnce: a lone leader is its own quorum, so it syncs each deferred write
// at once, in the background. The lag backstop and the follower delay are taken away: a policy
// that waited for either would leave the puts hanging.
func TestSingleMemberSyncsAtOnce(t *testing.T) {
	old := maxLeaderSyncLag
	maxLeaderSyncLag = time.Hour
	t.Cleanup(func() { maxLeaderSyncLag = old })
	sm := newMemSM(t, 1)
	cfg := singleConfig(t, t.TempDir(), 0, sm)
	cfg.LeaderSyncDelay = time.Hour // on, and no waiting for a follower that does not exist
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !n.cfg.Raft.DeferLeaderSync {
		t.Fatal("a positive LeaderSyncDelay did not turn deferred leader sync on")
	}
	cl := &countingLog{LogStore: n.wal}
	n.wal = cl
	n.SetTransport(nopTransport{}, nil)
	n.Start()
	defer n.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for n.Leader() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("single member did not elect itself within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	putAll(t, n, 0, 50)
	checkAll(t, n, sm, 50)
	if cl.deferredSaves.Load() < 50 || cl.bgSyncs.Load() == 0 {
		t.Fatalf("%d deferred saves and %d background syncs for 50 puts; want every put deferred and synced in the background",
			cl.deferredSaves.Load(), cl.bgSyncs.Load())
	}
}

func TestApplyBeforePersist(t *testing.T) {
	ents := func(from, to uint64) []raft.Entry {
		var es []raft.Entry
		for i := from; i <= to; i++ {
			es = append(es, raft.Entry{Index: i, Term: 1})
		}
		return es
	}
	cases := []struct {
		name string
		rd   raft.Ready
		want bool
	}{
		{"a leader's Ready: earlier entries commit, new ones append", raft.Ready{CommittedEntries: ents(5, 7), Entries: ents(9, 12)}, true},
		{"a follower's Ready that commits what it appends", raft.Ready{CommittedEntries: ents(5, 9), Entries: ents(9, 12)}, false},
		{"nothing appended: the order does not matter", raft.Ready{CommittedEntries: ents(5, 7)}, false},
		{"nothing committed", raft.Ready{Entries: ents(9, 12)}, false},
		{"with a snapshot", raft.Ready{CommittedEntries: ents(5, 7), Entries: ents(9, 12), Snapshot: &raft.Snapshot{}}, false},
	}
	for _, c := range cases {
		if got := applyBeforePersist(&c.rd); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// fakeLog records Saves; nothing is stored.
type fakeLog struct {
	LogStore
	syncs int
}

func (f *fakeLog) Save(hs raft.HardState, ents []raft.Entry, sync bool) error {
	if sync {
		f.syncs++
	}
	return nil
}

// TestStopSyncsDeferredWrites: a clean stop syncs the state machine and trusts it after a
// reboot, so a leader's deferred (unsynced) log writes must be synced at stop too, even when no
// commit index is waiting to be written.
func TestStopSyncsDeferredWrites(t *testing.T) {
	log := &fakeLog{}
	n := &Node{wal: log, lsync: newLeaderSync(true, time.Millisecond, realClock{})}
	n.lsync.wroteDeferred([]raft.Entry{{Index: 7, Term: 2}}, time.Now())
	n.flushHardState()
	if log.syncs != 1 || n.lsync.pending {
		t.Fatalf("stop with a deferred write: %d synced saves, still pending %v; want 1 and false", log.syncs, n.lsync.pending)
	}
	n.flushHardState()
	if log.syncs != 1 {
		t.Fatalf("a second stop synced again (%d): nothing was pending", log.syncs)
	}
}
