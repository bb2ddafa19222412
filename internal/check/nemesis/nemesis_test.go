package nemesis

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
)

func TestPlan(t *testing.T) {
	alone := Plan([]Kind{Kill, Pause}, false, nil)
	if len(alone) != 6 {
		t.Fatalf("alone: want 6 steps (2 kinds x 3 targets), got %v", alone)
	}
	for _, s := range alone {
		if len(s) != 1 {
			t.Fatalf("alone: step with %d faults", len(s))
		}
	}
	if got := Plan([]Kind{Kill, Member}, false, []Target{Leader}); len(got) != 1 || got[0][0] != (Step{Kill, Leader}) {
		t.Fatalf("leader-only plan: %v", got)
	}
	combined := Plan([]Kind{Kill, Pause, Partition}, true, nil)
	if len(combined) != 6 {
		t.Fatalf("combined: want 6 steps (3 pairs x 2 orders), got %v", combined)
	}
	for _, s := range combined {
		if len(s) != 2 || s[0].Kind == s[1].Kind || s[0].Target != Leader || s[1].Target != Follower {
			t.Fatalf("combined step %v", s)
		}
	}
	if _, err := ParseKinds("kill,bogus"); err == nil {
		t.Fatal("bogus kind accepted")
	}
	if k, err := ParseKinds("none"); err != nil || k != nil {
		t.Fatalf("none: %v %v", k, err)
	}
}

// statusServer serves Maintenance.Status for a fake member that reports leader as the leader.
type statusServer struct {
	caucusv1connect.UnimplementedMaintenanceHandler
	id, leader uint64
}

func (s statusServer) Status(context.Context, *connect.Request[caucusv1.StatusRequest]) (*connect.Response[caucusv1.StatusResponse], error) {
	return connect.NewResponse(&caucusv1.StatusResponse{Header: &caucusv1.ResponseHeader{MemberId: s.id}, Leader: s.leader, RaftTerm: 3}), nil
}

// recorder is a Backend that records the primitives called on it.
type recorder struct {
	mu    sync.Mutex
	calls []string
	eps   map[string]string
}

func (r *recorder) log(f string, a ...any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf(f, a...))
	return nil
}
func (r *recorder) Members() []string { return []string{"a", "b", "c"} }
func (r *recorder) Endpoint(n string) string {
	return r.eps[n]
}
func (r *recorder) Kill(_ context.Context, n string) error    { return r.log("kill %s", n) }
func (r *recorder) Restart(_ context.Context, n string) error { return r.log("restart %s", n) }
func (r *recorder) Pause(_ context.Context, n string) error   { return r.log("pause %s", n) }
func (r *recorder) Resume(_ context.Context, n string) error  { return r.log("resume %s", n) }
func (r *recorder) Partition(_ context.Context, cut []string) error {
	return r.log("partition %s", strings.Join(cut, ","))
}
func (r *recorder) HealNetwork(context.Context) error { return r.log("heal-network") }

// TestTargetsAndHeal checks leader targeting through real Status calls, that faults avoid
// members already faulted, and that Heal undoes everything in reverse order.
func TestTargetsAndHeal(t *testing.T) {
	ids := map[string]uint64{"a": 1, "b": 2, "c": 3}
	r := &recorder{eps: map[string]string{}}
	for name, id := range ids {
		mux := http.NewServeMux()
		mux.Handle(caucusv1connect.NewMaintenanceHandler(statusServer{id: id, leader: 2}))
		// Members serve cleartext HTTP/2 (prior knowledge), as cluster.NewHTTPClient speaks.
		srv := httptest.NewUnstartedServer(mux)
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetHTTP1(true)
		srv.Config.Protocols.SetUnencryptedHTTP2(true)
		srv.Start()
		t.Cleanup(srv.Close)
		r.eps[name] = srv.URL
	}
	clock := int64(0)
	n := New(r, func() int64 { clock++; return clock }, 1)
	ctx := context.Background()
	ev, err := n.Inject(ctx, Kill, Leader)
	if err != nil || !slices.Equal(ev.Members, []string{"b"}) {
		t.Fatalf("kill leader hit %v, %v", ev.Members, err)
	}
	ev, err = n.Inject(ctx, Pause, Majority)
	if err != nil || len(ev.Members) != 2 || slices.Contains(ev.Members, "b") {
		t.Fatalf("majority after killing b should be a and c, got %v, %v", ev.Members, err)
	}
	if _, err := n.Inject(ctx, Partition, Follower); err == nil {
		t.Fatal("a fault with every member already faulted was injected")
	}
	if err := n.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"kill b", "pause a", "pause c", "resume a", "resume c", "restart b"}
	if !slices.Equal(r.calls, want) {
		t.Fatalf("calls %v, want %v", r.calls, want)
	}
	for _, e := range n.Events() {
		if e.End == 0 || e.End < e.Start {
			t.Fatalf("event not closed: %+v", e)
		}
	}
	if n.Active() != "" {
		t.Fatalf("still active after heal: %s", n.Active())
	}
}
