package watch

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// Defaults of Options.
const (
	// DefaultProgressInterval is how often an idle watcher that asked for progress hears of it.
	// etcd waits 10 minutes; a second lets a client tell a quiet watch from a dead connection
	// and keep its resume position fresh, for one small message per second.
	DefaultProgressInterval = time.Second
	// DefaultStallTimeout is how long one response may wait for the client to read before the
	// watch ends with ErrStalled.
	DefaultStallTimeout = 30 * time.Second
	// DefaultMaxWatchers bounds the watchers of one member.
	DefaultMaxWatchers = 10_000
	// DefaultMaxResponseItems and DefaultMaxResponseBytes bound one response (a single larger
	// item travels alone).
	DefaultMaxResponseItems = 1000
	DefaultMaxResponseBytes = 256 << 10
	// DefaultBufferBytes bounds a live watcher's queue; DefaultTotalBufferBytes all of them.
	DefaultBufferBytes      = 1 << 20
	DefaultTotalBufferBytes = 64 << 20
	// DefaultReadChunk is the number of changes, and of events, one read of the store returns at
	// most (a revision is never split).
	DefaultReadChunk = 1000
	// DefaultMaxConcurrentCatchups bounds the reads of catching-up watchers running at once.
	DefaultMaxConcurrentCatchups = 8
)

// Options are the hub's limits; zero fields take the defaults above.
type Options struct {
	// ProgressInterval is also the period of the sweep that finds stalled watchers. Negative:
	// no sweeper runs (tests call Sweep).
	ProgressInterval      time.Duration
	StallTimeout          time.Duration
	MaxWatchers           int
	MaxResponseItems      int
	MaxResponseBytes      int
	BufferBytes           int
	TotalBufferBytes      int
	ReadChunk             int
	MaxConcurrentCatchups int
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if o.ProgressInterval == 0 {
		o.ProgressInterval = DefaultProgressInterval
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	def(&o.MaxWatchers, DefaultMaxWatchers)
	def(&o.MaxResponseItems, DefaultMaxResponseItems)
	def(&o.MaxResponseBytes, DefaultMaxResponseBytes)
	def(&o.BufferBytes, DefaultBufferBytes)
	def(&o.TotalBufferBytes, DefaultTotalBufferBytes)
	def(&o.ReadChunk, DefaultReadChunk)
	def(&o.MaxConcurrentCatchups, DefaultMaxConcurrentCatchups)
	return o
}

// Store is what the hub reads: mvcc.Store.
type Store interface {
	Rev() int64
	CompactRev() int64
	RevChanged() <-chan struct{}
	Changes(fromRev int64, max int, prevKV bool) ([]mvcc.Change, int64, error)
	Events(fromRev int64, fromIndex int32, max int, f mvcc.EventFilter) ([]*logpb.Event, int64, error)
}

// Config configures a Hub.
type Config struct {
	Store Store
	// KV and Event translate what the store returns into the API's messages (the server's
	// translation, so that every field is carried).
	KV    func(*logpb.KeyValue) *caucusv1.KeyValue
	Event func(*logpb.Event) *caucusv1.Event
	Options
	Logger *slog.Logger
	// Now is the clock of stall detection (time.Now when nil).
	Now func() time.Time
}

// Errors. The server maps them to status codes; the messages name what a client needs.
var (
	// ErrClosed: the member is shutting down; resume elsewhere.
	ErrClosed = errors.New("watch: the member is shutting down")
	// ErrStalled: a response waited StallTimeout for the client to read. The message names the
	// revision to resume from.
	ErrStalled = errors.New("watch: the client stopped reading")
	// ErrTooManyWatchers: the member serves MaxWatchers already.
	ErrTooManyWatchers = errors.New("watch: too many watchers on this member")
	// ErrInvalid: the request is malformed.
	ErrInvalid = errors.New("watch: invalid request")
	// ErrUnavailable: the store could not be read; resume elsewhere.
	ErrUnavailable = errors.New("watch: the store cannot be read")
)

// compactedError is the error of a watch whose position from is compacted away. Clients parse
// "oldest retained revision is N" (package client).
func compactedError(from, compactRev int64) error {
	return fmt.Errorf("%w: watch at revision %d: the oldest retained revision is %d", mvcc.ErrCompacted, from, compactRev+1)
}

// stalledError names the revision to resume from, "resume from revision N".
func stalledError(resume int64, timeout time.Duration) error {
	return fmt.Errorf("%w for %s: resume from revision %d", ErrStalled, timeout, resume)
}

// Hub fans the store's committed history out to watchers. See the package doc.
type Hub struct {
	cfg  Config
	opt  Options
	log  *slog.Logger
	now  func() time.Time
	sem  chan struct{} // catch-up reads
	done chan struct{}
	wg   sync.WaitGroup

	startOnce sync.Once
	// Tests: manualFeed leaves the feed to calls of pull; afterCatchupRead runs between a
	// catch-up read and its queueing; waiting runs when a live watcher starts waiting for
	// something to send.
	manualFeed       bool
	afterCatchupRead func(w *Watcher)
	waiting          func(w *Watcher)
	feedReads        atomic.Uint64
	catchups         atomic.Uint64

	mu       sync.Mutex
	closed   bool
	rev      int64 // the feed dispatched every revision <= rev to the live watchers
	watchers map[*Watcher]struct{}
	live     int
	idx      index
	need     need
	// reading is what the feed's read in flight covers (nil: none); readDone closes when that
	// read was dispatched.
	reading  *need
	readDone chan struct{}
	queued   int    // bytes in every queue
	serial   uint64 // numbers dispatched items, so that a watcher takes each once
	touched  []*Watcher
}

// need counts the watchers that want key changes, events and previous versions: what the feed
// must read.
type need struct{ keys, topics, prev int }

func (n *need) covers(w *Watcher) bool {
	return (!w.keys || n.keys > 0) && (!w.wantsTopics() || n.topics > 0) && (!w.prevKV || n.prev > 0)
}

// New returns a hub; it starts working with its first watcher.
func New(cfg Config) *Hub {
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	opt := cfg.Options.withDefaults()
	return &Hub{
		cfg: cfg, opt: opt, log: lg.With("component", "watch"), now: now,
		sem: make(chan struct{}, opt.MaxConcurrentCatchups), done: make(chan struct{}),
		watchers: make(map[*Watcher]struct{}), idx: newIndex(), readDone: make(chan struct{}),
	}
}

// start runs the feed and the sweeper, once.
func (h *Hub) start() {
	h.startOnce.Do(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.closed {
			return
		}
		h.rev = h.cfg.Store.Rev()
		if !h.manualFeed {
			h.wg.Add(1)
			go h.feed()
		}
		if h.opt.ProgressInterval > 0 {
			h.wg.Add(1)
			go h.sweeper()
		}
	})
}

// Close ends every watch with ErrClosed and stops the hub's goroutines.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	close(h.done)
	var aborts []func()
	for w := range h.watchers {
		h.fail(w, ErrClosed, true)
		if !w.sendingSince.IsZero() && w.abort != nil {
			aborts = append(aborts, w.abort) // a client that does not read must not hold it up
		}
	}
	h.mu.Unlock()
	for _, abort := range aborts {
		abort()
	}
	h.wg.Wait()
}

// Interested reports whether a watcher waits for writes to keys or events of topics: a live
// watcher that selects one of them, or any watcher still catching up (it reads the store, and
// reaches the feed sooner the sooner the store is committed).
func (h *Hub) Interested(keys [][]byte, topics []string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.live < len(h.watchers) {
		return true
	}
	for _, k := range keys {
		if len(h.idx.keys[string(k)]) > 0 {
			return true
		}
		for _, w := range h.idx.ranges {
			if w.matchKey(k) {
				return true
			}
		}
	}
	for _, t := range topics {
		if len(h.idx.topics[t]) > 0 {
			return true
		}
		for _, w := range h.idx.patterns {
			if w.filter.Match(t) {
				return true
			}
		}
	}
	return false
}

// Stats describes the hub, for tests and metrics.
type Stats struct {
	Watchers, Live int
	// QueuedBytes counts the items waiting in queues (shared items once per queue).
	QueuedBytes int
	// FeedReads counts the feed's reads of the store; CatchupReads the watchers' own.
	FeedReads, CatchupReads uint64
	// Rev is the feed's position.
	Rev int64
}

func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Stats{Watchers: len(h.watchers), Live: h.live, QueuedBytes: h.queued,
		FeedReads: h.feedReads.Load(), CatchupReads: h.catchups.Load(), Rev: h.rev}
}

// feed reads every newly committed revision once and dispatches it.
func (h *Hub) feed() {
	defer h.wg.Done()
	for {
		ch := h.cfg.Store.RevChanged() // before reading Rev: a commit after it closes ch
		h.pull()
		select {
		case <-ch:
		case <-h.done:
			return
		}
	}
}

// pull brings the feed up to the store's revision.
func (h *Hub) pull() {
	for {
		cur := h.cfg.Store.Rev()
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return
		}
		if cur < h.rev {
			h.rewind(cur)
		}
		if c := h.cfg.Store.CompactRev(); c > h.rev {
			h.overtaken(c)
		}
		if h.rev >= cur {
			h.mu.Unlock()
			return
		}
		if h.live == 0 {
			// Nobody to hand the revisions to: a watcher that joins later has read them itself.
			h.rev = cur
			h.mu.Unlock()
			return
		}
		cov := h.need
		h.reading = &cov
		from := h.rev + 1
		h.mu.Unlock()

		b, err := h.read(from, cov.keys > 0, cov.prev > 0, allTopics(cov.topics > 0), nil)
		h.feedReads.Add(1)

		h.mu.Lock()
		h.reading = nil
		close(h.readDone)
		h.readDone = make(chan struct{})
		switch {
		case errors.Is(err, mvcc.ErrCompacted):
			// A compaction (or a restore) overtook the feed. The store publishes its compacted
			// revision just after the commit that the read saw: from is compacted at least.
			h.overtaken(max(h.cfg.Store.CompactRev(), from))
		case err != nil:
			h.log.Error("watch feed cannot read the store; ending the live watches", "from", from, "err", err)
			for w := range h.watchers {
				if w.live {
					h.fail(w, fmt.Errorf("%w: %w", ErrUnavailable, err), false)
				}
			}
			h.mu.Unlock()
			return
		default:
			h.dispatch(b)
			h.rev = b.to
		}
		h.mu.Unlock()
	}
}

// rewind follows a restore that moved the store's revision back to cur: live watchers keep
// their positions and wait for the store to reach them.
func (h *Hub) rewind(cur int64) {
	h.log.Warn("watch feed: the store's revision moved back (snapshot restore)", "from", h.rev, "to", cur)
	for w := range h.watchers {
		if w.live {
			w.next = max(w.next, h.rev+1)
		}
	}
	h.rev = cur
}

// overtaken follows a compaction (or restore) to c that passed the feed's position: live
// watchers whose position it passed end with the compacted error; the others continue.
func (h *Hub) overtaken(c int64) {
	for w := range h.watchers {
		if w.live && max(w.next, h.rev+1) <= c {
			h.fail(w, compactedError(max(w.next, h.rev+1), c), false)
		}
	}
	h.rev = c
}

// dispatch hands batch b, which starts at h.rev+1, to the live watchers.
func (h *Hub) dispatch(b *batch) {
	for i := range b.items {
		it := &b.items[i]
		h.serial++
		if it.topic == "" {
			for _, w := range h.idx.keys[string(it.key)] {
				h.offer(w, it)
			}
			for _, w := range h.idx.ranges {
				if w.matchKey(it.key) {
					h.offer(w, it)
				}
			}
		} else {
			for _, w := range h.idx.topics[it.topic] {
				h.offer(w, it)
			}
			for _, w := range h.idx.patterns {
				if w.filter.Match(it.topic) {
					h.offer(w, it)
				}
			}
		}
	}
	for _, w := range h.touched {
		h.enqueue(w, w.pend, b.to)
		w.pend = nil
	}
	clear(h.touched)
	h.touched = h.touched[:0]
}

// offer gives item it to live watcher w, once, unless w's position is past it.
func (h *Hub) offer(w *Watcher, it *item) {
	if it.rev < w.next || w.taken == h.serial {
		return
	}
	w.taken = h.serial
	if len(w.pend) == 0 {
		h.touched = append(h.touched, w)
	}
	w.pend = append(w.pend, it.entry(w.prevKV))
}

// enqueue queues a live watcher's entries of a batch complete through to, or demotes it to
// catching up when they do not fit.
func (h *Hub) enqueue(w *Watcher, es []entry, to int64) {
	n := 0
	for _, e := range es {
		n += e.size
	}
	if len(w.queue) > 0 && (w.queuedBytes+n > h.opt.BufferBytes || h.queued+n > h.opt.TotalBufferBytes) {
		h.demote(w)
		return
	}
	h.queueEntries(w, es, to)
	w.next = max(w.next, to+1)
	wake(w.wake)
}

// queueEntries appends es, complete through to, to w's queue as responses within the limits.
func (h *Hub) queueEntries(w *Watcher, es []entry, to int64) {
	if len(es) == 0 {
		return
	}
	var cur *Response
	if n := len(w.queue); n > 0 && !w.queue[n-1].Progress {
		cur = w.queue[n-1] // not sent yet: it can take more
	}
	for _, e := range es {
		if cur == nil || len(cur.Items) >= h.opt.MaxResponseItems || (len(cur.Items) > 0 && cur.bytes+e.size > h.opt.MaxResponseBytes) {
			if cur != nil {
				// Closed before e: complete through e's revision only if e starts a new one.
				cur.Revision = cur.last
				if cur.last == e.rev {
					cur.Revision = e.rev - 1
				}
			}
			cur = &Response{}
			w.queue = append(w.queue, cur)
		}
		cur.Items = append(cur.Items, e.msg)
		cur.bytes += e.size
		cur.last = e.rev
		w.queuedBytes += e.size
		h.queued += e.size
	}
	cur.Revision = to
}

// demote moves live watcher w to catching up: it keeps its queue, which holds every revision
// up to the feed's position, and reads the rest from the store.
func (h *Hub) demote(w *Watcher) {
	h.unlive(w)
	w.next = max(w.next, h.rev+1)
	wake(w.wake)
}

func (h *Hub) unlive(w *Watcher) {
	if w.live {
		w.live = false
		h.live--
		h.idx.remove(w)
	}
}

// goLive moves w to the feed (see maybeLive).
func (h *Hub) goLive(w *Watcher) {
	w.live = true
	h.live++
	h.idx.add(w)
}

// fail ends w with err once its queue is sent (at once when now is set).
func (h *Hub) fail(w *Watcher, err error, now bool) {
	if w.err == nil {
		w.err, w.errNow = err, now
	}
	h.unlive(w)
	wake(w.wake)
}

// sweeper runs Sweep every ProgressInterval.
func (h *Hub) sweeper() {
	defer h.wg.Done()
	t := time.NewTicker(h.opt.ProgressInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			h.Sweep(h.now())
		case <-h.done:
			return
		}
	}
}

// Sweep ends the watches whose response has waited StallTimeout for the client by now, and asks
// a progress response of the idle live watchers that want one and sent nothing since the
// previous sweep.
func (h *Hub) Sweep(now time.Time) {
	var aborts []func()
	h.mu.Lock()
	for w := range h.watchers {
		if !w.sendingSince.IsZero() && now.Sub(w.sendingSince) >= h.opt.StallTimeout && !w.stalled {
			w.stalled = true
			if w.abort != nil {
				aborts = append(aborts, w.abort)
			}
		}
		if w.progress && w.live && len(w.queue) == 0 && w.sendingSince.IsZero() && !w.sentSinceSweep && w.err == nil {
			w.progressDue = true
			wake(w.wake)
		}
		w.sentSinceSweep = false
	}
	h.mu.Unlock()
	for _, abort := range aborts {
		abort() // unblocks the Send; Run returns the stalled error
	}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
