// Package clienttest runs a fake caucus cluster in memory, for tests of code built on package
// client (the client itself, the CLI, applications).
//
// Each fake member serves the real generated connect handlers for the KV, Lease, Cluster and
// Maintenance services over an httptest server (HTTP/1.1 and h2c), and the same services, the
// Snapshot stream included, over caucus's native protocol on the same port (internal/nativeapi,
// what the client speaks by default), so the client's wire path is exercised for real whichever
// protocol it uses. An
// Interceptor sees the requests of both protocols alike. Behind them, all members share one in-memory store guarded by a mutex:
// there is no replication, so every member is always consistent and the fake never loses
// quorum on its own. Failures are injected explicitly: Member.Stop makes a member unreachable,
// and an Interceptor can fail, delay or observe any request. Leases never expire on their own
// (the fake has no clock); ExpireLease expires one.
//
// The store follows the API's documented semantics closely enough for client and CLI tests:
// revisions, versions, ranges and prefixes, limits, reads at past revisions and compaction,
// transactions, leases with attached keys, exactly-once sessions, membership and snapshots.
package clienttest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/internal/nativeapi"
)

// ClusterID is the cluster id in every response header.
const ClusterID uint64 = 0xc1a5c1a5

// Interceptor sees every unary request a member receives. It may return an error without
// calling next (the request is not applied), call next and then return an error (the request is
// applied but its response lost), block, or just observe. procedure is the full connect
// procedure name, e.g. caucusv1connect.KVPutProcedure.
type Interceptor func(ctx context.Context, m *Member, procedure string, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error)

// Cluster is a fake cluster. Its methods are safe for concurrent use.
type Cluster struct {
	// Members are the served members, in creation order.
	Members []*Member

	intercept atomic.Pointer[Interceptor]

	mu        sync.Mutex
	rev       int64
	compacted int64
	history   map[string][]record // per key, oldest first
	leases    map[int64]*lease
	nextLease int64
	sessions  map[uint64]session
	members   []*caucusv1.Member
	nextID    uint64
	leader    uint64
	term      uint64
}

type record struct {
	kv      *caucusv1.KeyValue // nil for a deletion
	rev     int64
	deleted bool
}

type lease struct {
	ttl  int64
	keys map[string]bool
}

type session struct {
	seq  uint64
	resp proto.Message
}

// Member is one fake member with its own URL.
type Member struct {
	ID  uint64
	URL string

	c      *Cluster
	srv    *httptest.Server
	native *nativeapi.Server
}

// NewCluster starts a fake cluster of n members (see Start); t's cleanup stops it.
func NewCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := Start(n)
	t.Cleanup(c.Close)
	return c
}

// Start starts a fake cluster of n members; the first one leads. Close stops it.
func Start(n int) *Cluster {
	c := &Cluster{
		rev:       1,
		history:   make(map[string][]record),
		leases:    make(map[int64]*lease),
		nextLease: 0x7e57_0001,
		sessions:  make(map[uint64]session),
		nextID:    0x8e9e05c52164694d,
		term:      2,
	}
	for i := range n {
		m := &Member{ID: c.newMemberID(), c: c}
		mux := http.NewServeMux()
		opts := connect.WithInterceptors(interceptorFor(m))
		mux.Handle(caucusv1connect.NewKVHandler(&kvService{m: m}, opts))
		mux.Handle(caucusv1connect.NewLeaseHandler(&leaseService{m: m}, opts))
		mux.Handle(caucusv1connect.NewClusterHandler(&clusterService{m: m}, opts))
		mux.Handle(caucusv1connect.NewMaintenanceHandler(&maintenanceService{m: m}, opts))
		m.srv = httptest.NewUnstartedServer(mux)
		m.native = nativeapi.NewServer(nativeapi.ServerConfig{Handlers: nativeapi.Handlers{
			KV:          &kvService{m: m},
			Lease:       &leaseService{m: m},
			Cluster:     &clusterService{m: m},
			Maintenance: &maintenanceService{m: m},
			Intercept:   nativeInterceptorFor(m),
		}})
		m.srv.Listener = nativeapi.Split(m.srv.Listener, m.native, nativeapi.SplitConfig{})
		var protocols http.Protocols
		protocols.SetHTTP1(true)
		protocols.SetUnencryptedHTTP2(true)
		m.srv.Config.Protocols = &protocols
		m.srv.Start()
		m.URL = m.srv.URL
		c.Members = append(c.Members, m)
		c.members = append(c.members, &caucusv1.Member{
			Id:         m.ID,
			Name:       fmt.Sprintf("m%d", i),
			PeerUrls:   []string{fmt.Sprintf("http://127.0.0.1:%d", 12380+i)},
			ClientUrls: []string{m.URL},
		})
	}
	if n > 0 {
		c.leader = c.Members[0].ID
	}
	return c
}

func (c *Cluster) newMemberID() uint64 {
	// A fixed odd step keeps ids distinct, deterministic and etcd-like (full 64-bit hex).
	c.nextID += 0x1d3ea5c6a1b2c3d5
	return c.nextID
}

// Endpoints returns the members' URLs.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.URL)
	}
	return out
}

// SetInterceptor installs f for every member (nil removes it).
func (c *Cluster) SetInterceptor(f Interceptor) {
	if f == nil {
		c.intercept.Store(nil)
		return
	}
	c.intercept.Store(&f)
}

// Close stops every member.
func (c *Cluster) Close() {
	for _, m := range c.Members {
		m.Stop()
	}
}

// Stop makes m unreachable: its listener and every connection close, so calls in flight fail
// and new connections are refused. It is idempotent.
func (m *Member) Stop() {
	m.srv.Close()
	m.native.Close()
}

// SetLeader makes member id the leader reported by Status, in a new term.
func (c *Cluster) SetLeader(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leader = id
	c.term++
}

// Revision returns the current store revision.
func (c *Cluster) Revision() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rev
}

// ExpireLease expires lease id as the leader would: the lease and its keys are deleted. It
// reports whether the lease existed.
func (c *Cluster) ExpireLease(id int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.revokeLocked(id)
}

// Snapshot returns the bytes the Maintenance.Snapshot stream currently sends: the deterministic
// protobuf encoding of a RangeResponse holding every live key.
func (c *Cluster) Snapshot() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := c.rangeLocked(&caucusv1.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}, c.rev)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&caucusv1.RangeResponse{Kvs: all})
	if err != nil {
		panic(fmt.Sprintf("clienttest: marshal snapshot: %v", err)) // cannot fail for valid messages
	}
	return b
}

func interceptorFor(m *Member) connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if f := m.c.intercept.Load(); f != nil {
				return (*f)(ctx, m, req.Spec().Procedure, req, next)
			}
			return next(ctx, req)
		}
	})
}

// nativeInterceptorFor is interceptorFor for the native protocol, which names the procedure
// itself (its requests carry no connect Spec).
func nativeInterceptorFor(m *Member) func(ctx context.Context, procedure string, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
	return func(ctx context.Context, procedure string, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
		if f := m.c.intercept.Load(); f != nil {
			return (*f)(ctx, m, procedure, req, next)
		}
		return next(ctx, req)
	}
}

// header returns a response header as m would send it; c.mu must be held.
func (m *Member) header() *caucusv1.ResponseHeader {
	return &caucusv1.ResponseHeader{
		ClusterId: ClusterID, MemberId: m.ID, Revision: m.c.rev, RaftTerm: m.c.term,
		RaftAppliedIndex: uint64(m.c.rev),
	}
}

// dedup applies a session write once: a retry of the session's last sequence gets the
// remembered response, an older sequence is refused. c.mu must be held.
func (c *Cluster) dedup(s *caucusv1.Session, apply func() (proto.Message, error)) (proto.Message, error) {
	if s.GetClientId() == 0 {
		return apply()
	}
	last, ok := c.sessions[s.GetClientId()]
	switch {
	case ok && s.GetSequence() == last.seq:
		return proto.Clone(last.resp), nil
	case ok && s.GetSequence() < last.seq:
		return nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("stale session sequence %d: last is %d", s.GetSequence(), last.seq))
	}
	resp, err := apply()
	if err != nil {
		return nil, err
	}
	c.sessions[s.GetClientId()] = session{seq: s.GetSequence(), resp: proto.Clone(resp)}
	return resp, nil
}

// inRange reports whether key is selected by (start, end) with the API's range conventions.
func inRange(key, start, end []byte) bool {
	switch {
	case len(end) == 0:
		return bytes.Equal(key, start)
	case bytes.Equal(end, []byte{0}):
		return bytes.Compare(key, start) >= 0
	default:
		return bytes.Compare(key, start) >= 0 && bytes.Compare(key, end) < 0
	}
}

// liveAt returns key's version visible at rev, or nil. c.mu must be held.
func (c *Cluster) liveAt(key string, rev int64) *caucusv1.KeyValue {
	h := c.history[key]
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].rev <= rev {
			if h[i].deleted {
				return nil
			}
			return h[i].kv
		}
	}
	return nil
}

// keysIn returns the sorted keys in the range that are live at rev. c.mu must be held.
func (c *Cluster) keysIn(start, end []byte, rev int64) []string {
	var keys []string
	for k := range c.history {
		if inRange([]byte(k), start, end) && c.liveAt(k, rev) != nil {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func (c *Cluster) rangeLocked(r *caucusv1.RangeRequest, rev int64) []*caucusv1.KeyValue {
	var out []*caucusv1.KeyValue
	for _, k := range c.keysIn(r.GetKey(), r.GetRangeEnd(), rev) {
		kv := proto.Clone(c.liveAt(k, rev)).(*caucusv1.KeyValue)
		if r.GetKeysOnly() {
			kv.Value = nil
		}
		out = append(out, kv)
	}
	return out
}

// doRange serves a range read. c.mu must be held.
func (c *Cluster) doRange(m *Member, r *caucusv1.RangeRequest) (*caucusv1.RangeResponse, error) {
	if err := c.checkRange(r); err != nil {
		return nil, err
	}
	rev := r.GetRevision()
	if rev <= 0 {
		rev = c.rev
	}
	kvs := c.rangeLocked(r, rev)
	resp := &caucusv1.RangeResponse{Header: m.header(), Count: int64(len(kvs))}
	if r.GetLimit() > 0 && int64(len(kvs)) > r.GetLimit() {
		kvs, resp.More = kvs[:r.GetLimit()], true
	}
	if !r.GetCountOnly() {
		resp.Kvs = kvs
	}
	return resp, nil
}

// doPut writes at revision rev (the caller advances c.rev). c.mu must be held.
func (c *Cluster) doPut(m *Member, r *caucusv1.PutRequest, rev int64) (*caucusv1.PutResponse, error) {
	key := string(r.GetKey())
	prev := c.liveAt(key, c.rev)
	kv := &caucusv1.KeyValue{Key: r.GetKey(), Value: r.GetValue(), CreateRevision: rev, ModRevision: rev, Version: 1, Lease: r.GetLease()}
	if prev != nil {
		kv.CreateRevision, kv.Version = prev.CreateRevision, prev.Version+1
		if l := c.leases[prev.Lease]; l != nil {
			delete(l.keys, key)
		}
	}
	if r.GetLease() != 0 {
		c.leases[r.GetLease()].keys[key] = true
	}
	c.history[key] = append(c.history[key], record{kv: kv, rev: rev})
	resp := &caucusv1.PutResponse{Header: m.header()}
	if r.GetPrevKv() && prev != nil {
		resp.PrevKv = proto.Clone(prev).(*caucusv1.KeyValue)
	}
	resp.Header.Revision = rev
	return resp, nil
}

func (c *Cluster) checkRange(r *caucusv1.RangeRequest) error {
	rev := r.GetRevision()
	switch {
	case len(r.GetKey()) == 0:
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("empty key"))
	case rev > c.rev:
		return connect.NewError(connect.CodeOutOfRange, fmt.Errorf("required revision is a future revision"))
	case rev > 0 && rev < c.compacted:
		return connect.NewError(connect.CodeOutOfRange, fmt.Errorf("required revision has been compacted"))
	}
	return nil
}

func (c *Cluster) checkPut(r *caucusv1.PutRequest) error {
	if len(r.GetKey()) == 0 {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("empty key"))
	}
	if r.GetLease() != 0 && c.leases[r.GetLease()] == nil {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("lease %x not found", r.GetLease()))
	}
	return nil
}

// doDelete deletes at revision rev. c.mu must be held.
func (c *Cluster) doDelete(m *Member, r *caucusv1.DeleteRangeRequest, rev int64) *caucusv1.DeleteRangeResponse {
	resp := &caucusv1.DeleteRangeResponse{Header: m.header()}
	for _, k := range c.keysIn(r.GetKey(), r.GetRangeEnd(), c.rev) {
		prev := c.liveAt(k, c.rev)
		if l := c.leases[prev.Lease]; l != nil {
			delete(l.keys, k)
		}
		c.history[k] = append(c.history[k], record{rev: rev, deleted: true})
		resp.Deleted++
		if r.GetPrevKv() {
			resp.PrevKvs = append(resp.PrevKvs, proto.Clone(prev).(*caucusv1.KeyValue))
		}
	}
	resp.Header.Revision = rev
	return resp
}

// revokeLocked deletes lease id and its keys. c.mu must be held.
func (c *Cluster) revokeLocked(id int64) bool {
	l := c.leases[id]
	if l == nil {
		return false
	}
	delete(c.leases, id)
	if len(l.keys) > 0 {
		c.rev++
		for k := range l.keys {
			c.history[k] = append(c.history[k], record{rev: c.rev, deleted: true})
		}
	}
	return true
}

// compare evaluates one transaction compare against the current state. c.mu must be held.
func (c *Cluster) compare(cmp *caucusv1.Compare) bool {
	keys := []string{string(cmp.GetKey())}
	if len(cmp.GetRangeEnd()) > 0 {
		keys = c.keysIn(cmp.GetKey(), cmp.GetRangeEnd(), c.rev)
	}
	for _, k := range keys {
		kv := c.liveAt(k, c.rev)
		if kv == nil {
			kv = &caucusv1.KeyValue{}
		}
		var d int
		switch cmp.GetTarget() {
		case caucusv1.Compare_VALUE:
			if c.liveAt(k, c.rev) == nil {
				return false // a missing key has no value to compare
			}
			d = bytes.Compare(kv.GetValue(), cmp.GetValue())
		case caucusv1.Compare_VERSION:
			d = cmpInt(kv.GetVersion(), cmp.GetVersion())
		case caucusv1.Compare_CREATE:
			d = cmpInt(kv.GetCreateRevision(), cmp.GetCreateRevision())
		case caucusv1.Compare_MOD:
			d = cmpInt(kv.GetModRevision(), cmp.GetModRevision())
		case caucusv1.Compare_LEASE:
			d = cmpInt(kv.GetLease(), cmp.GetLease())
		}
		var ok bool
		switch cmp.GetResult() {
		case caucusv1.Compare_EQUAL:
			ok = d == 0
		case caucusv1.Compare_NOT_EQUAL:
			ok = d != 0
		case caucusv1.Compare_GREATER:
			ok = d > 0
		case caucusv1.Compare_LESS:
			ok = d < 0
		}
		if !ok {
			return false
		}
	}
	return true
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// doTxn applies a transaction; its writes share one new revision. c.mu must be held.
func (c *Cluster) doTxn(m *Member, r *caucusv1.TxnRequest) (*caucusv1.TxnResponse, error) {
	ok := true
	for _, cmp := range r.GetCompare() {
		if !c.compare(cmp) {
			ok = false
			break
		}
	}
	ops := r.GetFailure()
	if ok {
		ops = r.GetSuccess()
	}
	writes := false
	for _, op := range ops {
		// Validate everything before applying anything: a transaction is all or nothing.
		switch x := op.GetRequest().(type) {
		case *caucusv1.RequestOp_RequestRange:
			if err := c.checkRange(x.RequestRange); err != nil {
				return nil, err
			}
		case *caucusv1.RequestOp_RequestPut:
			if err := c.checkPut(x.RequestPut); err != nil {
				return nil, err
			}
			writes = true
		case *caucusv1.RequestOp_RequestDeleteRange:
			writes = true
		}
	}
	// Advance first, so that reads and writes later in the transaction see earlier writes of it.
	rev := c.rev
	if writes {
		rev++
	}
	c.rev = rev
	resp := &caucusv1.TxnResponse{Succeeded: ok}
	for _, op := range ops {
		var out *caucusv1.ResponseOp
		switch x := op.GetRequest().(type) {
		case *caucusv1.RequestOp_RequestRange:
			rr, err := c.doRange(m, x.RequestRange)
			if err != nil {
				return nil, err
			}
			out = &caucusv1.ResponseOp{Response: &caucusv1.ResponseOp_ResponseRange{ResponseRange: rr}}
		case *caucusv1.RequestOp_RequestPut:
			pr, _ := c.doPut(m, x.RequestPut, rev)
			out = &caucusv1.ResponseOp{Response: &caucusv1.ResponseOp_ResponsePut{ResponsePut: pr}}
		case *caucusv1.RequestOp_RequestDeleteRange:
			out = &caucusv1.ResponseOp{Response: &caucusv1.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: c.doDelete(m, x.RequestDeleteRange, rev)}}
		default:
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("empty request op"))
		}
		resp.Responses = append(resp.Responses, out)
	}
	resp.Header = m.header()
	return resp, nil
}
