package fsm

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/internal/node"
	"github.com/caucus/caucus/raft"
)

// These tests run a one-member cluster with the real state machine over the real node: how a
// member's storage (log, snapshots, state machine file) survives stops, crashes, reboots and
// damage.

// nopTransport is the transport of a single-member cluster: there is nobody to talk to.
type nopTransport struct{}

func (nopTransport) Send([]raft.Message)         {}
func (nopTransport) AddPeer(raft.NodeID, string) {}
func (nopTransport) RemovePeer(raft.NodeID)      {}
func peerAddr(urls []string) string              { return urls[0] }
func quiet() *slog.Logger                        { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
func putCmd(k, v string) *logpb.Command {
	return &logpb.Command{Op: &logpb.Command_Put{Put: &logpb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
}
func withBoot(t *testing.T, id string) {
	t.Helper()
	old := bootID
	bootID = func() (string, error) { return id, nil }
	t.Cleanup(func() { bootID = old })
}
func markerPath(dir string) string { return filepath.Join(dir, unsyncedMarker) }
func storeFile(dir string) string  { return filepath.Join(dir, StoreFile) }
func walDir(dir string) string     { return filepath.Join(dir, "wal") }
func snapDir(dir string) string    { return filepath.Join(dir, "snap") }
func fileExists(p string) bool     { _, err := os.Stat(p); return err == nil }
func keyName(i int) string         { return fmt.Sprintf("k%03d", i) }
func valueOf(i int) string         { return fmt.Sprintf("v%03d", i) }

// member is a started one-member cluster.
type member struct {
	*node.Node
	fsm *FSM
	p   *Proposer
}

// startSingle opens and starts a one-member cluster in dir, with an unsynced state machine and a
// snapshot every snapEvery entries.
func startSingle(t *testing.T, dir string, snapEvery uint64) *member {
	t.Helper()
	return startSingleWith(t, singleConfig(dir, snapEvery))
}

// singleConfig is startSingle's configuration, for tests that change it; open returns the
// opened state machine.
func singleConfig(dir string, snapEvery uint64) node.OpenConfig {
	rc := raft.DefaultConfig(1)
	rc.HeartbeatTick, rc.ElectionTick = 1, 3
	rc.Seed = 1
	rc.Logger = quiet()
	members := []node.Member{{ID: 1, Name: "n1", PeerURLs: []string{"http://127.0.0.1:1"}}}
	bctx, err := BootstrapContext(members)
	if err != nil {
		panic(err)
	}
	return node.OpenConfig{
		Config: node.Config{
			Raft:            rc,
			TickInterval:    5 * time.Millisecond,
			SnapshotEntries: snapEvery,
			PeerAddr:        peerAddr,
			Logger:          quiet(),
		},
		DataDir:          dir,
		NewCluster:       true,
		InitialMembers:   members,
		BootstrapContext: bctx,
		PersistedApplied: func() (uint64, error) { return PersistedAppliedIndex(dir) },
		OpenStateMachine: func() (node.StateMachine, error) {
			return Open(Options{ID: 1, DataDir: dir, Store: mvcc.Options{NoSync: true}, Logger: quiet()})
		},
	}
}

// openMember opens (without starting) the member cfg describes, returning its state machine too.
func openMember(cfg node.OpenConfig) (*member, error) {
	var f *FSM
	open := cfg.OpenStateMachine
	cfg.OpenStateMachine = func() (node.StateMachine, error) {
		sm, err := open()
		if err == nil {
			f = sm.(*FSM)
		}
		return sm, err
	}
	n, err := node.Open(cfg)
	if err != nil {
		return nil, err
	}
	return &member{Node: n, fsm: f, p: NewProposer(n, nil)}, nil
}

func startSingleWith(t *testing.T, cfg node.OpenConfig) *member {
	t.Helper()
	m, err := openMember(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.SetTransport(nopTransport{}, nil)
	m.Start()
	// The member runs on wall-clock ticks: poll until it elected itself.
	deadline := time.Now().Add(10 * time.Second)
	for m.Leader() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("single member did not elect itself within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	return m
}

func putAll(t *testing.T, m *member, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := from; i < to; i++ {
		res, err := m.p.Propose(ctx, putCmd(keyName(i), valueOf(i)))
		if err == nil {
			err = res.Err
		}
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
}

func checkAll(t *testing.T, m *member, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.LinearizableRead(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < to; i++ {
		res, err := m.fsm.Store().Range(&logpb.RangeRequest{Key: []byte(keyName(i))})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Kvs) != 1 || string(res.Kvs[0].Value) != valueOf(i) {
			t.Fatalf("key %s after restart: %v, want %s", keyName(i), res.Kvs, valueOf(i))
		}
	}
}

// TestRebootDiscardsUnsyncedStateMachine: the state machine commits without fsync, so after a
// reboot (a new kernel boot id) its file cannot be trusted. A start under a new boot must move
// it aside and rebuild it from the snapshot and the log, losing nothing; a clean stop syncs the
// store and disarms the guard, so the next start trusts the file whatever happened in between.
func TestRebootDiscardsUnsyncedStateMachine(t *testing.T) {
	for _, snapEvery := range []uint64{0, 7} {
		t.Run(fmt.Sprintf("snapshot-every=%d", snapEvery), func(t *testing.T) {
			dir := t.TempDir()
			withBoot(t, "boot-A")
			n := startSingle(t, dir, snapEvery)
			if !fileExists(markerPath(dir)) {
				t.Fatal("no unsynced marker while the member runs")
			}
			putAll(t, n, 0, 40)
			n.Stop()
			<-n.Done()
			if fileExists(markerPath(dir)) {
				t.Fatal("a clean stop left the unsynced marker: the next start would rebuild for nothing")
			}

			// Simulate a crash followed by a power loss: the marker of boot A is on disk and
			// the store file holds garbage where unsynced pages never landed.
			n = startSingle(t, dir, snapEvery)
			putAll(t, n, 40, 60)
			n.Stop()
			<-n.Done()
			if err := os.WriteFile(markerPath(dir), []byte("boot-A\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(storeFile(dir), []byte("torn pages, never synced"), 0o600); err != nil {
				t.Fatal(err)
			}
			withBoot(t, "boot-B")
			n = startSingle(t, dir, snapEvery)
			defer func() { n.Stop(); <-n.Done() }()
			checkAll(t, n, 60)
			aside, _ := filepath.Glob(storeFile(dir) + ".discarded-*")
			if len(aside) != 1 {
				t.Fatalf("discarded store files = %v, want the torn one moved aside", aside)
			}
		})
	}
}

// TestSameBootTrustsTheStore: after a process crash (same boot) the page cache kept bbolt's
// writes, so the store file is kept and not rebuilt.
func TestSameBootTrustsTheStore(t *testing.T) {
	dir := t.TempDir()
	withBoot(t, "boot-A")
	n := startSingle(t, dir, 0)
	putAll(t, n, 0, 10)
	n.Stop()
	<-n.Done()
	if err := os.WriteFile(markerPath(dir), []byte("boot-A\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n = startSingle(t, dir, 0)
	defer func() { n.Stop(); <-n.Done() }()
	checkAll(t, n, 10)
	if aside, _ := filepath.Glob(storeFile(dir) + ".discarded-*"); len(aside) != 0 {
		t.Fatalf("store discarded under the same boot: %v", aside)
	}
}

// TestCorruptStateMachineIsRebuilt: a state machine file bbolt cannot open (cut short, or with
// a damaged page; bbolt panics on those) is moved aside and rebuilt from the snapshot and the
// log, losing nothing, instead of crashing the member at every start.
func TestCorruptStateMachineIsRebuilt(t *testing.T) {
	damage := map[string]func(t *testing.T, path string){
		"truncated": func(t *testing.T, path string) {
			if err := os.Truncate(path, 10000); err != nil {
				t.Fatal(err)
			}
		},
		"meta pages zeroed": func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(make([]byte, 2*4096), 0); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, damageFile := range damage {
		for _, snapEvery := range []uint64{0, 7} {
			t.Run(fmt.Sprintf("%s/snapshot-every=%d", name, snapEvery), func(t *testing.T) {
				dir := t.TempDir()
				withBoot(t, "boot-A")
				n := startSingle(t, dir, snapEvery)
				putAll(t, n, 0, 60)
				n.Stop()
				<-n.Done()
				damageFile(t, storeFile(dir))
				n = startSingle(t, dir, snapEvery)
				defer func() { n.Stop(); <-n.Done() }()
				checkAll(t, n, 60)
				aside, _ := filepath.Glob(storeFile(dir) + ".corrupt-*")
				if len(aside) != 1 {
					t.Fatalf("corrupt store files = %v, want the damaged one kept aside", aside)
				}
			})
		}
	}
}

// TestWALDir: the log can live outside the data directory (--wal-dir). The member writes it
// there and nowhere else and restarts from it; it refuses to start from the data directory's
// own, empty, log location once it applied state (that would forget its vote), and refuses a
// separate log directory while the data directory still holds a log of its own.
func TestWALDir(t *testing.T) {
	dir, logDir := t.TempDir(), filepath.Join(t.TempDir(), "log")
	cfg := singleConfig(dir, 0)
	cfg.WALDir = logDir
	n := startSingleWith(t, cfg)
	putAll(t, n, 0, 20)
	n.Stop()
	<-n.Done()
	segs, err := filepath.Glob(filepath.Join(logDir, "*.wal"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no log segment in --wal-dir %s (%v)", logDir, err)
	}
	if own, _ := os.ReadDir(walDir(dir)); len(own) > 0 {
		t.Fatalf("the data directory's own log directory holds %d files with --wal-dir set", len(own))
	}
	n = startSingleWith(t, cfg)
	checkAll(t, n, 20)
	n.Stop()
	<-n.Done()

	// Started without --wal-dir: the default log location is empty beside applied state.
	if _, err := openMember(singleConfig(dir, 0)); err == nil || !strings.Contains(err.Error(), "lost its log or was started with the wrong --wal-dir") {
		t.Fatalf("open without --wal-dir after running with it: %v; want a refusal naming the lost log", err)
	}
	// That attempt left only its lock file in the default location, which is not a log.
	n = startSingleWith(t, cfg)
	checkAll(t, n, 20)
	n.Stop()
	<-n.Done()

	// The data directory gets a log of its own (say, copied there) while --wal-dir is still set.
	if err := os.MkdirAll(walDir(dir), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, seg := range segs {
		b, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(walDir(dir), filepath.Base(seg)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := openMember(cfg); err == nil || !strings.Contains(err.Error(), "holds a log too") {
		t.Fatalf("open with --wal-dir while the data directory holds a log: %v; want a refusal", err)
	}
	// And with the copy as the log (no --wal-dir), the member starts where it stopped.
	n = startSingleWith(t, singleConfig(dir, 0))
	checkAll(t, n, 20)
	n.Stop()
	<-n.Done()
}

// TestOpenRefusesLostLog: a member whose log is gone but whose state machine applied entries
// must not start as if new (it would forget its term and vote), and the refusal loses nothing:
// with the log back, the member starts with every write.
func TestOpenRefusesLostLog(t *testing.T) {
	for _, snapEvery := range []uint64{0, 5} {
		t.Run(fmt.Sprintf("snapshot-every=%d", snapEvery), func(t *testing.T) {
			dir := t.TempDir()
			n := startSingle(t, dir, snapEvery)
			putAll(t, n, 0, 20)
			n.Stop()
			<-n.Done()
			aside := filepath.Join(t.TempDir(), "wal")
			if err := os.Rename(walDir(dir), aside); err != nil {
				t.Fatal(err)
			}
			_, err := openMember(singleConfig(dir, snapEvery))
			if err == nil || !strings.Contains(err.Error(), "lost its log") || !strings.Contains(err.Error(), walDir(dir)) {
				t.Fatalf("open with the log removed: %v; want a refusal naming %s", err, walDir(dir))
			}
			if err := os.RemoveAll(walDir(dir)); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(aside, walDir(dir)); err != nil {
				t.Fatal(err)
			}
			n = startSingle(t, dir, snapEvery)
			checkAll(t, n, 20)
			n.Stop()
			<-n.Done()
		})
	}
}

// TestLogDirLocked: two members on one log (a member started twice, or two members given the
// same --wal-dir) would destroy it; the second is refused while the first runs, and the lock goes
// with the first member's stop.
func TestLogDirLocked(t *testing.T) {
	dir, logDir := t.TempDir(), t.TempDir()
	cfg := singleConfig(dir, 0)
	cfg.WALDir = logDir
	n := startSingleWith(t, cfg)
	putAll(t, n, 0, 5)
	other := singleConfig(t.TempDir(), 0)
	other.WALDir = logDir
	for name, c := range map[string]node.OpenConfig{"same member": cfg, "another member, same --wal-dir": other} {
		if _, err := openMember(c); err == nil || !strings.Contains(err.Error(), "in use by another process") {
			t.Fatalf("%s: second open of a running member's log: %v; want a refusal", name, err)
		}
	}
	n.Stop()
	<-n.Done()
	n = startSingleWith(t, cfg)
	checkAll(t, n, 5)
	n.Stop()
	<-n.Done()
}

// TestOpenIgnoresUnrecordedSnapshot: a snapshot file the log does not record was saved just
// before the member stopped (a new member crashing while installing its first snapshot from the
// leader has one, and an empty log). It must not be loaded: paired with a log that knows nothing
// of it, Raft would refuse to start (HardState term 0 below the snapshot's term).
func TestOpenIgnoresUnrecordedSnapshot(t *testing.T) {
	dir := t.TempDir()
	n := startSingle(t, dir, 5)
	putAll(t, n, 0, 12)
	n.Stop()
	<-n.Done()
	if snaps, _ := os.ReadDir(snapDir(dir)); len(snaps) == 0 {
		t.Fatal("no snapshot was taken")
	}
	// What the crashed installer leaves: snapshot files, an empty log, an empty state machine.
	for _, p := range []string{walDir(dir), storeFile(dir)} {
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
	cfg := singleConfig(dir, 5)
	cfg.NewCluster = false
	n, err := openMember(cfg)
	if err != nil {
		t.Fatalf("open with a snapshot file the log does not record: %v", err)
	}
	if got := n.fsm.Store().AppliedIndex(); got != 0 {
		t.Fatalf("the unrecorded snapshot was loaded (applied index %d)", got)
	}
	// Set aside, not deleted, and out of the store's listing (so pruning cannot count them).
	if aside, _ := filepath.Glob(filepath.Join(snapDir(dir), "*.unrecorded")); len(aside) == 0 {
		t.Fatal("the unrecorded snapshot files were not set aside")
	}
	if left, _ := filepath.Glob(filepath.Join(snapDir(dir), "*.snap")); len(left) != 0 {
		t.Fatalf("snapshot files the log does not record are still in the store: %v", left)
	}
	n.SetTransport(nopTransport{}, nil)
	n.Start()
	n.Stop()
	<-n.Done()
}
