package sim

import (
	"os"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// TestMain puts the bbolt files of the fsm seeds (TestSeedsFSM, os.TempDir) on a tmpfs when
// there is one and TMPDIR does not say otherwise: the fsm's own fsyncs (the reboot guard's
// marker, snapshot installs, syncs before snapshots) then cost nothing, where on a shared disk
// they are most of a seed's time. What a crash keeps is the simulator's decision either way.
func TestMain(m *testing.M) {
	if os.Getenv("TMPDIR") == "" {
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			if f, err := os.CreateTemp("/dev/shm", "caucus-sim-probe-"); err == nil {
				f.Close()
				os.Remove(f.Name())
				os.Setenv("TMPDIR", "/dev/shm")
			}
		}
	}
	os.Exit(m.Run())
}

// eventHarness is an event checker outside a run, fed by hand.
type eventHarness struct {
	r *nodeRun
	c *eventCheck
}

func newEventHarness() *eventHarness {
	s := newSim(Options{Seed: 1, Nodes: 3}.withDefaults())
	r := &nodeRun{simulation: s, lost: map[uint64]bool{}, applied: map[uint64]bool{}}
	s.nr = r
	r.evs = newEventCheck(r)
	return &eventHarness{r: r, c: r.evs}
}

// op registers a write with n[b] events in branch b, applied at index.
func (h *eventHarness) op(id, index uint64, kind string, n [2]int) *evOp {
	op := &evOp{id: id, proposer: 1, kind: kind, key: "k0", time: 1000 + int64(id)}
	for b := range 2 {
		for j := range n[b] {
			op.branches[b] = append(op.branches[b], &logpb.Event{Topic: "orders", Key: []byte("k0"), Payload: eventPayload(id, b, j)})
		}
	}
	h.c.add(op)
	h.c.appliedAt(id, index)
	return op
}

// stored is event j of branch b of op as the store keeps it at (rev, index).
func stored(op *evOp, b, j int, rev int64, index int32) *logpb.Event {
	e := proto.CloneOf(op.branches[b][j])
	e.Revision, e.Index, e.TimeUnixNano, e.Id = rev, index, op.time, mvcc.EventID(rev, index)
	return e
}

// run runs f and returns the violation it reported, if any.
func (h *eventHarness) run(f func()) (v *Violation) {
	defer func() {
		if x := recover(); x != nil {
			if _, ok := x.(stop); !ok {
				panic(x)
			}
			v = h.r.viol
		}
	}()
	f()
	return nil
}

// TestEventCheckerCatches feeds the event checker streams broken in each way it names, and a
// sound one, to show every check can fail.
func TestEventCheckerCatches(t *testing.T) {
	cases := []struct {
		name string
		want Kind // "" for none
		f    func(h *eventHarness)
	}{
		{"sound", "", func(h *eventHarness) {
			put, pub, txn := h.op(1, 4, "put", [2]int{2, 0}), h.op(2, 5, "publish", [2]int{1, 0}), h.op(3, 7, "txn", [2]int{0, 2})
			h.c.append(1, 7, stored(put, 0, 0, 2, 0))
			h.c.append(1, 7, stored(put, 0, 1, 2, 1))
			h.c.append(1, 7, stored(pub, 0, 0, 3, 0))
			h.c.append(1, 7, stored(txn, 1, 0, 5, 0))
			h.c.append(1, 7, stored(txn, 1, 1, 5, 1))
			h.c.answered(1, 1, 4, mvcc.Result{Resp: &logpb.PutResponse{Header: &logpb.ResponseHeader{Revision: 2}, EventIds: []string{"2-0", "2-1"}}})
			h.c.answered(1, 3, 7, mvcc.Result{Resp: &logpb.TxnResponse{Header: &logpb.ResponseHeader{Revision: 5}, Responses: []*logpb.ResponseOp{
				{Response: &logpb.ResponseOp_ResponsePut{ResponsePut: &logpb.PutResponse{EventIds: []string{"5-0", "5-1"}}}}}}})
			h.c.checkAcked(7)
		}},
		{"index gap", EventStream, func(h *eventHarness) {
			put := h.op(1, 4, "put", [2]int{2, 0})
			h.c.append(1, 7, stored(put, 0, 0, 2, 0))
			e := stored(put, 0, 1, 2, 2)
			h.c.append(1, 7, e)
		}},
		{"write split", EventStream, func(h *eventHarness) {
			put, pub := h.op(1, 4, "put", [2]int{2, 0}), h.op(2, 5, "publish", [2]int{1, 0})
			h.c.append(1, 7, stored(put, 0, 0, 2, 0))
			h.c.append(1, 7, stored(pub, 0, 0, 3, 0))
		}},
		{"altered payload", EventStream, func(h *eventHarness) {
			put := h.op(1, 4, "put", [2]int{1, 0})
			e := stored(put, 0, 0, 2, 0)
			e.Topic = "audit.log"
			h.c.append(1, 7, e)
		}},
		{"not applied", EventStream, func(h *eventHarness) {
			put := h.op(1, 9, "put", [2]int{1, 0})
			h.c.append(1, 7, stored(put, 0, 0, 2, 0))
		}},
		{"duplicate", EventDuplicate, func(h *eventHarness) {
			put := h.op(1, 4, "put", [2]int{1, 0})
			h.c.append(1, 7, stored(put, 0, 0, 2, 0))
			h.c.append(1, 7, stored(put, 0, 0, 3, 0))
		}},
		{"log order", EventOrder, func(h *eventHarness) {
			a, b := h.op(1, 6, "put", [2]int{1, 0}), h.op(2, 5, "put", [2]int{1, 0})
			h.c.append(1, 7, stored(a, 0, 0, 2, 0))
			h.c.append(1, 7, stored(b, 0, 0, 3, 0))
		}},
		{"lost then published", EventOfFailedWrite, func(h *eventHarness) {
			put := h.op(1, 4, "put", [2]int{1, 0})
			h.c.lost(1)
			h.c.append(1, 7, stored(put, 0, 0, 2, 0))
		}},
		{"refused but published", EventOfFailedWrite, func(h *eventHarness) {
			put := h.op(1, 4, "put", [2]int{1, 0})
			put.invalid = true
			h.c.append(1, 7, stored(put, 0, 0, 2, 0))
		}},
		{"acknowledged, never published", EventLost, func(h *eventHarness) {
			h.op(1, 4, "put", [2]int{1, 0})
			h.c.answered(1, 1, 4, mvcc.Result{Resp: &logpb.PutResponse{Header: &logpb.ResponseHeader{Revision: 2}, EventIds: []string{"2-0"}}})
			h.c.checkAcked(4)
		}},
		{"answer names other events", EventLost, func(h *eventHarness) {
			put := h.op(1, 4, "put", [2]int{1, 0})
			h.c.append(1, 7, stored(put, 0, 0, 2, 0))
			h.c.answered(1, 1, 4, mvcc.Result{Resp: &logpb.PutResponse{Header: &logpb.ResponseHeader{Revision: 3}, EventIds: []string{"3-0"}}})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newEventHarness()
			v := h.run(func() { c.f(h) })
			switch {
			case c.want == "" && v != nil:
				t.Fatalf("sound stream reported: %v", v)
			case c.want != "" && (v == nil || v.Kind != c.want):
				t.Fatalf("want a %s violation, got %v", c.want, v)
			case v != nil:
				t.Logf("%s: %s", v.Kind, v.Detail)
			}
		})
	}
}
