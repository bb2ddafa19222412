package model

import (
	"fmt"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/caucus/caucus/internal/check/history"
)

// Register operation kinds.
const (
	RegRead  = "read"
	RegWrite = "write"
	RegCAS   = "cas"
)

// RegisterInput is the input of a register operation. The empty string is the initial value: the
// key does not exist. Workloads never write "" so that "absent" is unambiguous.
type RegisterInput struct {
	Kind string `json:"kind"`
	Key  string `json:"key"`
	// Value is the value written (write, cas).
	Value string `json:"value,omitempty"`
	// Expect is the value a cas compares against.
	Expect string `json:"expect,omitempty"`
	// Serializable marks a read served from the member's local state; such reads are not part of
	// the linearizability search.
	Serializable bool `json:"serializable,omitempty"`
}

// RegisterOutput is the output of a completed register operation.
type RegisterOutput struct {
	// Value read ("" = key absent).
	Value string `json:"value,omitempty"`
	// Succeeded reports whether a cas's compare held.
	Succeeded bool `json:"succeeded,omitempty"`
}

// RegisterModel is the porcupine model of one register per key. Output nil means the outcome is
// unknown: the step then accepts whatever the operation would have done from that state.
var RegisterModel = porcupine.Model{
	Partition: func(ops []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range ops {
			k := op.Input.(RegisterInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		st := state.(string)
		in := input.(RegisterInput)
		out, known := output.(RegisterOutput)
		switch in.Kind {
		case RegRead:
			return known && out.Value == st, st
		case RegWrite:
			return true, in.Value
		case RegCAS:
			holds := st == in.Expect
			if known && out.Succeeded != holds {
				return false, st
			}
			if holds {
				return true, in.Value
			}
			return true, st
		}
		return false, st
	},
	DescribeOperation: func(input, output any) string {
		in := input.(RegisterInput)
		out, known := output.(RegisterOutput)
		res := "?"
		switch in.Kind {
		case RegRead:
			if known {
				res = fmt.Sprintf("%q", out.Value)
			}
			return fmt.Sprintf("read(%s) -> %s", in.Key, res)
		case RegWrite:
			if known {
				res = "ok"
			}
			return fmt.Sprintf("write(%s, %q) -> %s", in.Key, in.Value, res)
		default:
			if known {
				res = fmt.Sprint(out.Succeeded)
			}
			return fmt.Sprintf("cas(%s, %q -> %q) -> %s", in.Key, in.Expect, in.Value, res)
		}
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state.(string)) },
}

// RegisterCheck is the outcome of CheckRegister, with what is needed to visualize it.
type RegisterCheck struct {
	Result
	info porcupine.LinearizationInfo
}

// Visualize writes porcupine's HTML visualization of the linearizability search to path.
func (c RegisterCheck) Visualize(path string) error {
	if err := porcupine.VisualizePath(RegisterModel, c.info, path); err != nil {
		return fmt.Errorf("model: visualize %s: %w", path, err)
	}
	return nil
}

// PorcupineOps converts the linearizable part of a register history to porcupine operations:
// definitely-failed operations and unknown reads (which changed nothing) are dropped;
// unknown writes keep Return = Infinity and a nil Output.
func PorcupineOps(ops []history.Op) []porcupine.Operation {
	var out []porcupine.Operation
	for _, op := range ops {
		in, ok := op.Input.(RegisterInput)
		if !ok || in.Serializable || op.Status == history.Fail {
			continue
		}
		pop := porcupine.Operation{ClientId: op.Process, Input: in, Call: op.Call, Return: op.Return, Metadata: op.ID}
		if op.Status == history.OK {
			pop.Output = op.Output.(RegisterOutput)
		} else if in.Kind == RegRead {
			continue
		} else {
			pop.Return = history.Infinity
		}
		out = append(out, pop)
	}
	return out
}

// CheckRegister checks a register history. timeout bounds porcupine's search (0 = none); a
// search that times out yields an Inconclusive result rather than a false verdict.
func CheckRegister(ops []history.Op, timeout time.Duration) RegisterCheck {
	res := RegisterCheck{Result: Result{Valid: true, Stats: map[string]int{}}}
	pops := PorcupineOps(ops)
	res.Stats["linearizable-ops"] = len(pops)
	verdict, info := porcupine.CheckOperationsVerbose(RegisterModel, pops, timeout)
	res.info = info
	switch verdict {
	case porcupine.Illegal:
		res.add("nonlinearizable", illegalOps(pops, info), "no linearization of the register history exists (see the visualization)")
	case porcupine.Unknown:
		res.Valid = false
		res.Inconclusive = true
	}
	checkSerializableReads(ops, &res.Result)
	return res
}

// illegalOps names the operations of the partitions that porcupine could not linearize: those
// whose longest partial linearization does not cover the whole partition.
func illegalOps(pops []porcupine.Operation, info porcupine.LinearizationInfo) []int {
	parts := RegisterModel.Partition(pops)
	partials := info.PartialLinearizations()
	var ids []int
	for i, part := range parts {
		if i >= len(partials) {
			break
		}
		longest := 0
		for _, lin := range partials[i] {
			longest = max(longest, len(lin))
		}
		if longest < len(part) {
			for _, op := range part {
				ids = append(ids, op.Metadata.(int))
			}
		}
	}
	if len(ids) > 20 {
		ids = ids[:20]
	}
	return ids
}

// checkSerializableReads: a serializable read may be stale, but it reads committed state, so the
// value must be "" (initial) or a value some non-failed write/cas of that key was invoked with
// before the read returned.
func checkSerializableReads(ops []history.Op, res *Result) {
	type write struct {
		call int64
		id   int
	}
	written := map[[2]string][]write{}
	for _, op := range ops {
		in, ok := op.Input.(RegisterInput)
		if !ok || op.Status == history.Fail || (in.Kind != RegWrite && in.Kind != RegCAS) {
			continue
		}
		k := [2]string{in.Key, in.Value}
		written[k] = append(written[k], write{op.Call, op.ID})
	}
	n := 0
	for _, op := range ops {
		in, ok := op.Input.(RegisterInput)
		if !ok || !in.Serializable || in.Kind != RegRead || op.Status != history.OK {
			continue
		}
		n++
		v := op.Output.(RegisterOutput).Value
		if v == "" {
			continue
		}
		found := false
		for _, w := range written[[2]string{in.Key, v}] {
			if w.call <= op.Return {
				found = true
				break
			}
		}
		if !found {
			res.add("phantom-read", []int{op.ID}, "serializable read of %s returned %q, which no write invoked before the read returned could have written", in.Key, v)
		}
	}
	res.Stats["serializable-reads"] = n
}
