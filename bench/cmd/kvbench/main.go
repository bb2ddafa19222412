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
	"text/tabwriter"
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
}

func parseFlags() (config, error) {
	var c config
	systems := flag.String("systems", "caucus,etcd", "systems to run")
	ops := flag.String("workloads", "put,range-lin,range-ser", "workloads (put, range-lin, range-ser, load: every key of -key-space once)")
	clients := flag.String("clients", "1,64", "concurrent clients per workload, comma-separated")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds; each runs every workload once on every system")
	flag.IntVar(&c.conns, "conns", 1, "client connections (client objects) shared by the clients, as etcd's benchmark --conns")
	flag.IntVar(&c.w.Requests, "requests", 20000, "requests per workload run (0: only -duration bounds it)")
	flag.DurationVar(&c.w.Duration, "duration", 30*time.Second, "upper bound on one workload run")
	flag.IntVar(&c.w.KeySize, "key-size", 8, "key size in bytes")
	flag.IntVar(&c.w.ValueSize, "val-size", 256, "value size in bytes")
	flag.IntVar(&c.w.KeySpace, "key-space", 100000, "puts write keys chosen uniformly among this many")
	flag.DurationVar(&c.w.Timeout, "timeout", 10*time.Second, "per-request timeout")
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
		case kvbench.OpPut, kvbench.OpRangeLin, kvbench.OpRangeSer, kvbench.OpLoad:
		default:
			return c, fmt.Errorf("unknown workload %q", o)
		}
	}
	if c.conns <= 0 || c.rounds <= 0 {
		return c, errors.New("-conns and -rounds must be > 0")
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

// target is one running system with its connections.
type target struct {
	cluster *kvbench.Cluster
	put     []kvbench.KV // connected to the leader only
	read    []kvbench.KV // connected to every member
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
}

func (s sample) cpuPerReq() time.Duration { return perReq(s.cpu, s.res.Requests) }
func (s sample) cliPerReq() time.Duration { return perReq(s.cli, s.res.Requests) }

func perReq(d time.Duration, n int) time.Duration {
	if n == 0 {
		return 0
	}
	return d / time.Duration(n)
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

	var systems []kvbench.System
	for _, name := range cfg.systems {
		sys, err := makeSystem(ctx, name, cfg, base)
		if err != nil {
			// One system failing to build still lets the other be measured.
			fmt.Fprintf(os.Stderr, "kvbench: %s unavailable: %v\n", name, err)
			continue
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

	var workloads []kvbench.Workload
	for _, op := range cfg.ops {
		for _, c := range cfg.clients {
			w := cfg.w
			w.Op, w.Clients = kvbench.Op(op), c
			workloads = append(workloads, w)
		}
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
				if t == nil {
					continue
				}
				s, err := measure(ctx, t, w)
				if err != nil {
					return fmt.Errorf("round %d, %s, %s: %w", r+1, w.Name(), name, err)
				}
				if samples[w.Name()] == nil {
					samples[w.Name()] = map[string][]sample{}
				}
				samples[w.Name()][name] = append(samples[w.Name()][name], s)
				fmt.Fprintf(os.Stderr, "round %d %-14s %-7s %9.0f req/s  p99 %v\n",
					r+1, w.Name(), name, s.res.Throughput(), s.res.P99.Round(time.Microsecond))
			}
		}
	}
	printTable(workloads, cfg.systems, samples)
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
	}
	return nil, fmt.Errorf("unknown system %q", name)
}

func startTarget(ctx context.Context, sys kvbench.System, base string, cfg config) (*target, error) {
	c, err := kvbench.StartCluster(ctx, sys, base, 3)
	if err != nil {
		return nil, err
	}
	t := &target{cluster: c}
	fail := func(err error) (*target, error) { t.close(); return nil, err }
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	leader, err := sys.Leader(lctx, c.Endpoints())
	cancel()
	if err != nil {
		return fail(err)
	}
	for range cfg.conns {
		kv, err := sys.Dial([]string{leader})
		if err != nil {
			return fail(err)
		}
		t.put = append(t.put, kv)
		if kv, err = sys.Dial(c.Endpoints()); err != nil {
			return fail(err)
		}
		t.read = append(t.read, kv)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := kvbench.Prepare(pctx, t.put[0], cfg.w); err != nil {
		return fail(fmt.Errorf("prepare: %w", err))
	}
	return t, nil
}

func measure(ctx context.Context, t *target, w kvbench.Workload) (sample, error) {
	kvs := t.read
	if w.Op == kvbench.OpPut || w.Op == kvbench.OpLoad {
		kvs = t.put
	}
	cpu0, err := t.cluster.CPU()
	if err != nil {
		return sample{}, err
	}
	cli0, err := kvbench.ProcCPU(os.Getpid())
	if err != nil {
		return sample{}, err
	}
	res, err := kvbench.Run(ctx, kvs, w)
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

func printTable(workloads []kvbench.Workload, systems []string, samples map[string]map[string][]sample) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tsystem\treq/s\tp50\tp99\tsrv CPU/req\tsrv cores\tcli CPU/req\tsrv RSS MB\terrors\t")
	for _, w := range workloads {
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
