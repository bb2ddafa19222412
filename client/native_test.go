package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/embed"
	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
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

// startEmbeddedMember starts a real single-member cluster on loopback ports.
func startEmbeddedMember(t *testing.T) *embed.Member {
	t.Helper()
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
	return m
}

// TestNativeAgainstEmbeddedMember runs the client against a real member and checks that its
// calls travel over the native protocol while HTTP keeps working on the same port.
func TestNativeAgainstEmbeddedMember(t *testing.T) {
	m := startEmbeddedMember(t)
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

	// Snapshots stream natively too; curl-style requests still work on the same port.
	var snap bytes.Buffer
	if n, err := c.SnapshotSave(ctx, &snap); err != nil || n == 0 {
		t.Fatalf("SnapshotSave = %d, %v", n, err)
	}
	if n := c.endpoints[0].native.Streams.Load(); n != 1 {
		t.Errorf("the native connection carried %d streams, want the snapshot's", n)
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

// TestSnapshotOfLargeDatabase saves a database of several MiB (many snapshot chunks, past the
// 256 KiB that used to end saves early) from a real member over both protocols: the copies must
// be identical and hold every value written.
func TestSnapshotOfLargeDatabase(t *testing.T) {
	m := startEmbeddedMember(t)
	ctx := context.Background()
	native := newClient(t, Config{Endpoints: []string{m.ClientURL}, RequestTimeout: 10 * time.Second})
	const keys, valueBytes = 48, 128 << 10 // 6 MiB of values
	rng := rand.New(rand.NewPCG(1, 2))
	want := make(map[string][32]byte)
	for i := range keys {
		v := make([]byte, valueBytes)
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		k := fmt.Sprintf("big/%02d", i)
		if _, err := native.Put(ctx, k, string(v)); err != nil {
			t.Fatalf("Put %s: %v", k, err)
		}
		want[k] = sha256.Sum256(v)
	}
	// A snapshot is the state machine's committed state, which trails acknowledged writes by up
	// to the apply commit interval; a linearizable read waits for that commit.
	if _, err := native.Get(ctx, "big/00"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "snap.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := native.SnapshotSave(ctx, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("native SnapshotSave after %d bytes: %v", n, err)
	}
	if n < keys*valueBytes {
		t.Fatalf("snapshot of %d bytes holds less than the %d bytes of values", n, keys*valueBytes)
	}
	if s := native.endpoints[0].native.Streams.Load(); s != 1 {
		t.Fatalf("the native connection carried %d streams, want the snapshot's", s)
	}
	nativeCopy, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	viaConnect := newClient(t, Config{Endpoints: []string{m.ClientURL}, Protocol: ProtocolConnect})
	var connectCopy bytes.Buffer
	if _, err := viaConnect.SnapshotSave(ctx, &connectCopy); err != nil {
		t.Fatalf("connect SnapshotSave: %v", err)
	}
	if a, b := sha256.Sum256(nativeCopy), sha256.Sum256(connectCopy.Bytes()); a != b {
		t.Errorf("native copy (%d bytes, sha256 %x) differs from the connect copy (%d bytes, sha256 %x)", len(nativeCopy), a, connectCopy.Len(), b)
	}

	// The copy is a database holding every value.
	st, err := mvcc.Open(path, mvcc.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("opening the snapshot: %v", err)
	}
	defer st.Close()
	resp, err := st.Range(&logpb.RangeRequest{Key: []byte("big/"), RangeEnd: []byte("big0")})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetKvs()) != keys {
		t.Fatalf("the snapshot holds %d keys, want %d", len(resp.GetKvs()), keys)
	}
	for _, kv := range resp.GetKvs() {
		if sha256.Sum256(kv.GetValue()) != want[string(kv.GetKey())] {
			t.Errorf("the snapshot's value of %s differs from the one written", kv.GetKey())
		}
	}
}
