package mvcc

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caucus/caucus/internal/logpb"
)

func ev(topic, key, payload string) *logpb.Event {
	return &logpb.Event{Topic: topic, Key: []byte(key), Payload: []byte(payload)}
}

func allEvents(t testing.TB, s *Store, from int64) []*logpb.Event {
	t.Helper()
	f, err := NewEventFilter([]string{"*"})
	if err != nil {
		t.Fatal(err)
	}
	evs, _, err := s.Events(from, 0, 1<<30, f)
	if err != nil {
		t.Fatalf("Events(%d): %v", from, err)
	}
	return evs
}

// positions renders events as "rev.index topic payload" for comparison.
func positions(evs []*logpb.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, fmt.Sprintf("%d.%d %s %s", e.Revision, e.Index, e.Topic, e.Payload))
	}
	return out
}

func TestEventsCommitWithTheirWrite(t *testing.T) {
	h := newHarness(t, Options{})
	p := putReq("user/1", "ann")
	p.Events = []*logpb.Event{ev("users", "1", "created"), {Topic: "audit", Payload: []byte("put user/1"), Id: "mine"}}
	resp := h.ok(cmdOf(p)).(*logpb.PutResponse)
	rev := resp.Header.Revision
	if want := []string{EventID(rev, 0), "mine"}; !slices.Equal(resp.EventIds, want) {
		t.Fatalf("event ids %v, want %v", resp.EventIds, want)
	}
	d := &logpb.DeleteRangeRequest{Key: []byte("nothing"), Events: []*logpb.Event{ev("users", "2", "not found")}}
	dresp := h.ok(cmdOf(d)).(*logpb.DeleteRangeResponse)
	if dresp.Deleted != 0 || dresp.Header.Revision != rev+1 {
		t.Fatalf("a delete of nothing that publishes: deleted %d at revision %d, want 0 at %d (events take a revision)", dresp.Deleted, dresp.Header.Revision, rev+1)
	}
	pub := h.ok(cmdOf(&logpb.PublishRequest{Events: []*logpb.Event{ev("users", "1", "welcomed")}})).(*logpb.PublishResponse)
	if pub.Header.Revision != rev+2 {
		t.Fatalf("publish at revision %d, want %d", pub.Header.Revision, rev+2)
	}
	got := positions(allEvents(t, h.s, 1))
	want := []string{
		fmt.Sprintf("%d.0 users created", rev), fmt.Sprintf("%d.1 audit put user/1", rev),
		fmt.Sprintf("%d.0 users not found", rev+1), fmt.Sprintf("%d.0 users welcomed", rev+2),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("stream %q, want %q", got, want)
	}
	e := allEvents(t, h.s, 1)[0]
	if e.TimeUnixNano != baseTime.UnixNano() || string(e.Key) != "1" {
		t.Fatalf("stored event %v: want the command's time and the key", e)
	}
}

func TestTxnPublishesOnlyTheBranchThatRan(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("k", "v")
	put := putReq("a", "1")
	put.Events = []*logpb.Event{ev("t", "a", "then-put")}
	txn := &logpb.TxnRequest{
		Compare: []*logpb.Compare{{Key: []byte("k"), Target: logpb.Compare_VALUE, TargetUnion: &logpb.Compare_Value{Value: []byte("v")}}},
		Success: []*logpb.RequestOp{
			{Request: &logpb.RequestOp_RequestPut{RequestPut: put}},
			{Request: &logpb.RequestOp_RequestPublish{RequestPublish: &logpb.PublishRequest{Events: []*logpb.Event{ev("t", "a", "then-publish")}}}},
		},
		Failure: []*logpb.RequestOp{
			{Request: &logpb.RequestOp_RequestPublish{RequestPublish: &logpb.PublishRequest{Events: []*logpb.Event{ev("t", "a", "else")}}}},
		},
	}
	r := h.ok(cmdOf(txn)).(*logpb.TxnResponse)
	if !r.Succeeded {
		t.Fatal("compare failed")
	}
	r = h.ok(cmdOf(txn)).(*logpb.TxnResponse) // still holds: k unchanged
	txn.Compare[0].TargetUnion = &logpb.Compare_Value{Value: []byte("other")}
	r = h.ok(cmdOf(txn)).(*logpb.TxnResponse)
	if r.Succeeded {
		t.Fatal("compare held")
	}
	var payloads []string
	for _, e := range allEvents(t, h.s, 1) {
		payloads = append(payloads, string(e.Payload))
	}
	if want := []string{"then-put", "then-publish", "then-put", "then-publish", "else"}; !slices.Equal(payloads, want) {
		t.Fatalf("published %q, want %q", payloads, want)
	}
	ids := r.Responses[0].GetResponsePublish().GetEventIds()
	if len(ids) != 1 {
		t.Fatalf("else branch publish response %v", r.Responses[0])
	}
}

func TestRefusedWritePublishesNothing(t *testing.T) {
	h := newHarness(t, Options{Limits: Limits{MaxTopics: 2}})
	h.ok(cmdOf(&logpb.PublishRequest{Events: []*logpb.Event{ev("a", "", "1"), ev("b", "", "2")}}))
	rev := h.s.Rev()
	cases := map[string]struct {
		cmd  *logpb.Command
		want error
	}{
		"unknown lease":           {cmdOf(&logpb.PutRequest{Key: []byte("k"), Lease: 99, Events: []*logpb.Event{ev("a", "", "x")}}), ErrLeaseNotFound},
		"third topic":             {cmdOf(&logpb.PutRequest{Key: []byte("k"), Events: []*logpb.Event{ev("a", "", "x"), ev("c", "", "x")}}), ErrTooManyTopics},
		"third topic in a delete": {cmdOf(&logpb.DeleteRangeRequest{Key: []byte("k"), Events: []*logpb.Event{ev("c", "", "x")}}), ErrTooManyTopics},
		"bad topic":               {cmdOf(&logpb.PublishRequest{Events: []*logpb.Event{ev("a b", "", "x")}}), ErrInvalidTopic},
		"dot topic":               {cmdOf(&logpb.PublishRequest{Events: []*logpb.Event{ev(".a", "", "x")}}), ErrInvalidTopic},
		"no events":               {cmdOf(&logpb.PublishRequest{}), ErrInvalidArgument},
		"position given":          {cmdOf(&logpb.PublishRequest{Events: []*logpb.Event{{Topic: "a", Revision: 5}}}), ErrInvalidArgument},
		"too large":               {cmdOf(&logpb.PublishRequest{Events: []*logpb.Event{ev("a", "", strings.Repeat("x", DefaultMaxEventBytes))}}), ErrEventTooLarge},
		"too many":                {cmdOf(&logpb.PublishRequest{Events: slices.Repeat([]*logpb.Event{ev("a", "", "")}, DefaultMaxEventsPerWrite+1)}), ErrTooManyEvents},
		"too many in a branch": {cmdOf(&logpb.TxnRequest{Success: []*logpb.RequestOp{
			{Request: &logpb.RequestOp_RequestPublish{RequestPublish: &logpb.PublishRequest{Events: slices.Repeat([]*logpb.Event{ev("a", "", "")}, DefaultMaxEventsPerWrite)}}},
			{Request: &logpb.RequestOp_RequestPut{RequestPut: &logpb.PutRequest{Key: []byte("k"), Events: []*logpb.Event{ev("a", "", "")}}}},
		}}), ErrTooManyEvents},
		"third topic in a txn": {cmdOf(&logpb.TxnRequest{Success: []*logpb.RequestOp{
			opPut("k", "v"),
			{Request: &logpb.RequestOp_RequestPublish{RequestPublish: &logpb.PublishRequest{Events: []*logpb.Event{ev("c", "", "x")}}}},
		}}), ErrTooManyTopics},
	}
	for name, c := range cases {
		r := h.cmd(c.cmd)
		if r.Err == nil {
			t.Fatalf("%s: applied", name)
		}
		wantErr(t, r.Err, c.want)
	}
	if h.s.Rev() != rev {
		t.Fatalf("refused writes moved the revision from %d to %d", rev, h.s.Rev())
	}
	if n := len(allEvents(t, h.s, 1)); n != 2 {
		t.Fatalf("%d events stored, want the 2 published before", n)
	}
	if kv, ok := h.get("k", 0); ok {
		t.Fatalf("refused writes wrote %v", kv)
	}
	checkInvariants(t, h.s)
}

func TestCompactionRemovesEventsAndFreesTopics(t *testing.T) {
	h := newHarness(t, Options{Limits: Limits{MaxTopics: 1}})
	for i := range 3 {
		h.ok(cmdOf(&logpb.PublishRequest{Events: []*logpb.Event{ev("a", "", fmt.Sprint(i))}}))
	}
	wantErr(t, h.cmd(cmdOf(&logpb.PublishRequest{Events: []*logpb.Event{ev("b", "", "x")}})).Err, ErrTooManyTopics)
	cur := h.s.Rev()
	h.ok(cmdOf(&logpb.CompactionRequest{Revision: cur - 1}))
	if _, _, err := h.s.Events(cur-1, 0, 10, EventFilter{all: true}); err == nil {
		t.Fatal("events at the compacted revision still readable")
	} else {
		wantErr(t, err, ErrCompacted)
	}
	if got := positions(allEvents(t, h.s, cur)); len(got) != 1 || !strings.HasSuffix(got[0], "a 2") {
		t.Fatalf("after compaction: %q", got)
	}
	topics, err := h.s.Topics()
	if err != nil || len(topics) != 1 || topics[0].Events != 1 || topics[0].LastRevision != cur {
		t.Fatalf("topics %+v, %v", topics, err)
	}
	h.ok(cmdOf(&logpb.CompactionRequest{Revision: cur}))
	h.ok(putCmd("k", "v")) // a batch for the compaction step to run in
	if topics, _ := h.s.Topics(); len(topics) != 0 {
		t.Fatalf("topics after compacting every event: %+v", topics)
	}
	h.ok(cmdOf(&logpb.PublishRequest{Events: []*logpb.Event{ev("b", "", "x")}}))
}

func TestEventsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "kv.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, s: s, now: baseTime}
	h.ok(cmdOf(&logpb.PublishRequest{Events: []*logpb.Event{ev("a", "k", "1"), ev("b", "k", "2")}}))
	want := positions(allEvents(t, s, 1))
	s.Close()
	s, err = Open(filepath.Join(dir, "kv.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := positions(allEvents(t, s, 1)); !slices.Equal(got, want) || len(got) != 2 {
		t.Fatalf("after reopen %q, want %q", got, want)
	}
	if topics, _ := s.Topics(); len(topics) != 2 {
		t.Fatalf("topics after reopen: %+v", topics)
	}
}

func TestEventFilter(t *testing.T) {
	f, err := NewEventFilter([]string{"orders", "users.*"})
	if err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]bool{"orders": true, "orders.x": false, "users.": true, "users.1": true, "users": false, "x": false} {
		if f.Match(topic) != want {
			t.Errorf("Match(%q) = %v, want %v", topic, !want, want)
		}
	}
	if _, err := NewEventFilter([]string{"a b"}); err == nil {
		t.Error("invalid pattern accepted")
	}
	if f, _ := NewEventFilter(nil); !f.Empty() || f.Match("a") {
		t.Error("empty filter selects")
	}
	h := newHarness(t, Options{})
	h.ok(cmdOf(&logpb.PublishRequest{Events: []*logpb.Event{ev("orders", "", "1"), ev("x", "", "2"), ev("users.a", "", "3")}}))
	h.ok(cmdOf(&logpb.PublishRequest{Events: []*logpb.Event{ev("x", "", "4")}}))
	got, cur, err := h.s.Events(1, 0, 1, f)
	if err != nil || cur != h.s.Rev() {
		t.Fatal(err, cur)
	}
	// max 1 still returns the whole first revision's matches, never half a revision.
	if p := positions(got); len(p) != 2 || !strings.HasSuffix(p[1], "users.a 3") {
		t.Fatalf("filtered %q", p)
	}
	got, _, _ = h.s.Events(got[0].Revision, 2, 10, EventFilter{all: true})
	if p := positions(got); len(p) != 2 || !strings.HasSuffix(p[0], "users.a 3") {
		t.Fatalf("from (rev, 2): %q", p)
	}
}

// TestSessionRetryPublishesOnce: a producer's retry of a sessioned write (a put with events, a
// publish) gets the original result, event ids included, and no second event.
func TestSessionRetryPublishesOnce(t *testing.T) {
	h := newHarness(t, Options{})
	sess := &logpb.Session{ClientId: 7, Sequence: 1}
	p := putReq("k", "v")
	p.Session, p.Events = sess, []*logpb.Event{ev("t", "k", "1")}
	first := h.ok(cmdOf(p)).(*logpb.PutResponse)
	again := h.ok(cmdOf(p)).(*logpb.PutResponse)
	if !slices.Equal(first.EventIds, again.EventIds) || len(first.EventIds) != 1 {
		t.Fatalf("retry answered ids %v, first %v", again.EventIds, first.EventIds)
	}
	pub := &logpb.PublishRequest{Session: &logpb.Session{ClientId: 7, Sequence: 2}, Events: []*logpb.Event{ev("t", "k", "2")}}
	firstPub := h.ok(cmdOf(pub)).(*logpb.PublishResponse)
	againPub := h.ok(cmdOf(pub)).(*logpb.PublishResponse)
	if !slices.Equal(firstPub.EventIds, againPub.EventIds) || againPub.Header.Revision != firstPub.Header.Revision {
		t.Fatalf("publish retry answered %v, first %v", againPub, firstPub)
	}
	if n := len(allEvents(t, h.s, 1)); n != 2 {
		t.Fatalf("%d events stored after retries, want 2", n)
	}
}

// TestSessionedInvalidEventIsStored: a sessioned write refused for an event's topic stores its
// refusal like any other result (it once failed the batch, stopping the member at that entry
// on every start); a retry gets the same refusal.
func TestSessionedInvalidEventIsStored(t *testing.T) {
	h := newHarness(t, Options{})
	p := putReq("k", "v")
	p.Session = &logpb.Session{ClientId: 9, Sequence: 1}
	p.Events = []*logpb.Event{ev("bad topic", "", "x")}
	first := h.cmd(cmdOf(p))
	wantErr(t, first.Err, ErrInvalidTopic)
	again := h.cmd(cmdOf(p))
	if again.Err == nil || again.Err.Error() != first.Err.Error() {
		t.Fatalf("retry answered %v, first %v", again.Err, first.Err)
	}
	h.put("after", "ok") // the batch and the store still work
}
