package model

import (
	"testing"

	"github.com/caucus/caucus/internal/check/history"
)

// watchCase is a watch history in parts, so that each test plants one bug in a valid run.
type watchCase struct {
	writes []wwrite
	// streams[w] are watcher w's streams, in order.
	streams [][]WatchStreamResult
	ref     []WatchItem
	start   int64
	final   int64
	noRef   bool
	stuck   []int
	// shift moves the start of watcher 1's second stream (a resume at the wrong revision).
	shift int64
}

type wwrite struct {
	in  WatchWrite
	st  history.Status
	rev int64
}

func wev(id string, rev int64, idx int32) WatchItem {
	return WatchItem{Kind: "event", ID: id, Revision: rev, Index: idx}
}

func wput(key, val string, rev int64) WatchItem {
	return WatchItem{Kind: "put", Key: key, Value: val, Revision: rev, Index: -1}
}

// validWatch: four acknowledged writes at revisions 10..13 (a txn with a value and two events,
// a publish, a put, a delete), one unknown publish that happened (14) and one that failed.
// Watcher 0 saw everything in one stream; watcher 1 broke after revision 11 and resumed;
// watcher 2 was cut off in the middle of revision 10 (a split revision) and resumed, skipping
// what it had.
func validWatch() *watchCase {
	a, b, c := wput("w/k0", "1", 10), wev("e1", 10, 0), wev("e2", 10, 1)
	d, e := wev("e3", 11, 0), wput("w/k1", "2", 12)
	f := WatchItem{Kind: "delete", Key: "w/k0", Revision: 13, Index: -1}
	g, h := wev("e4", 13, 0), wev("e5", 14, 0)
	ref := []WatchItem{a, b, c, d, e, f, g, h}
	return &watchCase{
		writes: []wwrite{
			{WatchWrite{Via: "txn", Key: "w/k0", Value: "1", Events: []string{"e1", "e2"}}, history.OK, 10},
			{WatchWrite{Via: "publish", Events: []string{"e3"}}, history.OK, 11},
			{WatchWrite{Via: "put", Key: "w/k1", Value: "2"}, history.OK, 12},
			{WatchWrite{Via: "delete", Key: "w/k0", Events: []string{"e4"}}, history.OK, 13},
			{WatchWrite{Via: "publish", Events: []string{"e5"}}, history.Unknown, 0},
			{WatchWrite{Via: "publish", Events: []string{"e6"}}, history.Fail, 0},
		},
		streams: [][]WatchStreamResult{
			{{Items: ref, Complete: 15}},
			{{Items: []WatchItem{a, b, c, d}, Complete: 11, End: "unavailable"}, {Items: []WatchItem{e, f, g, h}, Complete: 15}},
			{{Items: []WatchItem{a, b}, Complete: 9, End: "reset"}, {Items: []WatchItem{c, d, e, f, g, h}, Complete: 15}},
		},
		ref:   ref,
		start: 10,
		final: 15,
	}
}

func (c *watchCase) history() []history.Op {
	var b h
	t := int64(0)
	next := func() (int64, int64) { t += 10; return t, t + 5 }
	for i, w := range c.writes {
		call, ret := next()
		var out any
		if w.st == history.OK {
			out = WatchWriteResult{Revision: w.rev}
		}
		b.op(i, call, ret, w.st, w.in, out)
	}
	for wi, ss := range c.streams {
		complete := c.start - 1
		for si, s := range ss {
			call, ret := next()
			start := complete + 1
			if wi == 1 && si == 1 {
				start += c.shift
			}
			b.op(10+wi, call, ret, history.OK, WatchStream{Watcher: wi, Start: start}, s)
			complete = max(complete, s.Complete)
		}
	}
	if !c.noRef {
		call, ret := next()
		b.op(20, call, ret, history.OK, WatchReference{Start: c.start, Final: c.final}, WatchReferenceResult{Items: c.ref})
	}
	for _, w := range c.stuck {
		call, ret := next()
		b.op(20, call, ret, history.Fail, WatchCaughtUp{Watcher: w}, nil)
	}
	return b.ops
}

func TestWatchAcceptsValid(t *testing.T) {
	got := CheckWatch(validWatch().history())
	if !got.Valid {
		t.Fatalf("valid history rejected: %v", got)
	}
	if got.Stats["watchers"] != 3 || got.Stats["reference-items"] != 8 || got.Stats["watcher-1-streams"] != 2 {
		t.Errorf("stats %v", got.Stats)
	}
	// A watcher whose view is complete only through 11 need not have seen more.
	c := validWatch()
	c.streams[1] = c.streams[1][:1]
	if got := CheckWatch(c.history()); !got.Valid {
		t.Fatalf("a watcher complete through 11 rejected: %v", got)
	}
}

// TestWatchCatches plants one bug at a time in the valid history; the checker must report it,
// under the expected kind.
func TestWatchCatches(t *testing.T) {
	for _, tc := range []struct {
		name, kind string
		plant      func(c *watchCase)
	}{
		{"gap at a resume", "gap", func(c *watchCase) {
			// watcher 1 resumed one revision too late: e3 (11) never seen
			c.streams[1][0] = WatchStreamResult{Items: c.ref[:3], Complete: 11}
		}},
		{"gap at the end", "gap", func(c *watchCase) {
			c.streams[0][0].Items = c.ref[:7] // complete through 15 without e5
		}},
		{"duplicate at a resume", "duplicate", func(c *watchCase) {
			// watcher 2 resumed without skipping what it had of revision 10
			c.streams[2][1].Items = append([]WatchItem{c.ref[1]}, c.streams[2][1].Items...)
		}},
		{"reorder within a revision", "reorder", func(c *watchCase) {
			r := c.streams[0][0].Items
			c.streams[0][0].Items = []WatchItem{r[0], r[2], r[1], r[3], r[4], r[5], r[6], r[7]}
		}},
		{"reorder across revisions", "reorder", func(c *watchCase) {
			r := c.streams[0][0].Items
			c.streams[0][0].Items = []WatchItem{r[0], r[1], r[2], r[4], r[3], r[5], r[6], r[7]}
		}},
		{"item at another position", "mismatch", func(c *watchCase) {
			c.streams[0][0].Items = append([]WatchItem(nil), c.ref...)
			c.streams[0][0].Items[3].Revision = 12
		}},
		{"phantom item at a watcher", "phantom", func(c *watchCase) {
			c.streams[0][0].Items = append(append([]WatchItem(nil), c.ref...), wev("e99", 15, 0))
		}},
		{"resume past the complete revision", "resume", func(c *watchCase) {
			c.shift = 1
			c.streams[1][1].Items = c.streams[1][1].Items[1:] // revision 12 never asked for
		}},
		{"acknowledged event not in the stream", "lost", func(c *watchCase) {
			c.writes[1].in.Events = []string{"e3", "e3b"}
		}},
		{"event of a failed publish in the stream", "unexpected", func(c *watchCase) {
			c.writes[4].st = history.Fail
		}},
		{"event never published in the stream", "phantom", func(c *watchCase) {
			c.writes = c.writes[:4]
		}},
		{"event at another revision than its publish", "mismatch", func(c *watchCase) {
			c.writes[1].rev = 12
		}},
		{"writes out of real-time order", "order", func(c *watchCase) {
			c.writes[2].rev = 9
		}},
		{"reference out of order", "reorder", func(c *watchCase) {
			c.ref[1], c.ref[2] = c.ref[2], c.ref[1]
		}},
		{"watcher stuck after the faults", "incomplete", func(c *watchCase) { c.stuck = []int{2} }},
		{"no reference", "no-final-read", func(c *watchCase) { c.noRef = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validWatch()
			tc.plant(c)
			got := CheckWatch(c.history())
			if got.Valid || kinds(got)[tc.kind] == 0 {
				t.Fatalf("%s not reported as %q: %v", tc.name, tc.kind, got)
			}
			t.Logf("%v", got)
		})
	}
}
