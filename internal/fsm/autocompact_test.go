package fsm

import (
	"testing"
	"time"
)

func TestAutoCompactionRevisionMode(t *testing.T) {
	a := &autoCompactor{cfg: AutoCompaction{Mode: AutoCompactionRevision, Retention: 100, Interval: time.Minute}}
	t0 := time.Unix(1000, 0)
	if got := a.target(t0, 50, 0); got != 0 {
		t.Fatalf("target with fewer revisions than the retention = %d, want none", got)
	}
	if got := a.target(t0.Add(30*time.Second), 500, 0); got != 0 {
		t.Fatalf("target before the interval passed = %d, want none", got)
	}
	if got := a.target(t0.Add(time.Minute), 500, 0); got != 400 {
		t.Fatalf("target = %d, want 500-100", got)
	}
	if got := a.target(t0.Add(2*time.Minute), 450, 400); got != 0 {
		t.Fatalf("target below the compacted revision = %d, want none", got)
	}
}

func TestAutoCompactionPeriodicMode(t *testing.T) {
	a := &autoCompactor{cfg: AutoCompaction{Mode: AutoCompactionPeriodic, Period: 10 * time.Minute}}
	t0 := time.Unix(1000, 0)
	rev := int64(1)
	var got []int64
	// One sample per minute (Period/10), the revision growing by 10 a minute.
	for m := 0; m <= 25; m++ {
		if r := a.target(t0.Add(time.Duration(m)*time.Minute), rev, 0); r != 0 {
			got = append(got, r)
		}
		rev += 10
	}
	// Nothing is compacted before 10 minutes of history exist; then, each minute, the revision
	// of 10 minutes earlier.
	if len(got) == 0 || got[0] != 1 {
		t.Fatalf("targets %v: want the first, at minute 10, to be the revision sampled at minute 0 (1)", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+10 {
			t.Fatalf("targets %v: want one step of 10 revisions a minute", got)
		}
	}
	if len(got) != 16 {
		t.Fatalf("%d targets over minutes 10..25, want 16: %v", len(got), got)
	}
	if len(a.samples) > 11 {
		t.Fatalf("%d samples kept; only the last Period's are needed", len(a.samples))
	}
}

func TestAutoCompactionValidate(t *testing.T) {
	for _, c := range []AutoCompaction{
		{Mode: "sometimes", Retention: 1},
		{Mode: AutoCompactionRevision},
		{Mode: AutoCompactionPeriodic, Period: time.Millisecond},
		{Mode: AutoCompactionRevision, Retention: 1, Interval: -time.Second},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	for _, c := range []AutoCompaction{{}, {Mode: AutoCompactionRevision, Retention: 1}, {Mode: AutoCompactionPeriodic, Period: time.Hour}} {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v refused: %v", c, err)
		}
	}
}
