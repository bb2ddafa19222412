package check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/internal/check/history"
	"github.com/caucus/caucus/internal/check/model"
)

// env is what workloads share: the recorder, one KV client per endpoint, the key prefix of this
// run (so that runs against a long-lived cluster never see each other's keys) and the timeouts.
type env struct {
	rec    *history.Recorder
	eps    []endpoint
	prefix string
	// opTimeout bounds one attempt; writeBudget bounds all retries of one write.
	opTimeout   time.Duration
	writeBudget time.Duration
	counter     atomic.Int64 // unique values and elements
}

type endpoint struct {
	url       string
	kv        caucusv1connect.KVClient
	events    caucusv1connect.EventsClient
	consumers caucusv1connect.ConsumersClient
}

func newEnv(httpc *http.Client, urls []string, prefix string, opTimeout time.Duration) *env {
	e := &env{rec: history.New(), prefix: prefix, opTimeout: opTimeout, writeBudget: 5 * opTimeout}
	for _, u := range urls {
		e.eps = append(e.eps, endpoint{url: u, kv: caucusv1connect.NewKVClient(httpc, u),
			events: caucusv1connect.NewEventsClient(httpc, u), consumers: caucusv1connect.NewConsumersClient(httpc, u)})
	}
	return e
}

// worker is one client thread. It has at most one operation in flight, its own session for
// exactly-once retries, and its own random source (seeded from the run seed: the operation mix
// is repeatable even though the cluster's answers are not).
type worker struct {
	id      int
	process int
	session uint64
	seq     uint64
	next    int
	rng     *rand.Rand
	// seen is the last value this worker read per register key, to aim its cas operations at
	// values that are likely current.
	seen map[string]string
}

func (e *env) newWorker(id int, seed uint64) *worker {
	w := &worker{id: id, next: id, rng: rand.New(rand.NewPCG(seed, uint64(id))), seen: map[string]string{}}
	w.crash(e)
	return w
}

// crash gives the worker a fresh process id and session after an operation whose outcome is
// unknown: the old process never saw its operation return (see package history), and the old
// session may still have that write in flight, so it must not be reused.
func (w *worker) crash(e *env) {
	w.process = e.rec.NewProcess()
	w.session = w.rng.Uint64() | 1
	w.seq = 0
}

func (w *worker) endpoint(e *env) endpoint {
	ep := e.eps[w.next%len(e.eps)]
	w.next++
	return ep
}

// neverSent reports whether err proves the request did not reach a server: the connection was
// never established. Only such errors make a write a definite failure.
func neverSent(err error) bool {
	if connect.IsWireError(err) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// write performs one write with exactly-once retries: every attempt carries the same session
// sequence, so the server applies it at most once and answers retries with the first result.
// Attempts rotate over endpoints until one answers or the write budget runs out. Outcome:
// OK with the answer; Fail if no attempt could have reached a server (or the server rejected
// the request as malformed); otherwise Unknown, and the worker crashes to a new process.
func (e *env) write(ctx context.Context, w *worker, input any, do func(ctx context.Context, kv caucusv1connect.KVClient, s *caucusv1.Session) (any, error)) (any, history.Status) {
	return e.writeOn(ctx, w, input, func(ctx context.Context, ep endpoint, s *caucusv1.Session) (any, error) { return do(ctx, ep.kv, s) })
}

// writeOn is write for requests of any service of the endpoint.
func (e *env) writeOn(ctx context.Context, w *worker, input any, do func(ctx context.Context, ep endpoint, s *caucusv1.Session) (any, error)) (any, history.Status) {
	w.seq++
	sess := &caucusv1.Session{ClientId: w.session, Sequence: w.seq}
	ep := w.endpoint(e)
	op := e.rec.Invoke(w.process, ep.url, input)
	deadline := time.Now().Add(e.writeBudget)
	sent := false
	var last error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			ep = w.endpoint(e)
		}
		actx, cancel := context.WithTimeout(ctx, e.opTimeout)
		out, err := do(actx, ep, sess)
		cancel()
		if err == nil {
			e.rec.Complete(op, history.OK, out, nil)
			return out, history.OK
		}
		last = fmt.Errorf("%s: %w", ep.url, err)
		if connect.CodeOf(err) == connect.CodeInvalidArgument {
			// A malformed request is rejected before it is proposed; retrying cannot help.
			e.rec.Complete(op, history.Fail, nil, last)
			return nil, history.Fail
		}
		if c := connect.CodeOf(err); c == connect.CodeFailedPrecondition || c == connect.CodeResourceExhausted {
			// The server refused the session (forgotten, stale, or the table is full): this
			// attempt applied nothing, and no retry under the same session can succeed. The
			// outcome rests on the earlier attempts.
			break
		}
		if !neverSent(err) {
			sent = true
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
		// Pace retries against a cluster that is electing: this bounds load, it synchronizes
		// nothing.
		pause(ctx, 50*time.Millisecond)
	}
	if !sent {
		e.rec.Complete(op, history.Fail, nil, last)
		return nil, history.Fail
	}
	e.rec.Complete(op, history.Unknown, nil, last)
	w.crash(e)
	return nil, history.Unknown
}

// read performs one read attempt. Reads change nothing, so a failed read is simply recorded as
// Fail (checkers drop it) and the worker keeps its process.
func (e *env) read(ctx context.Context, w *worker, input any, do func(ctx context.Context, kv caucusv1connect.KVClient) (any, error)) (any, bool) {
	return e.readOn(ctx, w, input, func(ctx context.Context, ep endpoint) (any, error) { return do(ctx, ep.kv) })
}

// readOn is read for requests of any service of the endpoint.
func (e *env) readOn(ctx context.Context, w *worker, input any, do func(ctx context.Context, ep endpoint) (any, error)) (any, bool) {
	ep := w.endpoint(e)
	op := e.rec.Invoke(w.process, ep.url, input)
	actx, cancel := context.WithTimeout(ctx, e.opTimeout)
	out, err := do(actx, ep)
	cancel()
	if err != nil {
		e.rec.Complete(op, history.Fail, nil, fmt.Errorf("%s: %w", ep.url, err))
		return nil, false
	}
	e.rec.Complete(op, history.OK, out, nil)
	return out, true
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func consistency(serializable bool) caucusv1.Consistency {
	if serializable {
		return caucusv1.Consistency_CONSISTENCY_SERIALIZABLE
	}
	return caucusv1.Consistency_CONSISTENCY_LINEARIZABLE_UNSPECIFIED
}

// prefixEnd is the range_end covering every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

// rangePrefix reads every key under prefix at one revision: the first page at the latest
// revision with the requested consistency, later pages (if the server's limit cut the answer)
// pinned to the first page's revision, so the result is one consistent snapshot.
func rangePrefix(ctx context.Context, kv caucusv1connect.KVClient, prefix string, serializable bool) ([]*caucusv1.KeyValue, int64, error) {
	key, end := []byte(prefix), prefixEnd([]byte(prefix))
	var kvs []*caucusv1.KeyValue
	var rev int64
	for {
		resp, err := kv.Range(ctx, connect.NewRequest(&caucusv1.RangeRequest{Key: key, RangeEnd: end, Revision: rev, Consistency: consistency(serializable)}))
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.Msg.GetHeader().GetRevision()
		}
		kvs = append(kvs, resp.Msg.Kvs...)
		if !resp.Msg.More || len(resp.Msg.Kvs) == 0 {
			return kvs, rev, nil
		}
		key = append(bytes.Clone(resp.Msg.Kvs[len(resp.Msg.Kvs)-1].Key), 0)
	}
}

// workload generates operations and checks the history they produce.
type workload interface {
	name() string
	setup(ctx context.Context, e *env) error
	// step performs one operation for w.
	step(ctx context.Context, e *env, w *worker)
	// final performs the closing reads after every fault is healed.
	final(ctx context.Context, e *env, w *worker) error
	check(ops []history.Op, checkTimeout time.Duration) checked
}

// checked is a workload's verdict plus an optional porcupine visualization.
type checked struct {
	model.Result
	visualize func(path string) error
}

// retryFinal repeats f until it succeeds or ctx ends: the final reads are what lost-update
// checks hinge on, so they are worth waiting for a recovering cluster.
func retryFinal(ctx context.Context, what string, f func() bool) error {
	for !f() {
		if ctx.Err() != nil {
			return fmt.Errorf("check: final %s never succeeded: %w", what, ctx.Err())
		}
		pause(ctx, 200*time.Millisecond)
	}
	return nil
}

// --- register ---

type registerWorkload struct {
	keys int
}

func (r *registerWorkload) name() string { return "register" }

func (r *registerWorkload) key(e *env, k string) []byte { return []byte(e.prefix + "reg/" + k) }

func (r *registerWorkload) setup(context.Context, *env) error { return nil }

func (r *registerWorkload) readKey(ctx context.Context, e *env, w *worker, k string, serializable bool) {
	in := model.RegisterInput{Kind: model.RegRead, Key: k, Serializable: serializable}
	out, ok := e.read(ctx, w, in, func(ctx context.Context, kv caucusv1connect.KVClient) (any, error) {
		resp, err := kv.Range(ctx, connect.NewRequest(&caucusv1.RangeRequest{Key: r.key(e, k), Consistency: consistency(serializable)}))
		if err != nil {
			return nil, err
		}
		var o model.RegisterOutput
		if len(resp.Msg.Kvs) > 0 {
			o.Value = string(resp.Msg.Kvs[0].Value)
		}
		return o, nil
	})
	if ok {
		w.seen[k] = out.(model.RegisterOutput).Value
	}
}

func (r *registerWorkload) step(ctx context.Context, e *env, w *worker) {
	k := "k" + strconv.Itoa(w.rng.IntN(r.keys))
	switch x := w.rng.Float64(); {
	case x < 0.5:
		r.readKey(ctx, e, w, k, w.rng.Float64() < 0.2)
	case x < 0.75:
		v := strconv.FormatInt(e.counter.Add(1), 10)
		in := model.RegisterInput{Kind: model.RegWrite, Key: k, Value: v}
		e.write(ctx, w, in, func(ctx context.Context, kv caucusv1connect.KVClient, s *caucusv1.Session) (any, error) {
			_, err := kv.Put(ctx, connect.NewRequest(&caucusv1.PutRequest{Key: r.key(e, k), Value: []byte(v), Session: s}))
			return model.RegisterOutput{}, err
		})
	default:
		v := strconv.FormatInt(e.counter.Add(1), 10)
		expect := w.seen[k]
		in := model.RegisterInput{Kind: model.RegCAS, Key: k, Value: v, Expect: expect}
		cmp := &caucusv1.Compare{Result: caucusv1.Compare_EQUAL, Target: caucusv1.Compare_VALUE, Key: r.key(e, k),
			TargetUnion: &caucusv1.Compare_Value{Value: []byte(expect)}}
		if expect == "" {
			// "" is the absent key: compare its version with 0 (a value compare on a missing
			// key fails).
			cmp = &caucusv1.Compare{Result: caucusv1.Compare_EQUAL, Target: caucusv1.Compare_VERSION, Key: r.key(e, k),
				TargetUnion: &caucusv1.Compare_Version{Version: 0}}
		}
		e.write(ctx, w, in, func(ctx context.Context, kv caucusv1connect.KVClient, s *caucusv1.Session) (any, error) {
			resp, err := kv.Txn(ctx, connect.NewRequest(&caucusv1.TxnRequest{
				Compare: []*caucusv1.Compare{cmp},
				Success: []*caucusv1.RequestOp{{Request: &caucusv1.RequestOp_RequestPut{RequestPut: &caucusv1.PutRequest{Key: r.key(e, k), Value: []byte(v)}}}},
				Session: s,
			}))
			if err != nil {
				return nil, err
			}
			return model.RegisterOutput{Succeeded: resp.Msg.Succeeded}, nil
		})
	}
}

func (r *registerWorkload) final(ctx context.Context, e *env, w *worker) error {
	for i := 0; i < r.keys; i++ {
		k := "k" + strconv.Itoa(i)
		if err := retryFinal(ctx, "read of "+k, func() bool {
			_, ok := e.read(ctx, w, model.RegisterInput{Kind: model.RegRead, Key: k}, func(ctx context.Context, kv caucusv1connect.KVClient) (any, error) {
				resp, err := kv.Range(ctx, connect.NewRequest(&caucusv1.RangeRequest{Key: r.key(e, k)}))
				if err != nil {
					return nil, err
				}
				var o model.RegisterOutput
				if len(resp.Msg.Kvs) > 0 {
					o.Value = string(resp.Msg.Kvs[0].Value)
				}
				return o, nil
			})
			return ok
		}); err != nil {
			return err
		}
	}
	return nil
}

func (r *registerWorkload) check(ops []history.Op, timeout time.Duration) checked {
	c := model.CheckRegister(ops, timeout)
	return checked{Result: c.Result, visualize: c.Visualize}
}

// --- set ---

type setWorkload struct{}

func (setWorkload) name() string                      { return "set" }
func (setWorkload) setup(context.Context, *env) error { return nil }

func (setWorkload) readSet(ctx context.Context, e *env, w *worker, in model.SetRead) bool {
	_, ok := e.read(ctx, w, in, func(ctx context.Context, kv caucusv1connect.KVClient) (any, error) {
		kvs, _, err := rangePrefix(ctx, kv, e.prefix+"set/", in.Serializable)
		if err != nil {
			return nil, err
		}
		out := model.SetReadResult{Elements: []int{}}
		for _, p := range kvs {
			el, err := strconv.Atoi(strings.TrimPrefix(string(p.Key), e.prefix+"set/"))
			if err != nil {
				return nil, fmt.Errorf("check: foreign key %q under the set prefix: %w", p.Key, err)
			}
			out.Elements = append(out.Elements, el)
		}
		return out, nil
	})
	return ok
}

func (s setWorkload) step(ctx context.Context, e *env, w *worker) {
	if w.rng.Float64() < 0.1 {
		s.readSet(ctx, e, w, model.SetRead{Serializable: w.rng.Float64() < 0.5})
		return
	}
	el := int(e.counter.Add(1))
	key := []byte(fmt.Sprintf("%sset/%09d", e.prefix, el))
	e.write(ctx, w, model.SetAdd{Element: el}, func(ctx context.Context, kv caucusv1connect.KVClient, sess *caucusv1.Session) (any, error) {
		_, err := kv.Put(ctx, connect.NewRequest(&caucusv1.PutRequest{Key: key, Value: []byte(strconv.Itoa(el)), Session: sess}))
		return nil, err
	})
}

func (s setWorkload) final(ctx context.Context, e *env, w *worker) error {
	return retryFinal(ctx, "set read", func() bool { return s.readSet(ctx, e, w, model.SetRead{Final: true}) })
}

func (setWorkload) check(ops []history.Op, _ time.Duration) checked {
	return checked{Result: model.CheckSet(ops)}
}

// --- bank ---

type bankWorkload struct {
	accounts int
	initial  int64
}

func (b *bankWorkload) name() string { return "bank" }
func (b *bankWorkload) total() int64 { return int64(b.accounts) * b.initial }
func (b *bankWorkload) key(e *env, a int) []byte {
	return []byte(fmt.Sprintf("%sbank/%04d", e.prefix, a))
}

// setup creates every account atomically, once: the compare on the first account's version
// makes a repeated setup (after an unknown outcome) a no-op.
func (b *bankWorkload) setup(ctx context.Context, e *env) error {
	var puts []*caucusv1.RequestOp
	for a := 0; a < b.accounts; a++ {
		puts = append(puts, &caucusv1.RequestOp{Request: &caucusv1.RequestOp_RequestPut{RequestPut: &caucusv1.PutRequest{
			Key: b.key(e, a), Value: []byte(strconv.FormatInt(b.initial, 10))}}})
	}
	var last error
	for _, ep := range append(e.eps, e.eps...) {
		actx, cancel := context.WithTimeout(ctx, 3*e.opTimeout)
		_, err := ep.kv.Txn(actx, connect.NewRequest(&caucusv1.TxnRequest{
			Compare: []*caucusv1.Compare{{Result: caucusv1.Compare_EQUAL, Target: caucusv1.Compare_VERSION, Key: b.key(e, 0),
				TargetUnion: &caucusv1.Compare_Version{Version: 0}}},
			Success: puts,
		}))
		cancel()
		if err == nil {
			return nil
		}
		last = err
	}
	return fmt.Errorf("check: bank setup: %w", last)
}

func (b *bankWorkload) readAll(ctx context.Context, e *env, w *worker, serializable bool) (model.BankReadResult, map[int]int64, bool) {
	mods := map[int]int64{}
	out, ok := e.read(ctx, w, model.BankRead{Serializable: serializable}, func(ctx context.Context, kv caucusv1connect.KVClient) (any, error) {
		kvs, rev, err := rangePrefix(ctx, kv, e.prefix+"bank/", serializable)
		if err != nil {
			return nil, err
		}
		res := model.BankReadResult{Balances: map[int]int64{}, Revision: rev}
		for _, p := range kvs {
			a, err1 := strconv.Atoi(strings.TrimPrefix(string(p.Key), e.prefix+"bank/"))
			bal, err2 := strconv.ParseInt(string(p.Value), 10, 64)
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("check: bad account %q=%q: %w", p.Key, p.Value, err)
			}
			res.Balances[a] = bal
			mods[a] = p.ModRevision
		}
		return res, nil
	})
	if !ok {
		return model.BankReadResult{}, nil, false
	}
	return out.(model.BankReadResult), mods, true
}

func (b *bankWorkload) step(ctx context.Context, e *env, w *worker) {
	if w.rng.Float64() < 0.5 {
		b.readAll(ctx, e, w, w.rng.Float64() < 0.2)
		return
	}
	// A transfer reads (serializable: the mod-revision compares reject anything stale) and then
	// commits only if neither account changed since.
	snap, mods, ok := b.readAll(ctx, e, w, true)
	if !ok || len(snap.Balances) != b.accounts {
		return
	}
	from, to := w.rng.IntN(b.accounts), w.rng.IntN(b.accounts-1)
	if to >= from {
		to++
	}
	if snap.Balances[from] == 0 {
		return
	}
	amount := 1 + w.rng.Int64N(snap.Balances[from])
	cmps := []*caucusv1.Compare{
		{Result: caucusv1.Compare_EQUAL, Target: caucusv1.Compare_MOD, Key: b.key(e, from), TargetUnion: &caucusv1.Compare_ModRevision{ModRevision: mods[from]}},
		{Result: caucusv1.Compare_EQUAL, Target: caucusv1.Compare_MOD, Key: b.key(e, to), TargetUnion: &caucusv1.Compare_ModRevision{ModRevision: mods[to]}},
	}
	put := func(a int, v int64) *caucusv1.RequestOp {
		return &caucusv1.RequestOp{Request: &caucusv1.RequestOp_RequestPut{RequestPut: &caucusv1.PutRequest{Key: b.key(e, a), Value: []byte(strconv.FormatInt(v, 10))}}}
	}
	in := model.BankTransfer{From: from, To: to, Amount: amount}
	e.write(ctx, w, in, func(ctx context.Context, kv caucusv1connect.KVClient, s *caucusv1.Session) (any, error) {
		resp, err := kv.Txn(ctx, connect.NewRequest(&caucusv1.TxnRequest{
			Compare: cmps,
			Success: []*caucusv1.RequestOp{put(from, snap.Balances[from]-amount), put(to, snap.Balances[to]+amount)},
			Session: s,
		}))
		if err != nil {
			return nil, err
		}
		return model.BankTransferResult{Succeeded: resp.Msg.Succeeded}, nil
	})
}

func (b *bankWorkload) final(ctx context.Context, e *env, w *worker) error {
	return retryFinal(ctx, "bank read", func() bool { _, _, ok := b.readAll(ctx, e, w, false); return ok })
}

func (b *bankWorkload) check(ops []history.Op, _ time.Duration) checked {
	return checked{Result: model.CheckBank(ops, b.accounts, b.total())}
}
