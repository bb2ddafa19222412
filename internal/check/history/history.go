// Package history records the operations a checker workload performs against a cluster, in the
// shape porcupine and the other models in internal/check/model consume.
//
// Every operation is recorded twice: once at invocation, once at completion. Timestamps come from
// Go's monotonic clock (time.Since on one fixed start), so wall-clock steps during a run cannot
// reorder operations.
//
// # Invariants
//
//   - Call <= Return for every completed operation; timestamps of one Recorder are comparable.
//   - An operation whose outcome is unknown (the request may have reached the cluster but no
//     answer came back: timeout, connection reset after sending, unavailable after sending) has
//     Status Unknown and Return = Infinity. Porcupine then may linearize it at any point after its
//     invocation, which covers both "it happened" and "it never happened" (linearized after every
//     other operation, where it can affect nothing observed).
//   - An operation with Status Fail definitely did not take effect (e.g. the connection was refused
//     before anything was sent); checkers drop it.
//   - A process (porcupine's ClientId) has at most one operation in flight. After an Unknown
//     operation the worker continues under a fresh process id, as in Jepsen: the old process is
//     "crashed" because its last operation never returned.
package history

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sync"
	"time"
)

// Infinity is the Return timestamp of an operation whose outcome is unknown.
const Infinity int64 = math.MaxInt64

// Status is the outcome class of an operation.
type Status string

const (
	// OK: the operation completed and its output is known.
	OK Status = "ok"
	// Fail: the operation definitely did not take effect.
	Fail Status = "fail"
	// Unknown: the operation may or may not have taken effect.
	Unknown Status = "unknown"
)

// Op is one recorded operation. Input and Output are workload specific (see package model);
// they are kept as concrete Go values so that checkers can type-switch on them.
type Op struct {
	ID      int    `json:"id"`
	Process int    `json:"process"`
	Call    int64  `json:"call"`
	Return  int64  `json:"return"`
	Status  Status `json:"status"`
	Input   any    `json:"input"`
	Output  any    `json:"output,omitempty"`
	// Error is the error text of a Fail or Unknown operation, for humans reading history.json.
	Error string `json:"error,omitempty"`
	// Node is the client URL the request was sent to.
	Node string `json:"node,omitempty"`
}

// Recorder collects operations from concurrent workers. The zero value is not usable: use New.
type Recorder struct {
	start time.Time

	mu          sync.Mutex
	ops         []*Op
	nextProcess int
}

// New returns a Recorder whose timestamps count nanoseconds from now.
func New() *Recorder { return &Recorder{start: time.Now()} }

// Now is the Recorder's current monotonic timestamp.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// Elapsed converts a timestamp back to a duration since the start.
func (r *Recorder) Elapsed(ts int64) time.Duration { return time.Duration(ts) }

// NewProcess allocates a fresh, dense, zero-based process id.
func (r *Recorder) NewProcess() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.nextProcess
	r.nextProcess++
	return p
}

// Invoke records the invocation of an operation and returns it; the caller must finish it with
// Complete exactly once.
func (r *Recorder) Invoke(process int, node string, input any) *Op {
	op := &Op{Process: process, Input: input, Node: node}
	r.mu.Lock()
	op.ID = len(r.ops)
	r.ops = append(r.ops, op)
	r.mu.Unlock()
	// Take the timestamp after the bookkeeping so that Call is as late as possible: a later Call
	// only shrinks the window, which never hides a violation.
	op.Call = r.Now()
	return op
}

// Complete records the outcome of op. For Unknown the Return is Infinity regardless of when the
// caller gave up.
func (r *Recorder) Complete(op *Op, status Status, output any, err error) {
	now := r.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	op.Status = status
	op.Output = output
	if err != nil {
		op.Error = err.Error()
	}
	if status == Unknown {
		op.Return = Infinity
	} else {
		op.Return = now
	}
}

// Ops returns a snapshot of the recorded operations, in invocation order. Operations still in
// flight are reported as Unknown (their callers have not returned, so nothing is known).
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Op, len(r.ops))
	for i, op := range r.ops {
		out[i] = *op
		if out[i].Status == "" {
			out[i].Status = Unknown
			out[i].Return = Infinity
		}
	}
	return out
}

// Progress tallies the completed operations by status, and those still in flight, without
// copying the history.
func (r *Recorder) Progress() (c Counts, inFlight int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, op := range r.ops {
		switch op.Status {
		case OK:
			c.OK++
		case Fail:
			c.Fail++
		case Unknown:
			c.Unknown++
		default:
			inFlight++
		}
	}
	return c, inFlight
}

// Counts tallies operations by status.
type Counts struct {
	OK, Fail, Unknown int
}

// Count tallies ops by status.
func Count(ops []Op) Counts {
	var c Counts
	for _, op := range ops {
		switch op.Status {
		case OK:
			c.OK++
		case Fail:
			c.Fail++
		default:
			c.Unknown++
		}
	}
	return c
}

// WriteJSON writes ops to path as a JSON array.
func WriteJSON(path string, ops []Op) error {
	b, err := json.MarshalIndent(ops, "", " ")
	if err != nil {
		return fmt.Errorf("history: encode: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("history: write %s: %w", path, err)
	}
	return nil
}
