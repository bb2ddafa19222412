package model

import (
	"fmt"
	"sort"

	"github.com/caucus/caucus/internal/check/history"
)

// The watch workload: writers publish events with unique ids and put unique values (a put or a
// transaction that also publishes, a delete that publishes), while watchers stream the key
// changes and events of the run (Events.Watch against different members, every watcher from
// the run's start revision). A watcher's stream breaks when the nemesis strikes its member, and
// it ends its streams itself now and then; it resumes from the revision after the last one
// its stream reported complete. After the faults heal, a reference stream is read from one
// member from the start revision through the final revision, and every watcher is caught up
// to it.
//
// The specification:
//
//   - the reference stream is in stream order (revisions ascending; within a revision the key
//     changes, then the events by index), and holds every item once;
//   - every item of the reference was written by the run: an event published, a value put, a
//     key deleted, by a write that did not definitely fail, at the revision an acknowledged
//     write was given; every acknowledged write's events and value are in it; writes
//     acknowledged before another was invoked have the lower revision;
//   - every watcher saw exactly the reference, in its order, from the start revision through
//     the last revision its streams reported complete (and, beyond it, a prefix of the next
//     revision): no gap, no duplicate, no reorder, nothing else; and it reached the final
//     revision once the cluster healed.

// WatchWrite is the input of a write: a put of a unique value (Via "put" or "txn", which also
// publishes), a delete of a key (Via "delete"), or a publish alone (Via "publish"), each
// publishing the events Events (unique ids).
type WatchWrite struct {
	Via    string   `json:"via"`
	Key    string   `json:"key,omitempty"`
	Value  string   `json:"value,omitempty"`
	Events []string `json:"events,omitempty"`
}

// WatchWriteResult is the output of an acknowledged write.
type WatchWriteResult struct {
	Revision int64 `json:"revision"`
}

// WatchItem is one item a watch delivered, reduced to what identifies it.
type WatchItem struct {
	// Kind is "event", "put" or "delete".
	Kind     string `json:"kind"`
	Revision int64  `json:"revision"`
	// Index is an event's index within its revision; -1 for a key change.
	Index int32 `json:"index"`
	// ID is an event's id; Key and Value a change's key and (for a put) value.
	ID    string `json:"id,omitempty"`
	Key   string `json:"key,omitempty"`
	Value string `json:"value,omitempty"`
}

// ident names the item: unique within a run, since event ids and put values are.
func (it WatchItem) ident() string {
	switch it.Kind {
	case "event":
		return "event " + it.ID
	case "put":
		return fmt.Sprintf("put %s=%s", it.Key, it.Value)
	}
	return fmt.Sprintf("delete %s@%d", it.Key, it.Revision)
}

// pos formats the item's position: revision.index for an event, the revision for a change.
func (it WatchItem) pos() string {
	if it.Index < 0 {
		return fmt.Sprint(it.Revision)
	}
	return fmt.Sprintf("%d.%d", it.Revision, it.Index)
}

// before reports whether it comes before o in the stream's order.
func (it WatchItem) before(o WatchItem) bool {
	if it.Revision != o.Revision {
		return it.Revision < o.Revision
	}
	return it.Index < o.Index // changes (-1) first, then events by index
}

// WatchStream is the input of one stream of a watcher, from Start.
type WatchStream struct {
	Watcher int   `json:"watcher"`
	Start   int64 `json:"start"`
}

// WatchStreamResult is what one stream delivered before it ended (it is recorded OK whatever
// ended it: everything it delivered was observed).
type WatchStreamResult struct {
	Items []WatchItem `json:"items"`
	// Complete is the revision through which the watcher's view is complete after this
	// stream (its header revisions); the watcher resumes at Complete+1.
	Complete int64 `json:"complete"`
	// End says what ended the stream: "" when the watcher closed it.
	End string `json:"end,omitempty"`
}

// WatchReference is the input of the final read of the reference stream, from Start (the run's
// start revision) through Final (the revision after every write).
type WatchReference struct {
	Start int64 `json:"start"`
	Final int64 `json:"final"`
}

// WatchReferenceResult is the reference stream.
type WatchReferenceResult struct {
	Items []WatchItem `json:"items"`
}

// WatchCaughtUp is the input of the check, after the final catch-up, that a watcher reached the
// final revision; its output is a WatchCaughtUpResult.
type WatchCaughtUp struct {
	Watcher int `json:"watcher"`
}

// CheckWatch checks a watch history.
func CheckWatch(ops []history.Op) Result {
	res := Result{Valid: true, Stats: map[string]int{}}
	var writes []history.Op
	streams := map[int][]history.Op{}
	var ref *history.Op
	for i := range ops {
		op := ops[i]
		switch in := op.Input.(type) {
		case WatchWrite:
			writes = append(writes, op)
			res.Stats["write-"+string(op.Status)]++
		case WatchStream:
			if op.Status == history.OK {
				streams[in.Watcher] = append(streams[in.Watcher], op)
			}
		case WatchReference:
			if op.Status == history.OK {
				ref = &ops[i]
			}
		}
	}
	checkWriteOrder(&res, writes)
	if ref == nil {
		res.add("no-final-read", nil, "no reference stream was read; nothing can be said of the watchers")
		return res
	}
	rin, items := ref.Input.(WatchReference), ref.Output.(WatchReferenceResult).Items
	res.Stats["reference-items"] = len(items)

	// The reference: in order, each item once, each written by the run.
	at := map[string]int{}
	for i, it := range items {
		if i > 0 && !items[i-1].before(it) {
			res.add("reorder", []int{ref.ID}, "reference: %s (at %s) follows %s (at %s)", it.ident(), it.pos(), items[i-1].ident(), items[i-1].pos())
		}
		if it.Revision < rin.Start || it.Revision > rin.Final {
			res.add("unexpected", []int{ref.ID}, "reference: %s at revision %d, outside [%d, %d]", it.ident(), it.Revision, rin.Start, rin.Final)
		}
		if j, ok := at[it.ident()]; ok {
			res.add("duplicate", []int{ref.ID}, "reference: %s at positions %d and %d", it.ident(), j, i)
			continue
		}
		at[it.ident()] = i
	}
	checkWritesInReference(&res, writes, items, ref.ID)

	// The watchers against the reference.
	var ids []int
	for id := range streams {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		ss := streams[id]
		sort.Slice(ss, func(i, j int) bool { return ss[i].Call < ss[j].Call })
		checkWatcher(&res, id, ss, items, at, rin)
	}
	res.Stats["watchers"] = len(ids)
	for _, op := range ops {
		if in, ok := op.Input.(WatchCaughtUp); ok && op.Status != history.OK {
			res.add("incomplete", []int{op.ID}, "watcher %d did not reach the final revision %d after the faults healed: %s", in.Watcher, rin.Final, op.Error)
		}
	}
	return res
}

// checkWatcher compares the items watcher id saw over its streams ss (in order) with the
// reference items, through the last revision its streams reported complete.
func checkWatcher(res *Result, id int, ss []history.Op, items []WatchItem, at map[string]int, rin WatchReference) {
	var seen []WatchItem
	var from []int // the op of each seen item
	complete := rin.Start - 1
	for _, s := range ss {
		out := s.Output.(WatchStreamResult)
		if in := s.Input.(WatchStream); in.Start != complete+1 {
			res.add("resume", []int{s.ID}, "watcher %d resumed at %d, complete through %d", id, in.Start, complete)
		}
		for _, it := range out.Items {
			seen = append(seen, it)
			from = append(from, s.ID)
		}
		complete = max(complete, out.Complete)
	}
	res.Stats[fmt.Sprintf("watcher-%d-items", id)] = len(seen)
	res.Stats[fmt.Sprintf("watcher-%d-streams", id)] = len(ss)
	// The watcher must have seen the reference items through its complete revision (window),
	// each once and in order; beyond them it may have seen a prefix of the next revision (the
	// first parts of a split revision). Items are matched by identity and must sit at their
	// reference positions, so positions strictly increase when the order is right.
	window := sort.Search(len(items), func(i int) bool { return items[i].Revision > complete })
	next := 0 // the reference item the watcher should see next
	// missing holds the reference items skipped (by identity: their reference position and
	// the stream that skipped them): a gap unless they come later, out of order.
	type skipped struct{ at, op int }
	missing := map[string]skipped{}
	had := map[string]bool{}
	reported := 0
	report := func(kind string, ops []int, format string, args ...any) {
		reported++
		if reported <= 10 {
			res.add(kind, ops, format, args...)
		}
	}
	for i, it := range seen {
		id0 := it.ident()
		k, ok := at[id0]
		switch {
		case had[id0]:
			report("duplicate", []int{from[i]}, "watcher %d saw %s (at %s) again", id, id0, it.pos())
			continue
		case !ok:
			report("phantom", []int{from[i]}, "watcher %d saw %s (at %s), which is not in the reference", id, id0, it.pos())
			continue
		case items[k].Revision != it.Revision || items[k].Index != it.Index:
			report("mismatch", []int{from[i]}, "watcher %d saw %s at %s, the reference has it at %s", id, id0, it.pos(), items[k].pos())
		}
		had[id0] = true
		switch {
		case k < next:
			delete(missing, id0)
			report("reorder", []int{from[i]}, "watcher %d saw %s (at %s) after %s (at %s), which follows it in the reference",
				id, id0, it.pos(), items[next-1].ident(), items[next-1].pos())
		default:
			for j := next; j < k; j++ {
				missing[items[j].ident()] = skipped{j, from[i]}
			}
			next = k + 1
		}
	}
	for j := next; j < window; j++ {
		missing[items[j].ident()] = skipped{j, ss[len(ss)-1].ID}
	}
	if len(missing) > 0 {
		var gap []skipped
		for _, m := range missing {
			gap = append(gap, m)
		}
		sort.Slice(gap, func(i, j int) bool { return gap[i].at < gap[j].at })
		first := items[gap[0].at]
		report("gap", []int{gap[0].op}, "watcher %d, complete through %d, missed %d item(s) of the reference, the first %s (at %s)",
			id, complete, len(gap), first.ident(), first.pos())
	}
	for i, it := range seen {
		if it.Revision > complete+1 {
			report("unexpected", []int{from[i]}, "watcher %d saw %s at revision %d, beyond the revision after its complete %d", id, it.ident(), it.Revision, complete)
			break
		}
	}
	if reported > 10 {
		res.add("more", nil, "watcher %d: %d more violation(s)", id, reported-10)
	}
}

// checkWritesInReference checks the reference against the writes: every item written by a
// write that did not definitely fail, at an acknowledged write's revision; every acknowledged
// write's items present.
func checkWritesInReference(res *Result, writes []history.Op, items []WatchItem, refID int) {
	type source struct {
		op   history.Op
		kind string
	}
	by := map[string]source{}
	deletes := map[string][]history.Op{}
	for _, w := range writes {
		in := w.Input.(WatchWrite)
		for _, id := range in.Events {
			by["event "+id] = source{w, "event"}
		}
		switch in.Via {
		case "put", "txn":
			by[fmt.Sprintf("put %s=%s", in.Key, in.Value)] = source{w, "put"}
		case "delete":
			deletes[in.Key] = append(deletes[in.Key], w)
		}
	}
	found := map[string]bool{}
	for _, it := range items {
		var src history.Op
		if it.Kind == "delete" {
			// A delete changes the key only if it existed: match it by key and revision.
			var ok bool
			for _, d := range deletes[it.Key] {
				if d.Status == history.Unknown || d.Status == history.OK && d.Output.(WatchWriteResult).Revision == it.Revision {
					src, ok = d, true
					break
				}
			}
			if !ok {
				res.add("phantom", []int{refID}, "reference: %s, which no delete of the run could have made", it.ident())
			}
			continue
		}
		s, ok := by[it.ident()]
		if !ok {
			res.add("phantom", []int{refID}, "reference: %s (at %s), which the run never wrote", it.ident(), it.pos())
			continue
		}
		src = s.op
		found[it.ident()] = true
		switch src.Status {
		case history.Fail:
			res.add("unexpected", []int{refID, src.ID}, "reference: %s, written by a write that definitely failed", it.ident())
		case history.OK:
			if rev := src.Output.(WatchWriteResult).Revision; rev != it.Revision {
				res.add("mismatch", []int{refID, src.ID}, "reference: %s at revision %d, its write was acknowledged at %d", it.ident(), it.Revision, rev)
			}
		}
	}
	lost := 0
	for ident, s := range by {
		if s.op.Status == history.OK && !found[ident] {
			lost++
			if lost <= 10 {
				res.add("lost", []int{s.op.ID, refID}, "%s was acknowledged (revision %d) and is not in the reference", ident, s.op.Output.(WatchWriteResult).Revision)
			}
		}
	}
	if lost > 10 {
		res.add("lost", []int{refID}, "%d more acknowledged items are not in the reference", lost-10)
	}
}

// checkWriteOrder checks that acknowledged writes were given revisions in real time order.
func checkWriteOrder(res *Result, writes []history.Op) {
	var acked []history.Op
	for _, w := range writes {
		if w.Status == history.OK {
			acked = append(acked, w)
		}
	}
	byCall := append([]history.Op(nil), acked...)
	sort.Slice(byCall, func(i, j int) bool { return byCall[i].Call < byCall[j].Call })
	byReturn := acked
	sort.Slice(byReturn, func(i, j int) bool { return byReturn[i].Return < byReturn[j].Return })
	ri, maxRev, maxOp := 0, int64(0), -1
	for _, w := range byCall {
		for ; ri < len(byReturn) && byReturn[ri].Return < w.Call; ri++ {
			if rev := byReturn[ri].Output.(WatchWriteResult).Revision; rev > maxRev {
				maxRev, maxOp = rev, byReturn[ri].ID
			}
		}
		if rev := w.Output.(WatchWriteResult).Revision; maxOp >= 0 && rev <= maxRev {
			res.add("order", []int{maxOp, w.ID}, "write at revision %d was invoked after a write at revision %d was acknowledged", rev, maxRev)
		}
	}
}
