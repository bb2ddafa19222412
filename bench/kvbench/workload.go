// Package kvbench reproduces etcd's benchmark workloads (tools/benchmark: put, and range of one
// key with linearizable or serializable consistency; 8-byte keys, 256-byte values) against
// three-member clusters of real server processes on loopback, and reports throughput, latency
// percentiles and the servers' CPU time and resident memory.
//
// The package is system-agnostic: a System starts members and makes clients (KV); the workload
// runner only sees KV. Systems provided: etcd (members are this benchmark's own binary running
// etcd's embed package, one process per member), caucus (its real server binary) and NATS (one
// JetStream server in this benchmark's binary, the anchor of the consumer workload).
//
// The event workloads (events.go) use what a system's KV offers beyond KV: events published
// with writes (EventKV), watches (WatchKV), durable consumers (QueueKV).
package kvbench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// KV is the client surface the workloads need.
type KV interface {
	Put(ctx context.Context, key, value string) error
	// Get reads one key; serializable reads may be served from a member's local state.
	Get(ctx context.Context, key string, serializable bool) error
	Close() error
}

// Op is a workload's request type.
type Op string

// The workloads of etcd's benchmark documentation.
const (
	OpPut      Op = "put"
	OpRangeLin Op = "range-lin" // benchmark range KEY --consistency=l
	OpRangeSer Op = "range-ser" // benchmark range KEY --consistency=s
	// OpLoad puts every key of [0, KeySpace) exactly once, in a scattered order (etcd's
	// benchmark put --key-space-size with as many requests as keys): the store ends up holding
	// KeySpace distinct keys, for measuring memory per key. Requests is KeySpace.
	OpLoad Op = "load"

	// The event workloads (events.go).

	// OpPutEvent is OpPut with one event of PayloadSize bytes published by each put, in the
	// same write (systems whose KV implements EventKV).
	OpPutEvent Op = "put-event"
	// OpWatchLatency: Clients producers write under a fresh prefix (at most Rate writes/s in
	// all when Rate > 0) and one watcher on another member receives the changes (or, with
	// Events, the events the writes publish); measures issue-to-receive latency.
	OpWatchLatency Op = "watch-latency"
	// OpConsumerLatency: Clients producers publish events and one consuming client receives
	// them through a durable consumer (QueueKV); measures publish-to-handler latency.
	OpConsumerLatency Op = "consumer-latency"
	// OpIdleWatchers is OpPut measured with IdleWatchers idle watchers attached to the cluster
	// and, as its baseline, without.
	OpIdleWatchers Op = "idle-watchers"
)

// Delivery reports whether op measures the delivery of writes to a receiver (RunDelivery)
// rather than requests.
func (op Op) Delivery() bool { return op == OpWatchLatency || op == OpConsumerLatency }

// loadStride scatters OpLoad's keys: the i-th put writes key i*loadStride mod KeySpace, a
// permutation of [0, KeySpace) when the two are coprime (loadKey falls back to a stride of 1).
const loadStride = 7919

// loadKey is the key number of OpLoad's i-th put.
func loadKey(i, keySpace int) int {
	if keySpace%loadStride == 0 {
		return i % keySpace
	}
	return int(uint64(i) * loadStride % uint64(keySpace))
}

// Workload is one measured run: Clients goroutines, each issuing one request at a time (as
// etcd's benchmark --clients), until Requests are done or Duration elapsed.
type Workload struct {
	Op        Op
	Clients   int
	Requests  int           // total requests; 0 = until Duration
	Duration  time.Duration // upper bound on the run; 0 = until Requests
	KeySize   int           // bytes per key (put); the range key has the same size
	ValueSize int           // bytes per value
	KeySpace  int           // puts pick keys uniformly in [0, KeySpace)
	Timeout   time.Duration // per request

	// The event workloads' parameters.
	PayloadSize  int     // bytes per event payload (put-event, consumer-latency, watch-latency with Events)
	Rate         float64 // delivery workloads: writes per second, all producers together; 0 = as fast as they go
	Events       bool    // watch-latency: writes publish one event each and the watcher selects their topic (EventKV systems)
	Parallel     int     // consumer-latency: handlers the consumer runs at once; 0 = the client's default
	IdleWatchers int     // idle-watchers: watchers attached, spread over the members
}

// Name is how tables label the workload.
func (w Workload) Name() string {
	if w.Op.Delivery() && w.Rate > 0 {
		return fmt.Sprintf("%s/c=%d/r=%.0f", w.Op, w.Clients, w.Rate)
	}
	return fmt.Sprintf("%s/c=%d", w.Op, w.Clients)
}

// RangeKey returns the single key range workloads read (Prepare writes it).
func (w Workload) RangeKey() string { return fixedKey("rangekey", w.KeySize) }

// Value returns the value written by puts and Prepare.
func (w Workload) Value() string {
	b := make([]byte, w.ValueSize)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return string(b)
}

func fixedKey(s string, size int) string {
	for len(s) < size {
		s += "_"
	}
	return s[:size]
}

// putKey formats n as a zero-padded decimal of exactly size bytes (printable, so it is a valid
// key for any API; etcd's tool uses binary keys of the same size).
func putKey(buf []byte, n, size int) string {
	for i := size - 1; i >= 0; i-- {
		buf[i] = byte('0' + n%10)
		n /= 10
	}
	return string(buf[:size])
}

// Prepare writes the key range workloads read.
func Prepare(ctx context.Context, kv KV, w Workload) error {
	return kv.Put(ctx, w.RangeKey(), w.Value())
}

// Result is what one workload run measured on the client side.
type Result struct {
	Requests int           // completed successfully
	Errors   int           // failed requests (not counted in latency or throughput)
	Elapsed  time.Duration // from the first request to the last completion
	P50, P99 time.Duration
	FirstErr error

	// Delivery workloads only: Requests are the writes, P50 and P99 their latencies.
	Delivered      int           // distinct writes received (once each)
	Duplicates     int           // receipts of a write received before
	Lost           int           // acknowledged writes never received within the drain timeout
	DeliverElapsed time.Duration // from the first write issued to the last receipt
	DeliverP50     time.Duration // receive time - issue time
	DeliverP99     time.Duration
	DeliverMax     time.Duration
	// AfterAckP50 and AfterAckP99: receive time - the producer's acknowledgement time, 0 when
	// the receipt came first; with DeliverP50 and DeliverP99 they bracket commit to delivery.
	AfterAckP50, AfterAckP99 time.Duration
	DeliverDeadline          time.Duration // how long the run waited after the last write for stragglers
}

// DeliveredRate is writes received per second (delivery workloads).
func (r Result) DeliveredRate() float64 {
	if r.DeliverElapsed <= 0 {
		return 0
	}
	return float64(r.Delivered) / r.DeliverElapsed.Seconds()
}

// Throughput is successful requests per second.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// maxErrorFraction aborts a run whose requests mostly fail (a dead cluster would otherwise
// produce impressive "throughput" of errors).
const maxErrorFraction = 0.01

// Run executes w with its Clients goroutines spread round-robin over kvs (the connections).
func Run(ctx context.Context, kvs []KV, w Workload) (Result, error) {
	if len(kvs) == 0 || w.Clients <= 0 {
		return Result{}, errors.New("kvbench: need at least one connection and one client")
	}
	if w.Op == OpLoad {
		// Every key once: neither fewer (a time cap) nor more requests.
		w.Requests, w.Duration = max(w.KeySpace, 1), 0
	}
	if w.Requests <= 0 && w.Duration <= 0 {
		return Result{}, errors.New("kvbench: workload needs Requests or Duration")
	}
	if w.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.Duration)
		defer cancel()
	}
	value, rangeKey := w.Value(), w.RangeKey()
	var evs []EventKV
	if w.Op == OpPutEvent {
		for _, kv := range kvs {
			ev, ok := kv.(EventKV)
			if !ok {
				return Result{}, fmt.Errorf("kvbench: %s: the system publishes no events with writes", w.Name())
			}
			evs = append(evs, ev)
		}
	}
	payload := make([]byte, w.PayloadSize)
	for i := range payload {
		payload[i] = byte('A' + i%26)
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
			kv := kvs[c%len(kvs)]
			rng := rand.New(rand.NewPCG(uint64(c), 0x6b76))
			keyBuf := make([]byte, max(w.KeySize, 1))
			if w.Requests > 0 {
				lat[c] = make([]time.Duration, 0, w.Requests/w.Clients+1)
			}
			for ctx.Err() == nil {
				n := issued.Add(1)
				if w.Requests > 0 && n > int64(w.Requests) {
					return
				}
				rctx, cancel := context.WithTimeout(ctx, w.Timeout)
				t0 := time.Now()
				var err error
				switch w.Op {
				case OpPut, OpIdleWatchers:
					err = kv.Put(rctx, putKey(keyBuf, rng.IntN(max(w.KeySpace, 1)), w.KeySize), value)
				case OpPutEvent:
					key := putKey(keyBuf, rng.IntN(max(w.KeySpace, 1)), w.KeySize)
					err = evs[c%len(evs)].PutEvent(rctx, key, value, putEventTopic, payload)
				case OpLoad:
					err = kv.Put(rctx, putKey(keyBuf, loadKey(int(n-1), w.KeySpace), w.KeySize), value)
				case OpRangeLin:
					err = kv.Get(rctx, rangeKey, false)
				case OpRangeSer:
					err = kv.Get(rctx, rangeKey, true)
				default:
					err = fmt.Errorf("unknown op %q", w.Op)
				}
				d := time.Since(t0)
				cancel()
				if err != nil {
					if ctx.Err() != nil {
						return // the run's deadline, not a failure of the system
					}
					errOnce.Do(func() { firstErr = err })
					if n := failed.Add(1); float64(n) > maxErrorFraction*float64(max(w.Requests, 1000)) {
						return
					}
					continue
				}
				lat[c] = append(lat[c], d)
			}
		}()
	}
	wg.Wait()
	res := Result{Elapsed: time.Since(start), Errors: int(failed.Load()), FirstErr: firstErr}
	all := slices.Concat(lat...)
	res.Requests = len(all)
	if len(all) > 0 {
		slices.Sort(all)
		res.P50 = percentile(all, 0.50)
		res.P99 = percentile(all, 0.99)
	}
	if float64(res.Errors) > maxErrorFraction*float64(max(res.Requests+res.Errors, 1)) {
		return res, fmt.Errorf("kvbench: %s: %d of %d requests failed, first: %w",
			w.Name(), res.Errors, res.Requests+res.Errors, firstErr)
	}
	return res, nil
}

// percentile returns the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
