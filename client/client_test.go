package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/client/clienttest"
)

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	if cfg.Protocol == "" {
		cfg.Protocol = protocolUnderTest
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recorder is an interceptor that records which member served which procedure.
type recorder struct {
	mu    sync.Mutex
	calls []call
}

type call struct {
	member    uint64
	procedure string
	msg       proto.Message
}

func (r *recorder) intercept(ctx context.Context, m *clienttest.Member, procedure string, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
	r.mu.Lock()
	r.calls = append(r.calls, call{member: m.ID, procedure: procedure, msg: proto.Clone(req.Any().(proto.Message))})
	r.mu.Unlock()
	return next(ctx, req)
}

// of returns the recorded calls of procedure.
func (r *recorder) of(procedure string) []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []call
	for _, c := range r.calls {
		if c.procedure == procedure {
			out = append(out, c)
		}
	}
	return out
}

func TestKVRoundTrip(t *testing.T) {
	fc := clienttest.NewCluster(t, 1)
	c := newClient(t, Config{Endpoints: fc.Endpoints()})
	ctx := context.Background()

	for _, kv := range [][2]string{{"a/1", "x"}, {"a/2", "y"}, {"a/3", "z"}, {"b", "w"}} {
		if _, err := c.Put(ctx, kv[0], kv[1]); err != nil {
			t.Fatalf("Put(%s): %v", kv[0], err)
		}
	}
	put, err := c.Put(ctx, "a/1", "x2", WithPrevKV())
	if err != nil {
		t.Fatal(err)
	}
	if got := string(put.GetPrevKv().GetValue()); got != "x" {
		t.Errorf("Put prev_kv = %q, want x", got)
	}
	revAfterFirst := put.GetHeader().GetRevision() - 1

	get, err := c.Get(ctx, "a/", WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(get.GetKvs()); got != "a/1=x2 a/2=y a/3=z" {
		t.Errorf("Get prefix = %q", got)
	}
	get, err = c.Get(ctx, "a/", WithPrefix(), WithLimit(2), WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(get.GetKvs()); got != "a/1= a/2=" || !get.GetMore() || get.GetCount() != 3 {
		t.Errorf("Get limit 2 keys-only = %q more=%v count=%d", got, get.GetMore(), get.GetCount())
	}
	get, err = c.Get(ctx, "a/1", WithRev(revAfterFirst), WithSerializable())
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(get.GetKvs()); got != "a/1=x" {
		t.Errorf("Get at rev %d = %q, want the old value", revAfterFirst, got)
	}
	get, err = c.Get(ctx, "a/2", WithRange("b"), WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if get.GetCount() != 2 || len(get.GetKvs()) != 0 {
		t.Errorf("Get count-only = %d kvs=%d, want 2 and none", get.GetCount(), len(get.GetKvs()))
	}
	get, err = c.Get(ctx, "", WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if get.GetCount() != 4 {
		t.Errorf("Get of every key counted %d, want 4", get.GetCount())
	}

	del, err := c.Delete(ctx, "a/", WithPrefix(), WithPrevKV())
	if err != nil {
		t.Fatal(err)
	}
	if del.GetDeleted() != 3 || keysOf(del.GetPrevKvs()) != "a/1=x2 a/2=y a/3=z" {
		t.Errorf("Delete = %d %q", del.GetDeleted(), keysOf(del.GetPrevKvs()))
	}

	if _, err := c.Compact(ctx, del.GetHeader().GetRevision()); err != nil {
		t.Fatal(err)
	}
	_, err = c.Get(ctx, "b", WithRev(revAfterFirst))
	if !IsCompacted(err) {
		t.Errorf("Get below the compaction: err = %v, want IsCompacted", err)
	}
}

func keysOf(kvs []*caucusv1.KeyValue) string {
	var b bytes.Buffer
	for i, kv := range kvs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", kv.GetKey(), kv.GetValue())
	}
	return b.String()
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a", "b"},
		{"a/", "a0"},
		{"a\xff", "b"},
		{"\xff\xff", "\x00"},
	} {
		if got := string(PrefixEnd([]byte(tc.in))); got != tc.want {
			t.Errorf("PrefixEnd(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFailoverAcrossEndpoints(t *testing.T) {
	fc := clienttest.NewCluster(t, 3)
	var rec recorder
	fc.SetInterceptor(rec.intercept)
	fc.Members[0].Stop()
	fc.Members[1].Stop()
	c := newClient(t, Config{Endpoints: fc.Endpoints(), RequestTimeout: 5 * time.Second})
	ctx := context.Background()

	// Whatever endpoint round-robin starts at, every call must land on the live member.
	for i := range 6 {
		if _, err := c.Put(ctx, fmt.Sprintf("k%d", i), "v"); err != nil {
			t.Fatalf("Put %d: %v", i, err)
		}
		if _, err := c.Get(ctx, fmt.Sprintf("k%d", i)); err != nil {
			t.Fatalf("Get %d: %v", i, err)
		}
	}
	for _, proc := range []string{caucusv1connect.KVPutProcedure, caucusv1connect.KVRangeProcedure} {
		calls := rec.of(proc)
		if len(calls) != 6 {
			t.Errorf("%s served %d times, want 6", proc, len(calls))
		}
		for _, cl := range calls {
			if cl.member != fc.Members[2].ID {
				t.Errorf("%s served by %x, want the live member %x", proc, cl.member, fc.Members[2].ID)
			}
		}
	}
}

func TestRetriesReuseSessionSequence(t *testing.T) {
	fc := clienttest.NewCluster(t, 2)
	var mu sync.Mutex
	var sessions []*caucusv1.Session
	fc.SetInterceptor(func(ctx context.Context, m *clienttest.Member, proc string, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
		if proc != caucusv1connect.KVPutProcedure {
			return next(ctx, req)
		}
		mu.Lock()
		sessions = append(sessions, proto.Clone(req.Any().(*caucusv1.PutRequest).GetSession()).(*caucusv1.Session))
		n := len(sessions)
		mu.Unlock()
		switch n {
		case 1: // refused before applying
			return nil, connect.NewError(connect.CodeUnavailable, errors.New("no quorum"))
		case 2: // applied, but the response is lost
			if _, err := next(ctx, req); err != nil {
				return nil, err
			}
			return nil, connect.NewError(connect.CodeUnavailable, errors.New("no quorum"))
		}
		return next(ctx, req)
	})
	c := newClient(t, Config{Endpoints: fc.Endpoints()})
	ctx := context.Background()

	before := fc.Revision()
	resp, err := c.Put(ctx, "k", "v")
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if got := fc.Revision(); got != before+1 {
		t.Errorf("revision went from %d to %d: the write was applied %d times, want once", before, got, got-before)
	}
	if resp.GetHeader().GetRevision() != before+1 {
		t.Errorf("Put answered revision %d, want the revision of its single application %d", resp.GetHeader().GetRevision(), before+1)
	}
	mu.Lock()
	if len(sessions) != 3 {
		t.Fatalf("%d attempts, want 3", len(sessions))
	}
	first := sessions[0]
	if first.GetClientId() == 0 || first.GetSequence() == 0 {
		t.Fatalf("attempt carried no session: %v", first)
	}
	for i, s := range sessions[1:] {
		if !proto.Equal(s, first) {
			t.Errorf("retry %d carried session %v, want the first attempt's %v", i+1, s, first)
		}
	}
	mu.Unlock()

	if _, err := c.Put(ctx, "k", "v2"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	next := sessions[len(sessions)-1]
	if next.GetClientId() != first.GetClientId() || next.GetSequence() != first.GetSequence()+1 {
		t.Errorf("next write carried %v, want client %x sequence %d", next, first.GetClientId(), first.GetSequence()+1)
	}
}

func TestConcurrentWritesUseDistinctSessions(t *testing.T) {
	const writers = 4
	fc := clienttest.NewCluster(t, 1)
	var mu sync.Mutex
	var sessions []*caucusv1.Session
	arrived := make(chan struct{}, writers+1)
	release := make(chan struct{})
	fc.SetInterceptor(func(ctx context.Context, m *clienttest.Member, proc string, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
		if proc != caucusv1connect.KVPutProcedure {
			return next(ctx, req)
		}
		mu.Lock()
		sessions = append(sessions, req.Any().(*caucusv1.PutRequest).GetSession())
		mu.Unlock()
		arrived <- struct{}{}
		<-release // hold every write in flight until all have arrived
		return next(ctx, req)
	})
	c := newClient(t, Config{Endpoints: fc.Endpoints()})
	ctx := context.Background()

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			_, err := c.Put(ctx, fmt.Sprintf("k%d", i), "v")
			errs <- err
		})
	}
	for range writers {
		<-arrived
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
	}
	ids := make(map[uint64]bool)
	mu.Lock()
	for _, s := range sessions {
		if s.GetSequence() != 1 {
			t.Errorf("session %v: a new lane's first write should have sequence 1", s)
		}
		ids[s.GetClientId()] = true
	}
	mu.Unlock()
	if len(ids) != writers {
		t.Errorf("%d concurrent writes used %d client ids, want one each", writers, len(ids))
	}
	if got := c.lanes.opened(); got != writers {
		t.Errorf("opened %d lanes, want %d", got, writers)
	}

	// A later write reuses a lane, continuing its sequence.
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	last := sessions[len(sessions)-1]
	if !ids[last.GetClientId()] || last.GetSequence() != 2 {
		t.Errorf("sequential write after the burst carried %v, want a known client id with sequence 2", last)
	}
}

func TestDeadlineRespected(t *testing.T) {
	fc := clienttest.NewCluster(t, 2)
	fc.SetInterceptor(func(ctx context.Context, m *clienttest.Member, proc string, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
		if proc == caucusv1connect.KVRangeProcedure {
			<-ctx.Done() // a member that accepted the request and went silent
			return nil, ctx.Err()
		}
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("no quorum"))
	})
	const timeout = 300 * time.Millisecond
	c := newClient(t, Config{Endpoints: fc.Endpoints(), RequestTimeout: timeout})

	for name, f := range map[string]func(ctx context.Context) error{
		"hanging get": func(ctx context.Context) error { _, err := c.Get(ctx, "k"); return err },
		"unavailable put": func(ctx context.Context) error {
			_, err := c.Put(ctx, "k", "v")
			if !IsUnavailable(err) {
				t.Errorf("error %v does not wrap the last attempt's Unavailable", err)
			}
			return err
		},
	} {
		start := time.Now()
		err := f(context.Background())
		elapsed := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: err = %v, want context.DeadlineExceeded", name, err)
		}
		if elapsed > timeout+time.Second {
			t.Errorf("%s: returned after %v, want about the %v request timeout", name, elapsed, timeout)
		}
	}

	// A caller's deadline wins over RequestTimeout.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.Get(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > timeout {
		t.Errorf("returned after %v, past the caller's 100ms deadline", elapsed)
	}
}

// TestDeadlineKeepsTellingError drives call with scripted attempts: a member's answer
// (Unavailable) must survive in the error of a call whose deadline ends it, whatever comes
// back after it (a member's own DeadlineExceeded for an attempt sent with no time left, seen
// under load just before the call's context expires) and wherever the end finds the call: in
// an attempt, or in the backoff between rounds of attempts.
func TestDeadlineKeepsTellingError(t *testing.T) {
	c := newClient(t, Config{Endpoints: []string{"http://127.0.0.1:1", "http://127.0.0.1:2"}, RequestTimeout: time.Hour})
	type attempt func(actx context.Context, end context.CancelFunc) error
	unavailable := func(context.Context, context.CancelFunc) error {
		return connect.NewError(connect.CodeUnavailable, errors.New("no quorum"))
	}
	memberTimeout := func(context.Context, context.CancelFunc) error {
		return connect.NewError(connect.CodeDeadlineExceeded, context.DeadlineExceeded)
	}
	for name, script := range map[string][]attempt{
		"in an attempt": {unavailable, memberTimeout, func(actx context.Context, end context.CancelFunc) error {
			end()
			<-actx.Done()
			return actx.Err()
		}},
		// The second attempt closes a round (two endpoints), so call backs off next; the end
		// comes in the backoff.
		"in the backoff": {unavailable, func(actx context.Context, end context.CancelFunc) error {
			time.AfterFunc(time.Millisecond, end)
			return memberTimeout(actx, end)
		}},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, end := context.WithCancel(context.Background())
			defer end()
			var tries int
			err := c.call(ctx, "put", anyEndpoint, retryTransient, func(actx context.Context, _ *endpoint) error {
				tries++
				if tries > len(script) {
					t.Errorf("attempt %d after the call's context ended", tries)
					return memberTimeout(actx, end)
				}
				return script[tries-1](actx, end)
			})
			if !errors.Is(err, context.Canceled) || !IsUnavailable(err) {
				t.Fatalf("error %v: want the call's own end, wrapping the member's Unavailable", err)
			}
		})
	}
}

func TestRetryPolicies(t *testing.T) {
	fc := clienttest.NewCluster(t, 2)
	var attempts atomic.Int64
	var failWith atomic.Pointer[connect.Error]
	fc.SetInterceptor(func(ctx context.Context, m *clienttest.Member, proc string, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
		if proc == caucusv1connect.MaintenanceStatusProcedure {
			return next(ctx, req)
		}
		attempts.Add(1)
		if e := failWith.Load(); e != nil {
			return nil, e
		}
		return next(ctx, req)
	})
	c := newClient(t, Config{Endpoints: fc.Endpoints(), MaxRetries: 3, RequestTimeout: 5 * time.Second})
	ctx := context.Background()

	for _, tc := range []struct {
		name     string
		err      *connect.Error
		call     func() error
		attempts int64
	}{
		{"invalid argument is final", connect.NewError(connect.CodeInvalidArgument, errors.New("key too large")),
			func() error { _, err := c.Put(ctx, "k", "v"); return err }, 1},
		{"unavailable read retried up to MaxRetries", connect.NewError(connect.CodeUnavailable, errors.New("no quorum")),
			func() error { _, err := c.Get(ctx, "k"); return err }, 4},
		{"ambiguous member add not retried", connect.NewError(connect.CodeUnavailable, errors.New("no quorum")),
			func() error { _, err := c.MemberAdd(ctx, "n", []string{"http://x:2380"}); return err }, 1},
		{"not-leader member add retried", connect.NewError(connect.CodeUnavailable, errors.New("not leader")),
			func() error { _, err := c.MemberAdd(ctx, "n", []string{"http://x:2380"}); return err }, 4},
	} {
		attempts.Store(0)
		failWith.Store(tc.err)
		err := tc.call()
		if connect.CodeOf(err) != tc.err.Code() {
			t.Errorf("%s: err = %v, want code %v", tc.name, err, tc.err.Code())
		}
		if got := attempts.Load(); got != tc.attempts {
			t.Errorf("%s: %d attempts, want %d", tc.name, got, tc.attempts)
		}
	}
}

func TestTxn(t *testing.T) {
	fc := clienttest.NewCluster(t, 1)
	var rec recorder
	fc.SetInterceptor(rec.intercept)
	c := newClient(t, Config{Endpoints: fc.Endpoints()})
	ctx := context.Background()
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}

	resp, err := c.Txn(ctx).
		If(Compare(Value("k"), "=", "v"), Compare(Version("k"), ">", 0), Compare(ModRevision("p/").WithPrefix(), "<", 100)).
		Then(OpPut("k", "v2", WithPrevKV()), OpGet("k")).
		Else(OpDelete("k")).
		Commit()
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	want := &caucusv1.TxnRequest{
		Compare: []*caucusv1.Compare{
			{Result: caucusv1.Compare_EQUAL, Target: caucusv1.Compare_VALUE, Key: []byte("k"), TargetUnion: &caucusv1.Compare_Value{Value: []byte("v")}},
			{Result: caucusv1.Compare_GREATER, Target: caucusv1.Compare_VERSION, Key: []byte("k"), TargetUnion: &caucusv1.Compare_Version{Version: 0}},
			{Result: caucusv1.Compare_LESS, Target: caucusv1.Compare_MOD, Key: []byte("p/"), RangeEnd: []byte("p0"), TargetUnion: &caucusv1.Compare_ModRevision{ModRevision: 100}},
		},
		Success: []*caucusv1.RequestOp{
			{Request: &caucusv1.RequestOp_RequestPut{RequestPut: &caucusv1.PutRequest{Key: []byte("k"), Value: []byte("v2"), PrevKv: true}}},
			{Request: &caucusv1.RequestOp_RequestRange{RequestRange: &caucusv1.RangeRequest{Key: []byte("k")}}},
		},
		Failure: []*caucusv1.RequestOp{
			{Request: &caucusv1.RequestOp_RequestDeleteRange{RequestDeleteRange: &caucusv1.DeleteRangeRequest{Key: []byte("k")}}},
		},
	}
	calls := rec.of(caucusv1connect.KVTxnProcedure)
	if len(calls) != 1 {
		t.Fatalf("%d txn requests, want 1", len(calls))
	}
	got := proto.Clone(calls[0].msg).(*caucusv1.TxnRequest)
	if got.GetSession().GetClientId() == 0 {
		t.Error("txn carried no session")
	}
	got.Session = nil
	if !proto.Equal(want, got) {
		t.Errorf("txn request:\n%s\nwant:\n%s", prototext.Format(got), prototext.Format(want))
	}
	if !resp.GetSucceeded() || len(resp.GetResponses()) != 2 {
		t.Fatalf("txn succeeded=%v with %d responses, want the success branch's 2", resp.GetSucceeded(), len(resp.GetResponses()))
	}
	if v := resp.GetResponses()[1].GetResponseRange().GetKvs()[0].GetValue(); string(v) != "v2" {
		t.Errorf("get inside the txn saw %q, want the txn's own write v2", v)
	}

	resp, err = c.Txn(ctx).If(Compare(Value("k"), "=", "v")).Then(OpPut("k", "v3")).Else(OpGet("k")).Commit()
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetSucceeded() || string(resp.GetResponses()[0].GetResponseRange().GetKvs()[0].GetValue()) != "v2" {
		t.Errorf("failed compare: succeeded=%v responses=%v, want the else branch reading v2", resp.GetSucceeded(), resp.GetResponses())
	}
}

func TestComparePanicsOnMisuse(t *testing.T) {
	for name, f := range map[string]func(){
		"bad operator":    func() { Compare(Value("k"), "~", "v") },
		"int for value":   func() { Compare(Value("k"), "=", 3) },
		"string for mod":  func() { Compare(ModRevision("k"), "=", "3") },
		"float for lease": func() { Compare(LeaseValue("k"), "=", 1.5) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: Compare did not panic", name)
				}
			}()
			f()
		}()
	}
}

func TestLeases(t *testing.T) {
	fc := clienttest.NewCluster(t, 1)
	c := newClient(t, Config{Endpoints: fc.Endpoints()})
	ctx := context.Background()

	g, err := c.Grant(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "eph", "v", WithLease(g.GetId())); err != nil {
		t.Fatal(err)
	}
	ttl, err := c.TimeToLive(ctx, g.GetId(), WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	if ttl.GetGrantedTtl() != 1 || len(ttl.GetKeys()) != 1 || string(ttl.GetKeys()[0]) != "eph" {
		t.Errorf("TimeToLive = %v, want granted 1 with key eph", ttl)
	}
	list, err := c.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetIds()) != 1 || list.GetIds()[0] != g.GetId() {
		t.Errorf("Leases = %v, want [%x]", list.GetIds(), g.GetId())
	}

	kctx, cancel := context.WithCancel(ctx)
	ch, err := c.KeepAlive(kctx, g.GetId())
	if err != nil {
		t.Fatal(err)
	}
	// The first renewal is immediate, the next ones come every ttl/3.
	for i := range 3 {
		resp, ok := <-ch
		if !ok {
			t.Fatalf("keep-alive channel closed after %d renewals", i)
		}
		if resp.GetId() != g.GetId() || resp.GetTtl() != 1 {
			t.Errorf("renewal %d = %v", i, resp)
		}
	}
	cancel()
	for range ch { // drains a renewal that raced with cancel, then sees the close
	}

	ch, err = c.KeepAlive(ctx, g.GetId())
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	if !fc.ExpireLease(g.GetId()) {
		t.Fatal("lease vanished before ExpireLease")
	}
	for range ch { // the loop must notice the lease is gone and close the channel
	}
	if _, err := c.KeepAliveOnce(ctx, g.GetId()); !errors.Is(err, ErrLeaseNotFound) || !IsNotFound(err) {
		t.Errorf("KeepAliveOnce of an expired lease: %v, want ErrLeaseNotFound", err)
	}
	if _, err := c.KeepAlive(ctx, g.GetId()); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("KeepAlive of an expired lease: %v, want ErrLeaseNotFound", err)
	}
	if got, err := c.Get(ctx, "eph"); err != nil || len(got.GetKvs()) != 0 {
		t.Errorf("key of the expired lease: %v, %v; want deleted", got.GetKvs(), err)
	}
}

func TestRevokeAfterAmbiguousAttempt(t *testing.T) {
	fc := clienttest.NewCluster(t, 2)
	var attempts atomic.Int64
	fc.SetInterceptor(func(ctx context.Context, m *clienttest.Member, proc string, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
		if proc == caucusv1connect.LeaseLeaseRevokeProcedure && attempts.Add(1) == 1 {
			if _, err := next(ctx, req); err != nil {
				return nil, err
			}
			return nil, connect.NewError(connect.CodeUnavailable, errors.New("no quorum"))
		}
		return next(ctx, req)
	})
	c := newClient(t, Config{Endpoints: fc.Endpoints()})
	ctx := context.Background()
	g, err := c.Grant(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Revoke(ctx, g.GetId()); err != nil {
		t.Fatalf("Revoke whose first attempt applied: %v", err)
	}
	if attempts.Load() != 2 {
		t.Errorf("%d revoke attempts, want 2", attempts.Load())
	}
	if _, err := c.Revoke(ctx, g.GetId()); !IsNotFound(err) {
		t.Errorf("second Revoke: %v, want not found", err)
	}
}

func TestWritesPreferLeader(t *testing.T) {
	fc := clienttest.NewCluster(t, 3)
	var rec recorder
	fc.SetInterceptor(rec.intercept)
	fc.SetLeader(fc.Members[1].ID)
	c := newClient(t, Config{Endpoints: fc.Endpoints()})
	ctx := context.Background()
	if err := c.refreshLeader(ctx); err != nil {
		t.Fatalf("refreshLeader: %v", err)
	}
	for i := range 3 {
		if _, err := c.Put(ctx, "k", "v"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(ctx, fmt.Sprintf("k%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, cl := range rec.of(caucusv1connect.KVPutProcedure) {
		if cl.member != fc.Members[1].ID {
			t.Errorf("write served by %x, want the leader %x", cl.member, fc.Members[1].ID)
		}
	}
	readers := make(map[uint64]bool)
	for _, cl := range rec.of(caucusv1connect.KVRangeProcedure) {
		readers[cl.member] = true
	}
	if len(readers) != 3 {
		t.Errorf("3 reads were served by %d members, want round-robin over all 3", len(readers))
	}

	// After a leader change, MoveLeader refreshes the client's view.
	if _, err := c.MoveLeader(ctx, fc.Members[2].ID); err != nil {
		t.Fatal(err)
	}
	if err := c.refreshLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.leader.Load(); got != 2 {
		t.Errorf("leader endpoint index = %d, want 2", got)
	}
}

func TestMembersAndStatus(t *testing.T) {
	fc := clienttest.NewCluster(t, 2)
	c := newClient(t, Config{Endpoints: fc.Endpoints()})
	ctx := context.Background()

	add, err := c.MemberAddLearner(ctx, "new", []string{"http://10.0.0.9:2380"})
	if err != nil {
		t.Fatal(err)
	}
	if !add.GetMember().GetIsLearner() || len(add.GetMembers()) != 3 {
		t.Errorf("MemberAddLearner = %v", add)
	}
	if _, err := c.MemberPromote(ctx, add.GetMember().GetId()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MemberPromote(ctx, add.GetMember().GetId()); !IsFailedPrecondition(err) {
		t.Errorf("promoting a voter: %v, want failed precondition", err)
	}
	if _, err := c.MemberRemove(ctx, add.GetMember().GetId()); err != nil {
		t.Fatal(err)
	}
	list, err := c.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetMembers()) != 2 {
		t.Errorf("MemberList after remove has %d members, want 2", len(list.GetMembers()))
	}

	st, err := c.Status(ctx, fc.Members[1].URL)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetHeader().GetMemberId() != fc.Members[1].ID || st.GetLeader() != fc.Members[0].ID {
		t.Errorf("Status = %v", st)
	}
	fc.Members[1].Stop()
	if _, err := c.Status(ctx, fc.Members[1].URL); !IsUnavailable(err) {
		t.Errorf("Status of a stopped member: %v, want unavailable (no failover for Status)", err)
	}
}

func TestSnapshotSave(t *testing.T) {
	fc := clienttest.NewCluster(t, 2)
	fc.Members[0].Stop()
	c := newClient(t, Config{Endpoints: fc.Endpoints()})
	ctx := context.Background()
	for i := range 20 {
		if _, err := c.Put(ctx, fmt.Sprintf("key-%02d", i), "some value"); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	n, err := c.SnapshotSave(ctx, &buf)
	if err != nil {
		t.Fatalf("SnapshotSave: %v", err)
	}
	want := fc.Snapshot()
	if n != int64(len(want)) || !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("snapshot: %d bytes written, %d in buffer, want %d identical bytes", n, buf.Len(), len(want))
	}
}

func TestConfigAndClose(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrNoEndpoints) {
		t.Errorf("New without endpoints: %v, want ErrNoEndpoints", err)
	}
	if _, err := New(Config{Endpoints: []string{"ftp://x"}}); err == nil {
		t.Error("New accepted an ftp endpoint")
	}
	fc := clienttest.NewCluster(t, 1)
	host := fc.Endpoints()[0][len("http://"):]
	c := newClient(t, Config{Endpoints: []string{host, fc.Endpoints()[0] + "/"}})
	if got := c.Endpoints(); len(got) != 1 || got[0] != fc.Endpoints()[0] {
		t.Errorf("Endpoints() = %v, want the one normalized URL", got)
	}
	if _, err := c.Put(context.Background(), "k", "v"); err != nil {
		t.Fatalf("Put via a bare host:port endpoint: %v", err)
	}
	c.Close()
	if _, err := c.Get(context.Background(), "k"); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
}

func TestFailoverFromSilentMember(t *testing.T) {
	fc := clienttest.NewCluster(t, 2)
	silent := fc.Members[0].ID
	fc.SetInterceptor(func(ctx context.Context, m *clienttest.Member, proc string, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
		if m.ID == silent && proc == caucusv1connect.KVRangeProcedure {
			<-ctx.Done() // accepted the request, never answers
			return nil, ctx.Err()
		}
		return next(ctx, req)
	})
	const timeout = 3 * time.Second
	c := newClient(t, Config{Endpoints: fc.Endpoints(), RequestTimeout: timeout})
	// Round-robin alternates the first endpoint, so one of two reads starts at the silent
	// member and must still be answered by the other one within its deadline.
	start := time.Now()
	for i := range 2 {
		if _, err := c.Get(context.Background(), "k"); err != nil {
			t.Fatalf("Get %d: %v", i, err)
		}
	}
	if elapsed := time.Since(start); elapsed >= timeout {
		t.Errorf("reads took %v: the silent member consumed the whole deadline", elapsed)
	}
}

func TestCloseAbortsCallsInFlight(t *testing.T) {
	fc := clienttest.NewCluster(t, 1)
	arrived := make(chan struct{}, 1)
	fc.SetInterceptor(func(ctx context.Context, m *clienttest.Member, proc string, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
		if proc == caucusv1connect.KVRangeProcedure {
			arrived <- struct{}{}
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return next(ctx, req)
	})
	c, err := New(Config{Endpoints: fc.Endpoints(), RequestTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Get(context.Background(), "k")
		done <- err
	}()
	<-arrived
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Get in flight at Close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second): // a bound on a hang, not synchronization
		t.Fatal("Get still blocked 10s after Close")
	}
}
