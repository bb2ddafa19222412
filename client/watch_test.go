package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
)

// fakeWatch serves a fixed history the way members do: a progress response at the start - 1,
// then each revision in responses of at most two items, all but a revision's last part complete
// only through the revision before it. Stream number i breaks (Unavailable) after cuts[i]
// responses.
type fakeWatch struct {
	caucusv1connect.UnimplementedEventsHandler
	hist      map[int64][]*WatchItem
	last      int64
	compacted int64

	mu     sync.Mutex
	cuts   []int
	starts []int64
}

func newFakeWatch(last int64) *fakeWatch {
	f := &fakeWatch{hist: map[int64][]*WatchItem{}, last: last}
	for r := int64(2); r <= last; r++ {
		for i := range int(r%3) + 1 {
			kv := &caucusv1.KeyValue{Key: []byte(fmt.Sprint("k", i)), ModRevision: r, Value: []byte(fmt.Sprint(r, ".", i))}
			f.hist[r] = append(f.hist[r], &WatchItem{Item: &caucusv1.WatchItem_Change{Change: &WatchChange{Kv: kv}}})
		}
	}
	return f
}

func (f *fakeWatch) Watch(ctx context.Context, req *connect.Request[caucusv1.WatchRequest], s *connect.ServerStream[caucusv1.WatchResponse]) error {
	start := req.Msg.GetStartRevision()
	if start == 0 {
		start = 2
	}
	f.mu.Lock()
	f.starts = append(f.starts, start)
	cut := 1 << 30
	if len(f.cuts) > 0 {
		cut, f.cuts = f.cuts[0], f.cuts[1:]
	}
	f.mu.Unlock()
	if start <= f.compacted {
		return connect.NewError(connect.CodeOutOfRange, fmt.Errorf("mvcc: required revision has been compacted: watch at revision %d: the oldest retained revision is %d", start, f.compacted+1))
	}
	resps := []*caucusv1.WatchResponse{{Header: &ResponseHeader{Revision: start - 1}, Progress: true}}
	for r := start; r <= f.last; r++ {
		items := f.hist[r]
		for i := 0; i < len(items); i += 2 {
			part := items[i:min(i+2, len(items))]
			rev := r
			if i+2 < len(items) {
				rev = r - 1
			}
			resps = append(resps, &caucusv1.WatchResponse{Header: &ResponseHeader{Revision: rev}, Items: part})
		}
	}
	for i, r := range resps {
		if i == cut {
			return connect.NewError(connect.CodeUnavailable, errors.New("member stopping"))
		}
		if err := s.Send(r); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}

func serveFakeWatch(t *testing.T, f *fakeWatch) string {
	_, h := caucusv1connect.NewEventsHandler(f)
	srv := httptest.NewUnstartedServer(h)
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &protocols
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestWatchResumesWithoutLossOrDuplicates: streams that break anywhere, mid-revision included,
// resume on the next endpoint from the revision after the last complete one, and the items
// already delivered of a split revision are not delivered again.
func TestWatchResumesWithoutLossOrDuplicates(t *testing.T) {
	f := newFakeWatch(12)
	f.cuts = []int{3, 1, 4, 2, 6, 1, 1, 5}
	c := newClient(t, Config{Endpoints: []string{serveFakeWatch(t, f), serveFakeWatch(t, f)}, Protocol: ProtocolConnect})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got, want []string
	for r := int64(2); r <= 12; r++ {
		for _, it := range f.hist[r] {
			want = append(want, string(it.GetChange().GetKv().GetValue()))
		}
	}
	ch := c.Watch(ctx, "k", WithPrefix(), WithRev(2))
	for resp := range ch {
		if resp.Err != nil {
			t.Fatal(resp.Err)
		}
		for _, it := range resp.Items {
			got = append(got, string(it.GetChange().GetKv().GetValue()))
		}
		if resp.Header.GetRevision() == 12 {
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delivered %q\nwant      %q\nstream starts %v", got, want, f.starts)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.starts) != 9 || f.starts[0] != 2 {
		t.Fatalf("stream starts %v, want 9 streams from 2", f.starts)
	}
}

// TestWatchEnds: a compacted start revision ends the watch with an error naming the oldest
// retained revision; a canceled context closes the channel without one.
func TestWatchEnds(t *testing.T) {
	f := newFakeWatch(5)
	f.compacted = 3
	c := newClient(t, Config{Endpoints: []string{serveFakeWatch(t, f)}, Protocol: ProtocolConnect})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var last WatchResponse
	for resp := range c.Watch(ctx, "k", WithRev(2)) {
		last = resp
	}
	if !IsCompacted(last.Err) || last.OldestRevision != 4 {
		t.Fatalf("watch ended with %v, oldest revision %d; want compacted, 4", last.Err, last.OldestRevision)
	}

	wctx, wcancel := context.WithCancel(ctx)
	ch := c.Watch(wctx, "k", WithRev(4), WithProgressNotify())
	if r := <-ch; !r.Progress || r.Header.GetRevision() != 3 {
		t.Fatalf("first response %+v, want progress at 3", r)
	}
	wcancel()
	for r := range ch {
		if r.Err != nil {
			t.Fatalf("a canceled watch delivered %v", r.Err)
		}
	}
}
