package watch

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// txnOps is a transaction of the given ops.
func txnOps(ops ...*logpb.RequestOp) *logpb.Command {
	return &logpb.Command{Op: &logpb.Command_Txn{Txn: &logpb.TxnRequest{Success: ops}}}
}

func opPut(k, v string) *logpb.RequestOp {
	return &logpb.RequestOp{Request: &logpb.RequestOp_RequestPut{RequestPut: &logpb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
}

func opPublish(evs ...*logpb.Event) *logpb.RequestOp {
	return &logpb.RequestOp{Request: &logpb.RequestOp_RequestPublish{RequestPublish: &logpb.PublishRequest{Events: evs}}}
}

// TestFilterAndOrder: each watcher sees exactly what it selects (a key, a prefix, keys from a
// key, exact topics, topic prefixes, every topic, keys and topics at once with overlapping
// patterns), and within a revision the key changes first, then the events by index, whatever
// the order of the transaction's operations.
func TestFilterAndOrder(t *testing.T) {
	s := openStore(t)
	h := newHub(t, s, Options{})
	reqs := []Request{
		{Key: []byte("a")},
		{Key: []byte("b/"), RangeEnd: []byte("b0")},
		{Key: []byte("b/2"), RangeEnd: []byte{0}},
		{Topics: []string{"orders"}},
		{Topics: []string{"ord*"}},
		{Topics: []string{"*"}},
		{Key: []byte("a"), Topics: []string{"orders", "ord*", "orders"}, PrevKV: true},
		{Key: []byte{0}, RangeEnd: []byte{0}, Topics: []string{"audit"}},
	}
	var cs []*client
	for _, r := range reqs {
		cs = append(cs, watch(t, h, r))
	}
	s.apply(put("a", "1", ev("orders", "a", "o1")), put("b/1", "x"))
	s.apply(txnOps(opPublish(ev("orders", "k", "o2")), opPut("a", "2"), opPut("b/2", "2"), opPut("c", "2"),
		opPublish(ev("audit", "k", "a1"), ev("orders.eu", "k", "o3"))))
	s.apply(del("b/", "b0", ev("ordersx", "", "d")))
	s.apply(publish(ev("audit", "", "p")), put("a", "3"))
	h.pull()
	rev := s.s.Rev()
	for i, c := range cs {
		sameItems(t, fmt.Sprintf("watcher %d %+v", i, reqs[i]), c.until(rev), expected(t, s, reqs[i], 1, rev))
	}
	// The order within the transaction's revision (4: a new store is at 1) is the documented
	// one, not the transaction's.
	got := expected(t, s, reqs[6], 4, 4)
	want := []string{"4 PUT a=2 (was 1)", "4.0 event orders k o2", "4.2 event orders.eu k o3"}
	sameItems(t, "revision 4 for a and orders", got, want)
}

// TestStartRevisions: the first response is a progress response at the start revision - 1 (the
// store does not move meanwhile); a watch from an old revision replays the history; a watch
// from a future revision waits for it; a compacted start revision is refused, naming the oldest
// retained revision.
func TestStartRevisions(t *testing.T) {
	s := openStore(t) // at revision 1
	for i := range 6 {
		s.apply(put("k", fmt.Sprint(i))) // revisions 2 to 7
	}
	s.apply(compact(3))
	h := newHub(t, s, Options{ReadChunk: 2})
	all := Request{Key: []byte("k")}
	old := watch(t, h, Request{Key: all.Key, StartRevision: 4})
	if r := old.next(); !r.Progress || r.Revision != 3 || len(r.Items) != 0 {
		t.Fatalf("first response %+v, want progress at 3", r)
	}
	sameItems(t, "from 4", old.until(7), expected(t, s, all, 4, 7))
	future := watch(t, h, Request{Key: all.Key, StartRevision: 10})
	if r := future.next(); !r.Progress || r.Revision != 9 {
		t.Fatalf("first response %+v, want progress at 9", r)
	}
	for i := range 4 {
		s.apply(put("k", fmt.Sprint("f", i))) // 8 to 11
	}
	h.pull()
	sameItems(t, "from 10", future.until(11), expected(t, s, all, 10, 11))
	now := watch(t, h, all)
	if r := now.next(); r.Revision != 11 {
		t.Fatalf("first response of a watch from now complete through %d, want 11", r.Revision)
	}

	for _, start := range []int64{1, 3} {
		_, err := h.Watch(Request{Key: all.Key, StartRevision: start})
		if !errors.Is(err, mvcc.ErrCompacted) || !strings.Contains(err.Error(), "oldest retained revision is 4") {
			t.Fatalf("watch from compacted revision %d: %v", start, err)
		}
	}
	for _, bad := range []Request{{}, {Key: []byte("b"), RangeEnd: []byte("a")}, {RangeEnd: []byte("a"), Topics: []string{"*"}},
		{Topics: []string{"bad topic"}}, {Key: []byte("a"), StartRevision: -1}} {
		if _, err := h.Watch(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("watch %+v: %v, want ErrInvalid", bad, err)
		}
	}
}

// TestSplitRevision: a revision with more items than a response holds is split; every part but
// the last is complete only through the revision before it. Later revisions join the last
// response while it waits.
func TestSplitRevision(t *testing.T) {
	s := openStore(t)
	h := newHub(t, s, Options{MaxResponseItems: 3})
	c := watch(t, h, Request{Key: []byte("k"), RangeEnd: []byte("l"), Topics: []string{"*"}})
	c.next()
	var keys []string
	for i := range 7 {
		keys = append(keys, fmt.Sprint("k", i))
	}
	s.apply(txnPuts("v", keys, ev("t", "", "e")))
	h.pull()
	var revs []int64
	var n []int
	for range 3 {
		r := c.next()
		revs, n = append(revs, r.Revision), append(n, len(r.Items))
	}
	if fmt.Sprint(revs, n) != "[1 1 2] [3 3 2]" { // the transaction is revision 2
		t.Fatalf("responses complete through %v with %v items, want [1 1 2] [3 3 2]", revs, n)
	}
}

// TestOneReadPerCommit: however many live watchers, the feed reads each commit's revisions
// once; nobody reads on their own.
func TestOneReadPerCommit(t *testing.T) {
	s := openStore(t)
	h := newHub(t, s, Options{})
	var cs []*client
	var reqs []Request
	for i := range 200 {
		r := Request{Key: []byte(fmt.Sprint("k", i%50)), Topics: []string{fmt.Sprint("t", i%7)}}
		if i%10 == 0 {
			r = Request{Key: []byte("k1"), RangeEnd: []byte("k3"), Topics: []string{"t*"}, PrevKV: true}
		}
		reqs = append(reqs, r)
		cs = append(cs, watch(t, h, r))
	}
	for c := range 10 {
		s.apply(put(fmt.Sprint("k", c*3), "v", ev(fmt.Sprint("t", c%7), "", "p")), put(fmt.Sprint("k", c*5), "w"))
		h.pull()
	}
	if st := h.Stats(); st.FeedReads != 10 || st.CatchupReads != 0 || st.Live != 200 {
		t.Fatalf("stats %+v, want 10 feed reads for 10 commits, no catch-up read, 200 live", st)
	}
	rev := s.s.Rev()
	for i, c := range cs {
		sameItems(t, fmt.Sprint("watcher ", i), c.until(rev), expected(t, s, reqs[i], 1, rev))
	}
}

// TestCatchUpToLiveSwitch forces each interleaving of a catching-up watcher's store read with
// the feed: the feed passes the read (the watcher reads on), the store moves on while the feed
// lags (the watcher joins the feed, which then dispatches revisions it already read: skipped),
// and both. The watcher sees every item once, in order.
func TestCatchUpToLiveSwitch(t *testing.T) {
	for _, schedule := range []string{"p", "c", "cp", "pc", "cpc", "ccp", "pcpc", "ccc", "pppp", "cpcpcp"} {
		t.Run(schedule, func(t *testing.T) {
			s := openStore(t)
			h := newHub(t, s, Options{ReadChunk: 2})
			witness := watch(t, h, Request{Key: []byte{0}, RangeEnd: []byte{0}})
			commit := func(i int) {
				s.apply(put(fmt.Sprint("k", i%3), fmt.Sprint(i), ev("t", "", fmt.Sprint(i))), publish(ev("t", "", fmt.Sprint(i))))
			}
			for i := range 8 {
				commit(i)
				if i == 3 {
					// The feed lags the store from here, at a revision where a read of the
					// watcher does not end, so that it reads past the feed's position.
					s.apply(put("k", "odd"))
					h.pull()
				}
			}
			calls := 0
			h.afterCatchupRead = func(*Watcher) {
				if calls < len(schedule) {
					switch schedule[calls] {
					case 'c':
						commit(100 + calls)
					case 'p':
						h.pull()
					}
				}
				calls++
			}
			req := Request{Key: []byte("k"), RangeEnd: []byte("l"), Topics: []string{"t"}, StartRevision: 2}
			c := watchBuffered(t, h, req, 1000) // its sends never wait: the hook drives it
			c.waitQuiet()
			if calls < len(schedule) {
				t.Fatalf("the watcher read %d times and joined the feed, the schedule wants %d reads", calls, len(schedule))
			}
			final := s.s.Rev()
			commit(200)
			h.pull()
			got := c.until(final + 2)
			sameItems(t, "watcher", got, expected(t, s, req, 2, final+2))
			witness.until(final + 2)
			if st := h.Stats(); st.Live != 2 {
				t.Fatalf("stats %+v: the watcher did not join the feed", st)
			}
		})
	}
}

// TestSlowWatcherMovedToCatchUp: a live watcher whose client does not read holds at most its
// buffer (beyond the batch it got with an empty queue); past it the watcher leaves the feed, and
// once the client reads again it catches up from the store and rejoins the feed, missing
// nothing. The hub-wide bound applies the same way.
func TestSlowWatcherMovedToCatchUp(t *testing.T) {
	for name, opt := range map[string]Options{"watcher": {BufferBytes: 300}, "hub": {TotalBufferBytes: 300}} {
		t.Run(name, func(t *testing.T) {
			s := openStore(t)
			h := newHub(t, s, opt)
			req := Request{Key: []byte("k"), RangeEnd: []byte("l"), Topics: []string{"*"}}
			slow := watch(t, h, req)
			fast := watch(t, h, req)
			var fastGot []string
			maxQueued := 0
			for i := range 30 {
				s.apply(put(fmt.Sprint("k", i%4), fmt.Sprintf("value-%03d", i), ev("t", "", "payload")))
				h.pull()
				fastGot = append(fastGot, fast.until(s.s.Rev())...)
				maxQueued = max(maxQueued, h.Stats().QueuedBytes)
			}
			// One batch is about 80 bytes: the slow watcher's first two responses wait in its
			// send and its queue, then it leaves the feed.
			if st := h.Stats(); st.Live != 1 || maxQueued > 300+100 {
				t.Fatalf("stats %+v, most queued %d: the slow watcher should have left the feed, with at most its buffer queued", st, maxQueued)
			}
			rev := s.s.Rev()
			sameItems(t, "slow", slow.until(rev), expected(t, s, req, 1, rev))
			sameItems(t, "fast", fastGot, expected(t, s, req, 1, rev))
			if h.Stats().CatchupReads == 0 {
				t.Fatal("the slow watcher did not catch up from the store")
			}
			slow.waitIdle()
			if st := h.Stats(); st.Live != 2 {
				t.Fatalf("stats %+v: the slow watcher did not rejoin the feed", st)
			}
			s.apply(put("k1", "last"))
			h.pull()
			sameItems(t, "slow, live again", slow.until(rev+1), expected(t, s, req, rev+1, rev+1))
		})
	}
}

// TestStalledClientCutOff: a send that waits StallTimeout for the client is aborted, and the
// watch ends with ErrStalled naming the revision after the last response sent.
func TestStalledClientCutOff(t *testing.T) {
	s := openStore(t)
	h := newHub(t, s, Options{StallTimeout: 10 * time.Second})
	t0 := time.Unix(1000, 0)
	h.now = func() time.Time { return t0 }
	c := watch(t, h, Request{Key: []byte("k")})
	c.next()
	s.apply(put("k", "1"))
	h.pull()
	if r := c.next(); r.Revision != 2 {
		t.Fatalf("response complete through %d, want 2", r.Revision)
	}
	s.apply(put("k", "2"))
	h.pull()
	c.waitSending()
	h.Sweep(t0.Add(10*time.Second - 1))
	s.apply(put("k", "3"))
	h.pull()
	h.Sweep(t0.Add(10 * time.Second))
	err, rs := c.end()
	if len(rs) != 0 || !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "resume from revision 3") {
		t.Fatalf("watch ended with %v after %d more responses, want ErrStalled resuming from 3 and none", err, len(rs))
	}
	if st := h.Stats(); st.Watchers != 0 || st.QueuedBytes != 0 {
		t.Fatalf("stats %+v after the cut-off", st)
	}
}

// TestCompactionOvertakesCatchUp: a compaction that passes a watcher catching up ends it after
// what it already read, naming the oldest retained revision.
func TestCompactionOvertakesCatchUp(t *testing.T) {
	s := openStore(t)
	for i := range 20 {
		s.apply(put("k", fmt.Sprint(i)))
	}
	h := newHub(t, s, Options{ReadChunk: 3})
	h.afterCatchupRead = func(*Watcher) {
		if s.s.CompactRev() == 0 {
			s.apply(compact(10))
		}
	}
	req := Request{Key: []byte("k"), StartRevision: 2}
	c := watch(t, h, req)
	err, rs := c.end()
	if !errors.Is(err, mvcc.ErrCompacted) || !strings.Contains(err.Error(), "oldest retained revision is 11") {
		t.Fatalf("watch ended with %v, want the compacted error naming 11", err)
	}
	var got []string
	for _, r := range rs {
		for _, it := range r.Items {
			got = append(got, render(it))
		}
	}
	if last := rs[len(rs)-1].Revision; last != 4 {
		t.Fatalf("responses complete through %d before the error, want 4 (one chunk)", last)
	}
	sameItems(t, "before the error", got, []string{"2 PUT k=0", "3 PUT k=1", "4 PUT k=2"})
}

// TestCompactionOvertakesFeed: a compaction committed with the revisions it compacts passes the
// feed: live watchers it passed end with the compacted error; a watcher beyond it goes on.
func TestCompactionOvertakesFeed(t *testing.T) {
	s := openStore(t)
	h := newHub(t, s, Options{})
	passed := watch(t, h, Request{Key: []byte("k")})
	beyond := watch(t, h, Request{Key: []byte("k"), StartRevision: 4})
	passed.next()
	beyond.next()
	s.apply(put("k", "1"), put("k", "2"), compact(3)) // revisions 2 and 3, compacted at 3
	h.pull()
	err, _ := passed.end()
	if !errors.Is(err, mvcc.ErrCompacted) || !strings.Contains(err.Error(), "oldest retained revision is 4") {
		t.Fatalf("watch ended with %v, want the compacted error naming 4", err)
	}
	s.apply(put("k", "3"))
	h.pull()
	sameItems(t, "beyond", beyond.until(4), []string{"4 PUT k=3"})
}

// TestRestore: a snapshot restore that moves the store ahead ends the watchers whose positions
// it compacted, and the others go on; one that moves it back makes watchers wait until the
// store reaches their positions again.
func TestRestore(t *testing.T) {
	s, other := openStore(t), openStore(t)
	for i := range 10 {
		s.apply(put("k", fmt.Sprint(i)))
		other.apply(put("k", fmt.Sprint(i)))
	}
	var old bytes.Buffer
	if _, err := s.s.WriteSnapshot(&old); err != nil {
		t.Fatal(err)
	}
	for i := 10; i < 40; i++ {
		other.apply(put("k", fmt.Sprint(i)))
	}
	other.apply(compact(30))
	var ahead bytes.Buffer
	if _, err := other.s.WriteSnapshot(&ahead); err != nil {
		t.Fatal(err)
	}
	h := newHub(t, s, Options{})
	req := Request{Key: []byte("k")}
	passed := watch(t, h, req) // at 12
	beyond := watch(t, h, Request{Key: req.Key, StartRevision: 35})
	passed.next()
	beyond.next()
	if err := s.s.Restore(&ahead); err != nil {
		t.Fatal(err)
	}
	h.pull()
	err, _ := passed.end()
	if !errors.Is(err, mvcc.ErrCompacted) || !strings.Contains(err.Error(), "oldest retained revision is 31") {
		t.Fatalf("watch ended with %v, want the compacted error naming 31", err)
	}
	sameItems(t, "beyond", beyond.until(41), expected(t, s, req, 35, 41))

	// Back to revision 11: the watcher at 42 waits for the store to get there again.
	if err := s.s.Restore(&old); err != nil {
		t.Fatal(err)
	}
	h.pull()
	for i := range 33 {
		s.apply(put("k", fmt.Sprint("again-", i))) // 12 to 44
		h.pull()
	}
	sameItems(t, "after moving back", beyond.until(44), expected(t, s, req, 42, 44))
}

// TestProgressNotify: an idle live watcher that asked for progress gets a progress response at
// each sweep that follows an interval in which it sent nothing, complete through the feed's
// position; a watcher that did not ask gets none.
func TestProgressNotify(t *testing.T) {
	s := openStore(t)
	h := newHub(t, s, Options{})
	p := watch(t, h, Request{Key: []byte("p"), ProgressNotify: true})
	q := watch(t, h, Request{Key: []byte("q")})
	p.next()
	q.next()
	p.waitIdle()
	q.waitIdle()
	h.Sweep(time.Now()) // the first response was sent in this interval
	s.apply(put("other", "1"))
	h.pull()
	h.Sweep(time.Now())
	if r := p.next(); !r.Progress || r.Revision != 2 || len(r.Items) != 0 {
		t.Fatalf("got %+v, want a progress response through 2", r)
	}
	p.waitIdle()
	h.Sweep(time.Now()) // it sent the progress response in this interval: nothing
	s.apply(put("p", "1"), put("q", "1"))
	h.pull()
	if r := p.next(); r.Progress || len(r.Items) != 1 {
		t.Fatalf("got %+v, want the put of p", r)
	}
	if r := q.next(); r.Progress || len(r.Items) != 1 {
		t.Fatalf("got %+v, want the put of q (no progress for q)", r)
	}
	p.waitIdle()
	h.Sweep(time.Now())
	h.Sweep(time.Now())
	if r := p.next(); !r.Progress || r.Revision != 4 {
		t.Fatalf("got %+v, want a progress response through 4", r)
	}
}

// TestLimitsAndClose: past MaxWatchers a watch is refused; closing the hub ends every watch
// with ErrClosed at once, queued responses or not, and refuses new ones.
func TestLimitsAndClose(t *testing.T) {
	s := openStore(t)
	h := newHub(t, s, Options{MaxWatchers: 2})
	a := watch(t, h, Request{Key: []byte("a")})
	b := watch(t, h, Request{Key: []byte("b")})
	if _, err := h.Watch(Request{Key: []byte("c")}); !errors.Is(err, ErrTooManyWatchers) {
		t.Fatalf("third watch: %v, want ErrTooManyWatchers", err)
	}
	a.next()
	s.apply(put("b", "1"), put("b", "2"))
	h.pull()
	h.Close()
	for _, c := range []*client{a, b} {
		if err, _ := c.end(); !errors.Is(err, ErrClosed) {
			t.Fatalf("watch ended with %v, want ErrClosed", err)
		}
	}
	if _, err := h.Watch(Request{Key: []byte("c")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("watch after Close: %v, want ErrClosed", err)
	}
}
