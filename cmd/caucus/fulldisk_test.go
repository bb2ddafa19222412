//go:build linux

// The full-disk scenarios need a filesystem that really runs out of space under a running
// member: a size-limited tmpfs, which is Linux-only (see fulldisk_linux_test.go).

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caucus/caucus/client"
	"github.com/caucus/caucus/internal/check/cluster"
	"github.com/caucus/caucus/internal/snap"
	"github.com/caucus/caucus/internal/vfs"
	"github.com/caucus/caucus/internal/wal"
)

const (
	// fullDiskHeadroom is the space left on the small member's disk once its first WAL segment
	// (preallocated to wal.DefaultSegmentBytes when the member starts) is in place. The WAL
	// itself appends inside its preallocated segment, so what runs out first is the state
	// machine (bbolt growing kv.db) or a snapshot file: the two writers the WAL's own ENOSPC
	// unit tests do not cover.
	fullDiskHeadroom = 6 << 20
	// fullDiskValueBytes makes a few hundred writes fill the headroom.
	fullDiskValueBytes = 8 << 10
	fullDiskWriters    = 4
	// writesAfterFull is how many writes the cluster must acknowledge after the small member
	// stopped: proof that the two healthy members still form a working quorum.
	writesAfterFull = 100
	// noSpace is the kernel's text for ENOSPC, which the member's report must carry.
	noSpace = "no space left on device"
)

// TestFullDisk fills the disk under one member of a running 3-member cluster, once while it is a
// follower and once while it leads, starts a member on a disk too small for its first WAL
// segment, and gives a member's log alone a disk that holds one segment, so that the WAL runs
// out when it rolls. The member must stop with a clear error (an exit status and
// a log line naming the file and "no space left on device") without damaging its log, snapshots
// or state machine; the other two must keep serving writes; and once the disk has room again the
// member must restart on the same data directory, catch up, and hold every acknowledged write,
// agreeing with the others key by key.
func TestFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("builds caucus and runs two 3-process clusters for about 30 s")
	}
	// Probe the privilege before paying for the build.
	mountTmpfs(t, filepath.Join(t.TempDir(), "probe"), 1<<20)

	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CAUCUS_FULLDISK_SEED"); s != "" {
		if _, err := fmt.Sscan(s, &seed); err != nil {
			t.Fatalf("CAUCUS_FULLDISK_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (replay: CAUCUS_FULLDISK_SEED=%d go test ./cmd/caucus -run FullDisk)", seed, seed)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, err := cluster.ModuleRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := cluster.Build(ctx, root, filepath.Join(t.TempDir(), "bin"))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("follower", func(t *testing.T) {
		runFullDisk(ctx, t, fullDiskCase{bin: bin, seed: seed, victim: "n3", leads: false})
	})
	t.Run("leader", func(t *testing.T) {
		// Frequent snapshots put the snapshot files among the writers that can hit the full
		// disk, and make the restarted member's catch-up cross a compacted log.
		runFullDisk(ctx, t, fullDiskCase{bin: bin, seed: seed + 1, victim: "n1", leads: true,
			args: []string{"--snapshot-count=64"}})
	})
	t.Run("startup", func(t *testing.T) {
		runFullDiskAtStart(ctx, t, bin, seed+2)
	})
	t.Run("log", func(t *testing.T) {
		// Only the log's directory is small: the first segment fits, the next one cannot be
		// preallocated when the log rolls, so the WAL itself is the writer that runs out.
		runFullDisk(ctx, t, fullDiskCase{bin: bin, seed: seed + 3, victim: "n2", leads: false,
			sub: "wal", size: wal.DefaultSegmentBytes + 1<<20})
	})
}

type fullDiskCase struct {
	bin    string
	seed   uint64
	victim string // the member whose disk fills
	leads  bool   // whether it leads when its disk fills
	args   []string
	// sub is the part of the victim's data directory on the small disk ("": all of it) and
	// size that disk's size (0: the first WAL segment plus fullDiskHeadroom).
	sub  string
	size int64
}

func runFullDisk(ctx context.Context, t *testing.T, tc fullDiskCase) {
	rng := rand.New(rand.NewPCG(tc.seed, 0xf011d15c))
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	// The launcher puts member n's data directory at <Dir>/<n>; mounting there gives that one
	// member the small disk.
	diskDir := filepath.Join(data, tc.victim, tc.sub)
	diskSize := int64(wal.DefaultSegmentBytes + fullDiskHeadroom)
	if tc.size != 0 {
		diskSize = tc.size
	}
	mountTmpfs(t, diskDir, diskSize)

	c, err := cluster.Start(ctx, cluster.Config{Binary: tc.bin, Size: 3, Dir: data,
		ExtraArgs: append([]string{"--log-level=warn"}, tc.args...)})
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the mount, so it runs first: the members must be gone before unmount.
	t.Cleanup(c.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("log of %s:\n%s", n.Name, tailFile(n.LogPath, 30))
			}
		}
	})
	victim := c.Node(tc.victim)
	httpc := cluster.NewHTTPClient(time.Second)
	ids := memberIDs(ctx, t, httpc, c)
	placeLeader(ctx, t, c, httpc, ids, victim, tc.leads)
	t.Logf("%s (leader: %v) has %d bytes free on its %d-byte disk", victim.Name, tc.leads, freeBytes(t, diskDir), diskSize)

	cli, err := client.New(client.Config{Endpoints: c.Endpoints(), RequestTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	w := startWriters(ctx, cli, rng.Uint64())

	// Phase 1: the victim runs out of space. It must stop with an error or at least report one.
	start := time.Now()
	how := awaitFull(ctx, t, victim, httpc)
	atFull := w.count()
	t.Logf("%s out of space after %v and %d acknowledged writes: %s", victim.Name, time.Since(start).Round(time.Millisecond), atFull, how)

	// Phase 2: the two healthy members keep accepting writes (a new leader, if the victim led).
	deadline := time.Now().Add(15 * time.Second)
	for w.count() < atFull+writesAfterFull {
		if time.Now().After(deadline) {
			w.stop()
			t.Fatalf("the healthy members acknowledged only %d writes in 15 s after %s's disk filled (recent errors: %v)",
				w.count()-atFull, victim.Name, w.recentErrors())
		}
		time.Sleep(50 * time.Millisecond) // polling a counter with a deadline
	}
	w.stop()
	acked := w.snapshot()
	t.Logf("%d writes acknowledged, %d after the disk filled; %d failed (e.g. %v)", len(acked), len(acked)-atFull, w.failures(), w.recentErrors())
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if leader == victim {
		t.Fatalf("%s still leads after its disk filled", victim.Name)
	}
	if victim.Running() {
		// It chose to stay up reporting the error; stop it like an operator would.
		if err := victim.Kill(); err != nil {
			t.Fatal(err)
		}
	}

	// Phase 3: nothing on the full disk is damaged, not even by an operator's first reflex,
	// restarting the member before freeing space.
	checkDataDir(t, victim.DataDir)
	target := maxApplied(ctx, t, httpc, c, victim)
	t.Logf("restart on the still-full disk: %s", restartStillFull(ctx, t, httpc, victim, target))
	checkDataDir(t, victim.DataDir)
	reportsBefore := countLines(t, victim.LogPath, noSpace)

	// Phase 4: room again; the member restarts on the same directory, catches up and agrees.
	growTmpfs(t, diskDir, diskSize+256<<20)
	if err := victim.Restart(); err != nil {
		t.Fatal(err)
	}
	keys := rejoinAndAgree(ctx, t, c, httpc, victim, target, acked, reportsBefore, tc.seed)
	t.Logf("%s restarted, caught up to applied index %d, holds all %d acknowledged writes and agrees with the others on %d keys",
		victim.Name, target, len(acked), keys)
}

// runFullDiskAtStart starts a member whose disk cannot hold its first WAL segment: it must refuse
// to start with a clear error and leave no partial segment behind, the other two must form the
// cluster without it, and once the disk is grown it must start, join and catch up.
func runFullDiskAtStart(ctx context.Context, t *testing.T, bin string, seed uint64) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	const name = "n2"
	diskDir := filepath.Join(data, name)
	diskSize := int64(wal.DefaultSegmentBytes / 2)
	mountTmpfs(t, diskDir, diskSize)
	c, err := cluster.Start(ctx, cluster.Config{Binary: bin, Size: 3, Dir: data, ExtraArgs: []string{"--log-level=warn"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	victim := c.Node(name)
	httpc := cluster.NewHTTPClient(time.Second)
	t.Logf("%s on a %d-byte disk: %s", name, diskSize, awaitFull(ctx, t, victim, httpc))
	walFiles, err := os.ReadDir(filepath.Join(victim.DataDir, "wal"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, f := range walFiles {
		if f.Name() == "LOCK" {
			continue // the member's lock on its log (node.lockLogDir), not part of the log
		}
		t.Errorf("refused start left %s in the WAL directory", f.Name())
	}

	cli, err := client.New(client.Config{Endpoints: c.Endpoints(), RequestTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	w := startWriters(ctx, cli, seed)
	deadline := time.Now().Add(20 * time.Second)
	for w.count() < writesAfterFull {
		if time.Now().After(deadline) {
			w.stop()
			t.Fatalf("the two healthy members acknowledged only %d writes in 20 s (recent errors: %v)", w.count(), w.recentErrors())
		}
		time.Sleep(50 * time.Millisecond) // polling a counter with a deadline
	}
	w.stop()
	acked := w.snapshot()
	reportsBefore := countLines(t, victim.LogPath, noSpace)

	growTmpfs(t, diskDir, wal.DefaultSegmentBytes+256<<20)
	target := maxApplied(ctx, t, httpc, c, victim)
	if err := victim.Restart(); err != nil {
		t.Fatal(err)
	}
	keys := rejoinAndAgree(ctx, t, c, httpc, victim, target, acked, reportsBefore, seed)
	t.Logf("%s started once the disk was grown, caught up to applied index %d and agrees with the others on %d keys",
		name, target, keys)
}

// rejoinAndAgree waits until the restarted victim has applied through target, then checks that it
// holds every acknowledged write in its own state (serializable reads), that the cluster does
// (linearizable reads), that every member holds the same keys at the same revisions, and that
// the victim stays up without reporting the disk full again. It returns the number of keys.
func rejoinAndAgree(ctx context.Context, t *testing.T, c *cluster.Cluster, httpc *http.Client, victim *cluster.Node,
	target uint64, acked map[string]string, reportsBefore int, seed uint64) int {
	t.Helper()
	caughtUp(ctx, t, httpc, victim, target)
	if _, err := c.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	views := map[string]map[string]kvAt{}
	for _, n := range c.Nodes {
		views[n.Name] = readAll(ctx, t, true, n.ClientURL)
	}
	linearizable := readAll(ctx, t, false, c.Endpoints()...)
	for k, v := range acked {
		if got, ok := views[victim.Name][k]; !ok || got.value != v {
			t.Errorf("acknowledged write %s (%d bytes) missing or wrong on the restarted %s: present %v, %d bytes (seed %d)",
				k, len(v), victim.Name, ok, len(got.value), seed)
		}
		if got, ok := linearizable[k]; !ok || got.value != v {
			t.Errorf("acknowledged write %s lost from the cluster: present %v (seed %d)", k, ok, seed)
		}
	}
	for _, n := range c.Nodes {
		if diff := diffViews(views[victim.Name], views[n.Name]); diff != "" {
			t.Errorf("%s and %s disagree after catch-up: %s (seed %d)", victim.Name, n.Name, diff, seed)
		}
	}
	if !victim.Running() {
		t.Fatalf("%s exited again after restarting with free space:\n%s", victim.Name, tailFile(victim.LogPath, 20))
	}
	if after := countLines(t, victim.LogPath, noSpace); after != reportsBefore {
		t.Errorf("%s reported %d new out-of-space errors after the disk was grown", victim.Name, after-reportsBefore)
	}
	return len(views[victim.Name])
}

// memberIDs maps member names to ids, as each member reports itself.
func memberIDs(ctx context.Context, t *testing.T, httpc *http.Client, c *cluster.Cluster) map[string]uint64 {
	t.Helper()
	ids := map[string]uint64{}
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range c.Nodes {
		for {
			s, err := cluster.Status(ctx, httpc, n.ClientURL)
			if err == nil {
				ids[n.Name] = s.GetHeader().GetMemberId()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never answered Status: %v", n.Name, err)
			}
			time.Sleep(100 * time.Millisecond) // polling a starting process with a deadline
		}
	}
	return ids
}

// placeLeader makes victim the leader (leads) or makes sure it is not, moving leadership if
// needed, and waits until every member sees that.
func placeLeader(ctx context.Context, t *testing.T, c *cluster.Cluster, httpc *http.Client, ids map[string]uint64, victim *cluster.Node, leads bool) {
	t.Helper()
	cli, err := client.New(client.Config{Endpoints: c.Endpoints(), RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := c.WaitLeader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if (l == victim) == leads {
			return
		}
		target := victim
		if !leads {
			for _, n := range c.Nodes {
				if n != victim {
					target = n
					break
				}
			}
		}
		if _, err := cli.MoveLeader(ctx, ids[target.Name]); err != nil {
			t.Logf("move leader to %s: %v (retrying)", target.Name, err)
			time.Sleep(200 * time.Millisecond) // backoff before asking again
		}
		if time.Now().After(deadline) {
			t.Fatalf("could not place leadership (want %s leading: %v)", victim.Name, leads)
		}
	}
}

// writers put unique keys with large values from several goroutines and remember what was
// acknowledged.
type writers struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	acked  map[string]string
	failed int
	errs   []string // the last few distinct errors
}

func startWriters(ctx context.Context, cli *client.Client, seed uint64) *writers {
	ctx, cancel := context.WithCancel(ctx)
	w := &writers{cancel: cancel, acked: map[string]string{}}
	for i := range fullDiskWriters {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			buf := make([]byte, fullDiskValueBytes)
			for j := 0; ctx.Err() == nil; j++ {
				k := fmt.Sprintf("w%d/%06d", i, j)
				// Random (incompressible, distinct) bytes; hex keeps them printable. One draw
				// per 16 digits: under the race detector a draw per byte made the writers too
				// slow to fill a log segment within awaitFull's deadline.
				for b := 0; b < len(buf); b += 16 {
					x := rng.Uint64()
					for d := b; d < min(b+16, len(buf)); d++ {
						buf[d] = "0123456789abcdef"[x&15]
						x >>= 4
					}
				}
				v := string(buf)
				wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
				_, err := cli.Put(wctx, k, v)
				wcancel()
				w.mu.Lock()
				if err == nil {
					w.acked[k] = v
				} else if ctx.Err() == nil {
					w.failed++
					if msg := err.Error(); len(w.errs) == 0 || w.errs[len(w.errs)-1] != msg {
						w.errs = append(w.errs, msg)
						if len(w.errs) > 3 {
							w.errs = w.errs[1:]
						}
					}
				}
				w.mu.Unlock()
			}
		}()
	}
	return w
}

func (w *writers) stop() { w.cancel(); w.wg.Wait() }

func (w *writers) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *writers) failures() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failed
}

func (w *writers) recentErrors() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.errs...)
}

func (w *writers) snapshot() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := make(map[string]string, len(w.acked))
	for k, v := range w.acked {
		m[k] = v
	}
	return m
}

// awaitFull waits until the victim has run out of space and said so clearly: either it exited
// with a failure status and its log names a file in its data directory and ENOSPC, or it is
// still up and its Status carries the ENOSPC error. It returns a description of what happened.
func awaitFull(ctx context.Context, t *testing.T, victim *cluster.Node, httpc *http.Client) string {
	t.Helper()
	// The log case must write a whole segment (64 MiB) first: under the race detector on a
	// 2-core machine that took 18 s, so the bound leaves room; it only costs time on failure.
	const budget = 60 * time.Second
	deadline := time.Now().Add(budget)
	for {
		if !victim.Running() {
			st, err := victim.WaitExit(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Success() {
				t.Fatalf("%s exited with success after its disk filled; want a failure status", victim.Name)
			}
			line := findReport(t, victim.LogPath, victim.DataDir)
			if line == "" {
				t.Fatalf("%s exited (%v) without a log line naming a file under %s and %q:\n%s",
					victim.Name, st, victim.DataDir, noSpace, tailFile(victim.LogPath, 20))
			}
			last := lastLine(t, victim.LogPath)
			if !strings.Contains(last, noSpace) {
				t.Errorf("%s's last words do not say the disk is full: %q", victim.Name, last)
			}
			return fmt.Sprintf("exited (%v), reporting %q", st, line)
		}
		if s, err := cluster.Status(ctx, httpc, victim.ClientURL); err == nil {
			for _, e := range s.Errors {
				if strings.Contains(e, noSpace) {
					return fmt.Sprintf("still running, Status reports %q", e)
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not report running out of space within %v (%d bytes free):\n%s",
				victim.Name, budget, freeBytes(t, victim.DataDir), tailFile(victim.LogPath, 20))
		}
		time.Sleep(50 * time.Millisecond) // polling the process and its Status with a deadline
	}
}

// restartStillFull restarts the stopped victim without freeing space. The member may fit what it
// must catch up with into the few bytes left, or run out again; either outcome is acceptable as
// long as it is clean: it catches up through index, or it exits with a failure status after a
// new out-of-space report. It is left stopped and the outcome described.
func restartStillFull(ctx context.Context, t *testing.T, httpc *http.Client, victim *cluster.Node, index uint64) string {
	t.Helper()
	reports := countLines(t, victim.LogPath, noSpace)
	if err := victim.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if !victim.Running() {
			st, err := victim.WaitExit(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Success() || countLines(t, victim.LogPath, noSpace) == reports {
				t.Fatalf("%s restarted on a full disk exited (%v) without a new out-of-space report:\n%s",
					victim.Name, st, tailFile(victim.LogPath, 20))
			}
			return fmt.Sprintf("exited (%v), reporting %q", st, lastLine(t, victim.LogPath))
		}
		if s, err := cluster.Status(ctx, httpc, victim.ClientURL); err == nil && s.RaftAppliedIndex >= index {
			if err := victim.Kill(); err != nil {
				t.Fatal(err)
			}
			return fmt.Sprintf("caught up through index %d within the space left", s.RaftAppliedIndex)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s restarted on a full disk neither caught up through %d nor stopped within 20 s:\n%s",
				victim.Name, index, tailFile(victim.LogPath, 20))
		}
		time.Sleep(50 * time.Millisecond) // polling the process and its Status with a deadline
	}
}

// findReport returns the first log line that reports ENOSPC and names a file in dataDir.
func findReport(t *testing.T, logPath, dataDir string) string {
	t.Helper()
	var found string
	scanLines(t, logPath, func(line string) bool {
		if strings.Contains(line, noSpace) && strings.Contains(line, dataDir+string(filepath.Separator)) {
			found = line
			return false
		}
		return true
	})
	return found
}

func countLines(t *testing.T, path, substr string) int {
	t.Helper()
	n := 0
	scanLines(t, path, func(line string) bool {
		if strings.Contains(line, substr) {
			n++
		}
		return true
	})
	return n
}

func lastLine(t *testing.T, path string) string {
	t.Helper()
	var last string
	scanLines(t, path, func(line string) bool {
		if strings.TrimSpace(line) != "" {
			last = line
		}
		return true
	})
	return last
}

func scanLines(t *testing.T, path string, f func(string) bool) {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if !f(sc.Text()) {
			return
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// checkDataDir verifies that a stopped member's storage survived the full disk intact: the WAL
// and the snapshots are opened from a copy (Open may legitimately repair a torn WAL tail, and
// the evidence should stay as the member left it), and bbolt's own consistency check runs over
// kv.db read-only.
func checkDataDir(t *testing.T, dataDir string) {
	t.Helper()
	cp := t.TempDir()
	for _, sub := range []string{"wal", "snap"} {
		if err := copyDir(filepath.Join(dataDir, sub), filepath.Join(cp, sub)); err != nil {
			t.Fatal(err)
		}
	}
	w, err := wal.Open(vfs.NewOS(), filepath.Join(cp, "wal"), wal.Options{})
	if err != nil {
		t.Fatalf("the WAL left by the full disk does not open: %v", err)
	}
	st, err := w.ReadAll()
	if err != nil {
		t.Fatalf("read the WAL left by the full disk: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	ss, err := snap.New(vfs.NewOS(), filepath.Join(cp, "snap"), snap.Options{})
	if err != nil {
		t.Fatalf("open the snapshots left by the full disk: %v", err)
	}
	var snapIndex uint64
	switch s, err := ss.Load(); {
	case err == nil:
		snapIndex = s.Meta.Index
	case errors.Is(err, snap.ErrNoSnapshot):
	default:
		t.Fatalf("load the newest snapshot left by the full disk: %v", err)
	}

	db, err := bolt.Open(filepath.Join(dataDir, "kv.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatalf("the state machine left by the full disk does not open: %v", err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Fatalf("bbolt check of the state machine left by the full disk: %v", err)
	}
	t.Logf("storage intact: WAL term %d commit %d, %d entries after snapshot %d; kv.db passes bbolt's check",
		st.HardState.Term, st.HardState.Commit, len(st.Entries), snapIndex)
}

func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return nil
}

// maxApplied is the highest applied index among the members other than skip: every write
// acknowledged so far is applied at or below it (a write is acknowledged once applied on the
// member that proposed it).
func maxApplied(ctx context.Context, t *testing.T, httpc *http.Client, c *cluster.Cluster, skip *cluster.Node) uint64 {
	t.Helper()
	var max uint64
	for _, n := range c.Nodes {
		if n == skip {
			continue
		}
		s, err := cluster.Status(ctx, httpc, n.ClientURL)
		if err != nil {
			t.Fatal(err)
		}
		if s.RaftAppliedIndex > max {
			max = s.RaftAppliedIndex
		}
	}
	return max
}

// caughtUp waits until n has applied through index.
func caughtUp(ctx context.Context, t *testing.T, httpc *http.Client, n *cluster.Node, index uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for {
		if !n.Running() {
			t.Fatalf("%s exited while catching up:\n%s", n.Name, tailFile(n.LogPath, 20))
		}
		s, err := cluster.Status(ctx, httpc, n.ClientURL)
		if err == nil && s.RaftAppliedIndex >= index {
			return
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("applied %d, errors %v", s.RaftAppliedIndex, s.Errors)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not apply through %d within 30 s of restarting (last: %s)", n.Name, index, last)
		}
		time.Sleep(100 * time.Millisecond) // polling Status with a deadline
	}
}

type kvAt struct {
	value  string
	modRev int64
}

// readAll reads every key the writers may have written, a page at a time, through endpoints:
// serializably (pass one endpoint to read that member's own applied state) or linearizably.
func readAll(ctx context.Context, t *testing.T, serializable bool, endpoints ...string) map[string]kvAt {
	t.Helper()
	cli, err := client.New(client.Config{Endpoints: endpoints, RequestTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	out := map[string]kvAt{}
	end := string(client.PrefixEnd([]byte("w")))
	for from := "w"; ; {
		opts := []client.OpOption{client.WithRange(end), client.WithLimit(200)}
		if serializable {
			opts = append(opts, client.WithSerializable())
		}
		resp, err := cli.Get(ctx, from, opts...)
		if err != nil {
			t.Fatalf("read from %v (serializable %v): %v", endpoints, serializable, err)
		}
		for _, kv := range resp.Kvs {
			out[string(kv.Key)] = kvAt{value: string(kv.Value), modRev: kv.ModRevision}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// diffViews describes the first differences between two members' key-value views, or "".
func diffViews(a, b map[string]kvAt) string {
	var diffs []string
	for k, va := range a {
		if vb, ok := b[k]; !ok || vb != va {
			diffs = append(diffs, fmt.Sprintf("%s: rev %d vs present=%v rev %d", k, va.modRev, ok, vb.modRev))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s only in the second", k))
		}
	}
	if len(diffs) == 0 {
		return ""
	}
	if len(diffs) > 5 {
		diffs = append(diffs[:5], fmt.Sprintf("and %d more", len(diffs)-5))
	}
	return strings.Join(diffs, "; ")
}
