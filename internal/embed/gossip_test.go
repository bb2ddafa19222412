package embed

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/internal/logpb"
)

// gossipStates returns member id -> gossip state in member i's member list.
func gossipStates(t *testing.T, tc *testCluster, i int) map[uint64]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl := caucusv1connect.NewClusterClient(http.DefaultClient, tc.members[i].ClientURL)
	resp, err := cl.MemberList(ctx, connect.NewRequest(&caucusv1.MemberListRequest{}))
	if err != nil {
		t.Fatalf("member list on member %d: %v", i+1, err)
	}
	out := map[uint64]string{}
	for _, m := range resp.Msg.Members {
		out[m.Id] = m.GossipState
	}
	return out
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond) // polling a real cluster
	}
}

// TestGossipMemberList: three members with gossip on and no --gossip-join find each other from
// the gossip addresses they publish through the log (log format version 4), and member list
// shows them alive. A member that stops abruptly is shown dead (after suspect) by the others
// while Raft still lists it as a member.
func TestGossipMemberList(t *testing.T) {
	tc := newTestClusterWith(t, 3, func(c *Config) {
		c.GossipAddr = "127.0.0.1:0"
		c.GossipProfile = GossipLocal
	})
	tc.waitLeader()
	waitLogVersion(t, tc, logpb.Version4)
	waitUntil(t, 15*time.Second, "every member's member list shows all three alive", func() bool {
		for i := range tc.members {
			st := gossipStates(t, tc, i)
			if len(st) != 3 {
				return false
			}
			for _, s := range st {
				if s != "alive" {
					return false
				}
			}
		}
		return true
	})
	for _, m := range tc.members[0].FSM.Store().Members() {
		if m.GossipAddr == "" || !strings.HasPrefix(m.GossipAddr, "127.0.0.1:") {
			t.Errorf("member %x published gossip address %q", m.ID, m.GossipAddr)
		}
	}

	victim := tc.members[2]
	vid := uint64(victim.ID)
	victim.gossip.Abort() // a crash: no leave announced
	victim.Stop()
	tc.members[2] = nil
	// Local profile, 3 members: probed within 2 periods (1 s), suspicion of 3 periods once the
	// other member confirms (up to 6x that without): generous for a loaded machine.
	start := time.Now()
	waitUntil(t, 15*time.Second, "the others' member list shows the stopped member dead", func() bool {
		for i := range 2 {
			if gossipStates(t, tc, i)[vid] != "dead" {
				return false
			}
		}
		return true
	})
	t.Logf("stopped member shown dead after %v", time.Since(start).Round(time.Millisecond))
	for i := range 2 {
		if st := gossipStates(t, tc, i); len(st) != 3 || st[uint64(tc.members[1-i].ID)] != "alive" {
			t.Errorf("member %d's member list after the crash: %v (want the Raft member still listed, the other alive)", i+1, st)
		}
	}
}

// TestGossipGracefulStop: a member stopped cleanly leaves gossip, and the others show "left".
func TestGossipGracefulStop(t *testing.T) {
	tc := newTestClusterWith(t, 2, func(c *Config) {
		c.GossipAddr = "127.0.0.1:0"
		c.GossipProfile = GossipLocal
	})
	tc.waitLeader()
	if err := tc.members[1].gossip.Join(tc.members[0].GossipAddr()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "member 1 sees member 2 alive", func() bool {
		return tc.members[0].GossipState(uint64(tc.members[1].ID)) == "alive"
	})
	id := uint64(tc.members[1].ID)
	tc.members[1].Stop()
	tc.members[1] = nil
	waitUntil(t, 5*time.Second, "member 1 sees member 2 left", func() bool {
		return tc.members[0].GossipState(id) == "left"
	})
}

func TestGossipConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.GossipAddr = "nohost" }, "--gossip-addr"},
		{func(c *Config) { c.GossipAddr = "127.0.0.1:0"; c.GossipProfile = "mars" }, "--gossip-profile"},
		{func(c *Config) { c.GossipAddr = "127.0.0.1:0"; c.GossipJoin = []string{"x"} }, "--gossip-join"},
		{func(c *Config) { c.GossipAddr = "127.0.0.1:0"; c.GossipLabel = strings.Repeat("l", 200) }, "gossip label"},
	} {
		cfg := DefaultConfig("n1")
		tc.mod(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate: %v, want an error naming %s", err, tc.want)
		}
	}
}
