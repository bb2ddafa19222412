package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/caucus/caucus/bench/kvbench"
)

// target is one running system with its connections.
type target struct {
	cluster  *kvbench.Cluster
	leader   string       // the leader's client URL
	follower string       // another member's (the leader's for a single server)
	put      []kvbench.KV // connected to the leader only
	read     []kvbench.KV // connected to every member
}

func (t *target) close() {
	for _, kv := range slices.Concat(t.put, t.read) {
		kv.Close()
	}
	if err := t.cluster.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "kvbench:", err)
	}
}

// sample is one workload run on one system.
type sample struct {
	res kvbench.Result
	cpu time.Duration // servers' CPU during the run, all members
	cli time.Duration // this process's CPU during the run (client library + load generator)
	rss int64         // servers' resident memory after the run, all members
	// base is the same system's plain put run back to back with this one, in the same round
	// (put-event, idle-watchers).
	base *sample
}

// count is what per-request figures divide by: requests, or for delivery workloads the writes
// received.
func (s sample) count() int {
	if s.res.Delivered > 0 {
		return s.res.Delivered
	}
	return s.res.Requests
}

func (s sample) cpuPerReq() time.Duration { return perReq(s.cpu, s.count()) }
func (s sample) cliPerReq() time.Duration { return perReq(s.cli, s.count()) }

func perReq(d time.Duration, n int) time.Duration {
	if n == 0 {
		return 0
	}
	return d / time.Duration(n)
}

func startTarget(ctx context.Context, sys kvbench.System, base string, cfg config) (*target, error) {
	c, err := kvbench.StartCluster(ctx, sys, base, sys.Members())
	if err != nil {
		return nil, err
	}
	t := &target{cluster: c}
	fail := func(err error) (*target, error) { t.close(); return nil, err }
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	t.leader, err = sys.Leader(lctx, c.Endpoints())
	cancel()
	if err != nil {
		return fail(err)
	}
	t.follower = t.leader
	for _, ep := range c.Endpoints() {
		if ep != t.leader {
			t.follower = ep
			break
		}
	}
	for range cfg.conns {
		kv, err := sys.Dial([]string{t.leader})
		if err != nil {
			return fail(err)
		}
		t.put = append(t.put, kv)
		if kv, err = sys.Dial(c.Endpoints()); err != nil {
			return fail(err)
		}
		t.read = append(t.read, kv)
	}
	if sys.Supports(kvbench.OpRangeLin) {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := kvbench.Prepare(pctx, t.put[0], cfg.w); err != nil {
			return fail(fmt.Errorf("prepare: %w", err))
		}
	}
	return t, nil
}

// measure runs w on t; round decides which half of a paired workload goes first.
func measure(ctx context.Context, t *target, w kvbench.Workload, round int) (sample, error) {
	sys := t.cluster.System
	switch w.Op {
	case kvbench.OpRangeLin, kvbench.OpRangeSer:
		return measureRun(t, func() (kvbench.Result, error) { return kvbench.Run(ctx, t.read, w) })
	case kvbench.OpPut, kvbench.OpLoad:
		return measureRun(t, func() (kvbench.Result, error) { return kvbench.Run(ctx, t.put, w) })
	case kvbench.OpPutEvent:
		plain := w
		plain.Op = kvbench.OpPut
		return measurePaired(round,
			func() (sample, error) {
				return measureRun(t, func() (kvbench.Result, error) { return kvbench.Run(ctx, t.put, w) })
			},
			func() (sample, error) {
				return measureRun(t, func() (kvbench.Result, error) { return kvbench.Run(ctx, t.put, plain) })
			})
	case kvbench.OpIdleWatchers:
		return measureIdleWatchers(ctx, t, w, round)
	case kvbench.OpWatchLatency:
		// The watcher is on a follower: its receipts wait for the commit to reach that member
		// too, as most watchers' would in a cluster.
		watcher, err := sys.Dial([]string{t.follower})
		if err != nil {
			return sample{}, err
		}
		defer watcher.Close()
		w.Events = w.Events && sys.Supports(kvbench.OpPutEvent)
		return measureRun(t, func() (kvbench.Result, error) { return kvbench.RunWatchLatency(ctx, t.put, watcher, w) })
	case kvbench.OpConsumerLatency:
		consumer, err := sys.Dial(t.cluster.Endpoints())
		if err != nil {
			return sample{}, err
		}
		defer consumer.Close()
		return measureRun(t, func() (kvbench.Result, error) { return kvbench.RunConsumerLatency(ctx, t.put, consumer, w) })
	}
	return sample{}, fmt.Errorf("unknown workload %q", w.Op)
}

// measurePaired runs a workload and its baseline back to back, the baseline first in odd
// rounds, so that neither always runs on the fresher cluster.
func measurePaired(round int, run, baseline func() (sample, error)) (sample, error) {
	var s, b sample
	var err error
	if round%2 == 1 {
		if b, err = baseline(); err == nil {
			s, err = run()
		}
	} else {
		if s, err = run(); err == nil {
			b, err = baseline()
		}
	}
	if err != nil {
		return sample{}, err
	}
	s.base = &b
	return s, nil
}

// idleWatchersPerConn keeps each connection's watches under the caucus client's 128 streams
// per member connection.
const idleWatchersPerConn = 100

// measureIdleWatchers measures puts with w.IdleWatchers watchers attached, spread evenly over
// the members on connections of their own, and without (the baseline).
func measureIdleWatchers(ctx context.Context, t *target, w kvbench.Workload, round int) (sample, error) {
	sys := t.cluster.System
	eps := t.cluster.Endpoints()
	perMember := (w.IdleWatchers + len(eps) - 1) / len(eps)
	connsPerMember := max(1, (perMember+idleWatchersPerConn-1)/idleWatchersPerConn)
	var conns []kvbench.KV
	defer func() {
		for _, kv := range conns {
			kv.Close()
		}
	}()
	// Interleaved by member, so watcher i lands on member i mod 3.
	for range connsPerMember {
		for _, ep := range eps {
			kv, err := sys.Dial([]string{ep})
			if err != nil {
				return sample{}, err
			}
			conns = append(conns, kv)
		}
	}
	plain := w
	plain.Op = kvbench.OpPut
	withWatchers := func() (sample, error) {
		detach, err := kvbench.AttachIdleWatchers(ctx, conns, t.put[0], w.IdleWatchers, 2*time.Minute)
		if err != nil {
			return sample{}, err
		}
		defer detach()
		return measureRun(t, func() (kvbench.Result, error) { return kvbench.Run(ctx, t.put, w) })
	}
	baseline := func() (sample, error) {
		return measureRun(t, func() (kvbench.Result, error) { return kvbench.Run(ctx, t.put, plain) })
	}
	return measurePaired(round, withWatchers, baseline)
}

// measureRun runs f, measuring the servers' and this process's CPU around it.
func measureRun(t *target, f func() (kvbench.Result, error)) (sample, error) {
	cpu0, err := t.cluster.CPU()
	if err != nil {
		return sample{}, err
	}
	cli0, err := kvbench.ProcCPU(os.Getpid())
	if err != nil {
		return sample{}, err
	}
	res, err := f()
	if err != nil {
		return sample{}, errors.Join(err, t.cluster.Alive())
	}
	cli1, err := kvbench.ProcCPU(os.Getpid())
	if err != nil {
		return sample{}, err
	}
	cpu1, err := t.cluster.CPU()
	if err != nil {
		return sample{}, err
	}
	rss, err := t.cluster.RSS()
	if err != nil {
		return sample{}, err
	}
	return sample{res: res, cpu: cpu1 - cpu0, cli: cli1 - cli0, rss: rss}, nil
}
