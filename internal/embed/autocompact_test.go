package embed

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/fsm"
)

// TestAutoCompactionRevisionMode: with --auto-compaction-mode=revision the leader proposes
// compactions through the log, so every member ends up compacted to the same revision, which
// keeps the configured number of revisions.
func TestAutoCompactionRevisionMode(t *testing.T) {
	const retention = 10
	tc := newTestClusterWith(t, 3, func(cfg *Config) {
		cfg.AutoCompaction = fsm.AutoCompaction{Mode: fsm.AutoCompactionRevision, Retention: retention, Interval: 20 * time.Millisecond}
	})
	l := tc.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 60; i++ {
		if err := put(ctx, tc.members[l], fmt.Sprintf("k%d", i%5), "v"); err != nil {
			t.Fatal(err)
		}
	}
	rev := tc.members[l].FSM.Store().Rev()
	deadline := time.Now().Add(10 * time.Second)
	for {
		done := true
		for _, m := range tc.members {
			if got := m.FSM.Store().CompactRev(); got < rev-retention {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			for _, m := range tc.members {
				t.Logf("%s: revision %d, compacted at %d", m.ClientURL, m.FSM.Store().Rev(), m.FSM.Store().CompactRev())
			}
			t.Fatalf("members not auto-compacted to revision %d within 10s", rev-retention)
		}
		time.Sleep(10 * time.Millisecond) // polling members on wall-clock ticks
	}
	for _, m := range tc.members {
		if got := m.FSM.Store().CompactRev(); got > m.FSM.Store().Rev()-retention {
			t.Errorf("%s compacted at %d, beyond the retention of %d revisions from %d", m.ClientURL, got, retention, m.FSM.Store().Rev())
		}
	}
}
