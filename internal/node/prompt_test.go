package node

import (
	"testing"
	"time"
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
