package embed

import (
	"context"
	"testing"
	"time"
)

// waitPrompt polls a member's store until PromptReaders reports want.
func waitPrompt(t *testing.T, m *Member, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for m.FSM.Store().PromptReaders() != want {
		if time.Now().After(deadline) {
			t.Fatalf("PromptReaders stayed %v for 10s", !want)
		}
		time.Sleep(2 * time.Millisecond) // polling a real member's goroutines
	}
}

// TestWatchersAskForPromptCommits: while a watch is open on a member, the member's store reports
// readers waiting (so its node commits applied entries within the prompt interval instead of the
// group-commit interval), and stops once the watch ends.
func TestWatchersAskForPromptCommits(t *testing.T) {
	tc := newTestCluster(t, 1)
	tc.waitLeader()
	m := tc.members[0]
	waitPrompt(t, m, false)
	cli := clusterClient(t, tc)
	ctx, cancel := context.WithCancel(context.Background())
	wc := cli.Watch(ctx, "k")
	waitPrompt(t, m, true)
	cancel()
	for range wc {
	}
	waitPrompt(t, m, false)
}
