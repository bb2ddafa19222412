package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caucus/caucus/bench/kvbench"
)

// printSetup says, before the rounds, what the event workloads compare and what each system
// guarantees in them.
func printSetup(workloads []kvbench.Workload, targets map[string]*target, cfg config) {
	has := func(op kvbench.Op) bool {
		return slices.ContainsFunc(workloads, func(w kvbench.Workload) bool { return w.Op == op })
	}
	if has(kvbench.OpPutEvent) {
		fmt.Printf("kvbench: put-event: puts that each publish one %d-byte event in the same write (caucus only), each run paired with a plain put run of the same system back to back\n", cfg.w.PayloadSize)
	}
	if has(kvbench.OpIdleWatchers) {
		fmt.Printf("kvbench: idle-watchers: puts with %d idle watchers attached (spread over the members, on keys no put writes), each run paired with one without\n", cfg.w.IdleWatchers)
	}
	if has(kvbench.OpWatchLatency) {
		what := "a prefix watch of the puts' keys"
		if cfg.w.Events {
			what = fmt.Sprintf("a watch of the topic of the %d-byte events the puts publish", cfg.w.PayloadSize)
		}
		fmt.Printf("kvbench: watch-latency: producers put to the leader; one watcher on a follower; caucus: %s; etcd: a prefix watch of the puts' keys. Latency: watcher receipt - producer issue\n", what)
	}
	if has(kvbench.OpConsumerLatency) {
		fmt.Printf("kvbench: consumer-latency: producers publish %d-byte events; one client consumes them through a durable consumer, acking each. Latency: handler receipt - publish issue\n", cfg.w.PayloadSize)
		for _, name := range cfg.systems {
			if t := targets[name]; t != nil && t.cluster.System.Supports(kvbench.OpConsumerLatency) {
				fmt.Printf("  %-9s %s\n", name, guarantees(name, cfg))
			}
		}
	}
}

// guarantees says what a system promises about a message it acknowledged in consumer-latency.
func guarantees(name string, cfg config) string {
	switch name {
	case "caucus":
		par := "16, the client's default"
		if cfg.w.Parallel > 0 {
			par = fmt.Sprint(cfg.w.Parallel)
		}
		return "3 members: a publish is acknowledged once committed in the fsynced logs of 2 of them; Consume (handlers at once: " + par + ") acks each event with a replicated write and waits for it"
	case "nats":
		return "1 server, no replication; JetStream file store, default sync_interval (fsync every 2 min): an acknowledged message survives a crash of the server process, not of the machine; acks sent without waiting for a reply"
	case "nats-sync":
		return "1 server, no replication; JetStream file store with sync_interval: always (O_SYNC writes): a message is on this one disk when acknowledged; acks sent without waiting for a reply"
	}
	return ""
}

func printTable(workloads []kvbench.Workload, systems []string, samples map[string]map[string][]sample) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tsystem\treq/s\tp50\tp99\tsrv CPU/req\tsrv cores\tcli CPU/req\tsrv RSS MB\terrors\t")
	for _, w := range workloads {
		if w.Op.Delivery() {
			continue // printDelivery
		}
		bySys := samples[w.Name()]
		for _, sys := range systems {
			ss := bySys[sys]
			if len(ss) == 0 {
				continue
			}
			errs := 0
			for _, s := range ss {
				errs += s.res.Errors
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%v\t%v\t%v\t%.2f\t%v\t%.0f\t%d\t\n", w.Name(), sys,
				median(ss, func(s sample) float64 { return s.res.Throughput() }),
				dur(median(ss, func(s sample) float64 { return float64(s.res.P50) })),
				dur(median(ss, func(s sample) float64 { return float64(s.res.P99) })),
				dur(median(ss, func(s sample) float64 { return float64(s.cpuPerReq()) })),
				median(ss, func(s sample) float64 { return s.cpu.Seconds() / s.res.Elapsed.Seconds() }),
				dur(median(ss, func(s sample) float64 { return float64(s.cliPerReq()) })),
				median(ss, func(s sample) float64 { return float64(s.rss) / (1 << 20) }),
				errs)
		}
		c, e := bySys["caucus"], bySys["etcd"]
		if n := min(len(c), len(e)); n > 0 {
			// Ratios are per round (same minute, same machine state), then the median.
			ratio := func(f func(sample) float64) float64 {
				rs := make([]float64, n)
				for i := range n {
					rs[i] = f(c[i]) / f(e[i])
				}
				return medianOf(rs)
			}
			fmt.Fprintf(tw, "%s\tcaucus/etcd\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t\t%.2fx\t%.2fx\t\t\n", w.Name(),
				ratio(func(s sample) float64 { return s.res.Throughput() }),
				ratio(func(s sample) float64 { return float64(s.res.P50) }),
				ratio(func(s sample) float64 { return float64(s.res.P99) }),
				ratio(func(s sample) float64 { return float64(s.cpuPerReq()) }),
				ratio(func(s sample) float64 { return float64(s.cliPerReq()) }),
				ratio(func(s sample) float64 { return float64(s.rss) }))
		}
	}
	tw.Flush()
	fmt.Println("req/s, p50, p99: client side. srv CPU/req: CPU of all 3 members / successful requests; srv cores: that CPU / wall time; cli CPU/req: this process (client library + load generator). RSS after the run, 3 members summed. Ratios: median of per-round caucus/etcd (req/s: >1 means caucus is faster; latency, CPU, RSS: <1 means caucus uses less).")
}

func dur(ns float64) time.Duration {
	d := time.Duration(ns)
	switch {
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d >= time.Microsecond:
		return d.Round(time.Microsecond)
	}
	return d
}

func median(ss []sample, f func(sample) float64) float64 {
	vs := make([]float64, len(ss))
	for i, s := range ss {
		vs[i] = f(s)
	}
	return medianOf(vs)
}

func medianOf(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(vs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ratioOf returns the median of per-round ratios f(a[i]) / f(b[i]).
func ratioOf(a, b []sample, f func(sample) float64) float64 {
	n := min(len(a), len(b))
	rs := make([]float64, 0, n)
	for i := range n {
		if d := f(b[i]); d != 0 {
			rs = append(rs, f(a[i])/d)
		}
	}
	return medianOf(rs)
}

// printPaired prints, for put-event and idle-watchers, each system's run against its own
// baseline of the same round.
func printPaired(workloads []kvbench.Workload, systems []string, samples map[string]map[string][]sample) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	printed := false
	for _, w := range workloads {
		if w.Op != kvbench.OpPutEvent && w.Op != kvbench.OpIdleWatchers {
			continue
		}
		for _, sys := range systems {
			ss := samples[w.Name()][sys]
			if len(ss) == 0 || ss[0].base == nil {
				continue
			}
			if !printed {
				fmt.Fprintln(tw, "workload\tsystem\tvs\treq/s\tp99\tsrv CPU/req\tbase req/s\tbase p99\tbase srv CPU/req\t")
				printed = true
			}
			bases := make([]sample, len(ss))
			for i, s := range ss {
				bases[i] = *s.base
			}
			vs := "plain put"
			if w.Op == kvbench.OpIdleWatchers {
				vs = "no watchers"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.2fx\t%.2fx\t%.2fx\t%.0f\t%v\t%v\t\n", w.Name(), sys, vs,
				ratioOf(ss, bases, func(s sample) float64 { return s.res.Throughput() }),
				ratioOf(ss, bases, func(s sample) float64 { return float64(s.res.P99) }),
				ratioOf(ss, bases, func(s sample) float64 { return float64(s.cpuPerReq()) }),
				median(bases, func(s sample) float64 { return s.res.Throughput() }),
				dur(median(bases, func(s sample) float64 { return float64(s.res.P99) })),
				dur(median(bases, func(s sample) float64 { return float64(s.cpuPerReq()) })))
		}
	}
	if !printed {
		return
	}
	fmt.Println()
	tw.Flush()
	fmt.Println("Each run against the same system's plain put run back to back in the same round (which goes first alternates by round); ratios are medians of per-round ratios (req/s >1: faster with events / watchers; p99 and CPU >1: costlier). base: the plain runs' medians.")
}

// printDelivery prints the delivery workloads: writes issued and received, and the latency
// from a write's issue to its receipt.
func printDelivery(workloads []kvbench.Workload, systems []string, samples map[string]map[string][]sample, cfg config) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	printed := false
	for _, w := range workloads {
		if !w.Op.Delivery() {
			continue
		}
		bySys := samples[w.Name()]
		var present []string
		for _, sys := range systems {
			ss := bySys[sys]
			if len(ss) == 0 {
				continue
			}
			present = append(present, sys)
			if !printed {
				fmt.Fprintln(tw, "workload\tsystem\twrites/s\treceived/s\tp50\tp99\tmax\tafter ack p50\tp99\twrite p99\tsrv CPU/msg\tsrv cores\tcli CPU/msg\tsrv RSS MB\tlost\tdups\terrors\t")
				printed = true
			}
			lost, dups, errs := 0, 0, 0
			for _, s := range ss {
				lost += s.res.Lost
				dups += s.res.Duplicates
				errs += s.res.Errors
			}
			label := sys
			if w.Op == kvbench.OpWatchLatency && sys == "caucus" {
				if cfg.w.Events {
					label += " (events)"
				} else {
					label += " (keys)"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%v\t%v\t%v\t%v\t%v\t%v\t%v\t%.2f\t%v\t%.0f\t%d\t%d\t%d\t\n", w.Name(), label,
				median(ss, func(s sample) float64 { return s.res.Throughput() }),
				median(ss, func(s sample) float64 { return s.res.DeliveredRate() }),
				dur(median(ss, func(s sample) float64 { return float64(s.res.DeliverP50) })),
				dur(median(ss, func(s sample) float64 { return float64(s.res.DeliverP99) })),
				dur(median(ss, func(s sample) float64 { return float64(s.res.DeliverMax) })),
				dur(median(ss, func(s sample) float64 { return float64(s.res.AfterAckP50) })),
				dur(median(ss, func(s sample) float64 { return float64(s.res.AfterAckP99) })),
				dur(median(ss, func(s sample) float64 { return float64(s.res.P99) })),
				dur(median(ss, func(s sample) float64 { return float64(s.cpuPerReq()) })),
				median(ss, func(s sample) float64 { return s.cpu.Seconds() / s.res.DeliverElapsed.Seconds() }),
				dur(median(ss, func(s sample) float64 { return float64(s.cliPerReq()) })),
				median(ss, func(s sample) float64 { return float64(s.rss) / (1 << 20) }),
				lost, dups, errs)
		}
		c := bySys["caucus"]
		for _, other := range present {
			if other == "caucus" || len(c) == 0 {
				continue
			}
			o := bySys[other]
			fmt.Fprintf(tw, "%s\tcaucus/%s\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t\t%.2fx\t%.2fx\t\t\t\t\n", w.Name(), other,
				ratioOf(c, o, func(s sample) float64 { return s.res.Throughput() }),
				ratioOf(c, o, func(s sample) float64 { return s.res.DeliveredRate() }),
				ratioOf(c, o, func(s sample) float64 { return float64(s.res.DeliverP50) }),
				ratioOf(c, o, func(s sample) float64 { return float64(s.res.DeliverP99) }),
				ratioOf(c, o, func(s sample) float64 { return float64(s.res.DeliverMax) }),
				ratioOf(c, o, func(s sample) float64 { return float64(s.res.AfterAckP50) }),
				ratioOf(c, o, func(s sample) float64 { return float64(s.res.AfterAckP99) }),
				ratioOf(c, o, func(s sample) float64 { return float64(s.res.P99) }),
				ratioOf(c, o, func(s sample) float64 { return float64(s.cpuPerReq()) }),
				ratioOf(c, o, func(s sample) float64 { return float64(s.cliPerReq()) }),
				ratioOf(c, o, func(s sample) float64 { return float64(s.rss) }))
		}
	}
	if !printed {
		return
	}
	fmt.Println()
	tw.Flush()
	var notes []string
	notes = append(notes, "writes/s: acknowledged writes / time from the first issue to the last acknowledgement; received/s: distinct writes received / time from the first issue to the last receipt; p50, p99, max: receipt - issue, each write's first receipt; after ack p50, p99: receipt - the producer's acknowledgement (0 when received first): a write commits between its issue and its acknowledgement, so the two pairs bracket commit to delivery; write p99: the producers' own latency; srv CPU/msg: CPU of all members / writes received; lost: acknowledged writes not received within -timeout after the last write; dups: receipts of a write received before (redeliveries).")
	if cfg.w.Rate > 0 {
		notes = append(notes, fmt.Sprintf("-rate %.0f: writes are issued on a schedule of %.0f/s in all (open loop); a producer behind schedule issues at once, and its latency counts from then. writes/s below the rate means the producers could not keep up.", cfg.w.Rate, cfg.w.Rate))
	}
	notes = append(notes, "Ratio rows: medians of per-round caucus/other ratios (rates >1: caucus faster; latency, CPU, RSS <1: caucus less).")
	fmt.Println(strings.Join(notes, "\n"))
}
