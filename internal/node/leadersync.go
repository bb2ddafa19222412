package node

import (
	"fmt"
	"time"

	"github.com/caucus/caucus/raft"
)

// Deferred leader sync (raft.Config.DeferLeaderSync), off unless Config.LeaderSyncDelay is
// positive (`--leader-sync-delay`). A leader writes its new entries to the WAL and sends them to
// the followers at once, but does not wait for its own fdatasync: the entries commit as soon as
// a quorum has them durably, and with three members the two followers are a quorum. The leader
// syncs in the background (wal.SyncWritten, on the syncer goroutine) and reports the sync to the
// core, which only then counts the leader's copy.
//
// When it is faster, measured with single-client puts on 3-member clusters on one machine, all
// three logs on one virtual disk (bench/cmd/kvbench, A/B against the leader syncing inline):
//   - On a slow shared disk (an fdatasync of about 0.6-0.9 ms; three of them in lockstep, the
//     second finished at about 800 us, two finished at about 630 us): +11% to +27%, median
//     +26%, measured with a prototype that never synced the leader, the ceiling of this.
//   - On a fast disk (single-client puts at about 0.25 ms): 15% slower (four pairs, 2,834 vs
//     3,341 puts/s), 64-client puts unchanged. The leader's own sync was never the bottleneck
//     there, and a commit now waits for the slower of two followers instead of the faster.
//
// So it pays only when the members' fdatasyncs queue on one device, and the default is the
// classic order: the leader counts itself once its own sync returns.
//
// A third policy was measured and dropped: the leader syncing in the background at once, so
// that its loop is never blocked in fdatasync (a trace of a leader under 64-client puts showed
// its loop in fdatasync 43% of the time, with acknowledgements waiting behind it). Single-client
// puts were slower in six pairs of six (3-9%, the two goroutine handoffs per write), and
// 64-client puts moved within the run-to-run spread (+7.5% in one set of five pairs, -0.4% in
// another of four).
//
// When the leader syncs:
//   - at once when the followers it streams to cannot form a quorum without it (one or two
//     voters, a follower down or catching up: raft.Node.QuorumNeedsLeader);
//   - LeaderSyncDelay after an entry started waiting for the leader's copy alone (one follower
//     acknowledged, the other has not yet): a slow or dead follower costs at most that;
//   - maxLeaderSyncLag after its oldest unsynced write otherwise, so the leader's log is never
//     far from durable;
//   - whenever a Ready must sync anyway (a term change), which covers everything written;
//   - at a clean stop (flushHardState), before the state machine is synced and trusted.
//
// Safety needs nothing from the policy: the core never counts an unsynced copy, and a member
// that stops leading syncs before it acknowledges anything again.

// maxLeaderSyncLag bounds how long a leader's write stays unsynced when no commit waits on it.
// Syncing more often makes the leader's fdatasync compete with the followers' more often. A
// variable so that tests can take this backstop away and see the policy's other rules work.
var maxLeaderSyncLag = 20 * time.Millisecond

// leaderSync is the loop's view of the leader's unsynced writes and its background sync.
type leaderSync struct {
	enabled bool
	delay   time.Duration

	// pending: the last deferred write, (term, index), not yet covered by a completed sync.
	pending      bool
	term, index  uint64
	oldest       time.Time // when the oldest uncovered deferred write happened
	waitingSince time.Time // when a commit started waiting on the leader's copy (zero: none)

	// inFlight: a sync is running on the syncer; it covers (flightTerm, flightIndex).
	inFlight                bool
	flightTerm, flightIndex uint64

	req    chan struct{}
	res    chan error
	timer  Timer
	armed  bool
	armFor time.Time
}

func newLeaderSync(enabled bool, delay time.Duration, clock Clock) *leaderSync {
	return &leaderSync{enabled: enabled, delay: delay, req: make(chan struct{}), res: make(chan error, 1), timer: stoppedTimer(clock)}
}

// runSyncer syncs the WAL on request until req is closed.
func (n *Node) runSyncer() {
	for range n.lsync.req {
		n.lsync.res <- n.wal.SyncWritten()
	}
}

// wroteDeferred records a leader write that was not synced.
func (ls *leaderSync) wroteDeferred(ents []raft.Entry, now time.Time) {
	last := ents[len(ents)-1]
	if !ls.pending {
		ls.oldest = now
	}
	ls.pending, ls.term, ls.index = true, last.Term, last.Index
}

// synced records a sync of everything written (a Save with sync).
func (ls *leaderSync) synced() {
	ls.pending = false
	ls.waitingSince = time.Time{}
}

// schedule decides, after the loop's Readies, whether to start the background sync now or when.
func (n *Node) scheduleLeaderSync() {
	ls := n.lsync
	if !ls.pending || ls.inFlight {
		ls.disarm()
		return
	}
	now := n.clock.Now()
	var due time.Time
	due, ls.waitingSince = leaderSyncDue(now, ls.oldest, ls.waitingSince, ls.delay, n.rn.QuorumNeedsLeader(), n.rn.CommitWaitsOnLeaderSync())
	if !due.After(now) {
		ls.disarm()
		ls.inFlight, ls.flightTerm, ls.flightIndex = true, ls.term, ls.index
		n.startLeaderSync()
		return
	}
	if ls.armed && ls.armFor.Equal(due) {
		return
	}
	ls.timer.Reset(due.Sub(now))
	ls.armed, ls.armFor = true, due
}

// leaderSyncDue is the policy: when the leader should start syncing unsynced writes, the oldest
// made at oldest, given whether no quorum can form without it (needsLeader) and whether a commit
// waits on its copy now (waits, since waitingSince if already known). It returns the new
// waitingSince too.
func leaderSyncDue(now, oldest, waitingSince time.Time, delay time.Duration, needsLeader, waits bool) (due, waitSince time.Time) {
	switch {
	case needsLeader:
		return now, waitingSince
	case waits:
		if waitingSince.IsZero() {
			waitingSince = now
		}
		return waitingSince.Add(delay), waitingSince
	default:
		return oldest.Add(maxLeaderSyncLag), time.Time{}
	}
}

func (ls *leaderSync) disarm() {
	if ls.armed {
		ls.timer.Stop()
		ls.armed = false
	}
}

// finishLeaderSync takes the syncer's result.
func (n *Node) finishLeaderSync(err error) error {
	ls := n.lsync
	ls.inFlight = false
	ls.waitingSince = time.Time{} // writes made since the sync began have waited from now on
	if err != nil {
		return fmt.Errorf("node: sync raft log in the background: %w", err)
	}
	if ls.pending && ls.term == ls.flightTerm && ls.index <= ls.flightIndex {
		ls.synced()
	}
	// The write may belong to an earlier leadership; the core ignores the report then.
	n.rn.LeaderSynced(ls.flightTerm, ls.flightIndex)
	return nil
}

// stopSyncer waits for a running sync and stops the syncer, before the WAL closes.
func (n *Node) stopSyncer() {
	ls := n.lsync
	if !ls.enabled {
		return
	}
	if ls.inFlight {
		n.flushBackground()
		if err := <-ls.res; err != nil {
			n.log.Warn("background sync of the raft log at stop", "err", err)
		}
		ls.inFlight = false
	}
	if n.exec == nil {
		close(ls.req)
	}
	ls.disarm()
}
