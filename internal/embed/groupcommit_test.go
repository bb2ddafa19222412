package embed

import (
	"context"
	"testing"
	"time"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// TestGroupCommitReadsForceTheCommit pins the contract of the node's group commit of applied
// entries: with a commit interval far longer than the test, nothing but a read (or a stop) can
// make an applied write visible in the state machine. A linearizable read must still see every
// acknowledged write at once (it forces the commit); a serializable read on a member that no
// read has forced yet sees the store as of its last commit.
func TestGroupCommitReadsForceTheCommit(t *testing.T) {
	tc := newTestClusterWith(t, 3, func(cfg *Config) { cfg.ApplyCommitInterval = time.Hour })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := tc.waitLeader()
	leader := tc.members[l]
	followers := []*Member{}
	for i, m := range tc.members {
		if i != l {
			followers = append(followers, m)
		}
	}
	if err := put(ctx, leader, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	// Nothing has forced the second follower's commit: its state machine does not show the
	// acknowledged write to a serializable read yet.
	if got := get(ctx, t, followers[1], "k", caucusv1.Consistency_CONSISTENCY_SERIALIZABLE); got != "" {
		t.Fatalf("serializable read before any commit was forced = %q, want the pre-write state", got)
	}
	// A linearizable read anywhere sees it, immediately, although the timer is an hour away.
	for _, m := range []*Member{leader, followers[0], followers[1]} {
		if got := get(ctx, t, m, "k", caucusv1.Consistency_CONSISTENCY_LINEARIZABLE_UNSPECIFIED); got != "v1" {
			t.Fatalf("linearizable read on %s = %q, want v1", m.ClientURL, got)
		}
	}
	// The forced commit is visible to later serializable reads on that member too.
	if got := get(ctx, t, followers[1], "k", caucusv1.Consistency_CONSISTENCY_SERIALIZABLE); got != "v1" {
		t.Fatalf("serializable read after the forced commit = %q, want v1", got)
	}

	// A clean stop commits what was applied: after a restart the member serves the write from
	// its own state before any read could force anything.
	if err := put(ctx, leader, "k2", "v2"); err != nil {
		t.Fatal(err)
	}
	if got := get(ctx, t, leader, "k2", caucusv1.Consistency_CONSISTENCY_LINEARIZABLE_UNSPECIFIED); got != "v2" {
		t.Fatalf("linearizable read of k2 = %q", got)
	}
	tc.members[l].Stop()
	tc.restart(l)
	if got := get(ctx, t, tc.members[l], "k2", caucusv1.Consistency_CONSISTENCY_SERIALIZABLE); got != "v2" {
		t.Fatalf("serializable read of k2 after a clean restart = %q, want v2", got)
	}
}
