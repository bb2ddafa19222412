package embed

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/client"
	"github.com/caucus/caucus/internal/ctl"
	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/internal/nativeapi"
	"github.com/caucus/caucus/internal/watch"
)

// renderWatchItem renders an item as the expectations below do.
func renderWatchItem(it *caucusv1.WatchItem) string {
	if ch := it.GetChange(); ch != nil {
		return fmt.Sprintf("%d %s %s=%s", ch.GetKv().GetModRevision(), ch.GetType(), ch.GetKv().GetKey(), ch.GetKv().GetValue())
	}
	e := it.GetEvent()
	return fmt.Sprintf("%d.%d event %s %s %s %s", e.GetRevision(), e.GetIndex(), e.GetId(), e.GetTopic(), e.GetKey(), e.GetPayload())
}

// watchHistory renders what a watch of keyPrefix and every topic must see from a member's
// store between from and to, computed from the store's own reads: the changes of the
// revision, then its events.
func watchHistory(t *testing.T, m *Member, keyPrefix string, from, to int64) []string {
	t.Helper()
	st := m.FSM.Store()
	changes, _, err := st.Changes(from, 1<<30, false)
	if err != nil {
		t.Fatalf("%s: changes: %v", m.ClientURL, err)
	}
	all, _ := mvcc.NewEventFilter([]string{"*"})
	events, _, err := st.Events(from, 0, 1<<30, all)
	if err != nil {
		t.Fatalf("%s: events: %v", m.ClientURL, err)
	}
	var out []string
	i, j := 0, 0
	for r := from; r <= to; r++ {
		for ; i < len(changes) && changes[i].Kv.ModRevision == r; i++ {
			c := changes[i]
			if !strings.HasPrefix(string(c.Kv.Key), keyPrefix) {
				continue
			}
			typ := caucusv1.WatchChange_PUT
			if c.Type == mvcc.ChangeDelete {
				typ = caucusv1.WatchChange_DELETE
			}
			out = append(out, fmt.Sprintf("%d %s %s=%s", r, typ, c.Kv.Key, c.Kv.Value))
		}
		for ; j < len(events) && events[j].Revision == r; j++ {
			e := events[j]
			out = append(out, fmt.Sprintf("%d.%d event %s %s %s %s", e.Revision, e.Index, e.Id, e.Topic, e.Key, e.Payload))
		}
	}
	return out
}

func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d items, want %d\ngot  %q\nwant %q", what, len(got), len(want), got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: item %d is %q, want %q", what, i, got[i], want[i])
		}
	}
}

// waitRev polls until every running member applied and committed revision rev.
func waitRev(t *testing.T, tc *testCluster, rev int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, m := range tc.members {
		for m != nil && m.FSM.Store().Rev() < rev {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not reach revision %d within 10s", m.ClientURL, rev)
			}
			time.Sleep(5 * time.Millisecond) // polling real time: the members run on wall-clock ticks
		}
	}
}

func endpoints(tc *testCluster) []string {
	var eps []string
	for _, m := range tc.members {
		eps = append(eps, m.ClientURL)
	}
	return eps
}

func newWatchClient(t *testing.T, eps []string) *client.Client {
	t.Helper()
	cli, err := client.New(client.Config{Endpoints: eps, Logger: quietLogger(), RequestTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestWatchAcrossMemberRestart: while a writer runs puts, deletes, transactions and publishes,
// a watch of a prefix and every topic, started in the past, sees every change and event once,
// in order, across a stop and restart of the member serving it (the client resumes on
// another).
func TestWatchAcrossMemberRestart(t *testing.T) {
	tc := newTestCluster(t, 3)
	tc.waitLeader()
	waitLogVersion(t, tc, logpb.Version3)
	eps := endpoints(tc)
	writer, watcher := newWatchClient(t, eps), newWatchClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first, err := writer.Put(ctx, "k/first", "0", client.WithEvents(client.NewEvent("t", "first", nil)))
	if err != nil {
		t.Fatal(err)
	}
	start := first.Header.Revision

	var mu sync.Mutex
	var writeErr error
	lastRev := int64(0)
	writes := 300
	done := make(chan struct{})
	go func() {
		defer close(done)
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range writes {
			k := fmt.Sprintf("k/%d", rng.IntN(10))
			write := func(ctx context.Context) (int64, error) {
				switch i % 4 {
				case 0:
					r, err := writer.Put(ctx, k, fmt.Sprint(i), client.WithEvents(client.NewEvent("t", k, []byte(fmt.Sprint(i)))))
					return r.GetHeader().GetRevision(), err
				case 1:
					r, err := writer.Txn(ctx).Then(client.OpPublish(client.NewEvent("u", "", []byte(fmt.Sprint(i)))),
						client.OpPut(k, fmt.Sprint(i)), client.OpPut("other", "x")).Commit()
					return r.GetHeader().GetRevision(), err
				case 2:
					r, err := writer.Delete(ctx, k)
					return r.GetHeader().GetRevision(), err
				default:
					r, err := writer.Publish(ctx, client.NewEvent("v", k, []byte(fmt.Sprint(i))))
					return r.GetHeader().GetRevision(), err
				}
			}
			var rev int64
			var err error
			for range 5 {
				// A write forwarded to the leader just as it stops is lost, and its answer
				// waits for the deadline: give up on it quickly and write again (the history
				// may then hold it twice, which the watch must report as it is).
				wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
				rev, err = write(wctx)
				wcancel()
				if err == nil || ctx.Err() != nil {
					break
				}
			}
			mu.Lock()
			if err != nil {
				writeErr = fmt.Errorf("write %d: %w", i, err)
				mu.Unlock()
				return
			}
			lastRev = max(lastRev, rev)
			mu.Unlock()
		}
	}()

	ch := watcher.Watch(ctx, "k/", client.WithPrefix(), client.WithTopics("*"), client.WithRev(start))
	var got []string
	restarted := false
	complete := int64(0)
	for complete < start || !restarted || func() bool { <-done; return false }() || complete < lastRev {
		var resp client.WatchResponse
		select {
		case resp = <-ch:
		case <-ctx.Done():
			t.Fatalf("watch delivered through %d, writes through %d: %v", complete, lastRev, ctx.Err())
		}
		if resp.Err != nil {
			t.Fatal(resp.Err)
		}
		for _, it := range resp.Items {
			got = append(got, renderWatchItem(it))
		}
		complete = resp.Header.GetRevision()
		if !restarted && len(got) > 100 {
			// Restart the member this watch is served by.
			for i, m := range tc.members {
				if uint64(m.ID) == resp.Header.GetMemberId() {
					t0 := time.Now()
					m.Stop()
					tc.members[i] = nil
					tc.restart(i)
					restarted = true
					t.Logf("restarted member %d (%s) after %d items in %s", i+1, m.ClientURL, len(got), time.Since(t0))
				}
			}
			if !restarted {
				t.Fatalf("no member has id %x", resp.Header.GetMemberId())
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if writeErr != nil {
		t.Fatal(writeErr)
	}
	waitRev(t, tc, lastRev)
	sameLines(t, "watch", got, watchHistory(t, tc.members[0], "k/", start, lastRev))
	if len(got) < writes {
		t.Fatalf("only %d items for %d writes", len(got), writes)
	}
}

// TestWatchHistoryAndCompaction: a watch from an old revision replays the history; once that
// revision is compacted the watch ends with an error naming the oldest retained revision,
// through the client and the CLI; the CLI prints changes and events in both formats.
func TestWatchHistoryAndCompaction(t *testing.T) {
	tc := newTestCluster(t, 3)
	tc.waitLeader()
	waitLogVersion(t, tc, logpb.Version3)
	eps := endpoints(tc)
	cli := newWatchClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var revs []int64
	for i := range 5 {
		r, err := cli.Put(ctx, "h/k", fmt.Sprint("v", i), client.WithEvents(client.NewEvent("h", "k", []byte(fmt.Sprint("e", i)))))
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, r.Header.Revision)
	}
	if _, err := cli.Delete(ctx, "h/k"); err != nil {
		t.Fatal(err)
	}
	last := revs[4] + 1
	waitRev(t, tc, last)

	// Replay from the second put.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	var got []string
	for resp := range cli.Watch(wctx, "h/", client.WithPrefix(), client.WithTopics("h"), client.WithRev(revs[1])) {
		if resp.Err != nil {
			t.Fatal(resp.Err)
		}
		for _, it := range resp.Items {
			got = append(got, renderWatchItem(it))
		}
		if resp.Header.GetRevision() >= last {
			wcancel()
		}
	}
	sameLines(t, "replay", got, watchHistory(t, tc.members[0], "h/", revs[1], last))

	// The CLI prints the same history.
	var out, errb syncBuffer
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	runErr := make(chan error, 1)
	go func() {
		runErr <- ctl.RunIO(cctx, []string{"--endpoints", strings.Join(eps, ","), "watch", "h/", "--prefix", "--topic", "h",
			"--rev", fmt.Sprint(revs[3]), "--prev-kv"}, nil, &out, &errb)
	}()
	want := fmt.Sprintf("PUT\nh/k\nv2\nh/k\nv3\nEVENT h %s %d.0\nk\ne3\n", mvcc.EventID(revs[3], 0), revs[3]) +
		fmt.Sprintf("PUT\nh/k\nv3\nh/k\nv4\nEVENT h %s %d.0\nk\ne4\n", mvcc.EventID(revs[4], 0), revs[4]) +
		"DELETE\nh/k\nv4\nh/k\n"
	out.waitFor(t, want)
	ccancel()
	if err := <-runErr; err != nil {
		t.Fatalf("caucus watch interrupted: %v (%s)", err, errb.String())
	}
	if out.String() != want {
		t.Fatalf("caucus watch printed %q, want %q", out.String(), want)
	}
	var jout syncBuffer
	cctx, ccancel = context.WithCancel(ctx)
	go func() {
		runErr <- ctl.RunIO(cctx, []string{"--endpoints", strings.Join(eps, ","), "-w", "json", "watch", "h/k", "--rev", fmt.Sprint(last)}, nil, &jout, &errb)
	}()
	jout.waitFor(t, "\n")
	ccancel()
	if err := <-runErr; err != nil {
		t.Fatalf("caucus watch -w json: %v", err)
	}
	var resp struct {
		Header struct{ Revision string }
		Items  []struct{ Change struct{ Type string } }
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(jout.String())), &resp); err != nil || resp.Header.Revision != fmt.Sprint(last) ||
		len(resp.Items) != 1 || resp.Items[0].Change.Type != "DELETE" {
		t.Fatalf("caucus watch -w json printed %q (%v)", jout.String(), err)
	}

	// Compact past the history: the watch from it ends, naming where history now begins.
	if _, err := cli.Compact(ctx, revs[3]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, m := range tc.members { // a watch is served by one member, from what it applied
		for m.FSM.Store().CompactRev() < revs[3] {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not apply the compaction within 10s", m.ClientURL)
			}
			time.Sleep(5 * time.Millisecond) // polling real members
		}
	}
	var end client.WatchResponse
	for resp := range cli.Watch(ctx, "h/", client.WithPrefix(), client.WithRev(revs[1])) {
		end = resp
	}
	if !client.IsCompacted(end.Err) || end.OldestRevision != revs[3]+1 {
		t.Fatalf("watch from a compacted revision ended with %v, oldest revision %d; want compacted, %d", end.Err, end.OldestRevision, revs[3]+1)
	}
	err := ctl.RunIO(ctx, []string{"--endpoints", strings.Join(eps, ","), "watch", "h/k", "--rev", fmt.Sprint(revs[1])}, nil, &out, &errb)
	if !client.IsCompacted(err) || !strings.Contains(err.Error(), fmt.Sprintf("oldest retained revision is %d", revs[3]+1)) {
		t.Fatalf("caucus watch from a compacted revision: %v", err)
	}
}

// syncBuffer is a bytes.Buffer that a command writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitFor polls until the buffer holds s.
func (b *syncBuffer) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q does not hold %q after 10s", b.String(), s)
		}
		time.Sleep(5 * time.Millisecond) // polling a command that runs against real members
	}
}

// TestWatchSlowReader: a client that opens a watch and reads nothing while writes pour in
// costs the member a bounded queue (the watcher leaves the feed instead of buffering), and is
// cut off after the stall timeout with ResourceExhausted naming the revision to resume from,
// after the responses already on their way. Resuming from there misses nothing.
func TestWatchSlowReader(t *testing.T) {
	const buffer = 32 << 10
	tc := newTestClusterWith(t, 1, func(c *Config) {
		c.Watch = watch.Options{StallTimeout: 500 * time.Millisecond, BufferBytes: buffer, MaxResponseBytes: 8 << 10}
	})
	tc.waitLeader()
	m := tc.members[0]
	cli := newWatchClient(t, []string{m.ClientURL})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first, err := cli.Put(ctx, "s/0", "start")
	if err != nil {
		t.Fatal(err)
	}

	// A native client with a small window, and a stream that nobody reads.
	nc := nativeapi.NewClient(nativeapi.ClientConfig{Addr: strings.TrimPrefix(m.ClientURL, "http://"), StreamWindow: 16 << 10})
	defer nc.Close()
	stream, err := nativeapi.EventsClient{C: nc}.Watch(ctx, connect.NewRequest(&caucusv1.WatchRequest{
		Key: []byte("s/"), RangeEnd: []byte("s0"), StartRevision: first.Header.Revision}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()

	value := strings.Repeat("x", 1000)
	maxQueued := 0
	for i := range 400 {
		if _, err := cli.Put(ctx, fmt.Sprint("s/", i%20), value); err != nil {
			t.Fatal(err)
		}
		maxQueued = max(maxQueued, m.Server.WatchStats().QueuedBytes)
	}
	last, err := cli.Get(ctx, "s/0")
	if err != nil {
		t.Fatal(err)
	}
	// 400 KB were written; the member held at most its buffer and one response more.
	if maxQueued > buffer+(8<<10)+2000 {
		t.Fatalf("the member queued up to %d bytes for a reader that reads nothing, bound %d", maxQueued, buffer)
	}
	// The member cuts the stream off once a send waited the stall timeout.
	deadline := time.Now().Add(10 * time.Second)
	for m.Server.WatchStats().Watchers != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the member did not cut the reader off within 10s: %+v", m.Server.WatchStats())
		}
		time.Sleep(5 * time.Millisecond) // polling a real member
	}
	// Now read: what was on its way, then the cut-off.
	var got []string
	complete := int64(0)
	for stream.Receive() {
		for _, it := range stream.Msg().GetItems() {
			got = append(got, renderWatchItem(it))
		}
		complete = stream.Msg().GetHeader().GetRevision()
	}
	err = stream.Err()
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), fmt.Sprintf("resume from revision %d", complete+1)) {
		t.Fatalf("stream ended with %v after responses through %d, want ResourceExhausted naming %d", err, complete, complete+1)
	}
	if len(got) == 0 || complete >= last.Header.Revision {
		t.Fatalf("read %d items through %d before the cut-off: the window should have stopped the member early", len(got), complete)
	}
	if st := m.Server.WatchStats(); st.QueuedBytes != 0 {
		t.Fatalf("watch stats after the cut-off: %+v", st)
	}
	// Resume where the error says.
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	for resp := range cli.Watch(rctx, "s/", client.WithPrefix(), client.WithRev(complete+1)) {
		if resp.Err != nil {
			t.Fatal(resp.Err)
		}
		for _, it := range resp.Items {
			got = append(got, renderWatchItem(it))
		}
		if resp.Header.GetRevision() >= last.Header.Revision {
			rcancel()
		}
	}
	sameLines(t, "read then resumed", got, watchHistory(t, m, "s/", first.Header.Revision, last.Header.Revision))
}

// TestWatchOverHTTP: the same watch is served over connect (HTTP/2), and a client there that
// stops reading is cut off too: its stream is reset (over HTTP the status cannot overtake the
// unread messages) and the member releases the watcher.
func TestWatchOverHTTP(t *testing.T) {
	tc := newTestClusterWith(t, 1, func(c *Config) {
		c.Watch = watch.Options{StallTimeout: 300 * time.Millisecond, ProgressInterval: 100 * time.Millisecond}
	})
	tc.waitLeader()
	m := tc.members[0]
	cli, err := client.New(client.Config{Endpoints: []string{m.ClientURL}, Protocol: client.ProtocolConnect, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	ch := cli.Watch(wctx, "w", client.WithProgressNotify())
	start := <-ch
	if start.Err != nil || !start.Progress {
		t.Fatalf("first response %+v", start)
	}
	put, err := cli.Put(ctx, "w", "1")
	if err != nil {
		t.Fatal(err)
	}
	for r := range ch {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		if len(r.Items) > 0 {
			if got := renderWatchItem(r.Items[0]); got != fmt.Sprintf("%d PUT w=1", put.Header.Revision) {
				t.Fatalf("watch over HTTP delivered %q", got)
			}
			break
		}
	}
	wcancel()

	// A stream with a small HTTP/2 window that nobody reads.
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{Protocols: &protocols,
		HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10}}}
	stream, err := caucusv1connect.NewEventsClient(hc, m.ClientURL).Watch(ctx, connect.NewRequest(&caucusv1.WatchRequest{Key: []byte("w")}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	value := strings.Repeat("x", 16<<10)
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; m.Server.WatchStats().Watchers != 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("the member did not cut the HTTP reader off within 20s: %+v", m.Server.WatchStats())
		}
		if i < 100 {
			if _, err := cli.Put(ctx, "w", value); err != nil {
				t.Fatal(err)
			}
		} else {
			time.Sleep(5 * time.Millisecond) // polling a real member
		}
	}
	for stream.Receive() {
	}
	if stream.Err() == nil {
		t.Fatal("the cut-off HTTP stream ended without an error")
	}
}
