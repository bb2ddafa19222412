package gossip

import (
	"math"

	"github.com/google/btree"
)

// broadcast is one queued membership update, already encoded as a part.
type broadcast struct {
	name      string // the member it is about: newer news about it supersedes this
	data      []byte
	transmits int
	id        uint64 // queue order: higher is newer
}

// queue holds the updates waiting to be piggybacked. Updates are sent fewest transmissions first,
// newest first among equals (fresh news spreads fastest). At most one update per member is queued:
// a newer one replaces it (superseded). When the queue is full, the update sent most often is
// dropped, the oldest among equals: it is the one most members already know.
type queue struct {
	tree       *btree.BTreeG[*broadcast]
	byName     map[string]*broadcast
	nextID     uint64
	limit      int
	dropped    uint64
	superseded uint64
	scratch    []*broadcast
}

func newQueue(limit int) *queue {
	return &queue{
		tree: btree.NewG(16, func(a, b *broadcast) bool {
			if a.transmits != b.transmits {
				return a.transmits < b.transmits
			}
			return a.id > b.id
		}),
		byName: map[string]*broadcast{},
		limit:  limit,
	}
}

func (q *queue) len() int { return q.tree.Len() }

func (q *queue) has(name string) bool { _, ok := q.byName[name]; return ok }

// push queues data, the news about member name.
func (q *queue) push(name string, data []byte) {
	if old, ok := q.byName[name]; ok {
		q.tree.Delete(old)
		delete(q.byName, name)
		q.superseded++
	}
	for q.tree.Len() >= q.limit {
		victim, _ := q.tree.DeleteMax()
		delete(q.byName, victim.name)
		q.dropped++
	}
	q.nextID++
	b := &broadcast{name: name, data: data, id: q.nextID}
	q.tree.ReplaceOrInsert(b)
	q.byName[name] = b
}

// fill appends to buf the updates that fit in room bytes, counting a transmission of each and
// retiring those sent limit times. skip, if not empty, names a member whose news is already in
// the packet (the buddy suspicion).
func (q *queue) fill(buf []byte, room int, limit int, skip string) []byte {
	taken := q.scratch[:0]
	const minPart = 4 // smaller than any update: stop looking once less room is left
	q.tree.Ascend(func(b *broadcast) bool {
		if room < minPart {
			return false
		}
		if len(b.data) <= room && b.name != skip {
			taken = append(taken, b)
			room -= len(b.data)
		}
		return true
	})
	for _, b := range taken {
		buf = append(buf, b.data...)
		q.tree.Delete(b)
		b.transmits++
		if b.transmits >= limit {
			delete(q.byName, b.name)
			continue
		}
		q.tree.ReplaceOrInsert(b)
	}
	clear(taken)
	q.scratch = taken[:0]
	return buf
}

// retransmitLimit is how many times each update is sent in a group of n live members.
func retransmitLimit(mult, n int) int {
	return mult * int(math.Ceil(math.Log10(float64(n+1))))
}
