package embed

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caucus/caucus/client"
	"github.com/caucus/caucus/internal/ctl"
	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// waitLogVersion polls until every running member's membership table shows every member
// applying at least log format version v (members publish it once they start).
func waitLogVersion(t *testing.T, tc *testCluster, v uint32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok := true
		for _, m := range tc.members {
			if m == nil {
				continue
			}
			for _, mm := range m.FSM.Store().Members() {
				ok = ok && mm.LogVersion >= v
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("members did not all publish log format version %d within 10s", v)
		}
		time.Sleep(5 * time.Millisecond) // polling real time: the members run on wall-clock ticks
	}
}

// memberEvents renders every event a member stores, in stream order.
func memberEvents(t *testing.T, m *Member) []string {
	t.Helper()
	f, _ := mvcc.NewEventFilter([]string{"*"})
	evs, _, err := m.FSM.Store().Events(1, 0, 1<<20, f)
	if err != nil {
		t.Fatalf("%s: events: %v", m.ClientURL, err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, fmt.Sprintf("%d.%d %s %s %s %s", e.Revision, e.Index, e.Id, e.Topic, e.Key, e.Payload))
	}
	return out
}

// TestEventsCommitWithTheirWriteOnEveryMember: through the Go client and the CLI, writes that
// carry events (a put, a delete, both branches of a transaction, a publish alone) store the same
// events at the same positions on every member, with the write; after a restart a member still
// holds them.
func TestEventsCommitWithTheirWriteOnEveryMember(t *testing.T) {
	tc := newTestCluster(t, 3)
	tc.waitLeader()
	waitLogVersion(t, tc, logpb.Version3)
	var eps []string
	for _, m := range tc.members {
		eps = append(eps, m.ClientURL)
	}
	cli, err := client.New(client.Config{Endpoints: eps, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	put, err := cli.Put(ctx, "user/1", "ann", client.WithEvents(client.NewEvent("users", "1", []byte("created"))))
	if err != nil {
		t.Fatal(err)
	}
	if want := mvcc.EventID(put.Header.Revision, 0); !slices.Equal(put.EventIds, []string{want}) {
		t.Fatalf("put event ids %v, want [%s]", put.EventIds, want)
	}
	txn := func(value string) *client.TxnResponse {
		r, err := cli.Txn(ctx).If(client.Compare(client.Value("user/1"), "=", value)).
			Then(client.OpPut("user/1", "ann2", client.WithEvents(client.NewEvent("users", "1", []byte("renamed")))),
				client.OpPublish(&client.Event{Topic: "audit", Payload: []byte("rename"), Id: "audit-1"})).
			Else(client.OpPublish(client.NewEvent("users", "1", []byte("rename refused")))).Commit()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if !txn("ann").Succeeded || txn("ann").Succeeded {
		t.Fatal("transactions took the wrong branches")
	}
	if _, err := cli.Delete(ctx, "user/1", client.WithEvents(client.NewEvent("users", "1", []byte("deleted")))); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	args := []string{"--endpoints", strings.Join(eps, ","), "put", "user/2", "bob", "--event", "users=created", "--event", "audit=put user/2"}
	if err := ctl.RunIO(ctx, args, nil, &out, &errb); err != nil {
		t.Fatalf("caucus put --event: %v (%s)", err, errb.String())
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 3 || lines[0] != "OK" || !strings.HasPrefix(lines[1], "event ") {
		t.Fatalf("caucus put --event printed %q", out.String())
	}
	out.Reset()
	if err := ctl.RunIO(ctx, []string{"--endpoints", strings.Join(eps, ","), "publish", "--key", "k", "audit", "done"}, nil, &out, &errb); err != nil {
		t.Fatalf("caucus publish: %v (%s)", err, errb.String())
	}
	if !strings.HasPrefix(out.String(), "event ") {
		t.Fatalf("caucus publish printed %q", out.String())
	}
	out.Reset()
	err = ctl.RunIO(ctx, []string{"--endpoints", strings.Join(eps, ","), "publish", "bad topic", "x"}, nil, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "invalid topic") {
		t.Fatalf("publish to an invalid topic: %v", err)
	}

	want := []string{"users 1 created", "users 1 renamed", "audit-1 audit  rename", "users 1 rename refused", "users 1 deleted",
		"users user/2 created", "audit user/2 put user/2", "audit k done"}
	// Every member applies the same entries: poll until each holds all the events, then compare.
	deadline := time.Now().Add(10 * time.Second)
	var first []string
	for i, m := range tc.members {
		var got []string
		for {
			got = memberEvents(t, m)
			if len(got) >= len(want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if len(got) != len(want) {
			t.Fatalf("member %d holds %d events, want %d: %q", i+1, len(got), len(want), got)
		}
		for j, w := range want {
			if !strings.Contains(got[j], w) {
				t.Fatalf("member %d event %d is %q, want it to hold %q", i+1, j, got[j], w)
			}
		}
		if i == 0 {
			first = got
		} else if !slices.Equal(got, first) {
			t.Fatalf("member %d holds %q, member 1 %q", i+1, got, first)
		}
	}
	tc.members[2].Stop()
	tc.members[2] = nil
	tc.restart(2)
	if got := memberEvents(t, tc.members[2]); !slices.Equal(got, first) {
		t.Fatalf("after a restart member 3 holds %q, want %q", got, first)
	}
}

// TestIdempotencyKeyAcrossClients: a write named by an idempotency key is applied once even when
// another client (a restarted service) sends it again; that client gets the first result; the
// key on a different request is refused.
func TestIdempotencyKeyAcrossClients(t *testing.T) {
	tc := newTestCluster(t, 3)
	lead := tc.waitLeader()
	waitLogVersion(t, tc, logpb.Version3)
	// Writes go to the leader, which answers once it applied them: its store has them.
	eps := []string{tc.members[lead].ClientURL}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	put := func(value string) (*client.PutResponse, error) {
		cli, err := client.New(client.Config{Endpoints: eps, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		return cli.Put(client.WithIdempotencyKey(ctx, "order-7"), "order/7", value,
			client.WithEvents(client.NewEvent("orders", "7", []byte(value))))
	}
	first, err := put("placed")
	if err != nil {
		t.Fatal(err)
	}
	again, err := put("placed")
	if err != nil {
		t.Fatal(err)
	}
	if again.Header.Revision != first.Header.Revision || !slices.Equal(again.EventIds, first.EventIds) {
		t.Fatalf("the second client got revision %d ids %v, want the first's %d %v", again.Header.Revision, again.EventIds, first.Header.Revision, first.EventIds)
	}
	if _, err := put("cancelled"); !client.IsIdempotencyKeyReused(err) {
		t.Fatalf("the key on another request: %v, want IsIdempotencyKeyReused", err)
	}
	// A member answers a write once applied; its store shows it at the next group commit.
	st := tc.members[lead].FSM.Store()
	for deadline := time.Now().Add(5 * time.Second); st.Rev() < first.Header.Revision && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond) // polling a real member's group commit
	}
	f, _ := mvcc.NewEventFilter([]string{"orders"})
	evs, _, err := st.Events(1, 0, 100, f)
	if err != nil || len(evs) != 1 {
		t.Fatalf("orders events %v, %v: want exactly one", evs, err)
	}
}
