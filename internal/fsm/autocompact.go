package fsm

import (
	"fmt"
	"time"
)

// Automatic compaction, with etcd's two modes. The leader proposes an ordinary Compaction
// command, so every member compacts at the same revision through the log; a proposal that
// loses a race (a manual compaction, a leadership change) is refused by the state machine as
// already compacted, which is harmless.
//
//   - revision: keep the newest Retention revisions; every AutoCompaction.Interval the leader
//     compacts to (current revision - Retention).
//   - periodic: keep Period of history; the leader samples the revision every Period/10 (at
//     least every second) and compacts to the newest sample at least Period old.

// Auto-compaction modes.
const (
	AutoCompactionRevision = "revision"
	AutoCompactionPeriodic = "periodic"
)

// DefaultAutoCompactionInterval is how often revision mode compacts (etcd's is also 5 minutes).
const DefaultAutoCompactionInterval = 5 * time.Minute

// AutoCompaction configures automatic compaction; the zero value disables it.
type AutoCompaction struct {
	Mode string // "", AutoCompactionRevision or AutoCompactionPeriodic
	// Retention is the number of revisions kept (revision mode).
	Retention int64
	// Period is how much history is kept (periodic mode).
	Period time.Duration
	// Interval is how often revision mode compacts (0: DefaultAutoCompactionInterval).
	Interval time.Duration
}

// Validate reports a configuration that cannot work.
func (a AutoCompaction) Validate() error {
	switch a.Mode {
	case "":
		return nil
	case AutoCompactionRevision:
		if a.Retention <= 0 {
			return fmt.Errorf("fsm: auto-compaction mode revision needs a retention of at least 1 revision, got %d", a.Retention)
		}
	case AutoCompactionPeriodic:
		if a.Period < time.Second {
			return fmt.Errorf("fsm: auto-compaction mode periodic needs a retention of at least 1s, got %v", a.Period)
		}
	default:
		return fmt.Errorf("fsm: unknown auto-compaction mode %q (want %q or %q)", a.Mode, AutoCompactionRevision, AutoCompactionPeriodic)
	}
	if a.Interval < 0 {
		return fmt.Errorf("fsm: negative auto-compaction interval %v", a.Interval)
	}
	return nil
}

// revSample is the store's revision at a moment, for periodic mode.
type revSample struct {
	at  time.Time
	rev int64
}

// autoCompactor is the loop's state for automatic compaction.
type autoCompactor struct {
	cfg     AutoCompaction
	last    time.Time   // last revision-mode check, or last periodic sample
	samples []revSample // periodic mode, oldest first
}

// target returns the revision to compact to now, or 0 for none. It runs on the leader's ticks.
func (a *autoCompactor) target(now time.Time, rev, compacted int64) int64 {
	switch a.cfg.Mode {
	case AutoCompactionRevision:
		every := a.cfg.Interval
		if every == 0 {
			every = DefaultAutoCompactionInterval
		}
		if now.Sub(a.last) < every {
			return 0
		}
		a.last = now
		if t := rev - a.cfg.Retention; t > compacted {
			return t
		}
	case AutoCompactionPeriodic:
		every := max(a.cfg.Period/10, time.Second)
		if now.Sub(a.last) >= every {
			a.last = now
			a.samples = append(a.samples, revSample{at: now, rev: rev})
		}
		// The newest sample at least Period old is the target; older ones are no longer needed.
		i := -1
		for j, s := range a.samples {
			if now.Sub(s.at) >= a.cfg.Period {
				i = j
			}
		}
		if i < 0 {
			return 0
		}
		t := a.samples[i].rev
		a.samples = a.samples[i+1:]
		if t > compacted {
			return t
		}
	}
	return 0
}
