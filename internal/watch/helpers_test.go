package watch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// store is a real mvcc store that tests write to, one batch per call.
type store struct {
	t     testing.TB
	s     *mvcc.Store
	index uint64
}

func openStore(t testing.TB) *store {
	t.Helper()
	s, err := mvcc.Open(filepath.Join(t.TempDir(), "kv.db"), mvcc.Options{NoSync: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &store{t: t, s: s}
}

// apply commits cmds in one batch, failing the test on an error.
func (s *store) apply(cmds ...*logpb.Command) {
	s.t.Helper()
	b := s.s.Begin()
	for _, c := range cmds {
		s.index++
		c.TimeUnixNano = 1
		if r := b.ApplyOp(s.index, c, opOf(c)); r.Err != nil {
			b.Rollback()
			s.t.Fatalf("apply %v: %v", c, r.Err)
		}
	}
	if err := b.Commit(); err != nil {
		s.t.Fatal(err)
	}
}

func opOf(c *logpb.Command) mvcc.Op {
	switch op := c.GetOp().(type) {
	case *logpb.Command_Put:
		return func(b *mvcc.Batch) (proto.Message, error) { return b.Put(op.Put) }
	case *logpb.Command_DeleteRange:
		return func(b *mvcc.Batch) (proto.Message, error) { return b.DeleteRange(op.DeleteRange) }
	case *logpb.Command_Txn:
		return func(b *mvcc.Batch) (proto.Message, error) { return b.Txn(op.Txn) }
	case *logpb.Command_Publish:
		return func(b *mvcc.Batch) (proto.Message, error) { return b.Publish(op.Publish) }
	case *logpb.Command_Compaction:
		return func(b *mvcc.Batch) (proto.Message, error) { return b.Compact(op.Compaction.Revision) }
	}
	panic(fmt.Sprintf("no op for %T", c.GetOp()))
}

func ev(topic, key, payload string) *logpb.Event {
	return &logpb.Event{Topic: topic, Key: []byte(key), Payload: []byte(payload)}
}

func put(k, v string, evs ...*logpb.Event) *logpb.Command {
	return &logpb.Command{Op: &logpb.Command_Put{Put: &logpb.PutRequest{Key: []byte(k), Value: []byte(v), Events: evs}}}
}

func del(k, end string, evs ...*logpb.Event) *logpb.Command {
	return &logpb.Command{Op: &logpb.Command_DeleteRange{DeleteRange: &logpb.DeleteRangeRequest{Key: []byte(k), RangeEnd: []byte(end), Events: evs}}}
}

func publish(evs ...*logpb.Event) *logpb.Command {
	return &logpb.Command{Op: &logpb.Command_Publish{Publish: &logpb.PublishRequest{Events: evs}}}
}

func compact(rev int64) *logpb.Command {
	return &logpb.Command{Op: &logpb.Command_Compaction{Compaction: &logpb.CompactionRequest{Revision: rev}}}
}

// txnPuts is a transaction that puts every key (to value v) and publishes evs at the end.
func txnPuts(v string, keys []string, evs ...*logpb.Event) *logpb.Command {
	var ops []*logpb.RequestOp
	for _, k := range keys {
		ops = append(ops, &logpb.RequestOp{Request: &logpb.RequestOp_RequestPut{RequestPut: &logpb.PutRequest{Key: []byte(k), Value: []byte(v)}}})
	}
	if len(evs) > 0 {
		ops = append(ops, &logpb.RequestOp{Request: &logpb.RequestOp_RequestPublish{RequestPublish: &logpb.PublishRequest{Events: evs}}})
	}
	return &logpb.Command{Op: &logpb.Command_Txn{Txn: &logpb.TxnRequest{Success: ops}}}
}

func kvOf(kv *logpb.KeyValue) *caucusv1.KeyValue {
	if kv == nil {
		return nil
	}
	return &caucusv1.KeyValue{Key: kv.Key, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version, Value: kv.Value, Lease: kv.Lease}
}

func eventOf(e *logpb.Event) *caucusv1.Event {
	return &caucusv1.Event{Topic: e.Topic, Key: e.Key, Payload: e.Payload, Headers: e.Headers, Id: e.Id, Revision: e.Revision, Index: e.Index, TimeUnixNano: e.TimeUnixNano}
}

// newHub returns a hub over s whose feed runs only when the test calls pull, and whose
// sweeper never runs (the test calls Sweep).
func newHub(t testing.TB, s *store, opt Options) *Hub {
	opt.ProgressInterval = -1
	h := New(Config{Store: s.s, KV: kvOf, Event: eventOf, Options: opt, Logger: slog.New(slog.DiscardHandler)})
	h.manualFeed = true
	h.waiting = func(w *Watcher) {
		if c, ok := clients.Load(w); ok {
			c.(*client).noteIdle()
		}
	}
	t.Cleanup(h.Close)
	return h
}

// clients maps watchers to the test clients that run them.
var clients sync.Map

// client runs a watcher as a server would, handing each response to the test: a send blocks
// until the test reads it (or the watch is aborted), as a stream to a client that does not read.
type client struct {
	t    testing.TB
	w    *Watcher
	got  chan *Response
	done chan error

	abortOnce sync.Once
	aborted   chan struct{}

	mu       sync.Mutex
	cond     *sync.Cond
	sent     int // responses handed to the test (counted by the watcher's goroutine)
	received int // responses the test took (counted by the test)
	idleAt   int // sent when the watcher last started waiting for something to send
	idle     bool
	started  int // sends begun
}

func (c *client) noteIdle() {
	c.mu.Lock()
	c.idleAt = c.sent
	c.idle = true
	c.cond.Broadcast()
	c.mu.Unlock()
}

// waitIdle waits until the watcher, after the last response the test received, finished its
// send and waits for something new: then Sweep sees it idle.
func (c *client) waitIdle() {
	c.t.Helper()
	stop := time.AfterFunc(waitLimit, func() { c.mu.Lock(); c.cond.Broadcast(); c.mu.Unlock() })
	defer stop.Stop()
	deadline := time.Now().Add(waitLimit)
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.idleAt != c.received {
		if time.Now().After(deadline) {
			c.t.Fatalf("the watcher did not go idle within %s", waitLimit)
		}
		c.cond.Wait()
	}
}

func watch(t testing.TB, h *Hub, req Request) *client {
	t.Helper()
	return watchBuffered(t, h, req, 0)
}

// watchBuffered is watch with a client that takes up to n responses before the test reads them.
func watchBuffered(t testing.TB, h *Hub, req Request, n int) *client {
	t.Helper()
	w, err := h.Watch(req)
	if err != nil {
		t.Fatalf("watch %+v: %v", req, err)
	}
	c := &client{t: t, w: w, got: make(chan *Response, n), done: make(chan error, 1), aborted: make(chan struct{}), idleAt: -1}
	c.cond = sync.NewCond(&c.mu)
	clients.Store(w, c)
	ctx, cancel := context.WithCancel(context.Background())
	send := func(r *Response) error {
		c.mu.Lock()
		c.started++
		c.cond.Broadcast()
		c.mu.Unlock()
		select {
		case c.got <- r:
			c.mu.Lock()
			c.sent++
			c.idle = false
			c.mu.Unlock()
			return nil
		case <-c.aborted:
			return errors.New("aborted")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	go func() {
		err := w.Run(ctx, send, func() { c.abortOnce.Do(func() { close(c.aborted) }) })
		w.Close()
		c.done <- err
	}()
	t.Cleanup(func() {
		cancel()
		<-c.done
		c.done <- nil
	})
	return c
}

const waitLimit = 10 * time.Second

// waitQuiet waits until the watcher waits for something to send (it is live and its queue is
// empty), whatever the test has read.
func (c *client) waitQuiet() {
	c.t.Helper()
	stop := time.AfterFunc(waitLimit, func() { c.mu.Lock(); c.cond.Broadcast(); c.mu.Unlock() })
	defer stop.Stop()
	deadline := time.Now().Add(waitLimit)
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.idle {
		if time.Now().After(deadline) {
			c.t.Fatalf("the watcher did not go idle within %s", waitLimit)
		}
		c.cond.Wait()
	}
}

// waitSending waits until the watcher is in a send that the test has not taken.
func (c *client) waitSending() {
	c.t.Helper()
	stop := time.AfterFunc(waitLimit, func() { c.mu.Lock(); c.cond.Broadcast(); c.mu.Unlock() })
	defer stop.Stop()
	deadline := time.Now().Add(waitLimit)
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.started <= c.received {
		if time.Now().After(deadline) {
			c.t.Fatalf("the watcher did not start a send within %s", waitLimit)
		}
		c.cond.Wait()
	}
}

// next returns the next response (failing after waitLimit: a bound, not a synchronization).
func (c *client) next() *Response {
	c.t.Helper()
	select {
	case r := <-c.got:
		c.mu.Lock()
		c.received++
		c.mu.Unlock()
		return r
	case err := <-c.done:
		c.done <- err
		c.t.Fatalf("watch ended: %v", err)
	case <-time.After(waitLimit):
		c.t.Fatalf("no response within %s", waitLimit)
	}
	return nil
}

// until reads responses until one is complete through rev, and returns their items rendered,
// checking that revisions never go back.
func (c *client) until(rev int64) []string {
	c.t.Helper()
	var out []string
	last := int64(-1)
	for last < rev {
		r := c.next()
		if r.Revision < last {
			c.t.Fatalf("response complete through %d after one through %d", r.Revision, last)
		}
		if r.Progress && len(r.Items) > 0 {
			c.t.Fatalf("progress response with %d items", len(r.Items))
		}
		for _, it := range r.Items {
			if rv := itemRev(it); rv <= last {
				c.t.Fatalf("item at revision %d after a response complete through %d", rv, last)
			}
			out = append(out, render(it))
		}
		last = r.Revision
	}
	return out
}

// end waits for the watch to end and returns its error, reading (and returning) what it sends
// before.
func (c *client) end() (error, []*Response) {
	c.t.Helper()
	var rs []*Response
	for {
		select {
		case r := <-c.got:
			rs = append(rs, r)
		case err := <-c.done:
			c.done <- err
			return err, rs
		case <-time.After(waitLimit):
			c.t.Fatalf("watch did not end within %s", waitLimit)
		}
	}
}

func itemRev(it *caucusv1.WatchItem) int64 {
	if ch := it.GetChange(); ch != nil {
		return ch.GetKv().GetModRevision()
	}
	return it.GetEvent().GetRevision()
}

func render(it *caucusv1.WatchItem) string {
	if ch := it.GetChange(); ch != nil {
		s := fmt.Sprintf("%d %s %s=%s", ch.Kv.ModRevision, ch.Type, ch.Kv.Key, ch.Kv.Value)
		if ch.PrevKv != nil {
			s += fmt.Sprintf(" (was %s)", ch.PrevKv.Value)
		}
		return s
	}
	e := it.GetEvent()
	return fmt.Sprintf("%d.%d event %s %s %s", e.Revision, e.Index, e.Topic, e.Key, e.Payload)
}

// expected renders what req selects from the store's retained history between from and to,
// computed independently of the hub: every change and event, sorted by revision, changes
// before events, changes in write order, events by index.
func expected(t testing.TB, s *store, req Request, from, to int64) []string {
	t.Helper()
	changes, _, err := s.s.Changes(from, 1<<30, req.PrevKV)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := mvcc.NewEventFilter([]string{"*"})
	events, _, err := s.s.Events(from, 0, 1<<30, all)
	if err != nil {
		t.Fatal(err)
	}
	type rec struct {
		rev  int64
		kind int // 0 change, 1 event
		seq  int
		text string
	}
	var recs []rec
	for i, c := range changes {
		k := c.Kv.Key
		in := len(req.Key) > 0 && bytes.Compare(k, req.Key) >= 0
		switch {
		case len(req.RangeEnd) == 0:
			in = in && bytes.Equal(k, req.Key)
		case !bytes.Equal(req.RangeEnd, []byte{0}):
			in = in && bytes.Compare(k, req.RangeEnd) < 0
		}
		if !in || c.Kv.ModRevision > to {
			continue
		}
		typ := caucusv1.WatchChange_PUT
		if c.Type == mvcc.ChangeDelete {
			typ = caucusv1.WatchChange_DELETE
		}
		ch := &caucusv1.WatchChange{Type: typ, Kv: kvOf(c.Kv), PrevKv: kvOf(c.PrevKv)}
		recs = append(recs, rec{c.Kv.ModRevision, 0, i, render(&caucusv1.WatchItem{Item: &caucusv1.WatchItem_Change{Change: ch}})})
	}
	for _, e := range events {
		match := false
		for _, p := range req.Topics {
			match = match || p == "*" || p == e.Topic || (strings.HasSuffix(p, "*") && strings.HasPrefix(e.Topic, strings.TrimSuffix(p, "*")))
		}
		if !match || e.Revision > to {
			continue
		}
		recs = append(recs, rec{e.Revision, 1, int(e.Index), render(&caucusv1.WatchItem{Item: &caucusv1.WatchItem_Event{Event: eventOf(e)}})})
	}
	sort.SliceStable(recs, func(i, j int) bool {
		a, b := recs[i], recs[j]
		if a.rev != b.rev {
			return a.rev < b.rev
		}
		if a.kind != b.kind {
			return a.kind < b.kind
		}
		return a.seq < b.seq
	})
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.text
	}
	return out
}

func sameItems(t testing.TB, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d items, want %d\ngot  %q\nwant %q", what, len(got), len(want), got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: item %d is %q, want %q\ngot  %q\nwant %q", what, i, got[i], want[i], got, want)
		}
	}
}
