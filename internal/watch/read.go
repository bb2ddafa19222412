package watch

import (
	"math"

	"google.golang.org/protobuf/proto"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// entry is one item as a watcher receives it.
type entry struct {
	rev  int64
	msg  *caucusv1.WatchItem // shared, read-only
	size int                 // encoded bytes
}

// item is one change or event read from the store, translated once for every watcher.
type item struct {
	rev   int64
	key   []byte // a change's key
	topic string // an event's topic; "" for a change (a topic is never empty)
	plain entry
	// withPrev is the change with its previous version, when read with it and there is one.
	withPrev *entry
}

func (it *item) entry(prevKV bool) entry {
	if prevKV && it.withPrev != nil {
		return *it.withPrev
	}
	return it.plain
}

// batch is one read: the items of the revisions from its start through to, in stream order.
type batch struct {
	items []item
	to    int64
}

var everyTopic, _ = mvcc.NewEventFilter([]string{"*"})

// allTopics returns the filter of every topic when on, else nil (no events).
func allTopics(on bool) *mvcc.EventFilter {
	if !on {
		return nil
	}
	return &everyTopic
}

// read reads the key changes (when keys; those keep accepts, all when keep is nil) and the
// events topics selects (none when nil) at revisions >= from, at most ReadChunk of each, never
// splitting a revision. The batch is complete through its to: every selected item at a
// revision in [from, to] is in it, and none above.
func (h *Hub) read(from int64, keys, prevKV bool, topics *mvcc.EventFilter, keep func([]byte) bool) (*batch, error) {
	st, max := h.cfg.Store, h.opt.ReadChunk
	to := int64(math.MaxInt64)
	var changes []mvcc.Change
	if keys {
		var cur int64
		var err error
		if changes, cur, err = st.Changes(from, max, prevKV); err != nil {
			return nil, err
		}
		to = min(to, completeThrough(len(changes), max, cur, func() int64 { return changes[len(changes)-1].Kv.ModRevision }))
	}
	var events []*logpb.Event
	if topics != nil {
		var cur int64
		var err error
		if events, cur, err = st.Events(from, 0, max, *topics); err != nil {
			return nil, err
		}
		to = min(to, completeThrough(len(events), max, cur, func() int64 { return events[len(events)-1].Revision }))
	}
	if to == math.MaxInt64 {
		to = st.Rev() // selects nothing: complete wherever the store is
	}
	b := &batch{to: to}
	i, j := 0, 0
	for {
		ci := i < len(changes) && changes[i].Kv.ModRevision <= to
		ej := j < len(events) && events[j].Revision <= to
		switch {
		case ci && (!ej || changes[i].Kv.ModRevision <= events[j].Revision):
			// Within a revision the changes come before the events.
			c := &changes[i]
			i++
			if keep == nil || keep(c.Kv.Key) {
				b.items = append(b.items, h.changeItem(c, prevKV))
			}
		case ej:
			b.items = append(b.items, h.eventItem(events[j]))
			j++
		default:
			return b, nil
		}
	}
}

// completeThrough returns the revision a read of n items (at most max asked) made at store
// revision cur is complete through: cur, unless the read may have stopped at max, then the
// last item's revision (reads never split a revision).
func completeThrough(n, max int, cur int64, last func() int64) int64 {
	if n >= max {
		return last()
	}
	return cur
}

func (h *Hub) changeItem(c *mvcc.Change, prevKV bool) item {
	ch := &caucusv1.WatchChange{Kv: h.cfg.KV(c.Kv)}
	if c.Type == mvcc.ChangeDelete {
		ch.Type = caucusv1.WatchChange_DELETE
	}
	it := item{rev: c.Kv.ModRevision, key: c.Kv.Key, plain: newEntry(c.Kv.ModRevision, &caucusv1.WatchItem{Item: &caucusv1.WatchItem_Change{Change: ch}})}
	if prevKV && c.PrevKv != nil {
		withPrev := &caucusv1.WatchChange{Type: ch.Type, Kv: ch.Kv, PrevKv: h.cfg.KV(c.PrevKv)}
		e := newEntry(it.rev, &caucusv1.WatchItem{Item: &caucusv1.WatchItem_Change{Change: withPrev}})
		it.withPrev = &e
	}
	return it
}

func (h *Hub) eventItem(e *logpb.Event) item {
	return item{rev: e.Revision, topic: e.Topic, plain: newEntry(e.Revision, &caucusv1.WatchItem{Item: &caucusv1.WatchItem_Event{Event: h.cfg.Event(e)}})}
}

func newEntry(rev int64, msg *caucusv1.WatchItem) entry {
	return entry{rev: rev, msg: msg, size: proto.Size(msg)}
}
