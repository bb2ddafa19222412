package kvbench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMain lets the test binary serve as an etcd member for TestClusters and as a NATS server
// for TestNATS, as cmd/kvbench does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == EtcdMemberCommand {
		if err := RunEtcdMember(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if len(os.Args) > 1 && os.Args[1] == NATSMemberCommand {
		if err := RunNATSMember(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeKV records what the runner asks for.
type fakeKV struct {
	mu                  sync.Mutex
	puts, lin, ser      int
	keys                map[string]bool
	values              map[int]bool
	failEvery, calls    int
	inflight, maxFlight atomic.Int32
}

func (f *fakeKV) op(record func()) error {
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		m := f.maxFlight.Load()
		if n <= m || f.maxFlight.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(50 * time.Microsecond) // let clients overlap
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.failEvery > 0 && f.calls%f.failEvery == 0 {
		return errors.New("injected")
	}
	record()
	return nil
}

func (f *fakeKV) Put(_ context.Context, key, value string) error {
	return f.op(func() { f.puts++; f.keys[key] = true; f.values[len(value)] = true })
}

func (f *fakeKV) Get(_ context.Context, key string, serializable bool) error {
	return f.op(func() {
		if serializable {
			f.ser++
		} else {
			f.lin++
		}
		f.keys[key] = true
	})
}

func (f *fakeKV) Close() error { return nil }

func newFake() *fakeKV { return &fakeKV{keys: map[string]bool{}, values: map[int]bool{}} }

func testWorkload(op Op, clients, requests int) Workload {
	return Workload{Op: op, Clients: clients, Requests: requests, KeySize: 8, ValueSize: 256,
		KeySpace: 1000, Timeout: time.Second}
}

func TestRunCountsAndShapes(t *testing.T) {
	f := newFake()
	res, err := Run(context.Background(), []KV{f}, testWorkload(OpPut, 8, 500))
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 500 || f.puts != 500 || res.Errors != 0 {
		t.Fatalf("requests %d, puts %d, errors %d; want 500, 500, 0", res.Requests, f.puts, res.Errors)
	}
	for k := range f.keys {
		if len(k) != 8 {
			t.Fatalf("key %q is not 8 bytes", k)
		}
	}
	if len(f.values) != 1 || !f.values[256] {
		t.Fatalf("value sizes %v, want only 256", f.values)
	}
	if f.maxFlight.Load() < 2 {
		t.Fatalf("at most %d requests in flight with 8 clients", f.maxFlight.Load())
	}
	if res.P50 <= 0 || res.P99 < res.P50 || res.Throughput() <= 0 {
		t.Fatalf("implausible result %+v", res)
	}

	for _, op := range []Op{OpRangeLin, OpRangeSer} {
		f := newFake()
		w := testWorkload(op, 1, 50)
		if _, err := Run(context.Background(), []KV{f}, w); err != nil {
			t.Fatal(err)
		}
		if f.maxFlight.Load() != 1 {
			t.Fatalf("%s: %d in flight with one client", op, f.maxFlight.Load())
		}
		wantLin, wantSer := 50, 0
		if op == OpRangeSer {
			wantLin, wantSer = 0, 50
		}
		if f.lin != wantLin || f.ser != wantSer || len(f.keys) != 1 || !f.keys[w.RangeKey()] {
			t.Fatalf("%s: lin %d ser %d keys %v", op, f.lin, f.ser, f.keys)
		}
	}
}

// The load workload writes each key of the key space exactly once, whatever Requests says.
func TestRunLoadWritesEveryKeyOnce(t *testing.T) {
	for _, space := range []int{1000, loadStride * 2} {
		f := newFake()
		w := testWorkload(OpLoad, 8, 10)
		w.KeySpace = space
		res, err := Run(context.Background(), []KV{f}, w)
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != space || f.puts != space || len(f.keys) != space {
			t.Fatalf("key space %d: %d requests, %d puts, %d distinct keys", space, res.Requests, f.puts, len(f.keys))
		}
	}
}

func TestRunSpreadsOverConnections(t *testing.T) {
	a, b := newFake(), newFake()
	if _, err := Run(context.Background(), []KV{a, b}, testWorkload(OpRangeSer, 4, 400)); err != nil {
		t.Fatal(err)
	}
	if a.ser == 0 || b.ser == 0 || a.ser+b.ser != 400 {
		t.Fatalf("connections served %d and %d requests", a.ser, b.ser)
	}
}

func TestRunFailsOnErrors(t *testing.T) {
	f := newFake()
	f.failEvery = 2
	if _, err := Run(context.Background(), []KV{f}, testWorkload(OpPut, 2, 200)); err == nil {
		t.Fatal("half the requests failed but Run reported success")
	}
}

func TestRunStopsAtDuration(t *testing.T) {
	w := testWorkload(OpRangeLin, 2, 0)
	w.Duration = 100 * time.Millisecond
	start := time.Now()
	res, err := Run(context.Background(), []KV{newFake()}, w)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 2*time.Second || res.Requests == 0 {
		t.Fatalf("ran %v with %d requests", el, res.Requests)
	}
}

func TestProcStats(t *testing.T) {
	// Burn some CPU so that the counter (10 ms resolution) moves.
	before, err := ProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for start := time.Now(); time.Since(start) < 100*time.Millisecond; {
		x++
	}
	after, err := ProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Fatalf("CPU did not advance: %v -> %v (%d)", before, after, x)
	}
	rss, err := ProcRSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Fatalf("RSS %d, %v", rss, err)
	}
}

// TestClusters starts a real three-member cluster of each system that can be built and runs
// every workload briefly against it (the event workloads in testEventWorkloads). caucus is skipped while its server does not build.
func TestClusters(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	systems := []System{Etcd{Exe: os.Args[0]}}
	bin := filepath.Join(t.TempDir(), "caucus")
	if err := BuildCaucus(context.Background(), "..", bin); err != nil {
		t.Logf("caucus server does not build, testing etcd only: %v", err)
	} else {
		systems = append(systems, Caucus{Bin: bin})
	}
	for _, sys := range systems {
		t.Run(sys.Name(), func(t *testing.T) {
			ctx := context.Background()
			c, err := StartCluster(ctx, sys, t.TempDir(), 3)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Stop()
			kv, err := sys.Dial(c.Endpoints())
			if err != nil {
				t.Fatal(err)
			}
			defer kv.Close()
			w := testWorkload(OpPut, 4, 100)
			if err := Prepare(ctx, kv, w); err != nil {
				t.Fatal(err)
			}
			for _, op := range []Op{OpPut, OpRangeLin, OpRangeSer} {
				w.Op = op
				res, err := Run(ctx, []KV{kv}, w)
				if err != nil {
					t.Fatal(err)
				}
				if res.Requests != 100 {
					t.Fatalf("%s: %d requests done", op, res.Requests)
				}
			}
			testEventWorkloads(t, sys, c, kv)
			if cpu, err := c.CPU(); err != nil || cpu <= 0 {
				t.Fatalf("server CPU %v, %v", cpu, err)
			}
			if rss, err := c.RSS(); err != nil || rss <= 0 {
				t.Fatalf("server RSS %d, %v", rss, err)
			}
			if err := c.Stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
