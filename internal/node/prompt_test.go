package node

import (
	"testing"
	"time"

	"github.com/caucus/caucus/raft"
)

// promptSM is a state machine whose readers wait for what it applied while waiting is set.
type promptSM struct {
	*memSM
	waiting bool
}

func (p *promptSM) PromptCommit() bool { return p.waiting }

// TestPromptCommit: the node moves a group's commit to PromptCommitInterval only when a
// PromptCommitter state machine says readers wait for what it applied, and only if that is
// sooner than the group-commit interval; a state machine without the interface never does.
func TestPromptCommit(t *testing.T) {
	sm := &promptSM{memSM: newMemSM(t, 1)}
	n := &Node{cfg: Config{ApplyCommitInterval: 10 * time.Millisecond, PromptCommitInterval: time.Millisecond}, sm: sm}
	if n.promptCommit() {
		t.Fatal("prompt commit with no reader waiting")
	}
	sm.waiting = true
	if !n.promptCommit() {
		t.Fatal("no prompt commit with readers waiting")
	}
	n.sm = sm.memSM
	if n.promptCommit() {
		t.Fatal("prompt commit for a state machine without PromptCommit")
	}
	n.sm, n.cfg.PromptCommitInterval = sm, time.Second
	if n.promptCommit() {
		t.Fatal("a prompt interval above the group's slowed the commit down")
	}
}

// TestPromptCommitSpacing: while readers wait, what was applied is committed at once when the
// last commit is at least PromptCommitInterval old, and otherwise when it becomes so; once
// nobody waits, applied entries wait for the group's interval again.
func TestPromptCommitSpacing(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := NewManualClock(t0)
	sm := &promptSM{memSM: newMemSM(t, 1), waiting: true}
	n := &Node{cfg: Config{ApplyCommitInterval: 10 * time.Millisecond, PromptCommitInterval: time.Millisecond},
		sm: sm, clock: clock, waiters: map[uint64]*proposal{}, commitTimer: stoppedTimer(clock)}
	entry := func(i uint64) []raft.Entry {
		return []raft.Entry{{Index: i, Term: 1, Data: encodeEntry(i, 2, "k", "v")}}
	}
	fired := func() bool {
		select {
		case <-n.commitTimer.C():
			return true
		default:
			return false
		}
	}
	// Nothing committed before: the first write a reader waits for is committed at once.
	if err := n.apply(entry(1)); err != nil {
		t.Fatal(err)
	}
	if sm.AppliedIndex() != 1 || n.pending != 0 {
		t.Fatalf("after a prompt apply with no recent commit: committed %d, pending %d; want 1, 0", sm.AppliedIndex(), n.pending)
	}
	// 300µs later: the commit waits until 1 ms after the last one.
	clock.Set(t0.Add(300 * time.Microsecond))
	if err := n.apply(entry(2)); err != nil {
		t.Fatal(err)
	}
	if sm.AppliedIndex() != 1 || n.pending != 1 {
		t.Fatalf("a second write within the interval committed at once: committed %d, pending %d", sm.AppliedIndex(), n.pending)
	}
	clock.Set(t0.Add(999 * time.Microsecond))
	if fired() {
		t.Fatal("the prompt commit came before the interval since the last commit")
	}
	clock.Set(t0.Add(time.Millisecond))
	if !fired() {
		t.Fatal("no prompt commit once the interval since the last commit passed")
	}
	if err := n.commitApplied(); err != nil {
		t.Fatal(err)
	}
	// Nobody waits: the group's interval applies even though the last commit is old.
	sm.waiting = false
	clock.Set(t0.Add(5 * time.Millisecond))
	if err := n.apply(entry(3)); err != nil {
		t.Fatal(err)
	}
	clock.Set(t0.Add(14 * time.Millisecond))
	if sm.AppliedIndex() != 2 || fired() {
		t.Fatalf("with no reader waiting: committed %d, timer fired %v; want 2, not yet", sm.AppliedIndex(), fired())
	}
	clock.Set(t0.Add(15 * time.Millisecond))
	if !fired() {
		t.Fatal("no group commit after ApplyCommitInterval")
	}
}
