package history

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestRecorder(t *testing.T) {
	r := New()
	p0, p1 := r.NewProcess(), r.NewProcess()
	if p0 != 0 || p1 != 1 {
		t.Fatalf("processes not dense from zero: %d %d", p0, p1)
	}
	a := r.Invoke(p0, "n1", "a")
	b := r.Invoke(p1, "n2", "b")
	c := r.Invoke(p1, "n2", "c") // never completed: in flight at snapshot time
	r.Complete(a, OK, "out", nil)
	r.Complete(b, Unknown, nil, errors.New("timeout"))
	_ = c
	ops := r.Ops()
	if len(ops) != 3 || ops[0].ID != 0 || ops[2].ID != 2 {
		t.Fatalf("ops %+v", ops)
	}
	if ops[0].Return < ops[0].Call || ops[0].Status != OK || ops[0].Output != "out" {
		t.Fatalf("completed op %+v", ops[0])
	}
	if ops[1].Return != Infinity || ops[1].Error != "timeout" {
		t.Fatalf("unknown op must return at infinity: %+v", ops[1])
	}
	if ops[2].Status != Unknown || ops[2].Return != Infinity {
		t.Fatalf("in-flight op must be reported unknown: %+v", ops[2])
	}
	if got := Count(ops); got != (Counts{OK: 1, Unknown: 2}) {
		t.Fatalf("counts %+v", got)
	}
	p := filepath.Join(t.TempDir(), "h.json")
	if err := WriteJSON(p, ops); err != nil {
		t.Fatal(err)
	}
	var back []map[string]any
	b2, _ := os.ReadFile(p)
	if err := json.Unmarshal(b2, &back); err != nil || len(back) != 3 || back[1]["status"] != "unknown" {
		t.Fatalf("history.json round trip: %v %v", err, back)
	}
}

// TestConcurrentMonotonic: concurrent workers get unique ids, and an operation that completes
// before another is invoked has a smaller Return than that one's Call (monotonic clock).
func TestConcurrentMonotonic(t *testing.T) {
	r := New()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := r.NewProcess()
			for i := 0; i < 100; i++ {
				op := r.Invoke(p, "", i)
				r.Complete(op, OK, i, nil)
			}
		}()
	}
	wg.Wait()
	ops := r.Ops()
	last := map[int]int64{}
	for i, op := range ops {
		if op.ID != i {
			t.Fatalf("op %d has id %d", i, op.ID)
		}
		if op.Call < last[op.Process] {
			t.Fatalf("process %d: op invoked at %d before its previous op returned at %d", op.Process, op.Call, last[op.Process])
		}
		last[op.Process] = op.Return
	}
}

func TestProgress(t *testing.T) {
	r := New()
	r.Complete(r.Invoke(0, "", 1), OK, nil, nil)
	r.Complete(r.Invoke(0, "", 2), Fail, nil, nil)
	r.Complete(r.Invoke(1, "", 3), Unknown, nil, nil)
	r.Invoke(2, "", 4)
	c, inFlight := r.Progress()
	if c != (Counts{OK: 1, Fail: 1, Unknown: 1}) || inFlight != 1 {
		t.Fatalf("progress %+v, %d in flight", c, inFlight)
	}
}
