package mvcc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/logpb"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
)

func sessPut(client, seq uint64, key, val string) *logpb.Command {
	return cmdOf(&logpb.PutRequest{Key: []byte(key), Value: []byte(val), PrevKv: true,
		Session: &logpb.Session{ClientId: client, Sequence: seq}})
}

func TestSessionRetryAppliesOnce(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("k", "old")
	first := h.ok(sessPut(7, 1, "k", "new"))
	rev := h.s.Rev()
	// The retry (same sequence, even with a different payload) returns the stored result.
	retry := h.cmd(sessPut(7, 1, "k", "other"))
	if retry.Err != nil || !proto.Equal(first, retry.Resp) {
		t.Fatalf("retry = %v / %v, want the first result %v", retry.Resp, retry.Err, first)
	}
	if h.s.Rev() != rev {
		t.Fatalf("retry applied again: revision %d -> %d", rev, h.s.Rev())
	}
	if kv, _ := h.get("k", 0); string(kv.Value) != "new" || kv.Version != 2 {
		t.Fatalf("k = %v, want new at version 2", kv)
	}
	// Retrying inside a batch, next to other commands, behaves the same.
	res := h.batch(sessPut(7, 2, "k", "v2"), sessPut(7, 2, "k", "v2"), sessPut(8, 1, "j", "x"))
	if !proto.Equal(res[0].Resp, res[1].Resp) || h.s.Rev() != rev+2 {
		t.Fatalf("batched retry: %v vs %v, rev %d want %d", res[0].Resp, res[1].Resp, h.s.Rev(), rev+2)
	}
	wantErr(t, h.cmd(sessPut(7, 1, "k", "stale")).Err, ErrStaleSequence)
	// Errors are results too: a retry of a failed write returns the same error.
	bad := cmdOf(&logpb.PutRequest{Key: []byte("k"), Lease: 5, Session: &logpb.Session{ClientId: 7, Sequence: 3}})
	e1 := h.cmd(bad).Err
	wantErr(t, e1, ErrLeaseNotFound)
	h.ok(cmdOf(&logpb.LeaseGrantRequest{Id: 5, Ttl: 10}))
	e2 := h.cmd(bad).Err
	wantErr(t, e2, ErrLeaseNotFound)
	if e1.Error() != e2.Error() {
		t.Fatalf("stored error %q != original %q", e2, e1)
	}
	// Client 0 disables deduplication.
	rev = h.s.Rev()
	for range 2 {
		h.ok(cmdOf(&logpb.PutRequest{Key: []byte("z"), Session: &logpb.Session{ClientId: 0, Sequence: 1}}))
	}
	if h.s.Rev() != rev+2 {
		t.Fatalf("client 0 was deduplicated")
	}
	// Txn and delete are deduplicated as well.
	txn := cmdOf(&logpb.TxnRequest{Success: []*logpb.RequestOp{opPut("t", "1")}, Session: &logpb.Session{ClientId: 9, Sequence: 1}})
	del := cmdOf(&logpb.DeleteRangeRequest{Key: []byte("t"), Session: &logpb.Session{ClientId: 9, Sequence: 2}})
	rev = h.s.Rev()
	h.batch(txn, txn, del, del)
	if h.s.Rev() != rev+2 {
		t.Fatalf("txn/delete retries applied: revision %d -> %d, want +2", rev, h.s.Rev())
	}
}

// sessionTable lists the remembered sessions in client id order: id, sequence, last use
// (relative to baseTime) and the stored result's encoding.
func sessionTable(t testing.TB, s *Store) []string {
	t.Helper()
	var out []string
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSession).ForEach(func(k, v []byte) error {
			last := time.Duration(int64(binary.BigEndian.Uint64(v[8:])) - baseTime.UnixNano())
			out = append(out, fmt.Sprintf("%d seq=%d last=%v res=%x", u64(k), binary.BigEndian.Uint64(v), last, v[16:]))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sessionCount returns the number of sessions the store counts.
func sessionCount(t testing.TB, s *Store) int64 {
	t.Helper()
	var n int64
	if err := s.view(func(tx *bolt.Tx) error { n = loadState(tx).sessions; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// applied reports whether applying c took a new revision (sessPut always writes when applied).
func (h *harness) applied(c *logpb.Command) (bool, Result) {
	h.t.Helper()
	rev := h.s.Rev()
	r := h.cmd(c)
	return h.s.Rev() != rev, r
}

func TestSessionUnknownClient(t *testing.T) {
	h := newHarness(t, Options{})
	// A sequence above 1 from an unknown client: the store cannot tell a retry from the next
	// write, so it refuses, applies nothing, and creates no session.
	for _, seq := range []uint64{2, 7, 1 << 62} {
		did, r := h.applied(sessPut(5, seq, "k", "v"))
		wantErr(t, r.Err, ErrSessionExpired)
		if did {
			t.Fatalf("sequence %d of an unknown client was applied", seq)
		}
		if !strings.Contains(r.Err.Error(), "client 5") || !strings.Contains(r.Err.Error(), fmt.Sprintf("sequence %d", seq)) {
			t.Errorf("error %q does not name the client and sequence", r.Err)
		}
	}
	if n := sessionCount(t, h.s); n != 0 {
		t.Fatalf("refusals created %d sessions", n)
	}
	// Sequence 0 is malformed: refused both before proposing (Validate) and when applied.
	zero := sessPut(5, 0, "k", "v")
	wantErr(t, DefaultLimits().Validate(zero), ErrInvalidArgument)
	if did, r := h.applied(zero); did || !errorsIs(r.Err, ErrInvalidArgument) {
		t.Fatalf("sequence 0: applied=%v err=%v, want refused as invalid", did, r.Err)
	}
	// Sequence 1 starts the session; from then on 2 is the next write.
	if did, r := h.applied(sessPut(5, 1, "k", "v1")); !did || r.Err != nil {
		t.Fatalf("first write: applied=%v err=%v", did, r.Err)
	}
	if did, r := h.applied(sessPut(5, 2, "k", "v2")); !did || r.Err != nil {
		t.Fatalf("second write: applied=%v err=%v", did, r.Err)
	}
	if did, r := h.applied(sessPut(5, 0, "k", "v")); did || !errorsIs(r.Err, ErrInvalidArgument) {
		t.Fatalf("sequence 0 of a known client: applied=%v err=%v", did, r.Err)
	}
	// Refusals are not stored results: a retry of the last write still gets its result.
	if did, r := h.applied(sessPut(5, 2, "k", "other")); did || r.Err != nil {
		t.Fatalf("retry after refusals: applied=%v err=%v", did, r.Err)
	}
	checkInvariants(t, h.s)
}

func errorsIs(err, target error) bool {
	e, ok := err.(*Error)
	return ok && e.Is(target)
}

func TestSessionTTLExpiry(t *testing.T) {
	h := newHarness(t, Options{Limits: Limits{SessionTTL: time.Minute, SessionRetryWindow: 20 * time.Second}})
	h.ok(sessPut(1, 1, "a", "1"))
	h.now = baseTime.Add(30 * time.Second)
	h.ok(sessPut(2, 1, "b", "1"))
	// A write is a use: at 60s-1ns session 1 is still remembered (its next write applies) and
	// its last use moves to 60s-1ns.
	h.now = baseTime.Add(time.Minute - time.Nanosecond)
	h.ok(sessPut(1, 2, "a", "2"))
	// One TTL later session 1 is exactly SessionTTL old and forgotten, and so is session 2
	// (last used at 30s), whatever the retry window.
	h.now = h.now.Add(time.Minute)
	wantErr(t, h.cmd(sessPut(1, 3, "a", "3")).Err, ErrSessionExpired)
	if n := sessionCount(t, h.s); n != 0 {
		t.Fatalf("%d sessions after the TTL, want 0: %v", n, sessionTable(t, h.s))
	}
	wantErr(t, h.cmd(sessPut(2, 2, "b", "2")).Err, ErrSessionExpired)
	checkInvariants(t, h.s)
}

func TestSessionTTLBoundary(t *testing.T) {
	h := newHarness(t, Options{Limits: Limits{SessionTTL: time.Minute, SessionRetryWindow: time.Minute}})
	first := h.ok(sessPut(1, 1, "a", "1"))
	// One nanosecond before the TTL the session is alive: its retry returns the first result.
	h.now = baseTime.Add(time.Minute - time.Nanosecond)
	did, r := h.applied(sessPut(1, 1, "a", "1"))
	if did || !proto.Equal(r.Resp, first) {
		t.Fatalf("retry inside the TTL: applied=%v resp=%v", did, r.Resp)
	}
	// The retry was a use: the session now lives until 2m-1ns.
	h.now = baseTime.Add(2*time.Minute - 2*time.Nanosecond)
	if did, r := h.applied(sessPut(1, 1, "a", "1")); did || r.Err != nil {
		t.Fatalf("retry after the retry: applied=%v err=%v", did, r.Err)
	}
}

func TestSessionLRUNeverEvictsInsideWindow(t *testing.T) {
	const window = time.Minute
	h := newHarness(t, Options{Limits: Limits{SessionTTL: time.Hour, SessionRetryWindow: window, MaxSessions: 3}})
	results := map[uint64]proto.Message{}
	for i, c := range []uint64{1, 2, 3} {
		h.now = baseTime.Add(time.Duration(i) * 10 * time.Second)
		results[c] = h.ok(sessPut(c, 1, fmt.Sprint(c), "v"))
	}
	// The table is full and its oldest session (1, used at 0s) is 1ns short of the window:
	// a new session is refused and nothing is applied.
	h.now = baseTime.Add(window - time.Nanosecond)
	rev := h.s.Rev()
	r := h.cmd(sessPut(4, 1, "new", "v"))
	wantErr(t, r.Err, ErrTooManySessions)
	if h.s.Rev() != rev {
		t.Fatal("refused write was applied")
	}
	if _, ok := h.get("new", 0); ok {
		t.Fatal("refused write is visible")
	}
	if got := sessionTable(t, h.s); len(got) != 3 || !strings.HasPrefix(got[0], "1 ") {
		t.Fatalf("sessions after the refusal: %v, want 1, 2, 3 untouched", got)
	}
	// At exactly the window session 1 may go: the new session evicts it, and only it.
	h.now = baseTime.Add(window)
	if did, r := h.applied(sessPut(4, 1, "new", "v")); !did || r.Err != nil {
		t.Fatalf("new session at the window: applied=%v err=%v", did, r.Err)
	}
	wantErr(t, h.cmd(sessPut(1, 2, "1", "v2")).Err, ErrSessionExpired)
	for _, c := range []uint64{2, 3} {
		if did, r := h.applied(sessPut(c, 1, fmt.Sprint(c), "again")); did || !proto.Equal(r.Resp, results[c]) {
			t.Fatalf("client %d retry after an eviction: applied=%v resp=%v, want its first result", c, did, r.Resp)
		}
	}
	// Those retries were uses: 2 and 3 are young again, as is 4. Nothing can be evicted until
	// 60s after the retries, however long ago their writes were first applied.
	h.now = baseTime.Add(2*window - time.Nanosecond)
	wantErr(t, h.cmd(sessPut(5, 1, "five", "v")).Err, ErrTooManySessions)
	h.now = baseTime.Add(2 * window)
	h.ok(sessPut(5, 1, "five", "v"))
	// Eviction follows last use: 2 and 3 were retried at 60s in that order, 4 created at 60s
	// before them; ties are broken by client id, so 2 goes first.
	got := sessionTable(t, h.s)
	var ids []string
	for _, l := range got {
		ids = append(ids, strings.Fields(l)[0])
	}
	if strings.Join(ids, ",") != "3,4,5" {
		t.Fatalf("sessions %v, want 3,4,5", got)
	}
	checkInvariants(t, h.s)
}

// A refused new session is not remembered, so its retry after the window is applied exactly
// once; a second retry gets the stored result.
func TestSessionRefusedThenAccepted(t *testing.T) {
	h := newHarness(t, Options{Limits: Limits{SessionTTL: time.Hour, SessionRetryWindow: time.Minute, MaxSessions: 1}})
	h.ok(sessPut(1, 1, "a", "v"))
	h.now = baseTime.Add(time.Second)
	wantErr(t, h.cmd(sessPut(2, 1, "b", "v")).Err, ErrTooManySessions)
	h.now = baseTime.Add(time.Minute)
	if did, r := h.applied(sessPut(2, 1, "b", "v")); !did || r.Err != nil {
		t.Fatalf("retry after the window: applied=%v err=%v", did, r.Err)
	}
	if did, _ := h.applied(sessPut(2, 1, "b", "v")); did {
		t.Fatal("second retry applied again")
	}
	if kv, _ := h.get("b", 0); kv.GetVersion() != 1 {
		t.Fatalf("b at version %d, want 1", kv.GetVersion())
	}
}

// If MaxSessions is lowered across a restart, the table shrinks only as its sessions leave the
// retry window.
func TestSessionLoweredBoundEvictsOnlyOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kv.db")
	open := func(max int) *Store {
		s, err := Open(path, Options{NoSync: true, Limits: Limits{SessionTTL: time.Hour, SessionRetryWindow: time.Minute, MaxSessions: max}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	h := &harness{t: t, s: open(4), now: baseTime}
	for i, at := range []time.Duration{0, time.Minute, 90 * time.Second, 105 * time.Second} {
		h.now = baseTime.Add(at)
		h.ok(sessPut(uint64(i+1), 1, "k", "v"))
	}
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	h.s = open(2)
	t.Cleanup(func() { h.s.Close() })
	ids := func() string {
		var out []string
		for _, l := range sessionTable(t, h.s) {
			out = append(out, strings.Fields(l)[0])
		}
		return strings.Join(out, ",")
	}
	// At 2m15s sessions 1 (0s) and 2 (1m) are outside the window, 3 (1m30s) and 4 (1m45s) are
	// not. A new session may come (the oldest is evictable); 1 and 2 go, 3 and 4 stay, so the
	// table stays above the new bound.
	h.now = baseTime.Add(135 * time.Second)
	h.ok(sessPut(9, 1, "k", "v"))
	if got := ids(); got != "3,4,9" {
		t.Fatalf("sessions %s, want 3,4,9", got)
	}
	// While the oldest is young, new sessions are refused.
	h.now = baseTime.Add(140 * time.Second)
	wantErr(t, h.cmd(sessPut(10, 1, "k", "v")).Err, ErrTooManySessions)
	// At 2m30s session 3 leaves the window and makes room; 4 (45s idle) stays.
	h.now = baseTime.Add(150 * time.Second)
	h.ok(sessPut(10, 1, "k", "v"))
	if got := ids(); got != "4,9,10" {
		t.Fatalf("sessions %s, want 4,9,10", got)
	}
	checkInvariants(t, h.s)
}

func TestSessionSnapshotRestore(t *testing.T) {
	lim := Limits{SessionTTL: time.Hour, SessionRetryWindow: time.Minute, MaxSessions: 2}
	src := newHarness(t, Options{Limits: lim})
	first := src.ok(sessPut(1, 1, "a", "v"))
	src.now = baseTime.Add(10 * time.Second)
	src.ok(sessPut(2, 1, "b", "v"))
	src.ok(sessPut(2, 2, "b", "v2"))
	var buf bytes.Buffer
	if _, err := src.s.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	dst := newHarness(t, Options{Limits: lim})
	if err := dst.s.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	dst.index, dst.now = src.index, src.now
	if a, b := sessionTable(t, src.s), sessionTable(t, dst.s); strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Fatalf("restored sessions %v, want %v", b, a)
	}
	// Every rule holds on the restored store, identically on both.
	for _, h := range []*harness{src, dst} {
		h.now = baseTime.Add(30 * time.Second)
		if did, r := h.applied(sessPut(1, 1, "a", "again")); did || !proto.Equal(r.Resp, first) {
			t.Fatalf("retry: applied=%v resp=%v", did, r.Resp)
		}
		wantErr(t, h.cmd(sessPut(2, 1, "b", "v")).Err, ErrStaleSequence)
		wantErr(t, h.cmd(sessPut(3, 1, "c", "v")).Err, ErrTooManySessions)
		wantErr(t, h.cmd(sessPut(4, 2, "c", "v")).Err, ErrSessionExpired)
		h.now = baseTime.Add(70 * time.Second)
		h.ok(sessPut(3, 1, "c", "v")) // evicts 2 (last used at 10s)
		wantErr(t, h.cmd(sessPut(2, 3, "b", "v3")).Err, ErrSessionExpired)
		checkInvariants(t, h.s)
	}
	if a, b := dump(t, src.s), dump(t, dst.s); a != b {
		t.Fatalf("states diverged after the restore:\n%s\nvs\n%s", a, b)
	}
	if a, b := sessionTable(t, src.s), sessionTable(t, dst.s); strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Fatalf("sessions diverged after the restore: %v vs %v", b, a)
	}
}

func TestSessionLimitsValidation(t *testing.T) {
	for _, tc := range []struct {
		l    Limits
		ok   bool
		want time.Duration // the resulting window when ok
	}{
		{Limits{}, true, DefaultSessionRetryWindow},
		{Limits{SessionTTL: 30 * time.Second}, true, 30 * time.Second},
		{Limits{SessionTTL: time.Minute, SessionRetryWindow: time.Minute}, true, time.Minute},
		{Limits{SessionTTL: time.Minute, SessionRetryWindow: time.Minute + 1}, false, 0},
		{Limits{SessionRetryWindow: -time.Second}, false, 0},
		{Limits{SessionRetryWindow: 2 * DefaultSessionTTL}, false, 0},
	} {
		l := tc.l.withDefaults()
		err := l.check()
		if (err == nil) != tc.ok {
			t.Errorf("%+v: check = %v, want ok=%v", tc.l, err, tc.ok)
			continue
		}
		if tc.ok && l.SessionRetryWindow != tc.want {
			t.Errorf("%+v: window %v, want %v", tc.l, l.SessionRetryWindow, tc.want)
		}
		st, err := Open(filepath.Join(t.TempDir(), "kv.db"), Options{NoSync: true, Limits: tc.l})
		if (err == nil) != tc.ok {
			t.Errorf("%+v: Open = %v, want ok=%v", tc.l, err, tc.ok)
		}
		if err == nil {
			st.Close()
		}
	}
}
