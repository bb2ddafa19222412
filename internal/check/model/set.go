package model

import (
	"sort"

	"github.com/caucus/caucus/internal/check/history"
)

// SetAdd is the input of an add: put of a unique element under the set's prefix.
type SetAdd struct {
	Element int `json:"element"`
}

// SetRead is the input of a read of the whole set.
type SetRead struct {
	// Final marks the read taken after every add completed; the lost-element check uses it.
	Final        bool `json:"final,omitempty"`
	Serializable bool `json:"serializable,omitempty"`
}

// SetReadResult is the output of a completed SetRead.
type SetReadResult struct {
	Elements []int `json:"elements"`
}

// CheckSet checks a set history. It requires at least one successful final read: without one,
// nothing can be said about lost elements, and that is reported as a violation of the run rather
// than silently passing.
func CheckSet(ops []history.Op) Result {
	res := Result{Valid: true, Stats: map[string]int{}}

	type add struct {
		op     history.Op
		failed bool
	}
	adds := map[int]add{}
	var reads []history.Op
	for _, op := range ops {
		switch in := op.Input.(type) {
		case SetAdd:
			adds[in.Element] = add{op: op, failed: op.Status == history.Fail}
		case SetRead:
			if op.Status == history.OK {
				reads = append(reads, op)
			}
		}
	}
	sort.Slice(reads, func(i, j int) bool { return reads[i].Call < reads[j].Call })

	// Reads and acknowledged adds ordered by completion, consumed with a cursor as reads are
	// visited in invocation order: "known" accumulates every element that a linearizable read
	// invoked now must contain, with the op that made it known.
	byReturn := append([]history.Op(nil), reads...)
	sort.Slice(byReturn, func(i, j int) bool { return byReturn[i].Return < byReturn[j].Return })
	var acks []history.Op
	for _, a := range adds {
		if a.op.Status == history.OK {
			acks = append(acks, a.op)
		}
	}
	sort.Slice(acks, func(i, j int) bool { return acks[i].Return < acks[j].Return })
	known := map[int]int{}
	ri, ai := 0, 0

	var final *history.Op
	for i := range reads {
		r := &reads[i]
		in := r.Input.(SetRead)
		present := map[int]bool{}
		for _, e := range r.Output.(SetReadResult).Elements {
			present[e] = true
			a, ok := adds[e]
			switch {
			case !ok:
				res.add("unexpected", []int{r.ID}, "read returned element %d that was never added", e)
			case a.failed:
				res.add("unexpected", []int{r.ID, a.op.ID}, "read returned element %d whose add definitely failed", e)
			case a.op.Call > r.Return:
				res.add("unexpected", []int{r.ID, a.op.ID}, "read returned element %d before its add was invoked", e)
			}
		}
		if in.Final {
			final = r
		}
		for ; ri < len(byReturn) && byReturn[ri].Return < r.Call; ri++ {
			for _, e := range byReturn[ri].Output.(SetReadResult).Elements {
				if _, ok := known[e]; !ok {
					known[e] = byReturn[ri].ID
				}
			}
		}
		for ; ai < len(acks) && acks[ai].Return < r.Call; ai++ {
			if _, ok := known[acks[ai].Input.(SetAdd).Element]; !ok {
				known[acks[ai].Input.(SetAdd).Element] = acks[ai].ID
			}
		}
		if in.Serializable {
			continue
		}
		// A linearizable read must contain every add acknowledged before it began and every
		// element a read that finished before it began observed: the set only grows.
		var missing []int
		for e := range known {
			if !present[e] {
				missing = append(missing, e)
			}
		}
		if len(missing) > 0 {
			sort.Ints(missing)
			kind := "stale-read"
			if in.Final {
				kind = "lost"
			}
			ids := []int{r.ID}
			for _, e := range missing[:min(len(missing), 10)] {
				ids = append(ids, known[e])
			}
			res.add(kind, ids, "%d element(s) acknowledged or observed before the linearizable read began are missing, e.g. %v", len(missing), missing[:min(len(missing), 10)])
		}
	}
	if final == nil {
		res.add("no-final-read", nil, "no final read succeeded; lost elements cannot be ruled out")
	}

	acked, unknown := 0, 0
	for _, a := range adds {
		switch a.op.Status {
		case history.OK:
			acked++
		case history.Unknown:
			unknown++
		}
	}
	res.Stats["adds-acknowledged"] = acked
	res.Stats["adds-unknown"] = unknown
	res.Stats["reads"] = len(reads)
	if final != nil {
		res.Stats["final-size"] = len(final.Output.(SetReadResult).Elements)
	}
	return res
}
