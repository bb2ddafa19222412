package embed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caucus/caucus/client"
	"github.com/caucus/caucus/internal/ctl"
	"github.com/caucus/caucus/internal/logpb"
)

func clusterClient(t *testing.T, tc *testCluster) *client.Client {
	t.Helper()
	var eps []string
	for _, m := range tc.members {
		if m != nil {
			eps = append(eps, m.ClientURL)
		}
	}
	cli, err := client.New(client.Config{Endpoints: eps, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// consumeLog records what the handlers of Consume saw, in one order: every handler start and
// end, and every ack the cluster took, is a step of one counter.
type consumeLog struct {
	mu    sync.Mutex
	step  int
	first map[string]int   // payload -> step of its first handler start
	ends  map[string][]int // payload -> steps at which a handler of it ended
	acked map[string]int   // payload -> step at which an ack of it was taken
	// ackedAt is the attempt whose ack was taken. A delivery of a later attempt can only have
	// been handed out after that ack (an ack of an older attempt than the latest is refused):
	// it would be an acknowledged event delivered again. (An older attempt handed out before
	// the ack may still reach its handler later.)
	ackedAt  map[string]int32
	late     []string // deliveries of a later attempt than one whose ack was taken
	hist     map[string][]string
	attempts map[string][]int32 // payload -> attempts delivered
}

func newConsumeLog() *consumeLog {
	return &consumeLog{first: map[string]int{}, ends: map[string][]int{}, acked: map[string]int{}, ackedAt: map[string]int32{}, hist: map[string][]string{}, attempts: map[string][]int32{}}
}

func (l *consumeLog) started(d *client.Delivery) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.step++
	p := string(d.Event.Payload)
	l.hist[p] = append(l.hist[p], fmt.Sprintf("start@%d attempt %d deadline %d", l.step, d.Attempt, d.DeadlineUnixNano))
	l.attempts[p] = append(l.attempts[p], d.Attempt)
	if a, ok := l.ackedAt[p]; ok && d.Attempt > a {
		l.late = append(l.late, fmt.Sprintf("%s attempt %d, after attempt %d was acknowledged", p, d.Attempt, a))
	}
	if _, ok := l.first[p]; !ok {
		l.first[p] = l.step
	}
}

func (l *consumeLog) ended(d *client.Delivery) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.step++
	p := string(d.Event.Payload)
	l.ends[p] = append(l.ends[p], l.step)
}

func (l *consumeLog) settled(d *client.Delivery, herr, aerr error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.step++
	p := string(d.Event.Payload)
	l.hist[p] = append(l.hist[p], fmt.Sprintf("settled@%d attempt %d: %v %v (%v)", l.step, d.Attempt, herr, aerr, time.Now().UnixNano()))
	if herr != nil || aerr != nil {
		return
	}
	if _, ok := l.acked[p]; !ok {
		l.acked[p] = l.step
		l.ackedAt[p] = d.Attempt
		for _, a := range l.attempts[p] {
			if a > d.Attempt {
				l.late = append(l.late, fmt.Sprintf("%s attempt %d, before attempt %d was acknowledged", p, a, d.Attempt))
			}
		}
	}
}

func (l *consumeLog) ackedCount(want map[string]bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for p := range want {
		if _, ok := l.acked[p]; ok {
			n++
		}
	}
	return n
}

// TestConsumeThroughLeaderFailure: two clients consume one consumer with Consume while events
// are published under load and the leader is stopped and restarted. Every event whose publish
// was acknowledged is handled and acknowledged; no event is delivered again after an ack of it
// was taken (no delivery of a later attempt than the acknowledged one); and the events of each key are handled in order: the first handling of an event
// starts only after a handling of the key's previous event ended.
func TestConsumeThroughLeaderFailure(t *testing.T) {
	tc := newTestCluster(t, 3)
	tc.waitLeader()
	waitLogVersion(t, tc, logpb.Version3)
	pub := clusterClient(t, tc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := pub.ConsumerCreate(ctx, &client.ConsumerConfig{Name: "workers", Topics: []string{"jobs"}, AckWaitMs: 1500, MaxDeliver: 100}); err != nil {
		t.Fatal(err)
	}

	log := newConsumeLog()
	cctx, stop := context.WithCancel(ctx)
	var consumers sync.WaitGroup
	consumeErrs := make(chan error, 2)
	for i := range 2 {
		cli := clusterClient(t, tc)
		consumers.Add(1)
		go func() {
			defer consumers.Done()
			consumeErrs <- cli.Consume(cctx, "workers", func(_ context.Context, d *client.Delivery) error {
				log.started(d)
				time.Sleep(time.Duration(i+1) * time.Millisecond) // handlers take a while, and differ
				log.ended(d)
				return nil
			}, client.WithParallelism(4), client.WithFetchWait(time.Second), client.WithSettled(log.settled))
		}()
	}

	// Producers, each owning its keys, publish in sequence per key.
	const producers, perProducer = 4, 60
	var mu sync.Mutex
	committed := map[string]bool{}
	var published atomic.Int64
	var prod sync.WaitGroup
	for p := range producers {
		prod.Add(1)
		go func() {
			defer prod.Done()
			for i := range perProducer {
				key := fmt.Sprintf("p%d-k%d", p, i%3)
				payload := fmt.Sprintf("%s:%03d", key, i)
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := pub.Publish(pctx, client.NewEvent("jobs", key, []byte(payload)))
				pcancel()
				if err == nil {
					mu.Lock()
					committed[payload] = true
					mu.Unlock()
				}
				published.Add(1)
			}
		}()
	}
	// Stop the leader a third of the way, start it again at two thirds.
	for published.Load() < producers*perProducer/3 {
		time.Sleep(5 * time.Millisecond) // polling real time: the producers run on wall-clock time
	}
	l := tc.waitLeader()
	tc.members[l].Stop()
	tc.members[l] = nil
	for published.Load() < 2*producers*perProducer/3 {
		time.Sleep(5 * time.Millisecond)
	}
	tc.restart(l)
	prod.Wait()

	mu.Lock()
	want := maps(committed)
	mu.Unlock()
	if len(want) < producers*perProducer/2 {
		t.Fatalf("only %d of %d publishes were acknowledged", len(want), producers*perProducer)
	}
	deadline := time.Now().Add(30 * time.Second)
	for log.ackedCount(want) < len(want) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged events handled and acknowledged within 30s", log.ackedCount(want), len(want))
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	consumers.Wait()
	close(consumeErrs)
	for err := range consumeErrs {
		if err != nil {
			t.Fatalf("Consume: %v", err)
		}
	}

	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.late) > 0 {
		for _, x := range log.late {
			p, _, _ := strings.Cut(x, " ")
			t.Logf("%s: %q", p, log.hist[p])
		}
		t.Fatalf("events delivered again after their ack was taken: %q", log.late)
	}
	// Per key order, over the events delivered (an unacknowledged publish may have applied).
	byKey := map[string][]string{}
	for p := range log.first {
		k, _, _ := strings.Cut(p, ":")
		byKey[k] = append(byKey[k], p)
	}
	for k, ps := range byKey {
		slices.Sort(ps)
		for i := 1; i < len(ps); i++ {
			prev, cur := ps[i-1], ps[i]
			if len(log.ends[prev]) == 0 || log.ends[prev][0] > log.first[cur] {
				t.Fatalf("key %s: %s first started at step %d, before any handling of %s ended (%v)", k, cur, log.first[cur], prev, log.ends[prev])
			}
		}
	}
	st, err := pub.ConsumerInfo(ctx, "workers")
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != 0 || st.LagEvents != 0 {
		t.Fatalf("consumer after draining: %v", st)
	}
}

func maps(m map[string]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestAckInTransactionAppliesOnce: a consumer whose effect lives in caucus applies it and
// acknowledges the event in one transaction. A second copy of the transaction, and the
// transaction of a delivery that was delivered again since, are refused whole: the effect
// happens once.
func TestAckInTransactionAppliesOnce(t *testing.T) {
	tc := newTestCluster(t, 3)
	tc.waitLeader()
	waitLogVersion(t, tc, logpb.Version3)
	cli := clusterClient(t, tc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.ConsumerCreate(ctx, &client.ConsumerConfig{Name: "bank", Topics: []string{"deposits"}, AckWaitMs: 300}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Publish(ctx, client.NewEvent("deposits", "acct-1", []byte("10"))); err != nil {
		t.Fatal(err)
	}
	apply := func(d *client.Delivery) error {
		get, err := cli.Get(ctx, "balance/acct-1")
		if err != nil {
			return err
		}
		var bal, mod int64
		if len(get.Kvs) > 0 {
			fmt.Sscan(string(get.Kvs[0].Value), &bal)
			mod = get.Kvs[0].ModRevision
		}
		var amount int64
		fmt.Sscan(string(d.Event.Payload), &amount)
		r, err := cli.Txn(ctx).If(client.Compare(client.ModRevision("balance/acct-1"), "=", mod)).
			Then(client.OpPut("balance/acct-1", fmt.Sprint(bal+amount)), client.OpAck("bank", d)).Commit()
		if err == nil && !r.Succeeded {
			return errors.New("balance changed meanwhile")
		}
		return err
	}
	first, err := cli.Fetch(ctx, "bank", 1, 5*time.Second)
	if err != nil || len(first) != 1 {
		t.Fatalf("fetch: %v %v", first, err)
	}
	// Not acknowledged within the ack wait: the next fetch waits at the server for the deadline
	// and gets the event again.
	second, err := cli.Fetch(ctx, "bank", 1, 5*time.Second)
	if err != nil || len(second) != 1 || second[0].Attempt != 2 {
		t.Fatalf("fetch after the ack wait: %v %v", second, err)
	}
	if err := apply(first[0]); !client.IsFailedPrecondition(err) {
		t.Fatalf("transaction acknowledging a stale attempt: %v, want FailedPrecondition", err)
	}
	if err := apply(second[0]); err != nil {
		t.Fatal(err)
	}
	if err := apply(second[0]); !client.IsFailedPrecondition(err) {
		t.Fatalf("second copy of the transaction: %v, want FailedPrecondition", err)
	}
	get, err := cli.Get(ctx, "balance/acct-1")
	if err != nil || len(get.Kvs) != 1 || string(get.Kvs[0].Value) != "10" {
		t.Fatalf("balance %v (%v), want 10 once", get.GetKvs(), err)
	}
	st, err := cli.ConsumerInfo(ctx, "bank")
	if err != nil || st.Pending != 0 || st.LagEvents != 0 || st.Redelivered != 1 {
		t.Fatalf("consumer %v (%v)", st, err)
	}
	if more, err := cli.Fetch(ctx, "bank", 1, 500*time.Millisecond); err != nil || len(more) != 0 {
		t.Fatalf("the acknowledged event came back: %v %v", more, err)
	}
}

// TestConsumerCLI: the consumer commands against a real member: create, ls and info (with lag,
// simple and -o json), consume --count (in order, acknowledging), rm, and the errors.
func TestConsumerCLI(t *testing.T) {
	tc := newTestCluster(t, 1)
	tc.waitLeader()
	waitLogVersion(t, tc, logpb.Version3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := ctl.RunIO(ctx, append([]string{"--endpoints", tc.members[0].ClientURL}, args...), nil, &out, &errb)
		return out.String(), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("caucus %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	if out := must("consumer", "create", "orders-worker", "--topic", "orders", "--topic", "refunds.*", "--ack-wait", "5s", "--max-deliver", "3"); out != "consumer orders-worker created\n" {
		t.Fatalf("create printed %q", out)
	}
	must("consumer", "create", "orders-worker", "--topic", "orders", "--topic", "refunds.*", "--ack-wait", "5s", "--max-deliver", "3")
	if _, err := run("consumer", "create", "orders-worker", "--topic", "other"); err == nil || !strings.Contains(err.Error(), "already_exists") && !strings.Contains(err.Error(), "another configuration") {
		t.Fatalf("create with another configuration: %v", err)
	}
	if _, err := run("consumer", "create", "bad name", "--topic", "orders"); err == nil || !strings.Contains(err.Error(), "consumer name") {
		t.Fatalf("create with a bad name: %v", err)
	}
	if _, err := run("consumer", "create", "x"); err == nil || !errors.Is(err, ctl.ErrUsage) {
		t.Fatalf("create without a topic: %v", err)
	}
	for i, p := range []string{"first", "second", "third"} {
		must("publish", "--key", fmt.Sprint("k", i%2), "orders", p)
	}
	must("publish", "refunds.eu", "fourth")
	must("publish", "audit", "not selected")
	ls := must("consumer", "ls")
	if !strings.Contains(ls, "LAG EVENTS") || !strings.Contains(ls, "| orders-worker | orders,refunds.* |") {
		t.Fatalf("consumer ls printed\n%s", ls)
	}
	if fields := strings.Fields(strings.Split(ls, "\n")[3]); fields[7] != "4" {
		t.Fatalf("consumer ls lag %q, want 4 in\n%s", fields[7], ls)
	}
	info := must("consumer", "info", "orders-worker")
	for _, want := range []string{"lag: 4 events", "max deliver: 3", "ack wait: 5s", "dead-letter topic: orders-worker.dead-letter"} {
		if !strings.Contains(info, want) {
			t.Fatalf("consumer info does not say %q:\n%s", want, info)
		}
	}
	out := must("consume", "orders-worker", "--count", "4")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	// k0's second event waits for the ack of its first, which the fetch that got the others
	// precedes: "third" comes last.
	if len(lines) != 4 || !strings.HasSuffix(lines[0], "orders k0 first") || !strings.HasSuffix(lines[1], "orders k1 second") ||
		!strings.HasSuffix(lines[2], "refunds.eu  fourth") || !strings.HasSuffix(lines[3], "orders k0 third") {
		t.Fatalf("consume printed %q", lines)
	}
	var st struct {
		LagEvents string `json:"lagEvents"`
		Pending   string `json:"pending"`
		AckFloor  string `json:"ackFloor"`
	}
	if err := json.Unmarshal([]byte(must("consumer", "info", "orders-worker", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.LagEvents != "" || st.Pending != "" || st.AckFloor == "" {
		t.Fatalf("consumer info -o json after consuming: %+v", st)
	}
	var list struct {
		Consumers []json.RawMessage `json:"consumers"`
	}
	if err := json.Unmarshal([]byte(must("consumer", "ls", "-o", "json")), &list); err != nil || len(list.Consumers) != 1 {
		t.Fatalf("consumer ls -o json: %v %v", list, err)
	}
	must("publish", "orders", "fifth")
	if out := must("consume", "orders-worker", "--count", "1", "-o", "json"); !strings.Contains(out, `"attempt":1`) {
		t.Fatalf("consume -o json printed %q", out)
	}
	if out := must("consumer", "rm", "orders-worker"); out != "consumer orders-worker deleted\n" {
		t.Fatalf("rm printed %q", out)
	}
	if _, err := run("consumer", "info", "orders-worker"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("info of a deleted consumer: %v", err)
	}
	if _, err := run("consume", "orders-worker", "--count", "1"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("consume of a deleted consumer: %v", err)
	}
}

// TestConsumeShutsDownGracefully: when its context ends, Consume stops fetching, lets the
// handlers that run finish (their context is not canceled), acknowledges them, and only then
// returns.
func TestConsumeShutsDownGracefully(t *testing.T) {
	tc := newTestCluster(t, 1)
	tc.waitLeader()
	waitLogVersion(t, tc, logpb.Version3)
	cli := clusterClient(t, tc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.ConsumerCreate(ctx, &client.ConsumerConfig{Name: "g", Topics: []string{"t"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := cli.Publish(ctx, client.NewEvent("t", fmt.Sprint("k", i), []byte(fmt.Sprint(i)))); err != nil {
			t.Fatal(err)
		}
	}
	started, release := make(chan struct{}, 3), make(chan struct{})
	var finished atomic.Int32
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	var atReturn atomic.Int32 // handlers finished when Consume returned
	go func() {
		defer close(done)
		err := cli.Consume(cctx, "g", func(hctx context.Context, d *client.Delivery) error {
			started <- struct{}{}
			<-release
			if hctx.Err() != nil {
				return hctx.Err() // a canceled handler context would nak
			}
			finished.Add(1)
			return nil
		}, client.WithParallelism(2), client.WithFetchWait(time.Second))
		atReturn.Store(finished.Load())
		done <- err
	}()
	<-started
	<-started
	stop()
	// A Consume that did not wait would return at once: give it the chance to show it. (The
	// wait cannot fail a Consume that waits.)
	select {
	case err := <-done:
		t.Fatalf("Consume returned (%v) while its handlers ran", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := atReturn.Load(); n != 2 {
		t.Fatalf("%d handlers had finished when Consume returned, want the 2 running at cancel", n)
	}
	st, err := cli.ConsumerInfo(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	// The two handled events are acknowledged; the third, fetched ahead of the handlers, was
	// given back unhandled (at most pending again, due at once).
	if st.Pending > 1 || st.LagEvents != 1 || st.DeliveredRevision == 0 || finished.Load() != 2 {
		t.Fatalf("after shutdown: %v", st)
	}
}
