// Command raftbench runs the raftbench harness for caucus's Raft core and etcd's raft side by
// side: for each round, mode (memory-only or with wire encoding) and proposer count it runs every
// implementation once, alternating which goes first, then prints per-configuration medians and
// the caucus/etcd ratio. Ratios are the median of per-round ratios, so both sides of each ratio
// were measured seconds apart on the same (shared, noisy) machine.
//
// Usage:
//
//	go run ./cmd/raftbench [-rounds 5] [-n 100000] [-proposers 1,64] [-modes mem,wire]
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caucus/caucus/bench/raftbench"
)

type result struct {
	opsPerSec, allocsPerOp, bytesPerOp float64
}

type key struct {
	mode      string
	proposers int
	impl      raftbench.Impl
}

func main() {
	rounds := flag.Int("rounds", 5, "rounds; each runs every implementation once per configuration")
	n := flag.Int("n", 100000, "committed proposals measured per run")
	warm := flag.Int("warmup", 10000, "proposals committed before measuring, on the same cluster")
	payload := flag.Int("payload", 256, "proposal size in bytes")
	proposersFlag := flag.String("proposers", "1,64", "comma-separated outstanding-proposal counts")
	modesFlag := flag.String("modes", "mem,wire", "mem: no encoding; wire: encode messages and WAL records")
	flag.Parse()

	var proposers []int
	for _, s := range strings.Split(*proposersFlag, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || p <= 0 {
			fatalf("bad -proposers %q", *proposersFlag)
		}
		proposers = append(proposers, p)
	}
	modes := strings.Split(*modesFlag, ",")
	for _, m := range modes {
		if m != "mem" && m != "wire" {
			fatalf("bad -modes %q", *modesFlag)
		}
	}

	fmt.Printf("raftbench: %d rounds x %d proposals of %d bytes, GOMAXPROCS=%d, %s\n",
		*rounds, *n, *payload, runtime.GOMAXPROCS(0), runtime.Version())
	results := map[key][]result{}
	failed := map[raftbench.Impl]error{}
	for r := 0; r < *rounds; r++ {
		impls := slices.Clone(raftbench.Impls)
		if r%2 == 1 {
			// Alternate the order so that neither side always runs right after the other's garbage.
			slices.Reverse(impls)
		}
		for _, mode := range modes {
			for _, p := range proposers {
				for _, impl := range impls {
					if failed[impl] != nil {
						continue
					}
					opts := raftbench.Options{Payload: *payload, Wire: mode == "wire"}
					res, err := runOnce(impl, opts, p, *warm, *n)
					if err != nil {
						failed[impl] = err
						fmt.Fprintf(os.Stderr, "raftbench: %s: %v (skipping it from now on)\n", impl, err)
						continue
					}
					k := key{mode, p, impl}
					results[k] = append(results[k], res)
				}
			}
		}
		fmt.Fprintf(os.Stderr, "round %d/%d done\n", r+1, *rounds)
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tproposers\tcaucus prop/s\tetcd prop/s\tcaucus/etcd\t(min-max)\tcaucus allocs/op\tetcd allocs/op\tcaucus B/op\tetcd B/op\t")
	for _, mode := range modes {
		for _, p := range proposers {
			c, e := results[key{mode, p, raftbench.Caucus}], results[key{mode, p, raftbench.Etcd}]
			var ratios []float64
			for i := range min(len(c), len(e)) {
				ratios = append(ratios, c[i].opsPerSec/e[i].opsPerSec)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", mode, p,
				med(c, func(r result) float64 { return r.opsPerSec }, "%.0f"),
				med(e, func(r result) float64 { return r.opsPerSec }, "%.0f"),
				fmtMedian(ratios, "%.2fx"), fmtRange(ratios),
				med(c, func(r result) float64 { return r.allocsPerOp }, "%.1f"),
				med(e, func(r result) float64 { return r.allocsPerOp }, "%.1f"),
				med(c, func(r result) float64 { return r.bytesPerOp }, "%.0f"),
				med(e, func(r result) float64 { return r.bytesPerOp }, "%.0f"))
		}
	}
	tw.Flush()
	if len(failed) > 0 {
		os.Exit(1)
	}
}

// runOnce builds a fresh cluster, warms it up (leader settled, logs past their first compaction
// when warm is large enough) and measures n proposals. Allocation counts come from MemStats
// deltas, so they include everything the process allocated meanwhile: only the harness runs.
func runOnce(impl raftbench.Impl, opts raftbench.Options, proposers, warm, n int) (result, error) {
	c, err := raftbench.New(impl, opts)
	if err != nil {
		return result{}, err
	}
	if err := c.Drive(proposers, warm); err != nil {
		return result{}, err
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	if err := c.Drive(proposers, n); err != nil {
		return result{}, err
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if err := c.Settle(); err != nil {
		return result{}, err
	}
	return result{
		opsPerSec:   float64(n) / elapsed.Seconds(),
		allocsPerOp: float64(after.Mallocs-before.Mallocs) / float64(n),
		bytesPerOp:  float64(after.TotalAlloc-before.TotalAlloc) / float64(n),
	}, nil
}

func med(rs []result, f func(result) float64, format string) string {
	vs := make([]float64, len(rs))
	for i, r := range rs {
		vs[i] = f(r)
	}
	return fmtMedian(vs, format)
}

func fmtMedian(vs []float64, format string) string {
	if len(vs) == 0 {
		return "n/a"
	}
	s := slices.Sorted(slices.Values(vs))
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf(format, m)
}

func fmtRange(vs []float64) string {
	if len(vs) == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f-%.2f", slices.Min(vs), slices.Max(vs))
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "raftbench: "+format+"\n", args...)
	os.Exit(2)
}
