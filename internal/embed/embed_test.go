package embed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/raft"
)

// testCluster is a cluster of in-process members with real TCP on 127.0.0.1 and real disk.
type testCluster struct {
	t       *testing.T
	root    string
	token   string
	initial string
	cfgs    []Config
	members []*Member
}

// quietLogger discards the members' logs, unless CAUCUS_TEST_LOG is set (to read them while
// debugging a test).
func quietLogger() *slog.Logger {
	if os.Getenv("CAUCUS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func fastConfig(name string) Config {
	cfg := DefaultConfig(name)
	// Short timeouts keep the tests fast; the ratio to the heartbeat is what Raft cares about.
	cfg.HeartbeatInterval = 10 * time.Millisecond
	cfg.ElectionTimeout = 100 * time.Millisecond
	cfg.RequestTimeout = 2 * time.Second
	cfg.Logger = quietLogger()
	return cfg
}

func newTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return newTestClusterWith(t, n, nil)
}

// newTestClusterWith starts n members, letting mod adjust each member's configuration first.
func newTestClusterWith(t *testing.T, n int, mod func(*Config)) *testCluster {
	t.Helper()
	tc := &testCluster{t: t, root: t.TempDir(), token: "test-" + t.Name()}
	var peers []net.Listener
	var initial []string
	for i := 0; i < n; i++ {
		pl := listen(t)
		peers = append(peers, pl)
		initial = append(initial, fmt.Sprintf("n%d=http://%s", i+1, pl.Addr()))
	}
	tc.initial = strings.Join(initial, ",")
	for i := 0; i < n; i++ {
		cfg := fastConfig(fmt.Sprintf("n%d", i+1))
		cfg.DataDir = filepath.Join(tc.root, cfg.Name)
		cfg.ListenPeerURL = "http://" + peers[i].Addr().String()
		cfg.InitialCluster = tc.initial
		cfg.ClusterToken = tc.token
		cfg.PeerListener = peers[i]
		cfg.ClientListener = listen(t)
		cfg.ListenClientURL = "http://" + cfg.ClientListener.Addr().String()
		if mod != nil {
			mod(&cfg)
		}
		tc.cfgs = append(tc.cfgs, cfg)
	}
	for i := range tc.cfgs {
		m, err := Start(tc.cfgs[i])
		if err != nil {
			t.Fatalf("start member %d: %v", i+1, err)
		}
		tc.members = append(tc.members, m)
	}
	t.Cleanup(tc.stopAll)
	return tc
}

func (tc *testCluster) stopAll() {
	for _, m := range tc.members {
		if m != nil {
			m.Stop()
		}
	}
}

// restart starts member i again on the same data dir and addresses.
func (tc *testCluster) restart(i int) {
	tc.t.Helper()
	cfg := tc.cfgs[i]
	pl, err := net.Listen("tcp", strings.TrimPrefix(cfg.ListenPeerURL, "http://"))
	if err != nil {
		tc.t.Fatal(err)
	}
	cl, err := net.Listen("tcp", strings.TrimPrefix(cfg.ListenClientURL, "http://"))
	if err != nil {
		tc.t.Fatal(err)
	}
	cfg.PeerListener, cfg.ClientListener = pl, cl
	m, err := Start(cfg)
	if err != nil {
		tc.t.Fatalf("restart member %d: %v", i+1, err)
	}
	tc.members[i] = m
}

// waitLeader polls until the running members agree on one leader, and returns its index.
func (tc *testCluster) waitLeader() int {
	tc.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var lead raft.NodeID
		agree := true
		for _, m := range tc.members {
			if m == nil {
				continue
			}
			l := m.Node.Leader()
			if l == raft.None || (lead != raft.None && l != lead) {
				agree = false
				break
			}
			lead = l
		}
		if agree && lead != raft.None {
			for i, m := range tc.members {
				if m != nil && m.ID == lead {
					return i
				}
			}
		}
		time.Sleep(5 * time.Millisecond) // polling real time: the members run on wall-clock ticks
	}
	tc.t.Fatal("no leader agreed on within 10s")
	return -1
}

func kv(m *Member) caucusv1connect.KVClient {
	return caucusv1connect.NewKVClient(http.DefaultClient, m.ClientURL)
}

func put(ctx context.Context, m *Member, k, v string) error {
	_, err := kv(m).Put(ctx, connect.NewRequest(&caucusv1.PutRequest{Key: []byte(k), Value: []byte(v)}))
	return err
}

func get(ctx context.Context, t *testing.T, m *Member, k string, c caucusv1.Consistency) string {
	t.Helper()
	resp, err := kv(m).Range(ctx, connect.NewRequest(&caucusv1.RangeRequest{Key: []byte(k), Consistency: c}))
	if err != nil {
		t.Fatalf("get %q from %s: %v", k, m.ClientURL, err)
	}
	if len(resp.Msg.Kvs) == 0 {
		return ""
	}
	return string(resp.Msg.Kvs[0].Value)
}

// TestClusterReplicatesAndReadsLinearizably: a write acknowledged through any member is visible
// to a linearizable read on every member.
func TestClusterReplicatesAndReadsLinearizably(t *testing.T) {
	tc := newTestCluster(t, 3)
	lead := tc.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	follower := (lead + 1) % 3
	for i := 0; i < 20; i++ {
		if err := put(ctx, tc.members[(follower+i)%3], fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	for _, m := range tc.members {
		for i := 0; i < 20; i++ {
			if got := get(ctx, t, m, fmt.Sprintf("k%d", i), caucusv1.Consistency_CONSISTENCY_LINEARIZABLE_UNSPECIFIED); got != fmt.Sprintf("v%d", i) {
				t.Fatalf("member %s: k%d = %q, want v%d", m.ClientURL, i, got, i)
			}
		}
	}
}

// TestMinorityFailsFast: with two of three members down, a write fails within its deadline with
// an "unavailable: no quorum" error instead of hanging or lying.
func TestMinorityFailsFast(t *testing.T) {
	tc := newTestCluster(t, 3)
	tc.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := put(ctx, tc.members[0], "before", "1"); err != nil {
		t.Fatal(err)
	}
	tc.members[1].Stop()
	tc.members[2].Stop()
	tc.members[1], tc.members[2] = nil, nil
	start := time.Now()
	wctx, wcancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer wcancel()
	err := put(wctx, tc.members[0], "after", "2")
	if err == nil {
		t.Fatal("put on an isolated member succeeded")
	}
	if connect.CodeOf(err) != connect.CodeUnavailable && connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("put on an isolated member: code %v (%v), want unavailable", connect.CodeOf(err), err)
	}
	if !strings.Contains(err.Error(), "unavailable") && connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("error %q does not say unavailable", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("put took %s to fail; it must fail within its deadline", el)
	}
}

// TestRestartKeepsAcknowledgedWrites: every acknowledged write survives a restart of the whole
// cluster, across snapshots and log compaction.
func TestRestartKeepsAcknowledgedWrites(t *testing.T) {
	tc := newTestCluster(t, 3)
	for i := range tc.cfgs {
		tc.cfgs[i].SnapshotEntries = 50 // force snapshots and log release during the test
	}
	tc.stopAll()
	for i := range tc.members {
		tc.restart(i)
	}
	tc.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < 200; i++ {
		if err := put(ctx, tc.members[i%3], fmt.Sprintf("k%03d", i), fmt.Sprintf("v%d", i)); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	tc.stopAll()
	for i := range tc.members {
		tc.restart(i)
	}
	tc.waitLeader()
	for _, m := range tc.members {
		resp, err := kv(m).Range(ctx, connect.NewRequest(&caucusv1.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")}))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Msg.Kvs) != 200 {
			t.Fatalf("member %s has %d keys after restart, want 200", m.ClientURL, len(resp.Msg.Kvs))
		}
	}
}

// TestMemberAddLearnerPromoteRemove: a new member joins as a learner, catches up (from the log
// or a snapshot), is promoted to voter, and a member is removed.
func TestMemberAddLearnerPromoteRemove(t *testing.T) {
	tc := newTestCluster(t, 3)
	for i := range tc.cfgs {
		tc.cfgs[i].SnapshotEntries = 20
	}
	lead := tc.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < 50; i++ {
		if err := put(ctx, tc.members[lead], fmt.Sprintf("pre%02d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	cl := caucusv1connect.NewClusterClient(http.DefaultClient, tc.members[lead].ClientURL)
	pl := listen(t)
	peerURL := "http://" + pl.Addr().String()
	added, err := cl.MemberAdd(ctx, connect.NewRequest(&caucusv1.MemberAddRequest{Name: "n4", PeerUrls: []string{peerURL}, IsLearner: true}))
	if err != nil {
		t.Fatalf("member add: %v", err)
	}
	if !added.Msg.Member.IsLearner || len(added.Msg.Members) != 4 {
		t.Fatalf("member add returned %v", added.Msg)
	}
	cfg := fastConfig("n4")
	cfg.DataDir = filepath.Join(tc.root, "n4")
	cfg.ListenPeerURL = peerURL
	cfg.PeerListener = pl
	cfg.ClientListener = listen(t)
	cfg.ListenClientURL = "http://" + cfg.ClientListener.Addr().String()
	cfg.InitialCluster = tc.initial + ",n4=" + peerURL
	cfg.InitialClusterState = "existing"
	cfg.ClusterToken = tc.token
	m4, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tc.members = append(tc.members, m4)
	tc.cfgs = append(tc.cfgs, cfg)
	// Promotion is refused until the learner has caught up; retry until it is accepted.
	for {
		_, err = cl.MemberPromote(ctx, connect.NewRequest(&caucusv1.MemberPromoteRequest{Id: added.Msg.Member.Id}))
		if err == nil {
			break
		}
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || ctx.Err() != nil {
			t.Fatalf("promote: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling a real cluster's catch-up
	}
	if got := get(ctx, t, m4, "pre49", caucusv1.Consistency_CONSISTENCY_LINEARIZABLE_UNSPECIFIED); got != "x" {
		t.Fatalf("new member reads pre49=%q, want x", got)
	}
	removed := (lead + 1) % 3
	rm, err := cl.MemberRemove(ctx, connect.NewRequest(&caucusv1.MemberRemoveRequest{Id: uint64(tc.members[removed].ID)}))
	if err != nil {
		t.Fatalf("remove: %v", err)
	}
	if len(rm.Msg.Members) != 3 {
		t.Fatalf("after remove: %d members, want 3", len(rm.Msg.Members))
	}
	tc.members[removed].Stop()
	tc.members[removed] = nil
	if err := put(ctx, m4, "after-remove", "y"); err != nil {
		t.Fatalf("put after remove: %v", err)
	}
}

// TestTxnLeaseAndLimits exercises the API end to end: a compare-and-swap transaction, a lease
// whose revocation deletes its key, and the value size limit with a clear error.
func TestTxnLeaseAndLimits(t *testing.T) {
	tc := newTestCluster(t, 3)
	lead := tc.waitLeader()
	m := tc.members[lead]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := put(ctx, m, "cas", "old"); err != nil {
		t.Fatal(err)
	}
	txn := func(expect, set string) bool {
		resp, err := kv(m).Txn(ctx, connect.NewRequest(&caucusv1.TxnRequest{
			Compare: []*caucusv1.Compare{{Key: []byte("cas"), Target: caucusv1.Compare_VALUE, Result: caucusv1.Compare_EQUAL,
				TargetUnion: &caucusv1.Compare_Value{Value: []byte(expect)}}},
			Success: []*caucusv1.RequestOp{{Request: &caucusv1.RequestOp_RequestPut{RequestPut: &caucusv1.PutRequest{Key: []byte("cas"), Value: []byte(set)}}}},
		}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg.Succeeded
	}
	if !txn("old", "new") {
		t.Fatal("CAS old->new failed")
	}
	if txn("old", "newer") {
		t.Fatal("CAS old->newer succeeded on value new")
	}
	lc := caucusv1connect.NewLeaseClient(http.DefaultClient, m.ClientURL)
	g, err := lc.LeaseGrant(ctx, connect.NewRequest(&caucusv1.LeaseGrantRequest{Ttl: 60}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv(m).Put(ctx, connect.NewRequest(&caucusv1.PutRequest{Key: []byte("leased"), Value: []byte("v"), Lease: g.Msg.Id})); err != nil {
		t.Fatal(err)
	}
	if _, err := lc.LeaseRevoke(ctx, connect.NewRequest(&caucusv1.LeaseRevokeRequest{Id: g.Msg.Id})); err != nil {
		t.Fatal(err)
	}
	if got := get(ctx, t, m, "leased", caucusv1.Consistency_CONSISTENCY_LINEARIZABLE_UNSPECIFIED); got != "" {
		t.Fatalf("key of a revoked lease still has value %q", got)
	}
	big := strings.Repeat("x", int(m.FSM.Store().Limits().MaxValueBytes)+1)
	err = put(ctx, m, "big", big)
	var ce *connect.Error
	if !errors.As(err, &ce) || (ce.Code() != connect.CodeInvalidArgument && ce.Code() != connect.CodeResourceExhausted) {
		t.Fatalf("oversized put: %v, want invalid argument", err)
	}
}

// TestMembersPublishClientURLs: every member publishes its client URL through the log, so that
// `member list` on any member tells clients where each member serves.
func TestMembersPublishClientURLs(t *testing.T) {
	tc := newTestCluster(t, 3)
	tc.waitLeader()
	want := map[uint64]string{}
	for _, m := range tc.members {
		want[uint64(m.ID)] = m.ClientURL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := caucusv1connect.NewClusterClient(http.DefaultClient, tc.members[2].ClientURL)
	for {
		resp, err := cl.MemberList(ctx, connect.NewRequest(&caucusv1.MemberListRequest{Linearizable: true}))
		if err != nil {
			t.Fatal(err)
		}
		ok := len(resp.Msg.Members) == 3
		for _, m := range resp.Msg.Members {
			if len(m.ClientUrls) != 1 || m.ClientUrls[0] != want[m.Id] {
				ok = false
			}
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("members did not publish their client URLs: %v", resp.Msg.Members)
		case <-time.After(20 * time.Millisecond): // polling a real cluster
		}
	}
}
