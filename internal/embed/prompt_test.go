package embed

import (
	"context"
	"testing"
	"time"

	"github.com/caucus/caucus/client"
)

// waitPrompt polls a member's store until PromptReaders for writes to key reports want.
func waitPrompt(t *testing.T, m *Member, key string, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for m.FSM.Store().PromptReaders([][]byte{[]byte(key)}, nil) != want {
		if time.Now().After(deadline) {
			t.Fatalf("PromptReaders(%q) stayed %v for 10s", key, !want)
		}
		time.Sleep(2 * time.Millisecond) // polling a real member's goroutines
	}
}

// TestWatchersAskForPromptCommits: while a watch of key k is open on a member, the member's
// store reports readers waiting for writes to k, and not for writes to other keys (so its node
// commits promptly only what a watcher waits for); once the watch ends, nobody waits.
func TestWatchersAskForPromptCommits(t *testing.T) {
	tc := newTestCluster(t, 1)
	tc.waitLeader()
	m := tc.members[0]
	waitPrompt(t, m, "k", false)
	cli := clusterClient(t, tc)
	ctx, cancel := context.WithCancel(context.Background())
	wc := cli.Watch(ctx, "k")
	waitPrompt(t, m, "k", true)
	if m.FSM.Store().PromptReaders([][]byte{[]byte("other")}, []string{"t"}) {
		t.Fatal("a watch of k asks for prompt commits of other keys and topics")
	}
	cancel()
	for range wc {
	}
	waitPrompt(t, m, "k", false)
	// A watch of topics asks for commits of events of those topics only.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	_ = cli.Watch(ctx, "", client.WithTopics("orders.*"))
	deadline := time.Now().Add(10 * time.Second)
	for !m.FSM.Store().PromptReaders(nil, []string{"orders.eu"}) {
		if time.Now().After(deadline) {
			t.Fatal("a watch of orders.* does not ask for prompt commits of orders.eu events")
		}
		time.Sleep(2 * time.Millisecond) // polling a real member's goroutines
	}
	if m.FSM.Store().PromptReaders(nil, []string{"users"}) {
		t.Fatal("a watch of orders.* asks for prompt commits of users events")
	}
}
