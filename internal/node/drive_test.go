package node

import (
	"bytes"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/vfs"
	"github.com/caucus/caucus/internal/wal"
	"github.com/caucus/caucus/raft"
)

// queueExec holds background tasks until the test runs them.
type queueExec struct{ tasks []func() }

func (e *queueExec) Go(task func()) { e.tasks = append(e.tasks, task) }
func (e *queueExec) Flush() {
	for len(e.tasks) > 0 {
		e.runOne()
	}
}
func (e *queueExec) runOne() {
	t := e.tasks[0]
	e.tasks = e.tasks[1:]
	t()
}

// listSM is a StateMachine that keeps the data of every applied entry; an entry's data is its
// proposal id, one byte.
type listSM struct {
	applied, committed []raft.Entry
	commits            int
}

func (s *listSM) Apply(ents []raft.Entry) ([]Applied, error) {
	var done []Applied
	for _, e := range ents {
		s.applied = append(s.applied, e)
		if e.Type == raft.EntryNormal && len(e.Data) == 1 {
			done = append(done, Applied{ID: uint64(e.Data[0]), Result: e.Index})
		}
	}
	return done, nil
}
func (s *listSM) Commit() error {
	s.committed = append([]raft.Entry(nil), s.applied...)
	s.commits++
	return nil
}
func (s *listSM) Abort() { s.applied = append([]raft.Entry(nil), s.committed...) }
func (s *listSM) AppliedIndex() uint64 {
	if len(s.committed) == 0 {
		return 0
	}
	return s.committed[len(s.committed)-1].Index
}
func (s *listSM) Sync() error { return nil }
func (s *listSM) Snapshot() (SnapshotView, error) {
	return listView{index: s.AppliedIndex(), data: make([]byte, 3)}, nil
}
func (s *listSM) Restore(meta raft.SnapshotMeta, size int64, r io.Reader) error { return nil }
func (s *listSM) Peers() map[raft.NodeID][]string                               { return nil }
func (s *listSM) Close() error                                                  { return nil }

type listView struct {
	index uint64
	data  []byte
}

func (v listView) Index() uint64 { return v.index }
func (v listView) Size() int64   { return int64(len(v.data)) }
func (v listView) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(v.data)
	return int64(n), err
}
func (v listView) Close() error { return nil }

// TestDriverRunsTheLoopOnManualTime drives a one-member node opened with OpenFS on a simulated
// disk: it elects itself on manual ticks, answers a proposal once applied, commits the state
// machine only when the group-commit timer fires on the manual clock, and leaves a snapshot
// unrecorded until the executor runs its writer and the driver takes the report.
func TestDriverRunsTheLoopOnManualTime(t *testing.T) {
	clock := NewManualClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	exec := &queueExec{}
	sm := &listSM{}
	fs := vfs.NewSim(1)
	rc := raft.DefaultConfig(1)
	rc.Logger = slog.New(slog.DiscardHandler)
	cfg := OpenConfig{
		Config: Config{
			Raft: rc, TickInterval: 10 * time.Millisecond, SnapshotEntries: 4,
			ApplyCommitInterval: 50 * time.Millisecond, Time: clock, Executor: exec,
			Logger: slog.New(slog.DiscardHandler),
		},
		DataDir: "d", NewCluster: true, InitialMembers: []Member{{ID: 1}},
		WALOptions: wal.Options{Logger: slog.New(slog.DiscardHandler)},
	}
	n, err := OpenFS(cfg, FSOpen{FS: fs, StateMachine: sm})
	if err != nil {
		t.Fatal(err)
	}
	n.SetTransport(nopTransport{}, nil)
	d := NewDriver(n)
	for i := 0; d.Status().SoftState.State != raft.StateLeader; i++ {
		if i == 100 {
			t.Fatal("no leader after 100 ticks")
		}
		clock.Set(clock.Now().Add(10 * time.Millisecond))
		if err := d.Tick(); err != nil {
			t.Fatal(err)
		}
	}
	p, err := d.Propose(7, []byte{7})
	if err != nil {
		t.Fatal(err)
	}
	res, err, ok := p.Result()
	if !ok || err != nil {
		t.Fatalf("proposal not answered after the step that committed it: ok=%v err=%v", ok, err)
	}
	idx := res.(uint64)
	if last := sm.applied[len(sm.applied)-1]; last.Index != idx || !bytes.Equal(last.Data, []byte{7}) {
		t.Fatalf("answered with index %d, last applied %d@%d", idx, last.Index, last.Term)
	}
	if sm.AppliedIndex() >= idx {
		t.Fatalf("state machine committed through %d at once; group commit should wait for its timer", sm.AppliedIndex())
	}
	clock.Set(clock.Now().Add(49 * time.Millisecond))
	if more, err := d.Poll(); more || err != nil {
		t.Fatalf("an input before the group-commit timer fired: %v %v", more, err)
	}
	clock.Set(clock.Now().Add(time.Millisecond))
	if more, err := d.Poll(); !more || err != nil || sm.AppliedIndex() != idx {
		t.Fatalf("the group-commit timer did not commit: more=%v err=%v committed=%d want %d", more, err, sm.AppliedIndex(), idx)
	}
	// SnapshotEntries past the last snapshot: the writer is handed to the executor, and the
	// log is compacted only once it ran and the driver took its report.
	for id := byte(8); len(exec.tasks) == 0; id++ {
		if id == 20 {
			t.Fatal("no snapshot started")
		}
		if _, err := d.Propose(uint64(id), []byte{id}); err != nil {
			t.Fatal(err)
		}
	}
	first := d.Status().FirstIndex
	exec.runOne()
	if d.Status().FirstIndex != first {
		t.Fatal("log compacted before the driver took the snapshot writer's report")
	}
	if more, err := d.Poll(); !more || err != nil {
		t.Fatalf("the snapshot report was not taken: %v %v", more, err)
	}
	if d.Status().FirstIndex <= first {
		t.Fatalf("log not compacted after the snapshot: first index %d", d.Status().FirstIndex)
	}
}
