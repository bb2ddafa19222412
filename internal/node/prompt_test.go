package node

import (
	"testing"
	"time"
)

// promptSM is a state machine whose readers wait for commits while waiting is set.
type promptSM struct {
	*memSM
	waiting bool
}

func (p *promptSM) PromptCommit() bool { return p.waiting }

// TestCommitIntervalFollowsWaitingReaders: applied entries wait ApplyCommitInterval for their
// commit, or PromptCommitInterval while a PromptCommitter state machine reports readers waiting
// (watchers see writes only once committed); a state machine without the interface keeps the
// group-commit interval.
func TestCommitIntervalFollowsWaitingReaders(t *testing.T) {
	sm := &promptSM{memSM: newMemSM(t, 1)}
	n := &Node{cfg: Config{ApplyCommitInterval: 10 * time.Millisecond, PromptCommitInterval: time.Millisecond}, sm: sm}
	if got := n.commitInterval(); got != 10*time.Millisecond {
		t.Fatalf("no reader waiting: %v, want the group-commit interval", got)
	}
	sm.waiting = true
	if got := n.commitInterval(); got != time.Millisecond {
		t.Fatalf("readers waiting: %v, want the prompt interval", got)
	}
	n.sm = sm.memSM
	if got := n.commitInterval(); got != 10*time.Millisecond {
		t.Fatalf("a state machine without PromptCommit: %v", got)
	}
	// A prompt interval longer than the group-commit one never slows commits down.
	n.sm, n.cfg.PromptCommitInterval = sm, time.Second
	if got := n.commitInterval(); got != 10*time.Millisecond {
		t.Fatalf("prompt interval above the group one: %v", got)
	}
}
