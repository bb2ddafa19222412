// Command kvbench reproduces etcd's benchmark workloads (8-byte keys, 256-byte values; put with 1
// and 64 clients; linearizable and serializable range of one key with 1 and 64 clients) against
// a three-member etcd cluster and a three-member caucus cluster, both running as separate
// processes on loopback, and prints throughput, p50/p99 latency, the servers' CPU time and
// resident memory, and caucus/etcd ratios.
//
// Both clusters stay up for the whole run; workloads alternate between them (which system goes
// first flips every round), so both sides of a ratio were measured on the same noisy machine
// within seconds. Puts go to the leader's endpoint only and ranges to all three endpoints, for
// both systems, so that neither client library's routing policy skews the servers' comparison.
//
// The event workloads (put-event, watch-latency, consumer-latency, idle-watchers) measure what
// publishing events with writes, watching and consuming cost; consumer-latency's anchor is a
// NATS JetStream server (systems nats and nats-sync), run only for that workload.
//
// Run from bench/: go run ./cmd/kvbench [-requests 20000] [-rounds 3]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caucus/caucus/bench/kvbench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == kvbench.EtcdMemberCommand {
		if err := kvbench.RunEtcdMember(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "etcd member:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == kvbench.NATSMemberCommand {
		if err := kvbench.RunNATSMember(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "nats member:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kvbench:", err)
		os.Exit(1)
	}
}

type config struct {
	systems, ops []string
	clients      []int
	rounds       int
	conns        int
	w            kvbench.Workload
	caucusBin    string
	benchDir     string
	dir          string
	keep         bool
	cpuProfile   string
	caucusArgs   string
	caucusWatch  string
}

func parseFlags() (config, error) {
	var c config
	systems := flag.String("systems", "caucus,etcd,nats,nats-sync", "systems to run (nats and nats-sync, single JetStream servers, run consumer-latency only; each system starts only when a chosen workload applies to it)")
	ops := flag.String("workloads", "put,range-lin,range-ser", "workloads (put, range-lin, range-ser, load: every key of -key-space once; put-event, watch-latency, consumer-latency, idle-watchers)")
	clients := flag.String("clients", "1,64", "concurrent clients per workload, comma-separated")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds; each runs every workload once on every system")
	flag.IntVar(&c.conns, "conns", 1, "client connections (client objects) shared by the clients, as etcd's benchmark --conns")
	flag.IntVar(&c.w.Requests, "requests", 20000, "requests per workload run (0: only -duration bounds it)")
	flag.DurationVar(&c.w.Duration, "duration", 30*time.Second, "upper bound on one workload run")
	flag.IntVar(&c.w.KeySize, "key-size", 8, "key size in bytes")
	flag.IntVar(&c.w.ValueSize, "val-size", 256, "value size in bytes")
	flag.IntVar(&c.w.KeySpace, "key-space", 100000, "puts write keys chosen uniformly among this many")
	flag.DurationVar(&c.w.Timeout, "timeout", 10*time.Second, "per-request timeout; delivery workloads also wait this long after the last write for stragglers")
	flag.IntVar(&c.w.PayloadSize, "payload-size", 64, "event payload size in bytes (put-event, consumer-latency, watch-latency of events)")
	flag.Float64Var(&c.w.Rate, "rate", 0, "watch-latency and consumer-latency: writes per second, all producers together (0: as fast as they go)")
	flag.IntVar(&c.w.Parallel, "consume-parallel", 0, "consumer-latency: handlers caucus's Consume runs at once (0: the client's default, 16)")
	flag.IntVar(&c.w.IdleWatchers, "idle-watchers", 1000, "idle-watchers: watchers attached, spread over the members")
	flag.StringVar(&c.caucusWatch, "caucus-watch", "events", "watch-latency on caucus: events (each put publishes one event; the watcher selects its topic) or keys (a prefix watch of the puts, as etcd's)")
	flag.StringVar(&c.caucusBin, "caucus-bin", "", "prebuilt caucus binary (default: build it from -caucus-src)")
	flag.StringVar(&c.benchDir, "bench-dir", ".", "the bench module's directory (its parent is caucus's root), to build the caucus binary")
	flag.StringVar(&c.dir, "dir", "", "base directory for data and logs (default: a new temp dir)")
	flag.BoolVar(&c.keep, "keep", false, "keep data directories and logs")
	flag.StringVar(&c.caucusArgs, "caucus-args", "", "extra flags for every caucus member, space-separated (e.g. --enable-pprof)")
	flag.StringVar(&c.cpuProfile, "cpuprofile", "", "write this process's CPU profile (the client side) to this file")
	flag.Parse()
	c.systems = splitList(*systems)
	c.ops = splitList(*ops)
	for _, s := range splitList(*clients) {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return c, fmt.Errorf("bad -clients %q", *clients)
		}
		c.clients = append(c.clients, n)
	}
	for _, o := range c.ops {
		switch kvbench.Op(o) {
		case kvbench.OpPut, kvbench.OpRangeLin, kvbench.OpRangeSer, kvbench.OpLoad,
			kvbench.OpPutEvent, kvbench.OpWatchLatency, kvbench.OpConsumerLatency, kvbench.OpIdleWatchers:
		default:
			return c, fmt.Errorf("unknown workload %q", o)
		}
	}
	if c.conns <= 0 || c.rounds <= 0 {
		return c, errors.New("-conns and -rounds must be > 0")
	}
	switch c.caucusWatch {
	case "events":
		c.w.Events = true
	case "keys":
	default:
		return c, fmt.Errorf("bad -caucus-watch %q: events or keys", c.caucusWatch)
	}
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func run() error {
	cfg, err := parseFlags()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	base := cfg.dir
	if base == "" {
		if base, err = os.MkdirTemp("", "kvbench-"); err != nil {
			return err
		}
	}
	if !cfg.keep {
		defer os.RemoveAll(base)
	} else {
		fmt.Fprintln(os.Stderr, "kvbench: data and logs in", base)
	}

	var workloads []kvbench.Workload
	for _, op := range cfg.ops {
		for _, c := range cfg.clients {
			w := cfg.w
			w.Op, w.Clients = kvbench.Op(op), c
			workloads = append(workloads, w)
		}
	}
	var systems []kvbench.System
	for _, name := range cfg.systems {
		sys, err := makeSystem(ctx, name, cfg, base)
		if err != nil {
			// One system failing to build still lets the other be measured.
			fmt.Fprintf(os.Stderr, "kvbench: %s unavailable: %v\n", name, err)
			continue
		}
		if !slices.ContainsFunc(workloads, func(w kvbench.Workload) bool { return sys.Supports(w.Op) }) {
			continue // none of the chosen workloads applies to it
		}
		systems = append(systems, sys)
	}
	targets := map[string]*target{}
	defer func() {
		for _, t := range targets {
			t.close()
		}
	}()
	for _, sys := range systems {
		t, err := startTarget(ctx, sys, base, cfg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kvbench: %s unavailable: %v\n", sys.Name(), err)
			continue
		}
		targets[sys.Name()] = t
	}
	if len(targets) == 0 {
		return errors.New("no system could be started")
	}

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Printf("kvbench: %d rounds; per run %d requests (cap %v), %d-byte keys, %d-byte values, %d conns; 3 members per system, loopback, fsync on\n",
		cfg.rounds, cfg.w.Requests, cfg.w.Duration, cfg.w.KeySize, cfg.w.ValueSize, cfg.conns)
	printSetup(workloads, targets, cfg)
	// The disk, measured before and after the rounds: the ratios follow it.
	reportFsync := func(when string) {
		if p50, p99, err := kvbench.FsyncLatency(base, 500); err != nil {
			fmt.Fprintf(os.Stderr, "kvbench: fsync probe: %v\n", err)
		} else {
			fmt.Printf("kvbench: disk %s: 4 KiB append + fdatasync p50 %v, p99 %v (500 in a row)\n", when, p50.Round(time.Microsecond), p99.Round(time.Microsecond))
		}
	}
	reportFsync("before the rounds")
	defer reportFsync("after the rounds")

	samples := map[string]map[string][]sample{} // workload -> system -> per round
	for r := range cfg.rounds {
		// Alternate who goes first every round, so that neither system always runs right after
		// the other (whose background work, e.g. compaction, may still be running).
		order := slices.Clone(cfg.systems)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, w := range workloads {
			for _, name := range order {
				t := targets[name]
				if t == nil || !t.cluster.System.Supports(w.Op) {
					continue
				}
				s, err := measure(ctx, t, w, r)
				if err != nil {
					return fmt.Errorf("round %d, %s, %s: %w", r+1, w.Name(), name, err)
				}
				if samples[w.Name()] == nil {
					samples[w.Name()] = map[string][]sample{}
				}
				samples[w.Name()][name] = append(samples[w.Name()][name], s)
				if w.Op.Delivery() {
					fmt.Fprintf(os.Stderr, "round %d %-24s %-9s %9.0f writes/s %9.0f received/s  p50 %v  p99 %v\n",
						r+1, w.Name(), name, s.res.Throughput(), s.res.DeliveredRate(),
						s.res.DeliverP50.Round(time.Microsecond), s.res.DeliverP99.Round(time.Microsecond))
				} else {
					fmt.Fprintf(os.Stderr, "round %d %-24s %-9s %9.0f req/s  p99 %v\n",
						r+1, w.Name(), name, s.res.Throughput(), s.res.P99.Round(time.Microsecond))
				}
			}
		}
	}
	printTable(workloads, cfg.systems, samples)
	printPaired(workloads, cfg.systems, samples)
	printDelivery(workloads, cfg.systems, samples, cfg)
	return nil
}

func makeSystem(ctx context.Context, name string, cfg config, base string) (kvbench.System, error) {
	switch name {
	case "etcd":
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		return kvbench.Etcd{Exe: exe}, nil
	case "caucus":
		bin := cfg.caucusBin
		if bin == "" {
			bin = filepath.Join(base, "caucus")
			if err := kvbench.BuildCaucus(ctx, cfg.benchDir, bin); err != nil {
				return nil, err
			}
		}
		return kvbench.Caucus{Bin: bin, Args: strings.Fields(cfg.caucusArgs)}, nil
	case "nats", "nats-sync":
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		return kvbench.NATS{Exe: exe, SyncAlways: name == "nats-sync"}, nil
	}
	return nil, fmt.Errorf("unknown system %q", name)
}
