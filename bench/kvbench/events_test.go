package kvbench

import (
	"context"
	"encoding/binary"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakePipe is a delivery path without a system: sends go into a channel that the receiver
// drains. drop and dup name sequence numbers the receiver loses or receives twice.
type fakePipe struct {
	ch        chan []byte
	drop, dup map[uint64]bool
	failRecv  bool // the receiver ends with an error after its first message
	// release, when set, holds the receiver back until holdSends sends were made (so that most
	// writes are acknowledged before they are received).
	release   chan struct{}
	holdSends int
	mu        sync.Mutex
	sends     int
	keys      map[string]bool
	sizes     map[int]bool
}

func newFakePipe() *fakePipe {
	return &fakePipe{ch: make(chan []byte, 1<<16), drop: map[uint64]bool{}, dup: map[uint64]bool{},
		keys: map[string]bool{}, sizes: map[int]bool{}}
}

func (p *fakePipe) send(_ context.Context, _ int, key string, data []byte) error {
	p.mu.Lock()
	p.keys[key] = true
	p.sizes[len(data)] = true
	if p.sends++; p.release != nil && p.sends == p.holdSends {
		close(p.release)
	}
	p.mu.Unlock()
	p.ch <- data
	return nil
}

func (p *fakePipe) recv(ctx context.Context, fn func([]byte)) (<-chan error, error) {
	done := make(chan error, 1)
	go func() {
		if p.release != nil {
			select {
			case <-p.release:
			case <-ctx.Done():
				done <- nil
				return
			}
		}
		for {
			select {
			case <-ctx.Done():
				done <- nil
				return
			case d := <-p.ch:
				seq := binary.LittleEndian.Uint64(d[8:])
				if p.drop[seq] {
					continue
				}
				fn(d)
				if p.dup[seq] {
					fn(d)
				}
				if p.failRecv {
					done <- os.ErrClosed
					return
				}
			}
		}
	}()
	return done, nil
}

func deliveryWorkload(clients, requests int) Workload {
	w := testWorkload(OpWatchLatency, clients, requests)
	w.Timeout = 200 * time.Millisecond
	return w
}

func TestRunDeliveryCountsEveryWrite(t *testing.T) {
	p := newFakePipe()
	p.dup[7] = true
	res, err := RunDelivery(context.Background(), deliveryWorkload(8, 500), 64, p.send, p.recv)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 500 || res.Delivered != 500 || res.Lost != 0 || res.Duplicates != 1 || res.Errors != 0 {
		t.Fatalf("writes %d, delivered %d, lost %d, dups %d, errors %d; want 500, 500, 0, 1, 0",
			res.Requests, res.Delivered, res.Lost, res.Duplicates, res.Errors)
	}
	if res.DeliverP50 <= 0 || res.DeliverP99 < res.DeliverP50 || res.DeliverMax < res.DeliverP99 || res.DeliveredRate() <= 0 {
		t.Fatalf("implausible latencies %+v", res)
	}
	if len(p.sizes) != 1 || !p.sizes[64] || len(p.keys) < 2 {
		t.Fatalf("sizes %v, %d distinct keys", p.sizes, len(p.keys))
	}
}

// Writes acknowledged before they are received (a watcher behind its producers) are waited for.
func TestRunDeliveryReceiptAfterAck(t *testing.T) {
	p := newFakePipe()
	p.release, p.holdSends = make(chan struct{}), 200
	res, err := RunDelivery(context.Background(), deliveryWorkload(1, 200), 16, p.send, p.recv)
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered != 200 || res.Lost != 0 {
		t.Fatalf("delivered %d, lost %d", res.Delivered, res.Lost)
	}
	// Every write was acknowledged before any receipt: each waited after its acknowledgement,
	// and no longer than since its issue.
	if res.AfterAckP50 <= 0 || res.AfterAckP99 < res.AfterAckP50 || res.AfterAckP99 > res.DeliverP99 {
		t.Fatalf("after-ack latencies p50 %v p99 %v, issue to receipt p99 %v", res.AfterAckP50, res.AfterAckP99, res.DeliverP99)
	}
}

// The collector measures receipt - acknowledgement whichever comes first, 0 for a receipt
// before the acknowledgement, once per write.
func TestCollectorAfterAck(t *testing.T) {
	c := newCollector()
	data := func(seq uint64) []byte {
		d := make([]byte, stampSize)
		putStamp(d, seq)
		return d
	}
	c.acked(1)
	c.receive(data(1))
	c.receive(data(2))
	c.acked(2)
	c.receive(data(2)) // a duplicate measures nothing
	if len(c.afterAck) != 2 || c.afterAck[1] != 0 || len(c.at) != 0 || c.outstanding != 0 {
		t.Fatalf("afterAck %v, pending %v, outstanding %d; want two samples, the second 0, none pending",
			c.afterAck, c.at, c.outstanding)
	}
}

// A write acknowledged but never received is lost, and fails the run.
func TestRunDeliveryReportsLoss(t *testing.T) {
	p := newFakePipe()
	p.drop[3] = true
	res, err := RunDelivery(context.Background(), deliveryWorkload(2, 50), 16, p.send, p.recv)
	if err == nil || !strings.Contains(err.Error(), "not received") {
		t.Fatalf("a lost write went unnoticed: %v", err)
	}
	if res.Lost != 1 || res.Delivered != 49 {
		t.Fatalf("lost %d, delivered %d; want 1, 49", res.Lost, res.Delivered)
	}
}

func TestRunDeliveryReceiverFailure(t *testing.T) {
	p := newFakePipe()
	p.failRecv = true
	if _, err := RunDelivery(context.Background(), deliveryWorkload(2, 50), 16, p.send, p.recv); err == nil {
		t.Fatal("the receiver failed but the run succeeded")
	}
}

// With a rate, the n-th write is not issued before (n-1)/rate after the start.
func TestRunDeliveryRate(t *testing.T) {
	p := newFakePipe()
	w := deliveryWorkload(4, 41)
	w.Rate = 400 // 41 writes: the last one is due 100 ms after the first
	start := time.Now()
	res, err := RunDelivery(context.Background(), w, 16, p.send, p.recv)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 100*time.Millisecond || res.Elapsed < 100*time.Millisecond {
		t.Fatalf("41 writes at 400/s took %v (writes %v)", el, res.Elapsed)
	}
	if res.Delivered != 41 || w.Name() != "watch-latency/c=4/r=400" {
		t.Fatalf("delivered %d, name %s", res.Delivered, w.Name())
	}
}

// testEventWorkloads runs the event workloads sys supports against its running cluster c (kv is
// connected to every member).
func testEventWorkloads(t *testing.T, sys System, c *Cluster, kv KV) {
	ctx := context.Background()
	leader, err := sys.Leader(ctx, c.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	follower := c.Endpoints()[0]
	if follower == leader {
		follower = c.Endpoints()[1]
	}
	dial := func(eps ...string) KV {
		t.Helper()
		kv, err := sys.Dial(eps)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { kv.Close() })
		return kv
	}
	producer := dial(leader)
	w := testWorkload(OpPut, 4, 100)
	w.PayloadSize, w.Timeout = 64, 10*time.Second
	checkDelivery := func(t *testing.T, res Result, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != 100 || res.Delivered != 100 || res.Lost != 0 || res.DeliverP99 <= 0 || res.DeliveredRate() <= 0 {
			t.Fatalf("writes %d, delivered %d, lost %d, p99 %v", res.Requests, res.Delivered, res.Lost, res.DeliverP99)
		}
	}

	t.Run("put-event", func(t *testing.T) {
		w := w
		w.Op = OpPutEvent
		res, err := Run(ctx, []KV{producer}, w)
		if !sys.Supports(OpPutEvent) {
			if err == nil {
				t.Fatalf("%s has no events but put-event succeeded", sys.Name())
			}
			return
		}
		if err != nil || res.Requests != 100 {
			t.Fatalf("%d requests, %v", res.Requests, err)
		}
		// The events are there: a watch of the topic from the start sees all 100.
		var mu sync.Mutex
		n := 0
		all := make(chan struct{})
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		_, done := kv.(WatchKV).Watch(wctx, WatchSpec{Topic: putEventTopic, Rev: 1}, func(p []byte) {
			mu.Lock()
			defer mu.Unlock()
			if n++; n == 100 {
				close(all)
			}
			if len(p) != 64 {
				t.Errorf("payload of %d bytes", len(p))
			}
		})
		select {
		case <-all:
		case err := <-done:
			t.Fatalf("watch ended: %v", err)
		case <-time.After(w.Timeout):
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("%d of 100 events seen", n)
		}
	})

	t.Run("watch-latency", func(t *testing.T) {
		w := w
		w.Op = OpWatchLatency
		res, err := RunWatchLatency(ctx, []KV{producer}, dial(follower), w)
		checkDelivery(t, res, err)
		if sys.Supports(OpPutEvent) {
			w.Events = true
			res, err := RunWatchLatency(ctx, []KV{producer}, dial(follower), w)
			checkDelivery(t, res, err)
		}
	})

	t.Run("idle-watchers", func(t *testing.T) {
		var conns []KV
		for _, ep := range c.Endpoints() {
			conns = append(conns, dial(ep))
		}
		detach, err := AttachIdleWatchers(ctx, conns, producer, 30, w.Timeout)
		if err != nil {
			t.Fatal(err)
		}
		w := w
		w.Op = OpIdleWatchers
		res, err := Run(ctx, []KV{producer}, w)
		detach()
		if err != nil || res.Requests != 100 {
			t.Fatalf("%d requests, %v", res.Requests, err)
		}
	})

	t.Run("consumer-latency", func(t *testing.T) {
		if !sys.Supports(OpConsumerLatency) {
			t.Skipf("%s has no consumers", sys.Name())
		}
		w := w
		w.Op = OpConsumerLatency
		res, err := RunConsumerLatency(ctx, []KV{producer}, dial(c.Endpoints()...), w)
		checkDelivery(t, res, err)
	})
}

// TestNATS starts the NATS anchor, with and without fsync on every write, and runs
// consumer-latency against it.
func TestNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	for _, sys := range []NATS{{Exe: os.Args[0]}, {Exe: os.Args[0], SyncAlways: true}} {
		t.Run(sys.Name(), func(t *testing.T) {
			ctx := context.Background()
			c, err := StartCluster(ctx, sys, t.TempDir(), sys.Members())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Stop()
			dial := func() KV {
				kv, err := sys.Dial(c.Endpoints())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { kv.Close() })
				return kv
			}
			w := testWorkload(OpConsumerLatency, 4, 100)
			w.PayloadSize, w.Timeout = 64, 10*time.Second
			res, err := RunConsumerLatency(ctx, []KV{dial()}, dial(), w)
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests != 100 || res.Delivered != 100 || res.DeliverP99 <= 0 {
				t.Fatalf("writes %d, delivered %d, p99 %v", res.Requests, res.Delivered, res.DeliverP99)
			}
			if cpu, err := c.CPU(); err != nil || cpu <= 0 {
				t.Fatalf("server CPU %v, %v", cpu, err)
			}
			if err := dial().Put(ctx, "k", "v"); err == nil {
				t.Fatal("the NATS anchor accepted a put")
			}
			if err := c.Stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
