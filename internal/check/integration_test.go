package check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/check/cluster"
	"github.com/caucus/caucus/internal/check/nemesis"
)

// The integration tests launch real `caucus server` processes on 127.0.0.10-12 and inject faults
// into them; they take ~30 s each and are skipped with -short.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func caucusBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		wd, err := os.Getwd()
		if err != nil {
			buildErr = err
			return
		}
		root, err := cluster.ModuleRoot(wd)
		if err != nil {
			buildErr = err
			return
		}
		if buildDir, buildErr = os.MkdirTemp("", "caucus-check-bin-"); buildErr != nil {
			return
		}
		binPath, buildErr = cluster.Build(context.Background(), root, buildDir)
	})
	if buildErr != nil {
		t.Fatalf("building caucus: %v", buildErr)
	}
	return binPath
}

// runCheck runs one check against 3 local members and returns the summary and error; on
// failure the results directory (history, summary, member logs) is kept and named.
func runCheck(t *testing.T, o Options) (*Summary, error) {
	t.Helper()
	o.Local = 3
	o.Binary = caucusBinary(t)
	dir, err := os.MkdirTemp("", "caucus-check-"+strings.ReplaceAll(t.Name(), "/", "-")+"-")
	if err != nil {
		t.Fatal(err)
	}
	o.Results = dir
	var log bytes.Buffer
	sum, err := Execute(context.Background(), o, &log)
	if sum != nil {
		var out bytes.Buffer
		PrintSummary(&out, sum)
		t.Logf("summary:\n%s", out.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("progress log:\n%s", log.String())
			t.Logf("results kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return sum, err
}

func kindsHit(sum *Summary) map[nemesis.Kind]int {
	hit := map[nemesis.Kind]int{}
	for _, f := range sum.Faults {
		if f.Error == "" {
			hit[f.Kind]++
		}
	}
	return hit
}

// TestRegisterLeaderFaults: the register workload with kill -9, pause and partition of the
// leader, in turn, for 20 s. The history must be linearizable, every kind of fault must have
// been injected, and the cluster must have served operations while healthy.
func TestRegisterLeaderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("launches a 3-process cluster for ~30s")
	}
	sum, err := runCheck(t, Options{
		Workload: "register",
		Nemesis:  []nemesis.Kind{nemesis.Kill, nemesis.Pause, nemesis.Partition},
		Targets:  []nemesis.Target{nemesis.Leader},
		Time:     20 * time.Second,
		Quiet:    2 * time.Second,
		Fault:    3 * time.Second,
		Clients:  6,
		Seed:     1,
	})
	if err != nil {
		t.Fatalf("check failed: %v", err)
	}
	hit := kindsHit(sum)
	for _, k := range []nemesis.Kind{nemesis.Kill, nemesis.Pause, nemesis.Partition} {
		if hit[k] == 0 {
			t.Errorf("no %s fault was injected: %v", k, sum.Faults)
		}
	}
	if sum.Ops.OK < 100 {
		t.Errorf("only %d operations succeeded: the run proved little", sum.Ops.OK)
	}
	if sum.Result.Stats["linearizable-ops"] == 0 {
		t.Error("no operation reached the linearizability checker")
	}
	for _, name := range []string{"history.json", "summary.json"} {
		if _, err := os.Stat(filepath.Join(sum.ResultsDir, name)); err != nil {
			t.Errorf("missing %s: %v", name, err)
		}
	}
}

// TestStaleReadsBugIsCaught plants the stale-reads bug (linearizable reads served from local
// state without ReadIndex) and requires the checker to report a violation: a partitioned or
// paused member keeps answering reads from its old state while the others move on.
func TestStaleReadsBugIsCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("launches a 3-process cluster for ~30s")
	}
	sum, err := runCheck(t, Options{
		Workload:   "register",
		ServerArgs: []string{"--unsafe-test-bug=stale-reads"},
		Nemesis:    []nemesis.Kind{nemesis.Partition, nemesis.Pause},
		Targets:    []nemesis.Target{nemesis.Leader, nemesis.Follower},
		Time:       20 * time.Second,
		Quiet:      time.Second,
		Fault:      3 * time.Second,
		Clients:    8,
		Keys:       2,
		Seed:       2,
	})
	if !errors.Is(err, ErrViolation) {
		t.Fatalf("planted stale reads not detected: err=%v", err)
	}
	if sum.Visualization == "" {
		t.Error("no visualization written for the violation")
	} else if _, err := os.Stat(sum.Visualization); err != nil {
		t.Errorf("visualization: %v", err)
	}
}

// TestAckBeforeCommitBugIsCaught plants the ack-before-commit bug (a put acknowledged once it is
// handed to Raft, before it commits) and requires the checker to report a violation: a read
// that starts after the acknowledgement can miss the write, and killing the leader can lose it.
func TestAckBeforeCommitBugIsCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("launches a 3-process cluster for ~20s")
	}
	_, err := runCheck(t, Options{
		Workload:   "register",
		ServerArgs: []string{"--unsafe-test-bug=ack-before-commit"},
		Nemesis:    []nemesis.Kind{nemesis.Kill},
		Targets:    []nemesis.Target{nemesis.Leader},
		Time:       15 * time.Second,
		Quiet:      time.Second,
		Fault:      2 * time.Second,
		Clients:    8,
		Keys:       2,
		Seed:       3,
	})
	if !errors.Is(err, ErrViolation) {
		t.Fatalf("planted ack-before-commit not detected: err=%v", err)
	}
}

// TestSetAndBankUnderKill runs the other two workloads briefly with kill -9 of the leader.
func TestSetAndBankUnderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("launches a 3-process cluster twice")
	}
	for _, wl := range []string{"set", "bank"} {
		t.Run(wl, func(t *testing.T) {
			sum, err := runCheck(t, Options{
				Workload: wl,
				Nemesis:  []nemesis.Kind{nemesis.Kill, nemesis.Partition},
				Targets:  []nemesis.Target{nemesis.Leader},
				Time:     10 * time.Second,
				Quiet:    2 * time.Second,
				Fault:    2 * time.Second,
				Seed:     3,
			})
			if err != nil {
				t.Fatalf("check failed: %v", err)
			}
			if sum.Ops.OK < 50 {
				t.Errorf("only %d operations succeeded", sum.Ops.OK)
			}
		})
	}
}

// TestConsumerUnderFaults runs the consumer workload briefly with kill -9 and partition of the
// leader: every acknowledged event must be processed exactly once, with crashed consumers'
// deliveries coming back after the ack wait.
func TestConsumerUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("launches a 3-process cluster for ~12s")
	}
	sum, err := runCheck(t, Options{
		Workload: "consumer",
		Nemesis:  []nemesis.Kind{nemesis.Kill, nemesis.Partition},
		Targets:  []nemesis.Target{nemesis.Leader},
		Time:     8 * time.Second,
		Quiet:    2 * time.Second,
		Fault:    2 * time.Second,
		Seed:     4,
	})
	if err != nil {
		t.Fatalf("check failed: %v", err)
	}
	if st := sum.Result.Stats; st["effects"] < 50 || st["redeliveries"] == 0 {
		t.Errorf("the run proved little: %v", st)
	}
}

// TestConsumerAtLeastOnceIsCaught plants at-least-once processing (the effect written, then
// acknowledged apart, with crashes between): the checker must report the duplicate effects.
func TestConsumerAtLeastOnceIsCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("launches a 3-process cluster for ~10s")
	}
	sum, err := runCheck(t, Options{
		Workload:         "consumer",
		plantConsumerBug: true,
		Time:             3 * time.Second,
		Seed:             5,
	})
	if !errors.Is(err, ErrViolation) {
		t.Fatalf("planted at-least-once processing not detected: err=%v", err)
	}
	for _, v := range sum.Result.Violations {
		if v.Kind != "duplicate" {
			t.Errorf("unexpected violation %v", v)
		}
	}
}

// TestWatchUnderFaults runs the watch workload briefly with kill -9 and partition of the
// leader, which cut off the watchers of that member: every watcher must see the reference
// stream, no gaps, no duplicates, in order.
func TestWatchUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("launches a 3-process cluster for ~12s")
	}
	sum, err := runCheck(t, Options{
		Workload: "watch",
		Nemesis:  []nemesis.Kind{nemesis.Kill, nemesis.Partition},
		Targets:  []nemesis.Target{nemesis.Leader},
		Time:     8 * time.Second,
		Quiet:    2 * time.Second,
		Fault:    2 * time.Second,
		Seed:     6,
	})
	if err != nil {
		t.Fatalf("check failed: %v", err)
	}
	st := sum.Result.Stats
	if st["reference-items"] < 1000 || st["watchers"] != 3 {
		t.Errorf("the run proved little: %v", st)
	}
	for i := range 3 {
		if n := st[fmt.Sprintf("watcher-%d-streams", i)]; n < 3 {
			t.Errorf("watcher %d resumed only %d time(s)", i, n-1)
		}
	}
}

// TestWatchGapIsCaught plants watchers that resume a revision late: the checker must report
// the gaps.
func TestWatchGapIsCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("launches a 3-process cluster for ~10s")
	}
	sum, err := runCheck(t, Options{
		Workload:      "watch",
		plantWatchGap: true,
		Time:          4 * time.Second,
		Seed:          7,
	})
	if !errors.Is(err, ErrViolation) {
		t.Fatalf("planted gaps not detected: err=%v", err)
	}
	for _, v := range sum.Result.Violations {
		if v.Kind != "gap" && v.Kind != "more" {
			t.Errorf("unexpected violation %v", v)
		}
	}
}
