package embed

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/client"
	"github.com/caucus/caucus/internal/ctl"
	"github.com/caucus/caucus/internal/mvcc"
)

// waitSettings polls (the members run on wall-clock time) until every member's committed state
// holds replicated settings with one of the given MaxValueBytes, the same on all, and returns it.
func waitSettings(t *testing.T, tc *testCluster, maxValue ...int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		agreed := -1
		for _, m := range tc.members {
			if m == nil {
				continue
			}
			st := m.FSM.Store()
			v := st.Limits().MaxValueBytes
			if !st.HasSettings() || !slices.Contains(maxValue, v) || (agreed >= 0 && v != agreed) {
				agreed = -2
				break
			}
			agreed = v
		}
		if agreed >= 0 {
			return agreed
		}
		if time.Now().After(deadline) {
			for _, m := range tc.members {
				t.Logf("%s: replicated %v, limits %+v", m.ClientURL, m.FSM.Store().HasSettings(), m.FSM.Store().Limits())
			}
			t.Fatalf("members did not all apply the same replicated settings with a max value in %v within 10s", maxValue)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestClusterSettingsReplicated: limits are replicated settings. A new cluster takes its first
// leader's configured values (here the members disagree, and all end up with the leader's);
// `caucus cluster settings set` changes them on every member through the log; a value past them
// is refused by whichever member receives it; settings that cannot work are refused whole.
func TestClusterSettingsReplicated(t *testing.T) {
	tc := newTestClusterWith(t, 3, func(c *Config) {
		c.Limits = mvcc.DefaultLimits()
		c.Limits.MaxValueBytes = 1000
		if c.Name == "n3" {
			c.Limits.MaxValueBytes = 3000 // a member with other flags must not apply with them
		}
	})
	tc.waitLeader()
	// Whichever member led first, all apply its value, not their own.
	want := waitSettings(t, tc, 1000, 3000)

	eps := make([]string, len(tc.members))
	for i, m := range tc.members {
		eps[i] = m.ClientURL
	}
	cli, err := client.New(client.Config{Endpoints: eps})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := ctl.RunIO(ctx, append([]string{"--endpoints", strings.Join(eps, ",")}, args...), strings.NewReader(""), &out, &errOut)
		return out.String(), err
	}
	out, err := run("cluster", "settings")
	if err != nil || !strings.Contains(out, "max-value-bytes: "+strconv.Itoa(want)+"\n") || strings.Contains(out, "not replicated") {
		t.Fatalf("cluster settings: %v\n%s", err, out)
	}
	out, err = run("cluster", "settings", "set", "max-value-bytes=2000", "session-ttl=90m")
	if err != nil || !strings.Contains(out, "max-value-bytes: 2000\n") || !strings.Contains(out, "session-ttl: 1h30m0s\n") {
		t.Fatalf("cluster settings set: %v\n%s", err, out)
	}
	waitSettings(t, tc, 2000)
	for _, m := range tc.members {
		if got := m.FSM.Store().Limits().SessionTTL; got != 90*time.Minute {
			t.Fatalf("%s: session ttl %v after the update, want 1h30m", m.ClientURL, got)
		}
	}
	// Every member refuses what the replicated value refuses, whatever its own flags said.
	for _, m := range tc.members {
		_, err := kv(m).Put(ctx, connect.NewRequest(&caucusv1.PutRequest{Key: []byte("big"), Value: bytes.Repeat([]byte("x"), 2001)}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("%s: a 2001-byte value under a 2000-byte limit: %v, want InvalidArgument", m.ClientURL, err)
		}
	}
	if _, err := cli.Put(ctx, "fits", strings.Repeat("x", 2000)); err != nil {
		t.Fatalf("a 2000-byte value: %v", err)
	}
	// A retry window longer than the session lifetime cannot work: refused, nothing changes.
	_, err = cli.UpdateClusterSettings(ctx, &caucusv1.ClusterSettings{SessionRetryWindowMs: (2 * time.Hour).Milliseconds()})
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "SessionRetryWindow") {
		t.Fatalf("invalid settings: %v, want InvalidArgument naming SessionRetryWindow", err)
	}
	resp, err := cli.ClusterSettings(ctx)
	if err != nil || resp.GetSettings().GetSessionRetryWindowMs() != (2*time.Minute).Milliseconds() || !resp.GetReplicated() {
		t.Fatalf("settings after a refused update: %v, %v", resp.GetSettings(), err)
	}
	if _, err := run("cluster", "settings", "set", "max-value-bytes=lots"); !errors.Is(err, ctl.ErrUsage) {
		t.Fatalf("set with a bad value: %v, want a usage error", err)
	}

	// The settings survive a restart of every member (they are in the state machine and the log).
	for i := range tc.members {
		tc.members[i].Stop()
		tc.members[i] = nil
	}
	for i := range tc.cfgs {
		tc.restart(i)
	}
	waitSettings(t, tc, 2000)
}
