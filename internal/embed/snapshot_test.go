package embed

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/testutil"
)

// TestLaggingMemberCatchesUpFromSnapshotFile: a member that was down while the others took
// snapshots and compacted their logs is sent the leader's snapshot, whose data no Raft core
// holds: the leader reads each chunk from its snapshot file, the member writes each into a
// receive file and installs from it. The member ends with every write.
func TestLaggingMemberCatchesUpFromSnapshotFile(t *testing.T) {
	var logs testutil.LockedBuffer
	tc := newTestClusterWith(t, 3, func(cfg *Config) {
		cfg.SnapshotEntries = 40
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		// The leader restarts a transfer that makes no progress for an election timeout; the
		// test clusters' 100 ms is shorter than a 1 MiB chunk's round trip under -race on two
		// busy cores. Production's is 1 s.
		cfg.ElectionTimeout = time.Second
	})
	l := tc.waitLeader()
	lag := (l + 1) % 3
	tc.members[lag].Stop()
	tc.members[lag] = nil
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 300
	value := strings.Repeat("v", 8192) // 2.4 MB: a snapshot of several 1 MiB chunks
	for i := 0; i < n; i++ {
		if err := put(ctx, tc.members[l], fmt.Sprintf("k%03d", i), value); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	tc.restart(lag)
	m := tc.members[lag]
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := kv(m).Range(ctx, connect.NewRequest(&caucusv1.RangeRequest{
			Key: []byte("k"), RangeEnd: []byte("l"), CountOnly: true,
			Consistency: caucusv1.Consistency_CONSISTENCY_SERIALIZABLE,
		}))
		if err == nil && resp.Msg.Count == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lagging member did not catch up: %v %v", resp, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a real cluster on wall-clock ticks
	}
	out := logs.String()
	if !strings.Contains(out, "raft: sending snapshot") || !strings.Contains(out, "installed snapshot") {
		t.Fatalf("the member caught up without a snapshot transfer; logs:\n%s", out)
	}
	if strings.Contains(out, "dropping snapshot chunk") {
		t.Fatalf("the leader could not read a chunk from its snapshot file; logs:\n%s", out)
	}
	// The follower received the chunks into a file, installed from it and removes it once the
	// install returns (which may be just after the restored state became readable).
	for {
		left, _ := filepath.Glob(filepath.Join(tc.cfgs[lag].DataDir, "snap", "receive-*"))
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot receive files left behind: %v", left)
		}
		time.Sleep(10 * time.Millisecond) // polling a real member's directory
	}
}
