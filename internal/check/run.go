// Package check is caucus's Jepsen-style correctness checker, wired as `caucus check`: it runs a
// workload of concurrent clients against a cluster while a nemesis injects faults, records every
// operation (package history), and judges the history against the workload's specification
// (package model): linearizable single-key registers (porcupine), a grow-only set with no lost
// or phantom elements, a bank whose total never changes, events consumed through a durable
// consumer with every acknowledged one processed exactly once, and watchers that all see the
// same stream of changes and events, without gaps, across member failures.
//
// The cluster is either an existing one (--endpoints, optionally with --docker containers for
// the nemesis) or local processes launched by package cluster (--local N), whose peer links run
// through fault-injecting proxies so partitions need neither Docker nor root.
//
// # Invariants
//
//   - A run never reports success while a violation is known: Execute returns an error for any
//     violation, and also when the check was inconclusive (the linearizability search timed
//     out) or the final reads never succeeded, since then nothing was proven.
//   - Every fault is healed before the final reads, and local clusters are stopped on every
//     exit path.
//   - Keys live under a per-run prefix, so repeated runs on one cluster are independent.
package check

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caucus/caucus/internal/check/cluster"
	"github.com/caucus/caucus/internal/check/history"
	"github.com/caucus/caucus/internal/check/model"
	"github.com/caucus/caucus/internal/check/nemesis"
)

// Options configures a run. Run fills it from command-line flags; tests fill it directly.
type Options struct {
	// Endpoints of an existing cluster; ignored when Local > 0.
	Endpoints []string
	// Local launches that many local processes instead.
	Local int
	// Binary is the caucus executable for Local; empty builds ./cmd/caucus of this module.
	Binary string
	// ServerArgs are extra flags for every local server (e.g. --unsafe-test-bug=stale-reads).
	ServerArgs []string
	// Docker uses the Docker nemesis against Containers (same order as Endpoints) on Network.
	Docker     bool
	Containers []string
	Network    string

	Nemesis  []nemesis.Kind
	Targets  []nemesis.Target
	Combined bool
	// Quiet and Fault are the lengths of the healthy and the faulty periods of the schedule.
	Quiet, Fault time.Duration

	Workload string
	Time     time.Duration
	Clients  int
	// Keys (register) and Accounts (bank) size the workloads.
	Keys, Accounts int
	Seed           uint64
	// OpTimeout bounds one request attempt; CheckTimeout bounds the linearizability search.
	OpTimeout, CheckTimeout time.Duration
	// plantConsumerBug makes the consumer workload process at least once instead of exactly
	// once (tests only: the checker must report the duplicates).
	plantConsumerBug bool
	// plantWatchGap makes the watch workload's watchers resume a revision late (tests only: the
	// checker must report the gaps).
	plantWatchGap bool
	// Results is the directory for history.json, summary.json and visualizations; empty means
	// ./results/<timestamp>.
	Results string
}

// Summary is what a run found; it is also written to summary.json.
type Summary struct {
	Workload   string          `json:"workload"`
	Nemesis    []nemesis.Kind  `json:"nemesis"`
	Duration   string          `json:"duration"`
	Ops        history.Counts  `json:"ops"`
	Faults     []nemesis.Event `json:"faults"`
	Phases     []Phase         `json:"phases"`
	Result     model.Result    `json:"result"`
	ResultsDir string          `json:"results_dir"`
	// Visualization is the porcupine HTML of a register violation, if any.
	Visualization string `json:"visualization,omitempty"`
	// UnidentifiedPeerConns counts peer connections the partition proxies could not attribute
	// to a member (local clusters only); partitions did not cut those.
	UnidentifiedPeerConns int64 `json:"unidentified_peer_conns,omitempty"`
}

// Phase is the availability of the cluster while one kind of fault (or none) was active.
type Phase struct {
	Name         string  `json:"name"`
	Ops          int     `json:"ops"`
	OK           int     `json:"ok"`
	Fail         int     `json:"fail"`
	Unknown      int     `json:"unknown"`
	Availability float64 `json:"availability"`
}

// ErrViolation is wrapped by the error of a run that found a violation.
var ErrViolation = errors.New("check: consistency violation")

// Run is `caucus check`: it parses args, runs, prints a summary to stdout and progress to
// stderr, and returns an error (for a non-zero exit) on a violation or a failed run.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("caucus check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	endpoints := fs.String("endpoints", "", "comma-separated client URLs of an existing cluster")
	fs.IntVar(&o.Local, "local", 0, "launch N local caucus processes (peer links through fault-injecting proxies)")
	fs.StringVar(&o.Binary, "binary", "", "caucus binary for --local (default: go build ./cmd/caucus)")
	serverArgs := fs.String("server-args", "", "space-separated extra flags for local servers, e.g. --unsafe-test-bug=stale-reads")
	nem := fs.String("nemesis", "kill,pause,partition", "faults: comma list of kill,pause,partition,member, or none")
	targets := fs.String("targets", "leader,follower,majority", "whom single faults hit, in turn")
	fs.BoolVar(&o.Combined, "combined", false, "inject two kinds of fault at once")
	fs.DurationVar(&o.Quiet, "quiet", 3*time.Second, "healthy period between faults")
	fs.DurationVar(&o.Fault, "fault", 4*time.Second, "length of each fault")
	fs.StringVar(&o.Workload, "workload", "register", "register, set, bank, consumer (events delivered to a durable consumer, each processed exactly once) or watch (watchers see the same stream, no gaps)")
	fs.DurationVar(&o.Time, "time", 30*time.Second, "how long the workload runs")
	fs.IntVar(&o.Clients, "clients", 6, "concurrent clients (watch: half of them watchers)")
	fs.IntVar(&o.Keys, "keys", 5, "register keys; keys of the consumer and watch workloads")
	fs.IntVar(&o.Accounts, "accounts", 5, "bank accounts")
	seed := fs.Uint64("seed", 0, "random seed for the operation mix and targets (0: time-based)")
	fs.DurationVar(&o.OpTimeout, "op-timeout", time.Second, "timeout of one request attempt")
	fs.DurationVar(&o.CheckTimeout, "check-timeout", 2*time.Minute, "bound on the linearizability search")
	fs.StringVar(&o.Results, "results", "", "results directory (default ./results/<timestamp>)")
	fs.BoolVar(&o.Docker, "docker", false, "use the Docker nemesis against --containers")
	containers := fs.String("containers", "", "comma-separated container names, in --endpoints order")
	fs.StringVar(&o.Network, "network", "caucus", "Docker network the containers talk over")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("check: unexpected arguments %q", fs.Args())
	}
	o.Endpoints = splitList(*endpoints)
	o.Containers = splitList(*containers)
	o.ServerArgs = strings.Fields(*serverArgs)
	o.Seed = *seed
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	var err error
	if o.Nemesis, err = nemesis.ParseKinds(*nem); err != nil {
		return err
	}
	if o.Targets, err = nemesis.ParseTargets(*targets); err != nil {
		return err
	}
	sum, err := Execute(ctx, o, stderr)
	if sum != nil {
		PrintSummary(stdout, sum)
	}
	return err
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func (o *Options) defaults() error {
	if o.Clients <= 0 {
		o.Clients = 6
	}
	if o.Keys <= 0 {
		o.Keys = 5
	}
	if o.Accounts < 2 {
		o.Accounts = 5
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = time.Second
	}
	if o.Quiet <= 0 {
		o.Quiet = 3 * time.Second
	}
	if o.Fault <= 0 {
		o.Fault = 4 * time.Second
	}
	if o.Time <= 0 {
		o.Time = 30 * time.Second
	}
	if o.Results == "" {
		o.Results = filepath.Join("results", time.Now().UTC().Format("20060102T150405Z"))
	}
	if o.Local == 0 && len(o.Endpoints) == 0 {
		return errors.New("check: need --endpoints or --local N")
	}
	if o.Docker && (o.Local > 0 || len(o.Containers) != len(o.Endpoints)) {
		return errors.New("check: --docker needs --endpoints and as many --containers, and no --local")
	}
	if len(o.Nemesis) > 0 && o.Local == 0 && !o.Docker {
		return errors.New("check: a nemesis needs --local or --docker (nothing to inject faults into)")
	}
	return nil
}

func newWorkload(o Options) (workload, error) {
	switch o.Workload {
	case "register":
		return &registerWorkload{keys: o.Keys}, nil
	case "set":
		return setWorkload{}, nil
	case "bank":
		return &bankWorkload{accounts: o.Accounts, initial: 100}, nil
	case "consumer":
		return &consumerWorkload{keys: o.Keys, ackWait: 1500 * time.Millisecond, ackApart: o.plantConsumerBug}, nil
	case "watch":
		if o.Clients < 2 {
			return nil, errors.New("check: the watch workload needs at least 2 clients (watchers and writers)")
		}
		return newWatchWorkload(o.Keys, o.Clients, o.plantWatchGap), nil
	}
	return nil, fmt.Errorf("check: unknown workload %q (want register, set, bank, consumer or watch)", o.Workload)
}

// Execute performs one run, writing progress to log. It returns the summary (nil only if the
// run could not start) and an error wrapping ErrViolation on any violation.
func Execute(ctx context.Context, o Options, log io.Writer) (*Summary, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	wl, err := newWorkload(o)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Results, 0o755); err != nil {
		return nil, fmt.Errorf("check: results dir: %w", err)
	}
	// One lock for every writer of the progress log: the launcher, the nemesis and the
	// progress ticker write from their own goroutines.
	log = &lockedWriter{w: log}
	logf := func(format string, args ...any) { fmt.Fprintf(log, format+"\n", args...) }

	endpoints := o.Endpoints
	var backend nemesis.Backend
	var local *cluster.Cluster
	if o.Local > 0 {
		bin := o.Binary
		if bin == "" {
			wd, err := os.Getwd()
			if err != nil {
				return nil, fmt.Errorf("check: %w", err)
			}
			root, err := cluster.ModuleRoot(wd)
			if err != nil {
				return nil, err
			}
			logf("building ./cmd/caucus ...")
			if bin, err = cluster.Build(ctx, root, filepath.Join(o.Results, "bin")); err != nil {
				return nil, err
			}
		}
		dir, err := filepath.Abs(filepath.Join(o.Results, "cluster"))
		if err != nil {
			return nil, fmt.Errorf("check: %w", err)
		}
		c, err := cluster.Start(ctx, cluster.Config{Binary: bin, Size: o.Local, Dir: dir, ExtraArgs: o.ServerArgs, Log: log})
		if err != nil {
			return nil, err
		}
		defer c.Stop()
		local = c
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		leader, err := c.WaitLeader(wctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("check: local cluster (logs in %s): %w", dir, err)
		}
		logf("cluster up, leader %s; logs in %s", leader.Name, dir)
		endpoints = c.Endpoints()
		backend = nemesis.Processes{C: c}
	} else if o.Docker {
		eps := map[string]string{}
		for i, c := range o.Containers {
			eps[c] = o.Endpoints[i]
		}
		backend = nemesis.Docker{Containers: o.Containers, Endpoints: eps, Network: o.Network}
	}

	httpc := cluster.NewHTTPClient(o.OpTimeout)
	if local == nil {
		// An existing cluster may have just been started (compose up): the setup writes need a
		// leader, so wait for one rather than fail on the first election.
		if err := waitLeader(ctx, httpc, endpoints, 60*time.Second); err != nil {
			return nil, err
		}
	}
	prefix := fmt.Sprintf("check/%d/", time.Now().UnixNano())
	e := newEnv(httpc, endpoints, prefix, o.OpTimeout)
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = wl.setup(sctx, e)
	cancel()
	if err != nil {
		return nil, err
	}

	var nem *nemesis.Nemesis
	if backend != nil {
		nem = nemesis.New(backend, e.rec.Now, o.Seed)
	}
	start := time.Now()
	runCtx, stopRun := context.WithTimeout(ctx, o.Time)
	defer stopRun()
	var wg sync.WaitGroup
	var nemErr error
	if nem != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nemErr = nem.Schedule(runCtx, nemesis.Plan(o.Nemesis, o.Combined, o.Targets), o.Quiet, o.Fault, logf)
		}()
	}
	workers := make([]*worker, o.Clients)
	for i := range workers {
		workers[i] = e.newWorker(i, o.Seed)
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			// Operations run under the outer ctx: one in flight when the time is up completes
			// (within the write budget) instead of being cut off into an unknown outcome.
			for runCtx.Err() == nil {
				wl.step(ctx, e, w)
			}
		}(workers[i])
	}
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				c, inFlight := e.rec.Progress()
				active := ""
				if nem != nil {
					active = nem.Active()
				}
				logf("[%4.0fs/%v] ok=%d fail=%d unknown=%d in-flight=%d faults=%d %s", time.Since(start).Seconds(), o.Time,
					c.OK, c.Fail, c.Unknown, inFlight, len(eventsOf(nem)), active)
			}
		}
	}()
	wg.Wait()
	<-progressDone
	if nemErr != nil {
		logf("nemesis: %v", nemErr)
	}

	// Final reads against the healed cluster, with a generous deadline for recovery.
	fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	finalErr := wl.final(fctx, e, e.newWorker(o.Clients, o.Seed))
	cancel()

	ops := e.rec.Ops()
	sum := &Summary{
		Workload:   wl.name(),
		Nemesis:    o.Nemesis,
		Duration:   time.Since(start).Round(time.Millisecond).String(),
		Ops:        history.Count(ops),
		Faults:     eventsOf(nem),
		ResultsDir: o.Results,
	}
	sum.Phases = phases(ops, sum.Faults)
	if local != nil {
		sum.UnidentifiedPeerConns = local.Unidentified()
	}
	logf("checking %d operations ...", len(ops))
	res := wl.check(ops, o.CheckTimeout)
	sum.Result = res.Result
	if finalErr != nil {
		sum.Result.Valid = false
		sum.Result.Violations = append(sum.Result.Violations, model.Violation{Kind: "no-final-read", Detail: finalErr.Error()})
	}
	if !sum.Result.Valid && res.visualize != nil {
		p := filepath.Join(o.Results, "linearizability.html")
		if err := res.visualize(p); err != nil {
			logf("%v", err)
		} else {
			sum.Visualization = p
		}
	}
	var errs []error
	if err := history.WriteJSON(filepath.Join(o.Results, "history.json"), ops); err != nil {
		errs = append(errs, err)
	}
	if b, err := json.MarshalIndent(sum, "", "  "); err != nil {
		errs = append(errs, fmt.Errorf("check: summary: %w", err))
	} else if err := os.WriteFile(filepath.Join(o.Results, "summary.json"), b, 0o644); err != nil {
		errs = append(errs, fmt.Errorf("check: summary: %w", err))
	}
	switch {
	case sum.Result.Inconclusive:
		errs = append(errs, fmt.Errorf("check: inconclusive: the linearizability search exceeded %v", o.CheckTimeout))
	case !sum.Result.Valid:
		errs = append(errs, fmt.Errorf("%w: %d violation(s), see %s", ErrViolation, len(sum.Result.Violations), o.Results))
	}
	return sum, errors.Join(errs...)
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func waitLeader(ctx context.Context, httpc *http.Client, endpoints []string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		_, err := cluster.LeaderOf(ctx, httpc, endpoints)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("check: no leader among %v: %w (last: %w)", endpoints, ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func eventsOf(n *nemesis.Nemesis) []nemesis.Event {
	if n == nil {
		return nil
	}
	return n.Events()
}

// phases attributes every operation (by invocation time) to the faults active then, or to
// "healthy", and computes availability (completed OK / attempted) per phase.
func phases(ops []history.Op, faults []nemesis.Event) []Phase {
	by := map[string]*Phase{}
	for _, op := range ops {
		var names []string
		for _, f := range faults {
			if f.Start <= op.Call && (f.End == 0 || op.Call < f.End) {
				names = append(names, fmt.Sprintf("%s %s", f.Kind, f.Target))
			}
		}
		name := "healthy"
		if len(names) > 0 {
			sort.Strings(names)
			name = strings.Join(names, " + ")
		}
		p := by[name]
		if p == nil {
			p = &Phase{Name: name}
			by[name] = p
		}
		p.Ops++
		switch op.Status {
		case history.OK:
			p.OK++
		case history.Fail:
			p.Fail++
		default:
			p.Unknown++
		}
	}
	var out []Phase
	for _, p := range by {
		p.Availability = float64(p.OK) / float64(p.Ops)
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// PrintSummary writes a human-readable summary.
func PrintSummary(w io.Writer, s *Summary) {
	fmt.Fprintf(w, "workload %s, nemesis %v, ran %s\n", s.Workload, s.Nemesis, s.Duration)
	fmt.Fprintf(w, "ops: %d ok, %d failed, %d unknown\n", s.Ops.OK, s.Ops.Fail, s.Ops.Unknown)
	fmt.Fprintf(w, "faults injected: %d\n", len(s.Faults))
	for _, f := range s.Faults {
		line := fmt.Sprintf("  %-9s %-8s %v at %.1fs", f.Kind, f.Target, f.Members, time.Duration(f.Start).Seconds())
		if f.End > 0 {
			line += fmt.Sprintf(" for %.1fs", time.Duration(f.End-f.Start).Seconds())
		}
		if f.Error != "" {
			line += " error: " + f.Error
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w, "availability by phase:")
	for _, p := range s.Phases {
		fmt.Fprintf(w, "  %-28s %5d ops %6.1f%% ok (%d failed, %d unknown)\n", p.Name, p.Ops, 100*p.Availability, p.Fail, p.Unknown)
	}
	var stats []string
	for k, v := range s.Result.Stats {
		stats = append(stats, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(stats)
	fmt.Fprintf(w, "checker: %s\n", strings.Join(stats, " "))
	fmt.Fprintf(w, "result: %s\n", s.Result)
	if s.UnidentifiedPeerConns > 0 {
		fmt.Fprintf(w, "WARNING: %d peer connection(s) could not be attributed to a member; partitions did not cut them\n", s.UnidentifiedPeerConns)
	}
	if s.Visualization != "" {
		fmt.Fprintf(w, "visualization: %s\n", s.Visualization)
	}
	fmt.Fprintf(w, "results: %s\n", s.ResultsDir)
}
