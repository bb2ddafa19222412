package node

import (
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/vfs"
	"github.com/caucus/caucus/internal/wal"
	"github.com/caucus/caucus/raft"
)

// queueTransport queues what a member sends, for queueNet to deliver.
type queueTransport struct{ nw *queueNet }

func (t queueTransport) Send(msgs []raft.Message)  { t.nw.queue = append(t.nw.queue, msgs...) }
func (queueTransport) AddPeer(raft.NodeID, string) {}
func (queueTransport) RemovePeer(raft.NodeID)      {}

// queueNet runs members through their Drivers on manual time, on the test's goroutine.
type queueNet struct {
	t       *testing.T
	clocks  map[raft.NodeID]*ManualClock
	drivers map[raft.NodeID]*Driver
	sms     map[raft.NodeID]*listSM
	queue   []raft.Message
	drop    func(raft.Message) bool
}

func newQueueNet(t *testing.T, ids ...raft.NodeID) *queueNet {
	t.Helper()
	nw := &queueNet{t: t, clocks: map[raft.NodeID]*ManualClock{}, drivers: map[raft.NodeID]*Driver{}, sms: map[raft.NodeID]*listSM{}}
	var members []Member
	for _, id := range ids {
		members = append(members, Member{ID: id})
	}
	for _, id := range ids {
		clock := NewManualClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		rc := raft.DefaultConfig(id)
		rc.Logger = slog.New(slog.DiscardHandler)
		n, err := OpenFS(OpenConfig{
			Config: Config{
				Raft: rc, TickInterval: 10 * time.Millisecond, CommitBroadcastDelay: -1,
				Time: clock, Executor: &queueExec{}, Logger: slog.New(slog.DiscardHandler),
			},
			DataDir: "d", NewCluster: true, InitialMembers: members,
			WALOptions: wal.Options{Logger: slog.New(slog.DiscardHandler)},
		}, FSOpen{FS: vfs.NewSim(uint64(id)), StateMachine: nw.sm(id)})
		if err != nil {
			t.Fatal(err)
		}
		n.SetTransport(queueTransport{nw: nw}, nil)
		nw.clocks[id], nw.drivers[id] = clock, NewDriver(n)
	}
	return nw
}

func (nw *queueNet) sm(id raft.NodeID) *listSM {
	sm := &listSM{}
	nw.sms[id] = sm
	return sm
}

func (nw *queueNet) check(err error) {
	nw.t.Helper()
	if err != nil {
		nw.t.Fatal(err)
	}
}

// deliver delivers every queued message, and those they cause, until none is left.
func (nw *queueNet) deliver() {
	nw.t.Helper()
	for i := 0; len(nw.queue) > 0; i++ {
		if i > 100000 {
			nw.t.Fatal("messages keep coming")
		}
		m := nw.queue[0]
		nw.queue = nw.queue[1:]
		if d := nw.drivers[m.To]; d != nil && (nw.drop == nil || !nw.drop(m)) {
			nw.check(d.Step(m))
		}
	}
}

// tick moves every member's time by a tick, ticks it, and delivers.
func (nw *queueNet) tick() {
	nw.t.Helper()
	for _, id := range slices.Sorted(maps.Keys(nw.drivers)) {
		c := nw.clocks[id]
		c.Set(c.Now().Add(10 * time.Millisecond))
		nw.check(nw.drivers[id].Tick())
	}
	nw.deliver()
}

// leader returns the member that leads in the highest term, or None.
func (nw *queueNet) leader() raft.NodeID {
	var lead raft.NodeID
	var term uint64
	for id, d := range nw.drivers {
		st := d.Status()
		if st.SoftState.State == raft.StateLeader && st.HardState.Term > term {
			lead, term = id, st.HardState.Term
		}
	}
	return lead
}

func answered(t *testing.T, what string, p *Proposal) error {
	t.Helper()
	_, err, ok := p.Result()
	if !ok {
		t.Fatalf("%s not answered", what)
	}
	return err
}

// TestRemovedLeaderAnswersAndRefuses: a leader that applies its own removal leads until a voter
// replaces it. The writes it appended before and after the removal entry are answered by itself
// (it hands over only once its log is committed: its successor never talks to it), and a new
// write fails at once as unavailable and certainly not applied, with a reason that names the
// leader's departure, so the client retries elsewhere. Once the transfer goes through, the new
// leader serves writes.
func TestRemovedLeaderAnswersAndRefuses(t *testing.T) {
	nw := newQueueNet(t, 1, 2, 3)
	for i := 0; i < 100 && nw.leader() == raft.None; i++ {
		nw.tick()
	}
	old := nw.leader()
	if old == raft.None {
		t.Fatal("no leader after 100 ticks")
	}
	l := nw.drivers[old]
	// Hold the hand-over back, to see the leaving leader at work.
	nw.drop = func(m raft.Message) bool { return m.Type == raft.MsgTimeoutNow }
	a, err := l.Propose(1, []byte{1})
	nw.check(err)
	_, err = l.ProposeConfChange(100, raft.ConfChange{Changes: []raft.ConfChangeSingle{{Type: raft.ConfChangeRemoveNode, NodeID: old}}})
	nw.check(err)
	b, err := l.Propose(2, []byte{2})
	nw.check(err)
	nw.deliver()
	st := l.Status()
	if st.SoftState.State != raft.StateLeader || slices.Contains(st.ConfState.Voters, old) {
		t.Fatalf("node %d should lead after applying its removal: %v, conf %+v", old, st.SoftState.State, st.ConfState)
	}
	for _, p := range []struct {
		name string
		p    *Proposal
	}{{"the write before the removal", a}, {"the write after the removal", b}} {
		if err := answered(t, p.name, p.p); err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
	}
	c, err := l.Propose(3, []byte{3})
	nw.check(err)
	err = answered(t, "a write on the leaving leader", c)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, raft.ErrLeaderLeaving) || !strings.Contains(err.Error(), "proposal dropped") {
		t.Fatalf("a write on the leaving leader: %v; want unavailable, raft.ErrLeaderLeaving (\"proposal dropped\": not applied)", err)
	}

	nw.drop = nil
	for i := 0; i < 50 && nw.leader() == old; i++ {
		nw.tick()
	}
	lead := nw.leader()
	if lead == raft.None || lead == old {
		t.Fatalf("leader %d, want a voter", lead)
	}
	d, err := nw.drivers[lead].Propose(4, []byte{4})
	nw.check(err)
	nw.deliver()
	if err := answered(t, "a write on the new leader", d); err != nil {
		t.Fatal(err)
	}
	if st := l.Status().SoftState; st.State == raft.StateLeader {
		t.Fatal("the removed leader still leads")
	}
}

// TestForwardedWriteFailsFastOnLeaderChange: a write a follower forwarded to a leader that
// dropped it is answered, as unavailable with an unknown outcome, as soon as the follower learns
// of another leader, not at its deadline; a forwarded write the leader applied is answered
// with its result and not failed by a later change.
func TestForwardedWriteFailsFastOnLeaderChange(t *testing.T) {
	nw := newQueueNet(t, 1, 2, 3)
	for i := 0; i < 100 && nw.leader() == raft.None; i++ {
		nw.tick()
	}
	old := nw.leader()
	if old == raft.None {
		t.Fatal("no leader after 100 ticks")
	}
	var f raft.NodeID
	for _, id := range []raft.NodeID{1, 2, 3} {
		if id != old {
			f = id
			break
		}
	}
	applied, err := nw.drivers[f].Propose(1, []byte{1})
	nw.check(err)
	nw.deliver()
	if err := answered(t, "a forwarded write", applied); err != nil {
		t.Fatalf("a forwarded write the leader applied: %v", err)
	}
	// The leader drops the next forwarded write: it never sees it.
	nw.drop = func(m raft.Message) bool { return m.Type == raft.MsgProp && m.From == f }
	lost, err := nw.drivers[f].Propose(2, []byte{2})
	nw.check(err)
	nw.deliver()
	if _, _, ok := lost.Result(); ok {
		t.Fatal("a dropped forwarded write was answered before any leader change")
	}
	nw.drop = nil
	// Another member takes over.
	nw.check(nw.drivers[f].TransferLeadership(f))
	for i := 0; i < 50 && nw.leader() == old; i++ {
		nw.tick()
	}
	if nw.leader() == old || nw.leader() == raft.None {
		t.Fatalf("leadership did not move from %d", old)
	}
	err = answered(t, "the dropped forwarded write after the leader changed", lost)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, errLeaderChanged) {
		t.Fatalf("the dropped forwarded write: %v; want unavailable, leader changed (outcome unknown)", err)
	}
	if len(nw.drivers[f].Node().forwarded) != 0 {
		t.Fatalf("forwarded writes still tracked: %v", nw.drivers[f].Node().forwarded)
	}
}
