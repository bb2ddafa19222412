// Package model holds the checkers that judge a recorded history (package history) against the
// specification of each workload:
//
//   - register: single-key read/write/compare-and-swap registers, linearizable reads and writes
//     checked with porcupine (partitioned per key, so each key is an independent search);
//     serializable reads checked separately: they may be stale but must return a value that some
//     write invoked before the read returned could have produced (or the initial value).
//   - set: unique adds; every acknowledged add is in the final linearizable read and in every
//     linearizable read invoked after it was acknowledged; nothing is ever read that was not
//     attempted (or was attempted only by a definitely-failed add); no element, once read, vanishes
//     from a later linearizable read.
//   - bank: transfers between accounts; every read of all accounts (one Range at one revision)
//     sees the same total, every account, and no negative balance; linearizable reads never go
//     back in revision relative to reads that finished before them.
//   - consumer: events published with unique ids and processed through a durable consumer, each
//     delivery by a transaction that writes an effect and acknowledges it; every acknowledged
//     event has exactly one effect, and the effects of a key follow the stream's order (see
//     consumer.go).
//   - watch: watchers stream the run's key changes and events from its start revision and resume
//     after every break; each saw exactly the reference stream (read at the end) through the
//     revision it was complete at: no gap, no duplicate, no reorder (see watch.go).
//
// Every checker is pure: history in, verdict out. None relies on wall-clock time beyond the
// recorded monotonic timestamps, so a saved history.json re-checks to the same verdict.
package model

import (
	"fmt"
	"strings"
)

// Violation is one way the history broke the specification.
type Violation struct {
	// Kind is a short stable tag ("nonlinearizable", "stale-read", "lost", "unexpected", ...).
	Kind string `json:"kind"`
	// Detail explains the violation for a human.
	Detail string `json:"detail"`
	// Ops are the ids (history.Op.ID) of the operations involved.
	Ops []int `json:"ops,omitempty"`
}

func (v Violation) String() string { return fmt.Sprintf("%s: %s (ops %v)", v.Kind, v.Detail, v.Ops) }

// Result is a checker's verdict.
type Result struct {
	// Valid is true when no violation was found and the check was conclusive.
	Valid bool `json:"valid"`
	// Inconclusive is set when a search timed out: no violation found, none ruled out.
	Inconclusive bool        `json:"inconclusive,omitempty"`
	Violations   []Violation `json:"violations,omitempty"`
	// Stats holds checker-specific counters for the summary.
	Stats map[string]int `json:"stats,omitempty"`
}

func (r Result) String() string {
	if r.Valid {
		return "valid"
	}
	var b strings.Builder
	if r.Inconclusive {
		b.WriteString("inconclusive (checker timed out)")
	} else {
		b.WriteString("INVALID")
	}
	for i, v := range r.Violations {
		if i == 10 {
			fmt.Fprintf(&b, "\n  ... %d more", len(r.Violations)-i)
			break
		}
		b.WriteString("\n  ")
		b.WriteString(v.String())
	}
	return b.String()
}

func (r *Result) add(kind string, ops []int, format string, args ...any) {
	r.Valid = false
	r.Violations = append(r.Violations, Violation{Kind: kind, Detail: fmt.Sprintf(format, args...), Ops: ops})
}
