package embed

import (
	"context"
	"fmt"
	"testing"
	"time"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// TestLeaderSyncModes runs a cluster in each way a leader may sync its own log (LeaderSyncDelay):
// in its loop before counting itself, and after its followers. Writes commit with every member
// up, with a follower down (the leader's copy is then needed, and a leader that syncs after its
// followers must sync rather than wait for one that will not answer), after the follower
// returns, and across a restart of the whole cluster, which must keep every acknowledged write.
func TestLeaderSyncModes(t *testing.T) {
	for _, mode := range []struct {
		name  string
		delay time.Duration
	}{{"in-loop", 0}, {"after-followers", time.Millisecond}} {
		t.Run(mode.name, func(t *testing.T) { runLeaderSyncMode(t, mode.delay) })
	}
}

func runLeaderSyncMode(t *testing.T, delay time.Duration) {
	tc := newTestClusterWith(t, 3, func(cfg *Config) { cfg.LeaderSyncDelay = delay })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lead := tc.waitLeader()
	n := 0
	putSome := func(through *Member, count int) {
		t.Helper()
		for end := n + count; n < end; n++ {
			if err := put(ctx, through, fmt.Sprintf("k%03d", n), fmt.Sprintf("v%d", n)); err != nil {
				t.Fatalf("put %d: %v", n, err)
			}
		}
	}
	putSome(tc.members[lead], 30)
	down := (lead + 1) % 3
	tc.members[down].Stop()
	tc.members[down] = nil
	putSome(tc.members[lead], 30)
	tc.restart(down)
	putSome(tc.members[(lead+2)%3], 30)
	for i := range tc.members {
		tc.members[i].Stop()
		tc.members[i] = nil
	}
	for i := range tc.members {
		tc.restart(i)
	}
	tc.waitLeader()
	for _, m := range tc.members {
		for i := 0; i < n; i++ {
			if got := get(ctx, t, m, fmt.Sprintf("k%03d", i), caucusv1.Consistency_CONSISTENCY_LINEARIZABLE_UNSPECIFIED); got != fmt.Sprintf("v%d", i) {
				t.Fatalf("member %s after a restart: k%03d = %q, want v%d", m.ClientURL, i, got, i)
			}
		}
	}
}
