package watch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/mvcc"
)

// Request is what a watch selects (caucus.v1.WatchRequest).
type Request struct {
	// Key and RangeEnd select key changes as a range read does: RangeEnd empty, Key alone;
	// "\x00", every key >= Key; otherwise [Key, RangeEnd). An empty Key selects none.
	Key, RangeEnd []byte
	// Topics select events: names, prefixes ending in "*", or "*".
	Topics []string
	// StartRevision is the first revision reported; 0 means the one after the store's current.
	StartRevision int64
	PrevKV        bool
	// ProgressNotify asks for progress responses when idle.
	ProgressNotify bool
}

// Response is one response of a watch.
type Response struct {
	Items []*caucusv1.WatchItem
	// Revision is the revision through which the watch is complete once this response is read.
	Revision int64
	Progress bool

	bytes int   // encoded size of Items
	last  int64 // revision of the last item
}

// Watcher is one watch. Run serves it; Close releases it.
type Watcher struct {
	h *Hub

	// What it selects (immutable).
	keys     bool
	key, end []byte // end nil: key alone; "\x00": every key >= key
	filter   mvcc.EventFilter
	exact    []string // exact topic names, for the index
	patterns bool     // some topic pattern is a prefix or "*"
	prevKV   bool
	progress bool

	wake chan struct{}

	// Guarded by h.mu.
	next        int64 // the first revision not queued (for a live watcher: max(next, h.rev+1))
	live        bool
	queue       []*Response
	queuedBytes int
	err         error // ends the watch once the queue is sent (at once if errNow)
	errNow      bool
	closed      bool
	pend        []entry // the entries of the batch being dispatched
	taken       uint64  // serial of the last item taken
	progressDue bool
	// sendingSince is when the Send in progress began (zero: none); stalled is set by Sweep.
	sendingSince   time.Time
	sentSinceSweep bool
	stalled        bool
	abort          func()
	sent           int64 // Revision of the last response sent
}

func (w *Watcher) wantsTopics() bool { return len(w.exact) > 0 || w.patterns }

func (w *Watcher) matchKey(k []byte) bool {
	if bytes.Compare(k, w.key) < 0 {
		return false
	}
	if w.end == nil {
		return bytes.Equal(k, w.key)
	}
	return (len(w.end) == 1 && w.end[0] == 0) || bytes.Compare(k, w.end) < 0
}

// parse validates req into a watcher's selection.
func parse(req Request) (*Watcher, error) {
	w := &Watcher{prevKV: req.PrevKV, progress: req.ProgressNotify, wake: make(chan struct{}, 1)}
	switch {
	case len(req.Key) == 0 && len(req.RangeEnd) != 0:
		return nil, fmt.Errorf("%w: range end %q without a key", ErrInvalid, req.RangeEnd)
	case len(req.Key) == 0:
	case len(req.RangeEnd) == 0:
		w.keys, w.key = true, slices.Clone(req.Key)
	case bytes.Equal(req.RangeEnd, []byte{0}) || bytes.Compare(req.RangeEnd, req.Key) > 0:
		w.keys, w.key, w.end = true, slices.Clone(req.Key), slices.Clone(req.RangeEnd)
	default:
		return nil, fmt.Errorf("%w: range end %q is not after key %q", ErrInvalid, req.RangeEnd, req.Key)
	}
	f, err := mvcc.NewEventFilter(req.Topics)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	w.filter = f
	for _, t := range req.Topics {
		if strings.HasSuffix(t, "*") {
			w.patterns = true
		} else {
			w.exact = append(w.exact, t)
		}
	}
	slices.Sort(w.exact)
	w.exact = slices.Compact(w.exact)
	if !w.keys && !w.wantsTopics() {
		return nil, fmt.Errorf("%w: the watch selects neither keys nor topics", ErrInvalid)
	}
	if req.StartRevision < 0 {
		return nil, fmt.Errorf("%w: start revision %d", ErrInvalid, req.StartRevision)
	}
	return w, nil
}

// Watch registers a watch. Serve it with Run, then Close it.
func (h *Hub) Watch(req Request) (*Watcher, error) {
	w, err := parse(req)
	if err != nil {
		return nil, err
	}
	w.h = h
	h.start()
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return nil, ErrClosed
	case len(h.watchers) >= h.opt.MaxWatchers:
		return nil, fmt.Errorf("%w: %d, the limit", ErrTooManyWatchers, h.opt.MaxWatchers)
	}
	start := req.StartRevision
	if start == 0 {
		start = h.cfg.Store.Rev() + 1
	}
	if c := h.cfg.Store.CompactRev(); start <= c {
		return nil, compactedError(start, c)
	}
	w.next, w.sent = start, start-1
	// The first response says where the watch starts (or further on: see nextResponse).
	w.queue = []*Response{{Revision: start - 1, Progress: true}}
	h.watchers[w] = struct{}{}
	h.count(w, 1)
	h.maybeLive(w)
	return w, nil
}

func (h *Hub) count(w *Watcher, d int) {
	if w.keys {
		h.need.keys += d
	}
	if w.wantsTopics() {
		h.need.topics += d
	}
	if w.prevKV {
		h.need.prev += d
	}
}

// Close releases the watcher.
func (w *Watcher) Close() {
	h := w.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	h.unlive(w)
	delete(h.watchers, w)
	h.count(w, -1)
	h.queued -= w.queuedBytes
	w.queue, w.queuedBytes = nil, 0
	if w.err == nil {
		w.err, w.errNow = ErrClosed, true
	}
}

// Run serves the watch until ctx ends or the watch fails: it sends each response with send,
// one at a time. abort, called from another goroutine, must make a send in progress (and
// later ones) fail; the hub calls it when the send waited StallTimeout, and Run then returns
// ErrStalled naming the revision to resume from.
func (w *Watcher) Run(ctx context.Context, send func(*Response) error, abort func()) error {
	h := w.h
	h.mu.Lock()
	w.abort = abort
	h.mu.Unlock()
	for {
		r, err := w.nextResponse(ctx)
		if err != nil {
			return err
		}
		h.mu.Lock()
		w.sendingSince = h.now()
		h.mu.Unlock()
		err = send(r)
		h.mu.Lock()
		w.sendingSince = time.Time{}
		w.sentSinceSweep = true
		if err == nil {
			w.sent = r.Revision
		}
		stalled, sent, ended := w.stalled, w.sent, w.err
		if !w.errNow {
			ended = nil
		}
		h.mu.Unlock()
		switch {
		case stalled:
			return stalledError(sent+1, h.opt.StallTimeout)
		case err != nil && ended != nil:
			return ended // the hub aborted the send as it closed
		case err != nil:
			return err
		}
	}
}

// nextResponse returns the next response to send, catching up from the store when the watcher
// is not live.
func (w *Watcher) nextResponse(ctx context.Context) (*Response, error) {
	h := w.h
	for {
		h.mu.Lock()
		if w.err != nil && (w.errNow || len(w.queue) == 0) {
			err := w.err
			h.mu.Unlock()
			return nil, err
		}
		if len(w.queue) > 0 {
			r := w.queue[0]
			w.queue[0] = nil
			w.queue = w.queue[1:]
			if len(w.queue) == 0 {
				w.queue = nil
				if w.live {
					// Everything the feed dispatched is in it: complete through there.
					r.Revision = max(r.Revision, h.rev, w.next-1)
				}
			}
			w.queuedBytes -= r.bytes
			h.queued -= r.bytes
			h.mu.Unlock()
			return r, nil
		}
		if w.progressDue {
			w.progressDue = false
			r := &Response{Revision: max(h.rev, w.next-1), Progress: true}
			h.mu.Unlock()
			return r, nil
		}
		if !w.live && !h.maybeLive(w) {
			from, wait := w.next, h.readDone
			caughtUp := w.next-1 >= h.rev
			h.mu.Unlock()
			if caughtUp {
				// The feed's read in flight began before this watcher counted in what it
				// reads: join after it.
				select {
				case <-wait:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			} else if err := w.catchUp(ctx, from); err != nil {
				return nil, err
			}
			continue
		}
		h.mu.Unlock()
		if h.waiting != nil {
			h.waiting(w)
		}
		select {
		case <-w.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// catchUp reads one chunk from the store at from, queues what the watcher selects of it and
// joins the feed once it reached it.
func (w *Watcher) catchUp(ctx context.Context, from int64) error {
	h := w.h
	select {
	case h.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	var topics *mvcc.EventFilter
	if w.wantsTopics() {
		topics = &w.filter
	}
	var keep func([]byte) bool
	if w.keys {
		keep = w.matchKey
	}
	b, err := h.read(from, w.keys, w.prevKV, topics, keep)
	<-h.sem
	h.catchups.Add(1)
	if h.afterCatchupRead != nil {
		h.afterCatchupRead(w)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case w.closed || w.err != nil:
		return nil
	case errors.Is(err, mvcc.ErrCompacted):
		h.fail(w, compactedError(from, h.cfg.Store.CompactRev()), false)
		return nil
	case err != nil:
		h.log.Error("watch cannot read the store", "from", from, "err", err)
		h.fail(w, fmt.Errorf("%w: %w", ErrUnavailable, err), false)
		return nil
	}
	es := make([]entry, len(b.items))
	for i := range b.items {
		es[i] = b.items[i].entry(w.prevKV)
	}
	h.queueEntries(w, es, b.to)
	w.next = max(w.next, b.to+1)
	h.maybeLive(w)
	return nil
}

// maybeLive moves w to the feed if it reached the feed's position and the feed's read in flight,
// if any, covers what w selects, and reports whether w is live.
func (h *Hub) maybeLive(w *Watcher) bool {
	if !w.live && w.err == nil && w.next-1 >= h.rev && (h.reading == nil || h.reading.covers(w)) {
		h.goLive(w)
	}
	return w.live
}
