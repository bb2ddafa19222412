package embed

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// TestIdleFollowersHearOfCommitsSoon pins the node's side of raft.Config.DeferCommitBroadcast:
// the leader no longer sends an append just to announce a commit index, so after the last write
// of a burst the followers learn of it only from the commit-broadcast timer (1 ms) or, if that
// were broken, from the next heartbeat. With heartbeats 400 ms apart, a follower must still show
// an acknowledged write to a serializable read in a small fraction of that; without the timer
// the median wait over nine writes would be about half a heartbeat.
func TestIdleFollowersHearOfCommitsSoon(t *testing.T) {
	const heartbeat = 400 * time.Millisecond
	tc := newTestClusterWith(t, 3, func(cfg *Config) {
		cfg.HeartbeatInterval = heartbeat
		cfg.ElectionTimeout = 5 * heartbeat
		cfg.ApplyCommitInterval = time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := tc.waitLeader()
	follower := tc.members[(l+1)%3]
	var waits []time.Duration
	for i := range 9 {
		v := fmt.Sprintf("v%d", i)
		if err := put(ctx, tc.members[l], "k", v); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for get(ctx, t, follower, "k", caucusv1.Consistency_CONSISTENCY_SERIALIZABLE) != v {
			if time.Since(start) > 2*heartbeat {
				t.Fatalf("write %d not visible on a follower after %s (two heartbeats)", i, 2*heartbeat)
			}
			time.Sleep(time.Millisecond) // polling real time: the members run on wall-clock timers
		}
		waits = append(waits, time.Since(start))
	}
	slices.Sort(waits)
	if med := waits[len(waits)/2]; med > heartbeat/8 {
		t.Fatalf("median wait for a follower to show a write %s (all: %v), want well under the %s heartbeat", med, waits, heartbeat)
	}
}
