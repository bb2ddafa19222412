// Command storebench measures caucus's state-machine workload on bbolt and on Pebble (see package
// storebench for the model) and prints a markdown table of medians and Pebble/bbolt ratios.
//
// Every engine of every round runs in its own child process (this binary re-executed with
// -child), so that RSS, CPU time and bytes written belong to one engine alone; the engine order
// flips each round.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caucus/caucus/bench/storebench"
)

type options struct {
	engines    string
	rounds     int
	p          storebench.Params
	batchSizes string
	readers    string
	cfg        storebench.Config
	dir        string
	keep       bool
	verbose    bool
	cpuProfile string
	child      string
	childDir   string
}

func main() {
	var o options
	flag.StringVar(&o.engines, "engines", "bbolt,pebble", "engines to measure (the first is the ratio's baseline)")
	flag.IntVar(&o.rounds, "rounds", 3, "interleaved rounds; the table shows medians")
	flag.IntVar(&o.p.N, "n", 1_000_000, "puts of the load phase")
	flag.IntVar(&o.p.LoadBatch, "load-batch", 256, "commands per batch while loading")
	flag.IntVar(&o.p.KeySpace, "key-space", 100_000, "distinct 8-byte keys, drawn uniformly")
	flag.IntVar(&o.p.ValueSize, "value-size", 256, "bytes per value (random, incompressible)")
	flag.StringVar(&o.batchSizes, "batch-sizes", "1,16,256", "commands per batch of the measured write phases")
	flag.IntVar(&o.p.Writes, "writes", 50_000, "commands per measured write phase (applied on top of the load)")
	flag.StringVar(&o.readers, "readers", "1,8", "concurrent point readers of the read phases")
	flag.IntVar(&o.p.ReadWrites, "read-writes", 16_000, "commands the writer applies during each read phase (its length)")
	flag.IntVar(&o.p.IdleReads, "idle-reads", 100_000, "point reads by one reader with no writer")
	flag.IntVar(&o.p.IdleRanges, "idle-ranges", 2000, "ranges read by one reader with no writer")
	flag.IntVar(&o.p.ReadWriteRate, "read-write-rate", 5000, "commands/s of the writer during read phases (0: unpaced)")
	flag.IntVar(&o.p.ReadBatch, "read-batch", 16, "commands per batch of the writer running during reads")
	flag.IntVar(&o.p.RangeLen, "range-len", 100, "keys per range read")
	flag.IntVar(&o.p.Budget, "budget", 4096, "deletions per commit while compacting history")
	flag.Uint64Var(&o.p.Seed, "seed", 1, "workload seed (round r uses seed+r)")
	flag.BoolVar(&o.cfg.PebbleWAL, "pebble-wal", false, "enable Pebble's own WAL (commits still NoSync)")
	flag.IntVar(&o.cfg.BoltInitialMmapSize, "bolt-mmap", 0, "bbolt InitialMmapSize bytes (caucus default: 0)")
	flag.Int64Var(&o.cfg.PebbleCacheBytes, "pebble-cache", 64<<20, "Pebble block cache bytes")
	flag.StringVar(&o.dir, "dir", "", "parent of the data directories (default: the system temp dir)")
	flag.BoolVar(&o.keep, "keep", false, "keep the data directories")
	flag.BoolVar(&o.verbose, "v", false, "log each metric as it is measured")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of each child run to this path + .<round>.<engine>")
	flag.StringVar(&o.child, "child", "", "internal: run one engine and print JSON metrics")
	flag.StringVar(&o.childDir, "child-dir", "", "internal: the child's data directory")
	flag.Parse()
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	var err error
	if o.p.BatchSizes, err = ints(o.batchSizes); err == nil {
		o.p.Readers, err = ints(o.readers)
	}
	if err != nil {
		fail(err)
	}
	if o.child != "" {
		if err := runChild(o); err != nil {
			fail(err)
		}
		return
	}
	if err := runParent(o); err != nil {
		fail(err)
	}
}

func fail(err error) {
	slog.Error("storebench failed", "err", err)
	os.Exit(1)
}

func ints(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad list %q: %q is not a positive integer", s, f)
		}
		out = append(out, n)
	}
	return out, nil
}

func runChild(o options) error {
	kind, err := storebench.KindByName(o.child)
	if err != nil {
		return err
	}
	if o.cpuProfile != "" {
		f, err := os.Create(fmt.Sprintf("%s.%d.%s", o.cpuProfile, o.p.Seed, kind.Name))
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	ms, err := storebench.Run(kind, o.childDir, o.cfg, o.p)
	if err != nil {
		return fmt.Errorf("%s: %w", kind.Name, err)
	}
	return json.NewEncoder(os.Stdout).Encode(ms)
}

func runParent(o options) error {
	names := strings.Split(o.engines, ",")
	for _, n := range names {
		if _, err := storebench.KindByName(n); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary to run children: %w", err)
	}
	root, err := os.MkdirTemp(o.dir, "storebench-")
	if err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	if !o.keep {
		defer os.RemoveAll(root)
	}
	fmt.Printf("storebench %s\n", strings.Join(os.Args[1:], " "))
	fmt.Printf("%s %s/%s, %d CPUs; %s; data in %s\n\n", runtime.Version(), runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), depVersions(), root)

	// results[engine][round] is one child's metrics.
	results := make(map[string][][]storebench.Metric)
	for r := range o.rounds {
		order := slices.Clone(names)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, name := range order {
			dir := filepath.Join(root, fmt.Sprintf("r%d-%s", r, name))
			start := time.Now()
			ms, err := child(self, name, dir, uint64(r))
			if err != nil {
				return fmt.Errorf("round %d: %w", r, err)
			}
			if !o.keep {
				os.RemoveAll(dir)
			}
			slog.Info("run done", "round", r, "engine", name, "took", time.Since(start).Round(time.Millisecond))
			results[name] = append(results[name], ms)
		}
	}
	printTable(names, results)
	return nil
}

// child runs one engine for one round in a fresh process, with this process's flags.
func child(self, engine, dir string, round uint64) ([]storebench.Metric, error) {
	var args []string
	flag.Visit(func(f *flag.Flag) {
		if f.Name != "seed" && f.Name != "keep" {
			args = append(args, "-"+f.Name+"="+f.Value.String())
		}
	})
	seed := flag.Lookup("seed").Value.(flag.Getter).Get().(uint64) + round
	args = append(args, "-seed="+strconv.FormatUint(seed, 10), "-child="+engine, "-child-dir="+dir)
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s child (%s %s): %w", engine, self, strings.Join(args, " "), err)
	}
	var ms []storebench.Metric
	if err := json.Unmarshal(out, &ms); err != nil {
		return nil, fmt.Errorf("%s child: decode metrics: %w", engine, err)
	}
	return ms, nil
}

func depVersions() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dependency versions unknown"
	}
	var out []string
	for _, d := range bi.Deps {
		if d.Path == "go.etcd.io/bbolt" || d.Path == "github.com/cockroachdb/pebble/v2" {
			out = append(out, d.Path+" "+d.Version)
		}
	}
	return strings.Join(out, ", ")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return math.NaN()
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// printTable prints one row per metric: the median of each engine, and the median, min and max
// of the per-round ratios of each other engine to the first.
func printTable(names []string, results map[string][][]storebench.Metric) {
	base := results[names[0]]
	hdr := "| metric | unit |"
	sep := "|---|---|"
	for _, n := range names {
		hdr += " " + n + " |"
		sep += "---:|"
	}
	for _, n := range names[1:] {
		hdr += fmt.Sprintf(" %s/%s (min–max) |", n, names[0])
		sep += "---:|"
	}
	fmt.Println(hdr + " better |")
	fmt.Println(sep + "---|")
	for i, m := range base[0] {
		row := fmt.Sprintf("| %s | %s |", m.Name, m.Unit)
		per := map[string][]float64{}
		for _, n := range names {
			for _, round := range results[n] {
				per[n] = append(per[n], round[i].Value)
			}
			row += " " + num(median(per[n])) + " |"
		}
		for _, n := range names[1:] {
			var ratios []float64
			for r := range per[n] {
				if per[names[0]][r] != 0 {
					ratios = append(ratios, per[n][r]/per[names[0]][r])
				}
			}
			if len(ratios) == 0 {
				row += " – |"
				continue
			}
			row += fmt.Sprintf(" **%.2f** (%.2f–%.2f) |", median(ratios), slices.Min(ratios), slices.Max(ratios))
		}
		better := "lower"
		if m.Higher {
			better = "higher"
		}
		fmt.Println(row + " " + better + " |")
	}
}

func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}
