package kvbench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The event workloads. put-event and idle-watchers are request workloads (Run); watch-latency
// and consumer-latency measure delivery (RunDelivery): every write carries the time its
// producer issued it, and the receiver, in this same process, subtracts it from the time it
// received the write, on one monotonic clock.

// EventKV is a KV whose writes can publish events (caucus).
type EventKV interface {
	// PutEvent puts key=value and publishes one event of topic, with key and payload, in the
	// same write.
	PutEvent(ctx context.Context, key, value, topic string, payload []byte) error
}

// WatchSpec selects what a watch delivers.
type WatchSpec struct {
	Key    string // one key, or with Prefix every key under it
	Prefix bool
	Topic  string // the events of this topic instead of key changes (EventKV systems)
	Rev    int64  // from this revision; 0: from the member's next one
	// Ready asks the watch to report when its member has registered it, so that no write made
	// afterwards can be missed.
	Ready bool
}

// WatchKV is a KV that watches (caucus and etcd).
type WatchKV interface {
	// Revision returns the store's current revision.
	Revision(ctx context.Context) (int64, error)
	// Watch starts a watch that calls fn, from one goroutine and in order, with the value of
	// each key change (or the payload of each event) it delivers. ready is closed once the
	// member registered the watch (spec.Ready only); done receives one value when the watch
	// ended: its error, or nil when ctx ended.
	Watch(ctx context.Context, spec WatchSpec, fn func(data []byte)) (ready <-chan struct{}, done <-chan error)
}

// QueueKV publishes messages and consumes them through a durable consumer: caucus's consumers,
// JetStream's pull consumers.
type QueueKV interface {
	// CreateQueue creates queue's durable consumer, which receives the messages published
	// afterwards.
	CreateQueue(ctx context.Context, queue string) error
	DeleteQueue(ctx context.Context, queue string) error
	// Publish publishes one message to queue and returns once the system acknowledged it.
	Publish(ctx context.Context, queue string, payload []byte) error
	// Consume calls fn with each message of queue's consumer, at most parallel at once (0: the
	// client's default), and acknowledges it when fn returns, until ctx ends; then it returns
	// nil once it stopped.
	Consume(ctx context.Context, queue string, parallel int, fn func(payload []byte)) error
}

// putEventTopic is the topic of put-event's events.
const putEventTopic = "kvbench.put"

var runSeq atomic.Int64

// uniqueID names a run's prefix, topic or queue: fresh for every run of this process, unlikely
// to repeat across processes sharing a cluster, and of letters and digits only (a valid name
// for every system).
func uniqueID() string {
	return strconv.FormatInt(time.Now().UnixNano(), 36) + "x" + strconv.FormatInt(runSeq.Add(1), 36)
}

// stampEpoch is the origin of the issue times carried by delivery workloads' writes.
var stampEpoch = time.Now()

// stampSize is the bytes a write's issue time (ns since stampEpoch) and sequence number take
// at the start of its value or payload.
const stampSize = 16

func putStamp(b []byte, seq uint64) {
	binary.LittleEndian.PutUint64(b, uint64(time.Since(stampEpoch)))
	binary.LittleEndian.PutUint64(b[8:], seq)
}

// collector records the receipts of a delivery run. A write may be received before its
// producer hears it was acknowledged; the run is complete once every acknowledged write was
// received.
//
// Two latencies bracket a write's commit-to-delivery time, since it committed somewhere between
// its issue and its acknowledgement: receipt - issue (lat) is an upper bound, receipt -
// acknowledgement (afterAck, 0 when the receipt came first) a lower bound.
type collector struct {
	mu    sync.Mutex
	state map[uint64]uint8
	// at is, while only one of them happened, the time of a write's acknowledgement or receipt
	// (since stampEpoch).
	at          map[uint64]time.Duration
	afterAck    []time.Duration
	outstanding int // acknowledged and not received
	finished    bool
	done        chan struct{}
	lat         []time.Duration
	dups        int
	foreign     int
	last        time.Duration // last first receipt, since stampEpoch
}

const (
	stAcked uint8 = 1 << iota
	stSeen
)

func newCollector() *collector {
	return &collector{state: map[uint64]uint8{}, at: map[uint64]time.Duration{}, done: make(chan struct{})}
}

func (c *collector) receive(data []byte) {
	now := time.Since(stampEpoch)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(data) < stampSize {
		c.foreign++
		return
	}
	issued := time.Duration(binary.LittleEndian.Uint64(data))
	seq := binary.LittleEndian.Uint64(data[8:])
	st := c.state[seq]
	if st&stSeen != 0 {
		c.dups++
		return
	}
	c.state[seq] = st | stSeen
	c.lat = append(c.lat, now-issued)
	c.last = now
	if st&stAcked != 0 {
		c.afterAck = append(c.afterAck, max(0, now-c.at[seq]))
		delete(c.at, seq)
		c.outstanding--
		c.check()
	} else {
		c.at[seq] = now
	}
}

func (c *collector) acked(seq uint64) {
	now := time.Since(stampEpoch)
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.state[seq]
	c.state[seq] = st | stAcked
	if st&stSeen == 0 {
		c.outstanding++
		c.at[seq] = now
	} else {
		c.afterAck = append(c.afterAck, 0)
		delete(c.at, seq)
	}
}

// finish says that no more writes will be acknowledged.
func (c *collector) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finished = true
	c.check()
}

func (c *collector) check() {
	if c.finished && c.outstanding == 0 {
		select {
		case <-c.done:
		default:
			close(c.done)
		}
	}
}

// SendFunc makes one write of a delivery workload on behalf of producer client: data (the
// value or the payload) starts with the write's stamp; key is a fresh put key the write may use.
type SendFunc func(ctx context.Context, client int, key string, data []byte) error

// ReceiveFunc starts the receiver of a delivery workload, calling fn with each write's data,
// and returns once it is ready to receive (no write made afterwards can be missed). done
// receives one value when the receiver stopped: nil after ctx ended, its error otherwise.
type ReceiveFunc func(ctx context.Context, fn func(data []byte)) (done <-chan error, err error)

// RunDelivery runs a delivery workload: w.Clients producers make w.Requests writes of size
// bytes (or until w.Duration), at most w.Rate per second in all when w.Rate > 0, while recv
// receives them. It waits up to w.Timeout after the last write for every acknowledged write to
// arrive; any that does not is lost, and an error.
func RunDelivery(ctx context.Context, w Workload, size int, send SendFunc, recv ReceiveFunc) (Result, error) {
	if w.Clients <= 0 {
		return Result{}, errors.New("kvbench: need at least one producer")
	}
	if w.Requests <= 0 && w.Duration <= 0 {
		return Result{}, errors.New("kvbench: workload needs Requests or Duration")
	}
	size = max(size, stampSize)
	col := newCollector()
	rctx, cancelRecv := context.WithCancel(ctx)
	defer cancelRecv()
	recvDone, err := recv(rctx, col.receive)
	if err != nil {
		return Result{}, fmt.Errorf("kvbench: %s: start the receiver: %w", w.Name(), err)
	}

	pctx := ctx
	if w.Duration > 0 {
		var cancel context.CancelFunc
		pctx, cancel = context.WithTimeout(ctx, w.Duration)
		defer cancel()
	}
	var (
		issued   atomic.Int64
		failed   atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	lat := make([][]time.Duration, w.Clients)
	start := time.Now()
	for c := range w.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 0x6576))
			keyBuf := make([]byte, max(w.KeySize, 1))
			for pctx.Err() == nil {
				n := issued.Add(1)
				if w.Requests > 0 && n > int64(w.Requests) {
					return
				}
				if w.Rate > 0 {
					// Open loop: the n-th write is due at start + (n-1)/Rate; a producer that
					// falls behind issues at once (its latency counts from then).
					due := start.Add(time.Duration(float64(n-1) / w.Rate * float64(time.Second)))
					if d := time.Until(due); d > 0 {
						t := time.NewTimer(d)
						select {
						case <-t.C:
						case <-pctx.Done():
							t.Stop()
							return
						}
					}
				}
				data := make([]byte, size)
				for i := stampSize; i < size; i++ {
					data[i] = byte('a' + i%26)
				}
				seq := uint64(n)
				sctx, cancel := context.WithTimeout(pctx, w.Timeout)
				t0 := time.Now()
				putStamp(data, seq)
				err := send(sctx, c, putKey(keyBuf, rng.IntN(max(w.KeySpace, 1)), w.KeySize), data)
				d := time.Since(t0)
				cancel()
				if err != nil {
					if pctx.Err() != nil {
						return
					}
					errOnce.Do(func() { firstErr = err })
					if n := failed.Add(1); float64(n) > maxErrorFraction*float64(max(w.Requests, 1000)) {
						return
					}
					continue
				}
				col.acked(seq)
				lat[c] = append(lat[c], d)
			}
		}()
	}
	wg.Wait()
	writesDone := time.Now()
	col.finish()
	var recvErr error
	drain := time.NewTimer(w.Timeout)
	defer drain.Stop()
	select {
	case <-col.done:
	case <-drain.C:
	case <-ctx.Done():
	case err := <-recvDone:
		recvErr = fmt.Errorf("kvbench: %s: the receiver stopped early: %v", w.Name(), err)
		recvDone = nil
	}
	cancelRecv()
	if recvDone != nil {
		if err := <-recvDone; err != nil {
			recvErr = fmt.Errorf("kvbench: %s: the receiver failed: %w", w.Name(), err)
		}
	}

	res := Result{Elapsed: writesDone.Sub(start), Errors: int(failed.Load()), FirstErr: firstErr,
		DeliverDeadline: w.Timeout}
	all := slices.Concat(lat...)
	res.Requests = len(all)
	if len(all) > 0 {
		slices.Sort(all)
		res.P50, res.P99 = percentile(all, 0.50), percentile(all, 0.99)
	}
	col.mu.Lock()
	res.Delivered, res.Duplicates, res.Lost = len(col.lat), col.dups, col.outstanding
	if len(col.lat) > 0 {
		slices.Sort(col.lat)
		res.DeliverP50, res.DeliverP99 = percentile(col.lat, 0.50), percentile(col.lat, 0.99)
		res.DeliverMax = col.lat[len(col.lat)-1]
		res.DeliverElapsed = col.last - start.Sub(stampEpoch)
	}
	if len(col.afterAck) > 0 {
		slices.Sort(col.afterAck)
		res.AfterAckP50, res.AfterAckP99 = percentile(col.afterAck, 0.50), percentile(col.afterAck, 0.99)
	}
	foreign := col.foreign
	col.mu.Unlock()

	var errs []error
	if recvErr != nil {
		errs = append(errs, recvErr)
	}
	if float64(res.Errors) > maxErrorFraction*float64(max(res.Requests+res.Errors, 1)) {
		errs = append(errs, fmt.Errorf("kvbench: %s: %d of %d writes failed, first: %w",
			w.Name(), res.Errors, res.Requests+res.Errors, firstErr))
	}
	if res.Lost > 0 {
		errs = append(errs, fmt.Errorf("kvbench: %s: %d of %d acknowledged writes not received %v after the last write",
			w.Name(), res.Lost, res.Requests, w.Timeout))
	}
	if foreign > 0 {
		errs = append(errs, fmt.Errorf("kvbench: %s: received %d items that no producer wrote", w.Name(), foreign))
	}
	return res, errors.Join(errs...)
}

// RunWatchLatency runs OpWatchLatency: producers write through kvs (their writes go under a
// fresh prefix, or with w.Events publish one event each of a fresh topic) and one watch on
// watcher selects them.
func RunWatchLatency(ctx context.Context, kvs []KV, watcher KV, w Workload) (Result, error) {
	wk, ok := watcher.(WatchKV)
	if !ok || len(kvs) == 0 {
		return Result{}, fmt.Errorf("kvbench: %s: the system cannot watch", w.Name())
	}
	id := uniqueID()
	prefix, topic := "kvbench/watch/"+id+"/", "kvbench.watch."+id
	spec := WatchSpec{Key: prefix, Prefix: true, Ready: true}
	size := w.ValueSize
	var send SendFunc = func(ctx context.Context, c int, key string, data []byte) error {
		return kvs[c%len(kvs)].Put(ctx, prefix+key, string(data))
	}
	if w.Events {
		evs := make([]EventKV, len(kvs))
		for i, kv := range kvs {
			if evs[i], ok = kv.(EventKV); !ok {
				return Result{}, fmt.Errorf("kvbench: %s: the system publishes no events with writes", w.Name())
			}
		}
		spec, size = WatchSpec{Topic: topic, Ready: true}, w.PayloadSize
		value := w.Value()
		send = func(ctx context.Context, c int, key string, data []byte) error {
			return evs[c%len(evs)].PutEvent(ctx, prefix+key, value, topic, data)
		}
	}
	recv := func(ctx context.Context, fn func([]byte)) (<-chan error, error) {
		ready, done := wk.Watch(ctx, spec, fn)
		t := time.NewTimer(w.Timeout)
		defer t.Stop()
		select {
		case <-ready:
			return done, nil
		case err := <-done:
			return nil, fmt.Errorf("watch ended before it started: %v", err)
		case <-t.C:
			return nil, fmt.Errorf("watch not registered after %v", w.Timeout)
		}
	}
	return RunDelivery(ctx, w, size, send, recv)
}

// RunConsumerLatency runs OpConsumerLatency: producers publish through kvs to a fresh queue
// whose consumer consumer consumes.
func RunConsumerLatency(ctx context.Context, kvs []KV, consumer KV, w Workload) (Result, error) {
	qc, ok := consumer.(QueueKV)
	if !ok || len(kvs) == 0 {
		return Result{}, fmt.Errorf("kvbench: %s: the system has no consumers", w.Name())
	}
	qs := make([]QueueKV, len(kvs))
	for i, kv := range kvs {
		if qs[i], ok = kv.(QueueKV); !ok {
			return Result{}, fmt.Errorf("kvbench: %s: the system has no consumers", w.Name())
		}
	}
	queue := "kvbench-" + uniqueID()
	cctx, cancel := context.WithTimeout(ctx, w.Timeout)
	err := qc.CreateQueue(cctx, queue)
	cancel()
	if err != nil {
		return Result{}, fmt.Errorf("kvbench: %s: create the consumer: %w", w.Name(), err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.Timeout)
		defer cancel()
		_ = qc.DeleteQueue(dctx, queue) // the run's result does not depend on the cleanup
	}()
	send := func(ctx context.Context, c int, _ string, data []byte) error {
		return qs[c%len(qs)].Publish(ctx, queue, data)
	}
	recv := func(ctx context.Context, fn func([]byte)) (<-chan error, error) {
		done := make(chan error, 1)
		go func() { done <- qc.Consume(ctx, queue, w.Parallel, fn) }()
		return done, nil
	}
	return RunDelivery(ctx, w, w.PayloadSize, send, recv)
}

// AttachIdleWatchers attaches n watchers, watcher i on conns[i%len(conns)], each on its own
// key that no workload writes. To know that every watch is registered, it starts them from
// the revision after writer's current one, writes each key once, and waits until every
// watcher received its write (or timeout). detach cancels them and waits for them to end.
func AttachIdleWatchers(ctx context.Context, conns []KV, writer KV, n int, timeout time.Duration) (detach func(), err error) {
	if n <= 0 {
		return func() {}, nil
	}
	wr, ok := writer.(WatchKV)
	if !ok || len(conns) == 0 {
		return nil, errors.New("kvbench: idle watchers: the system cannot watch")
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rev, err := wr.Revision(rctx)
	if err != nil {
		return nil, fmt.Errorf("kvbench: idle watchers: %w", err)
	}
	prefix := "kvbench/idle/" + uniqueID() + "/"
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var (
		remaining atomic.Int64
		allSeen   = make(chan struct{})
		failed    = make(chan error, 1)
		ended     sync.WaitGroup
	)
	detach = func() { stop(); ended.Wait() }
	remaining.Store(int64(n))
	for i := range n {
		wk, ok := conns[i%len(conns)].(WatchKV)
		if !ok {
			detach()
			return nil, errors.New("kvbench: idle watchers: the system cannot watch")
		}
		var once sync.Once
		_, done := wk.Watch(wctx, WatchSpec{Key: fmt.Sprintf("%s%05d", prefix, i), Rev: rev + 1}, func([]byte) {
			once.Do(func() {
				if remaining.Add(-1) == 0 {
					close(allSeen)
				}
			})
		})
		ended.Add(1)
		go func() {
			defer ended.Done()
			if err := <-done; err != nil && wctx.Err() == nil {
				select {
				case failed <- fmt.Errorf("kvbench: idle watcher %d: %w", i, err):
				default:
				}
			}
		}()
	}
	// Write each key once, 64 at a time.
	var next atomic.Int64
	var wg sync.WaitGroup
	var werr error
	var werrOnce sync.Once
	for range min(64, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				if err := writer.Put(rctx, fmt.Sprintf("%s%05d", prefix, i), "idle"); err != nil {
					werrOnce.Do(func() { werr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if werr != nil {
		detach()
		return nil, fmt.Errorf("kvbench: idle watchers: write their keys: %w", werr)
	}
	select {
	case <-allSeen:
		return detach, nil
	case err := <-failed:
		detach()
		return nil, err
	case <-rctx.Done():
		detach()
		return nil, fmt.Errorf("kvbench: idle watchers: %d of %d not registered after %v", remaining.Load(), n, timeout)
	}
}
