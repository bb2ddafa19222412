package client

import (
	"context"
	"fmt"
	"regexp"
	"strconv"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// Watch types.
type (
	// WatchItem is a key change (GetChange) or an event (GetEvent).
	WatchItem = caucusv1.WatchItem
	// WatchChange is one change of a key: a put (Kv holds the new version) or a delete (Kv
	// holds the key and the deletion's revision); PrevKv with WithPrevKV.
	WatchChange = caucusv1.WatchChange
	// ResponseHeader says which member answered, and at which revision.
	ResponseHeader = caucusv1.ResponseHeader
)

// Watch change types.
const (
	WatchPut    = caucusv1.WatchChange_PUT
	WatchDelete = caucusv1.WatchChange_DELETE
)

// WatchResponse is one response of a watch.
type WatchResponse struct {
	// Header.Revision is the revision through which the watch is complete: every change and
	// event it selects up to there has been delivered.
	Header *ResponseHeader
	// Items in revision order; within a revision the key changes first, then the events by
	// index.
	Items []*WatchItem
	// Progress marks a response that only reports progress (WithProgressNotify).
	Progress bool
	// Err, when set, ends the watch: the channel closes after this response. A watch from a
	// compacted revision fails with an error for which IsCompacted holds, and OldestRevision
	// is then the oldest revision the cluster still retains.
	Err            error
	OldestRevision int64
}

// WatchChan delivers a watch's responses. It is closed when the watch ends: after a response
// with Err, or without one when the watch's context ends or the Client is closed.
type WatchChan <-chan WatchResponse

// WithTopics makes a watch select the events of these topics: names, prefixes ending in "*"
// ("orders.*"), or "*" for every topic. A watch with topics and an empty key selects events
// only.
func WithTopics(patterns ...string) OpOption {
	return func(op *Op) { op.topics = append(op.topics, patterns...) }
}

// WithProgressNotify makes a watch deliver progress responses (no items, Progress set) when it
// is idle, at the member's progress interval (a second by default), and the one that starts
// each stream to a member: Header.Revision says how far the watch is complete.
func WithProgressNotify() OpOption { return func(op *Op) { op.progress = true } }

// Watch streams the changes of key (a single key, or a range with WithPrefix, WithRange or
// WithFromKey; none with an empty key and no prefix) and the events of the topics of
// WithTopics, from the revision of WithRev (0: the revision after the member's current one),
// with previous versions with WithPrevKV.
//
// The watch survives member failures: when its stream breaks (the member stopped, the
// connection failed, the member cut off a reader that fell too far behind) it resumes on the
// next endpoint from the revision after the last complete one, skipping what it already
// delivered, so every change and event is delivered once, in order. It retries until ctx ends,
// with backoff once every endpoint failed in a row. It ends with Err when the cluster cannot
// serve it: a compacted start or resume revision (OldestRevision names where history begins
// now), or an invalid request.
//
// Each watch is one stream to one member; the native protocol allows 128 streams per member
// connection (a Client has one connection per member), so a Client holds at most 128 watches
// to a member at once (more fail with IsResourceExhausted). Watch one prefix or topic pattern
// instead of many keys, or use several Clients.
func (c *Client) Watch(ctx context.Context, key string, opts ...OpOption) WatchChan {
	op := newOp(opGet, key, "", opts)
	req := &caucusv1.WatchRequest{Key: op.key, RangeEnd: op.end, Topics: op.topics, StartRevision: op.rev,
		PrevKv: op.prevKV, ProgressNotify: op.progress}
	out := make(chan WatchResponse)
	if !c.goBackground(func() {
		defer close(out)
		c.runWatch(ctx, req, out)
	}) {
		close(out)
	}
	return out
}

// watchState is how far a watch got: complete through complete, plus partial items of the
// revision after it (a revision split across responses).
type watchState struct {
	started  bool
	complete int64
	partial  int
}

// runWatch serves one watch until ctx ends, the client closes, or it fails for good.
func (c *Client) runWatch(ctx context.Context, req *caucusv1.WatchRequest, out chan<- WatchResponse) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.ctx, cancel)()
	st := watchState{complete: req.StartRevision - 1}
	n := len(c.endpoints)
	start := c.firstEndpoint(anyEndpoint)
	fails := 0
	for try := 0; ; try++ {
		ep := c.endpoints[(start+try)%n]
		progressed, err := c.watchStream(ctx, ep, req, &st, out)
		if ctx.Err() != nil {
			return
		}
		if watchFatal(err) {
			resp := WatchResponse{Err: fmt.Errorf("watch via %s: %w", ep.url, err)}
			if IsCompacted(err) {
				resp.OldestRevision = oldestRetained(err)
			}
			select {
			case out <- resp:
			case <-ctx.Done():
			}
			return
		}
		if progressed {
			fails = 0
		} else {
			fails++
		}
		c.log.Debug("caucus client: watch stream ended, resuming", "endpoint", ep.url, "from", st.complete+1, "err", err)
		if fails > 0 && fails%n == 0 {
			if sleepCtx(ctx, backoff(fails/n)) != nil {
				return
			}
		}
	}
}

// watchFatal reports whether a watch stream's error ends the watch: retrying elsewhere cannot
// help (every member has the same history and the same rules).
func watchFatal(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeOutOfRange, connect.CodeInvalidArgument, connect.CodeUnimplemented:
		return err != nil
	}
	return false
}

var oldestRetainedRE = regexp.MustCompile(`oldest retained revision is (\d+)`)

// oldestRetained reads the oldest retained revision that a compacted watch's error names (0 if
// it names none).
func oldestRetained(err error) int64 {
	m := oldestRetainedRE.FindStringSubmatch(errorMessage(err))
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

// watchStream runs one stream of the watch on ep from where st says, delivering to out, until
// it breaks. progressed reports whether it received anything.
func (c *Client) watchStream(ctx context.Context, ep *endpoint, req *caucusv1.WatchRequest, st *watchState, out chan<- WatchResponse) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := proto.CloneOf(req)
	if st.started {
		r.StartRevision = st.complete + 1
	}
	stream, err := ep.events.Watch(ctx, connect.NewRequest(r))
	if err != nil {
		return false, err
	}
	defer stream.Close()
	skip := st.partial // the items of revision complete+1 delivered before: the member sends them again
	for stream.Receive() {
		progressed = true
		msg := stream.Msg()
		h := msg.GetHeader()
		ep.noteMember(h.GetMemberId())
		if !st.started {
			// The first response of a stream is a progress response at its start - 1.
			st.started, st.complete = true, h.GetRevision()
		}
		items := msg.GetItems()
		if skip > 0 {
			kept := items[:0:0]
			for _, it := range items {
				if skip > 0 && itemRevision(it) == st.complete+1 {
					skip--
					continue
				}
				skip = 0
				kept = append(kept, it)
			}
			items = kept
		}
		if h.GetRevision() > st.complete {
			st.complete, st.partial = h.GetRevision(), 0
		}
		for _, it := range items {
			if itemRevision(it) == st.complete+1 {
				st.partial++
			}
		}
		if len(items) == 0 && !(msg.GetProgress() && req.ProgressNotify) {
			continue
		}
		select {
		case out <- WatchResponse{Header: h, Items: items, Progress: msg.GetProgress()}:
		case <-ctx.Done():
			return progressed, ctx.Err()
		}
	}
	return progressed, stream.Err()
}

func itemRevision(it *WatchItem) int64 {
	if ch := it.GetChange(); ch != nil {
		return ch.GetKv().GetModRevision()
	}
	return it.GetEvent().GetRevision()
}
