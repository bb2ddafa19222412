package client

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// Response types are the API's messages; the aliases name them after the client methods.
type (
	PutResponse     = caucusv1.PutResponse
	GetResponse     = caucusv1.RangeResponse
	DeleteResponse  = caucusv1.DeleteRangeResponse
	TxnResponse     = caucusv1.TxnResponse
	CompactResponse = caucusv1.CompactionResponse
	KeyValue        = caucusv1.KeyValue
)

type opType int

const (
	opGet opType = iota + 1
	opPut
	opDelete
	opPublish
	opAck
)

// Op is one key-value operation, for Txn's Then and Else. Build it with OpGet, OpPut, OpDelete.
type Op struct {
	typ      opType
	key      []byte
	end      []byte
	value    []byte
	lease    int64
	prevKV   bool
	limit    int64
	rev      int64
	serial   bool
	keysOnly bool
	count    bool
	prefix   bool
	fromKey  bool
	events   []*caucusv1.Event
	ack      *caucusv1.AckRequest
	topics   []string // Watch
	progress bool     // Watch
}

// OpOption modifies an Op (and so a Get, Put or Delete).
type OpOption func(*Op)

// WithPrefix makes the operation cover every key starting with the key. An empty key with
// WithPrefix covers all keys.
func WithPrefix() OpOption { return func(op *Op) { op.prefix = true } }

// WithRange makes the operation cover the half-open range [key, end).
func WithRange(end string) OpOption { return func(op *Op) { op.end = []byte(end) } }

// WithFromKey makes the operation cover every key >= the key.
func WithFromKey() OpOption { return func(op *Op) { op.fromKey = true } }

// WithLimit bounds the number of keys a Get returns; the response's More tells whether keys
// were left out.
func WithLimit(n int64) OpOption { return func(op *Op) { op.limit = n } }

// WithRev makes a Get read at a past revision.
func WithRev(rev int64) OpOption { return func(op *Op) { op.rev = rev } }

// WithSerializable makes a Get serializable: served by the member from its local state, without
// a quorum round trip. It may be stale, but is never torn.
func WithSerializable() OpOption { return func(op *Op) { op.serial = true } }

// WithKeysOnly makes a Get return keys without values.
func WithKeysOnly() OpOption { return func(op *Op) { op.keysOnly = true } }

// WithCountOnly makes a Get return only the number of keys.
func WithCountOnly() OpOption { return func(op *Op) { op.count = true } }

// WithLease attaches a Put's key to a lease.
func WithLease(id int64) OpOption { return func(op *Op) { op.lease = id } }

// WithPrevKV makes a Put or Delete return the key-values it replaced or deleted.
func WithPrevKV() OpOption { return func(op *Op) { op.prevKV = true } }

// OpGet returns a read of key, for a transaction.
func OpGet(key string, opts ...OpOption) Op { return newOp(opGet, key, "", opts) }

// OpPut returns a write of key, for a transaction.
func OpPut(key, value string, opts ...OpOption) Op { return newOp(opPut, key, value, opts) }

// OpDelete returns a deletion of key, for a transaction.
func OpDelete(key string, opts ...OpOption) Op { return newOp(opDelete, key, "", opts) }

// OpPublish returns a publication of events, for a transaction: they are published if, and
// only if, the branch that holds the op runs.
func OpPublish(events ...*Event) Op { return Op{typ: opPublish, events: events} }

func newOp(t opType, key, value string, opts []OpOption) Op {
	op := Op{typ: t, key: []byte(key)}
	if t == opPut {
		op.value = []byte(value)
	}
	for _, o := range opts {
		o(&op)
	}
	switch {
	case op.prefix:
		if len(op.key) == 0 {
			// Every key: the API's "\0" range end means "all keys >= key", and "\0" is the
			// smallest non-empty key.
			op.key, op.end = []byte{0}, []byte{0}
		} else {
			op.end = PrefixEnd(op.key)
		}
	case op.fromKey:
		if len(op.key) == 0 {
			op.key = []byte{0}
		}
		op.end = []byte{0}
	}
	return op
}

// PrefixEnd returns the smallest key greater than every key starting with prefix, the range end
// that makes [prefix, end) cover exactly the keys with that prefix. For a prefix made only of
// 0xff bytes there is no such key, and it returns "\0" (every key >= prefix).
func PrefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

func (op Op) rangeRequest() *caucusv1.RangeRequest {
	r := &caucusv1.RangeRequest{
		Key: op.key, RangeEnd: op.end, Limit: op.limit, Revision: op.rev,
		KeysOnly: op.keysOnly, CountOnly: op.count,
	}
	if op.serial {
		r.Consistency = caucusv1.Consistency_CONSISTENCY_SERIALIZABLE
	}
	return r
}

func (op Op) putRequest() *caucusv1.PutRequest {
	return &caucusv1.PutRequest{Key: op.key, Value: op.value, Lease: op.lease, PrevKv: op.prevKV, Events: op.events}
}

func (op Op) deleteRequest() *caucusv1.DeleteRangeRequest {
	return &caucusv1.DeleteRangeRequest{Key: op.key, RangeEnd: op.end, PrevKv: op.prevKV, Events: op.events}
}

func (op Op) requestOp() *caucusv1.RequestOp {
	switch op.typ {
	case opGet:
		return &caucusv1.RequestOp{Request: &caucusv1.RequestOp_RequestRange{RequestRange: op.rangeRequest()}}
	case opPut:
		return &caucusv1.RequestOp{Request: &caucusv1.RequestOp_RequestPut{RequestPut: op.putRequest()}}
	case opDelete:
		return &caucusv1.RequestOp{Request: &caucusv1.RequestOp_RequestDeleteRange{RequestDeleteRange: op.deleteRequest()}}
	case opPublish:
		return &caucusv1.RequestOp{Request: &caucusv1.RequestOp_RequestPublish{RequestPublish: &caucusv1.PublishRequest{Events: op.events}}}
	case opAck:
		return &caucusv1.RequestOp{Request: &caucusv1.RequestOp_RequestAck{RequestAck: op.ack}}
	}
	panic(fmt.Sprintf("client: Op of unknown type %d (build Ops with OpGet, OpPut, OpDelete, OpPublish, OpAck)", op.typ))
}

// Put writes value under key, exactly once across retries.
func (c *Client) Put(ctx context.Context, key, value string, opts ...OpOption) (*PutResponse, error) {
	req := newOp(opPut, key, value, opts).putRequest()
	return unaryWrite(ctx, c, "put", func(s *caucusv1.Session) { req.Session = s }, func(ctx context.Context, ep *endpoint) (*connect.Response[PutResponse], error) {
		return ep.kv.Put(ctx, connect.NewRequest(req))
	})
}

// Get reads key, or the range the options select. Reads are linearizable unless
// WithSerializable is given.
func (c *Client) Get(ctx context.Context, key string, opts ...OpOption) (*GetResponse, error) {
	req := newOp(opGet, key, "", opts).rangeRequest()
	return unary(ctx, c, "get", anyEndpoint, retryTransient, func(ctx context.Context, ep *endpoint) (*connect.Response[GetResponse], error) {
		return ep.kv.Range(ctx, connect.NewRequest(req))
	})
}

// Delete removes key, or the range the options select, exactly once across retries.
func (c *Client) Delete(ctx context.Context, key string, opts ...OpOption) (*DeleteResponse, error) {
	req := newOp(opDelete, key, "", opts).deleteRequest()
	return unaryWrite(ctx, c, "delete", func(s *caucusv1.Session) { req.Session = s }, func(ctx context.Context, ep *endpoint) (*connect.Response[DeleteResponse], error) {
		return ep.kv.DeleteRange(ctx, connect.NewRequest(req))
	})
}

// Compact discards the versions of keys older than rev. Reads below rev then fail (IsCompacted).
// Compaction is idempotent, so it is retried like a read.
func (c *Client) Compact(ctx context.Context, rev int64) (*CompactResponse, error) {
	req := &caucusv1.CompactionRequest{Revision: rev}
	return unary(ctx, c, "compact", leaderEndpoint, retryTransient, func(ctx context.Context, ep *endpoint) (*connect.Response[CompactResponse], error) {
		return ep.kv.Compact(ctx, connect.NewRequest(req))
	})
}

// write runs a session write: it takes a lane, stamps the request with the lane's session
// (setSession), and retries attempt with that same session until the call ends, for at most
// MaxWriteRetrySpan.
//
// If the server has forgotten the lane's session (it refuses the sequence as expired), the lane
// is dropped. When every attempt so far was refused or never proposed, no copy of the write can
// still be applied under the old identity, so it is sent again, once, on a fresh lane (new
// client id, sequence 1). Otherwise an earlier attempt may have been applied, and the server can
// no longer deduplicate a retry: the write fails with ErrOutcomeUnknown rather than risk a
// second application under a new identity.
func (c *Client) write(ctx context.Context, op string, setSession func(*caucusv1.Session), attempt func(ctx context.Context, ep *endpoint) error) error {
	span := MaxWriteRetrySpan
	if _, ok := ctx.Deadline(); !ok {
		span = min(span, c.cfg.RequestTimeout)
	}
	ctx, cancel := context.WithTimeout(ctx, span)
	defer cancel()
	l, s := c.lanes.acquire()
	mayBeApplied := false // some attempt of this write may have been applied
	observe := func(ctx context.Context, ep *endpoint) error {
		err := attempt(ctx, ep)
		if err != nil && !provablyNotApplied(err) {
			mayBeApplied = true
		}
		return err
	}
	for moved := false; ; moved = true {
		setSession(s)
		err := c.call(ctx, op, leaderEndpoint, retryTransient, observe)
		switch {
		case err == nil:
			c.lanes.release(l)
			return nil
		case isTooManySessions(err):
			// The lane's session was never opened; its id is not worth keeping.
			c.lanes.drop(l)
			return err
		case !isSessionExpired(err):
			c.lanes.release(l)
			return err
		}
		c.lanes.drop(l)
		if mayBeApplied {
			return fmt.Errorf("%w: %s with client id %x sequence %d: %w", ErrOutcomeUnknown, op, s.GetClientId(), s.GetSequence(), err)
		}
		if moved || ctx.Err() != nil {
			// A fresh lane starts at sequence 1, which the server never refuses as expired; a
			// second refusal means a misbehaving server, and is returned as is.
			return err
		}
		c.log.Debug("caucus client: session expired before the write was applied; moving to a fresh session",
			"op", op, "client_id", s.GetClientId(), "sequence", s.GetSequence())
		l, s = c.lanes.fresh()
	}
}

// Txn starts a transaction on c. Commit sends it.
func (c *Client) Txn(ctx context.Context) *Txn {
	return &Txn{c: c, ctx: ctx}
}

// Txn is a transaction builder: If(compares...).Then(ops...).Else(ops...).Commit(). When every
// compare holds the Then ops are applied, otherwise the Else ops, atomically at one revision.
// A Txn is not safe for concurrent use.
type Txn struct {
	c    *Client
	ctx  context.Context
	cmps []*caucusv1.Compare
	then []*caucusv1.RequestOp
	els  []*caucusv1.RequestOp
}

// If adds compares; all of them must hold for Then to apply.
func (t *Txn) If(cmps ...Cmp) *Txn {
	for _, c := range cmps {
		t.cmps = append(t.cmps, c.proto())
	}
	return t
}

// Then adds the ops applied when the compares hold.
func (t *Txn) Then(ops ...Op) *Txn {
	for _, op := range ops {
		t.then = append(t.then, op.requestOp())
	}
	return t
}

// Else adds the ops applied when a compare fails.
func (t *Txn) Else(ops ...Op) *Txn {
	for _, op := range ops {
		t.els = append(t.els, op.requestOp())
	}
	return t
}

// Request returns the request Commit sends, without its session.
func (t *Txn) Request() *caucusv1.TxnRequest {
	return &caucusv1.TxnRequest{Compare: t.cmps, Success: t.then, Failure: t.els}
}

// Commit sends the transaction, exactly once across retries (a read-only transaction is
// retried the same way: a session costs nothing).
func (t *Txn) Commit() (*TxnResponse, error) {
	req := t.Request()
	return unaryWrite(t.ctx, t.c, "txn", func(s *caucusv1.Session) { req.Session = s }, func(ctx context.Context, ep *endpoint) (*connect.Response[TxnResponse], error) {
		return ep.kv.Txn(ctx, connect.NewRequest(req))
	})
}
