package sim

import (
	"container/heap"

	"github.com/caucus/caucus/raft"
)

// envelope is a message in flight. seq breaks ties between messages due at the same tick so that
// the delivery order is a pure function of the seed.
type envelope struct {
	at   uint64
	seq  uint64
	from raft.NodeID // the node that put it on the wire (a forwarded message keeps its origin's From)
	m    raft.Message
}

type msgQueue []envelope

func (q msgQueue) Len() int { return len(q) }
func (q msgQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q msgQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *msgQueue) Push(x any)   { *q = append(*q, x.(envelope)) }
func (q *msgQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = envelope{}
	*q = old[:len(old)-1]
	return e
}

// network holds the messages in flight and the current partition. A link's state is checked when
// a message is delivered, not when it is sent, so a partition also cuts messages already on the
// wire, as a real one would.
type network struct {
	q   msgQueue
	seq uint64
	// cut[from][to] blocks delivery from -> to. Node IDs are small, so a dense matrix is simplest.
	cut [][]bool
	// partitioned says whether any link is cut (so heal is a no-op otherwise).
	partitioned bool
}

func newNetwork(maxID int) *network {
	n := &network{cut: make([][]bool, maxID+1)}
	for k := range n.cut {
		n.cut[k] = make([]bool, maxID+1)
	}
	return n
}

func (n *network) push(at uint64, from raft.NodeID, m raft.Message) {
	n.seq++
	heap.Push(&n.q, envelope{at: at, seq: n.seq, from: from, m: m})
}

// popDue returns the next message due at or before now, and the node that sent it.
func (n *network) popDue(now uint64) (raft.NodeID, raft.Message, bool) {
	if len(n.q) == 0 || n.q[0].at > now {
		return raft.None, raft.Message{}, false
	}
	e := heap.Pop(&n.q).(envelope)
	return e.from, e.m, true
}

func (n *network) blocked(from, to raft.NodeID) bool { return n.cut[from][to] }

func (n *network) heal() {
	for _, row := range n.cut {
		clear(row)
	}
	n.partitioned = false
}

// split cuts every link between a and b, in both directions or only from a to b.
func (n *network) split(a, b []raft.NodeID, oneWay bool) {
	for _, x := range a {
		for _, y := range b {
			n.cut[x][y] = true
			if !oneWay {
				n.cut[y][x] = true
			}
		}
	}
	n.partitioned = true
}
