package client

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/embed"
)

// protocolUnderTest is the Config.Protocol newClient applies when a test leaves it empty; ""
// is the default (native). TestSuiteOverConnect sets it.
var protocolUnderTest string

// TestSuiteOverConnect runs the client tests again with every call over connect, so that both
// protocols keep the behaviour the suite pins down (the other tests run over native, the
// default).
func TestSuiteOverConnect(t *testing.T) {
	protocolUnderTest = ProtocolConnect
	defer func() { protocolUnderTest = "" }()
	for _, tc := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"KVRoundTrip", TestKVRoundTrip},
		{"FailoverAcrossEndpoints", TestFailoverAcrossEndpoints},
		{"RetriesReuseSessionSequence", TestRetriesReuseSessionSequence},
		{"ConcurrentWritesUseDistinctSessions", TestConcurrentWritesUseDistinctSessions},
		{"DeadlineRespected", TestDeadlineRespected},
		{"RetryPolicies", TestRetryPolicies},
		{"Txn", TestTxn},
		{"Leases", TestLeases},
		{"RevokeAfterAmbiguousAttempt", TestRevokeAfterAmbiguousAttempt},
		{"WritesPreferLeader", TestWritesPreferLeader},
		{"MembersAndStatus", TestMembersAndStatus},
		{"SnapshotSave", TestSnapshotSave},
		{"ConfigAndClose", TestConfigAndClose},
		{"FailoverFromSilentMember", TestFailoverFromSilentMember},
		{"CloseAbortsCallsInFlight", TestCloseAbortsCallsInFlight},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.f(t)
			if t.Failed() {
				t.Logf("failed over protocol %q", protocolUnderTest)
			}
		})
	}
}

func TestProtocolSelection(t *testing.T) {
	if _, err := New(Config{Endpoints: []string{"127.0.0.1:1"}, Protocol: "grpc"}); err == nil {
		t.Error("New accepted protocol \"grpc\"")
	}
	c := newClient(t, Config{Endpoints: []string{"127.0.0.1:2379", "https://10.0.0.1:2379", "http://proxy:80/caucus"}, Protocol: ProtocolNative})
	for i, wantNative := range []bool{true, false, false} {
		if got := c.endpoints[i].native != nil; got != wantNative {
			t.Errorf("endpoint %s: native = %v, want %v", c.endpoints[i].url, got, wantNative)
		}
	}
	c = newClient(t, Config{Endpoints: []string{"127.0.0.1:2379"}, Protocol: ProtocolConnect})
	if c.endpoints[0].native != nil {
		t.Error("protocol connect built a native client")
	}
}

func TestNativeAddr(t *testing.T) {
	for _, tc := range []struct {
		url, want string
		ok        bool
	}{
		{"http://127.0.0.1:2379", "127.0.0.1:2379", true},
		{"http://example.com", "example.com:80", true},
		{"http://[::1]:2379", "[::1]:2379", true},
		{"https://example.com:2379", "", false},
		{"http://proxy/caucus", "", false},
	} {
		got, ok := nativeAddr(tc.url)
		if got != tc.want || ok != tc.ok {
			t.Errorf("nativeAddr(%q) = %q, %v; want %q, %v", tc.url, got, ok, tc.want, tc.ok)
		}
	}
}

// TestNativeAgainstEmbeddedMember runs the client against a real member and checks that its
// calls travel over the native protocol while HTTP keeps working on the same port.
func TestNativeAgainstEmbeddedMember(t *testing.T) {
	cfg := embed.DefaultConfig("n1")
	cfg.HeartbeatInterval = 10 * time.Millisecond
	cfg.ElectionTimeout = 100 * time.Millisecond
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.DataDir = filepath.Join(t.TempDir(), "n1")
	var err error
	if cfg.PeerListener, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if cfg.ClientListener, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	cfg.ListenPeerURL = "http://" + cfg.PeerListener.Addr().String()
	cfg.ListenClientURL = "http://" + cfg.ClientListener.Addr().String()
	cfg.InitialCluster = "n1=" + cfg.ListenPeerURL
	cfg.ClusterToken = "test-" + t.Name()
	m, err := embed.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)

	// The first calls are retried (Unavailable) until the member has elected itself.
	c := newClient(t, Config{Endpoints: []string{m.ClientURL}, RequestTimeout: 10 * time.Second})
	ctx := context.Background()
	for i := range 10 {
		if _, err := c.Put(ctx, fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)); err != nil {
			t.Fatalf("Put: %v", err)
		}
	}
	resp, err := c.Get(ctx, "k", WithPrefix())
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if len(resp.GetKvs()) != 10 || string(resp.GetKvs()[3].GetValue()) != "v3" {
		t.Fatalf("Get returned %v", resp.GetKvs())
	}
	if _, err := c.MemberList(ctx); err != nil {
		t.Fatalf("MemberList: %v", err)
	}
	st, err := c.Status(ctx, m.ClientURL)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.GetHeader().GetMemberId() != uint64(m.ID) {
		t.Errorf("Status answered by %x, want %x", st.GetHeader().GetMemberId(), uint64(m.ID))
	}
	if n := c.endpoints[0].native.Calls.Load(); n < 13 {
		t.Errorf("the native connection carried %d calls, want at least the test's 13", n)
	}

	// Snapshots stream over connect on the same port; so do curl-style requests.
	var snap bytes.Buffer
	if n, err := c.SnapshotSave(ctx, &snap); err != nil || n == 0 {
		t.Fatalf("SnapshotSave = %d, %v", n, err)
	}
	hr, err := http.Get(m.ClientURL + "/health")
	if err != nil {
		t.Fatalf("GET /health: %v", err)
	}
	body, _ := io.ReadAll(hr.Body)
	hr.Body.Close()
	if hr.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "ok") {
		t.Errorf("GET /health = %d %q", hr.StatusCode, body)
	}
}
