// Command caucus-sim runs caucus's deterministic cluster simulator (internal/sim) over many
// seeds, or replays one seed with a step trace.
//
//	caucus-sim -seeds 10000 -nodes 5          # explore
//	caucus-sim -seed 1234 -nodes 5 -v         # replay one seed, printing every step
//	caucus-sim -seeds 500 -bug VoteNotPersisted -profile hostile   # demo a planted bug
//	caucus-sim -seeds 200 -store wal          # nodes persist through internal/wal on a faulty simulated disk
//	caucus-sim -seeds 500 -defer-leader-sync on -bug ReportUnsyncedLeaderWrites -profile hostile
//	caucus-sim -seeds 20000 -driver node      # real internal/node members over internal/wal on simulated disks
//	caucus-sim -seeds 500 -driver node -node-bug NeverSyncLog
//	caucus-sim -seeds 2000 -driver node -sm fsm   # the real internal/fsm, writes with events, the event stream checks
//	caucus-sim -seeds 50 -driver node -sm fsm -fsm-bug ReplayDropsEvents
//
// Seeds run on one goroutine per core; each seed is itself single-threaded and deterministic, so
// the outcome of a seed never depends on the parallelism. On a violation the lowest failing seed
// is reported with its replay command and the exit status is 1.
package main

import (
	"cmp"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caucus/caucus/internal/node"
	"github.com/caucus/caucus/internal/sim"
	"github.com/caucus/caucus/internal/sim/walstore"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("caucus-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seeds := fs.Int("seeds", 1000, "number of seeds to run")
	seed := fs.Int64("seed", -1, "run this single seed (overrides -seeds and -start)")
	start := fs.Uint64("start", 1, "first seed")
	nodes := fs.Int("nodes", 3, "initial cluster size (3, 5 or 7)")
	ticks := fs.Int("ticks", sim.DefaultTicks, "ticks of the chaos phase per run")
	verbose := fs.Bool("v", false, "print a step trace (single seed only)")
	bug := fs.String("bug", "", "plant bugs (comma-separated): "+strings.Join(sim.BugNames(), ", "))
	profile := fs.String("profile", string(sim.ProfileSwarm), "fault profile: swarm or hostile")
	ackCheck := fs.Bool("ack-check", true, "check that acknowledgements follow persistence")
	workers := fs.Int("workers", runtime.NumCPU(), "seeds run in parallel")
	all := fs.Bool("all", false, "keep going after violations and list every failing seed")
	deferSync := fs.String("defer-leader-sync", sim.SwitchRandom.String(), "raft.Config.DeferLeaderSync (leaders sync their own appends later): random (the seed decides, half of the seeds), on or off")
	store := fs.String("store", "mem", "durable store of each node: mem, or wal (internal/wal on internal/vfs's simulated disk, which loses unsynced writes, tears writes and loses power inside saves)")
	driver := fs.String("driver", string(sim.DriverCore), "what drives the Raft cores: core (the simulator's own Ready loop) or node (real internal/node members over internal/wal and internal/snap on simulated disks; -store does not apply)")
	nodeBug := fs.String("node-bug", "", "plant internal/node driver bugs with -driver node (comma-separated): "+strings.Join(sim.NodeBugNames(), ", "))
	smKind := fs.String("sm", string(sim.SMRegister), "the members' state machine with -driver node: register (the simulator's in-memory registers) or fsm (internal/fsm over internal/mvcc in temporary bbolt files, writes carrying events, the event stream checks)")
	fsmBug := fs.String("fsm-bug", "", "plant outbox bugs with -sm fsm (comma-separated): "+strings.Join(sim.FSMBugNames(), ", "))
	if err := fs.Parse(args); err != nil {
		return 2
	}
	nodeBugs, err := sim.ParseNodeBugs(*nodeBug)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	fsmBugs, err := sim.ParseFSMBugs(*fsmBug)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	bugs, driverBugs, err := sim.ParseBugs(*bug)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	deferLeaderSync, err := sim.ParseSwitch(*deferSync)
	if err != nil {
		fmt.Fprintf(stderr, "caucus-sim: -defer-leader-sync: %v\n", err)
		return 2
	}
	if *nodes < 1 || *nodes > 9 {
		fmt.Fprintln(stderr, "caucus-sim: -nodes must be between 1 and 9")
		return 2
	}
	if p := sim.Profile(*profile); p != sim.ProfileSwarm && p != sim.ProfileHostile {
		fmt.Fprintf(stderr, "caucus-sim: unknown profile %q\n", *profile)
		return 2
	}
	base := sim.Options{Nodes: *nodes, Ticks: *ticks, Profile: sim.Profile(*profile), Bugs: bugs, DriverBugs: driverBugs,
		DeferLeaderSync: deferLeaderSync, NoAckCheck: !*ackCheck, NodeBugs: nodeBugs}
	switch sim.Driver(*driver) {
	case sim.DriverCore:
	case sim.DriverNode:
		base.Driver = sim.DriverNode
	default:
		fmt.Fprintf(stderr, "caucus-sim: unknown driver %q\n", *driver)
		return 2
	}
	if base.Driver != sim.DriverNode && nodeBugs != (node.DriverBugs{}) {
		fmt.Fprintln(stderr, "caucus-sim: -node-bug needs -driver node")
		return 2
	}
	switch sim.SMKind(*smKind) {
	case sim.SMRegister:
	case sim.SMFSM:
		if base.Driver != sim.DriverNode {
			fmt.Fprintln(stderr, "caucus-sim: -sm fsm needs -driver node")
			return 2
		}
		base.StateMachine = sim.SMFSM
	default:
		fmt.Fprintf(stderr, "caucus-sim: unknown state machine %q\n", *smKind)
		return 2
	}
	if fsmBugs != (sim.FSMBugs{}) {
		if base.StateMachine != sim.SMFSM {
			fmt.Fprintln(stderr, "caucus-sim: -fsm-bug needs -sm fsm")
			return 2
		}
		base.FSMBugs = fsmBugs
	}
	switch *store {
	case "mem":
	case "wal":
		base.StorageName = "wal"
	default:
		fmt.Fprintf(stderr, "caucus-sim: unknown store %q\n", *store)
		return 2
	}
	first, count := *start, uint64(*seeds)
	if *seed >= 0 {
		first, count = uint64(*seed), 1
	}
	if *verbose {
		if count != 1 {
			fmt.Fprintln(stderr, "caucus-sim: -v needs -seed")
			return 2
		}
		base.Trace = stdout
	}
	began := time.Now()
	total, worst, failed := sweep(base, first, count, max(1, *workers), *all, stderr)
	fmt.Fprintf(stdout, "\n%s", total)
	fmt.Fprintf(stdout, "wall time:          %s\n", time.Since(began).Round(time.Millisecond))
	if *all && len(failed) > 0 {
		slices.SortFunc(failed, func(a, b *sim.Violation) int { return cmp.Compare(a.Seed, b.Seed) })
		fmt.Fprintf(stdout, "\nfailing seeds:\n")
		for _, v := range failed {
			fmt.Fprintf(stdout, "  seed %d: %s at tick %d: %.200s\n", v.Seed, v.Kind, v.Tick, v.Detail)
		}
	}
	if worst != nil {
		fmt.Fprintf(stdout, "\nVIOLATION\n%v\n", worst)
		return 1
	}
	return 0
}

// sweep runs seeds [first, first+count) on workers goroutines. After a violation no seed above the
// lowest failing one is started, so the reported seed is the lowest failing seed (a pure
// function of the seed range, not of scheduling).
//
// With all set, every seed runs and every violation is returned.
func sweep(base sim.Options, first, count uint64, workers int, all bool, stderr io.Writer) (sim.Stats, *sim.Violation, []*sim.Violation) {
	var (
		next     atomic.Uint64
		done     atomic.Uint64
		mu       sync.Mutex
		total    sim.Stats
		worst    *sim.Violation
		stopAt   = first + count
		finished = make(chan struct{})
		wg       sync.WaitGroup
		failed   []*sim.Violation
	)
	next.Store(first)
	bar := newProgress(stderr, count)
	drawn := make(chan struct{})
	go func() {
		defer close(drawn)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-finished:
				return
			case <-t.C:
				bar.draw(done.Load())
			}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				s := next.Add(1) - 1
				mu.Lock()
				limit := stopAt
				mu.Unlock()
				if s >= limit {
					return
				}
				o := base
				o.Seed = s
				if o.StorageName == "wal" && o.Driver != sim.DriverNode {
					o.NewStorage = walstore.Factory(s, walstore.Options{})
				}
				res := sim.Run(o)
				mu.Lock()
				total.Add(res.Stats)
				if v := res.Violation; v != nil {
					failed = append(failed, v)
					if worst == nil || v.Seed < worst.Seed {
						worst = v
						if !all {
							stopAt = v.Seed
						}
					}
				}
				mu.Unlock()
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(finished)
	<-drawn // the bar's goroutine has stopped: the final draw is the last
	bar.draw(done.Load())
	fmt.Fprintln(stderr)
	return total, worst, failed
}

// progress is a one-line progress bar redrawn in place with \r.
type progress struct {
	w     io.Writer
	total uint64
	began time.Time
}

func newProgress(w io.Writer, total uint64) *progress {
	return &progress{w: w, total: total, began: time.Now()}
}

func (p *progress) draw(done uint64) {
	const width = 40
	frac := 1.0
	if p.total > 0 {
		frac = float64(done) / float64(p.total)
	}
	fill := int(frac * width)
	rate := float64(done) / max(time.Since(p.began).Seconds(), 1e-9)
	fmt.Fprintf(p.w, "\r[%s%s] %3.0f%% %d/%d seeds %.1f seeds/s", strings.Repeat("#", fill), strings.Repeat(".", width-fill),
		frac*100, done, p.total, rate)
}
