package model

import (
	"math/rand/v2"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/check/history"
)

// simulate produces a register history that is linearizable by construction: every operation
// takes effect at a random point inside its interval, in the order of those points, on a true
// sequential register. A fraction of writes have unknown outcomes; half of those never take
// effect at all.
func simulate(seed uint64, procs, perProc, keys int) []history.Op {
	rng := rand.New(rand.NewPCG(seed, 7))
	type ev struct {
		op  *history.Op
		lin int64
		eff bool
	}
	var evs []ev
	var ops []*history.Op
	next := 0
	for p := 0; p < procs; p++ {
		t := int64(rng.IntN(10))
		for i := 0; i < perProc; i++ {
			dur := int64(1 + rng.IntN(30))
			op := &history.Op{Process: p, Call: t, Return: t + dur, Status: history.OK}
			k := "k" + strconv.Itoa(rng.IntN(keys))
			switch x := rng.IntN(10); {
			case x < 5:
				op.Input = RegisterInput{Kind: RegRead, Key: k, Serializable: rng.IntN(5) == 0}
			case x < 8:
				next++
				op.Input = RegisterInput{Kind: RegWrite, Key: k, Value: strconv.Itoa(next)}
			default:
				next++
				op.Input = RegisterInput{Kind: RegCAS, Key: k, Value: strconv.Itoa(next), Expect: strconv.Itoa(rng.IntN(next + 1))}
			}
			eff := true
			if in := op.Input.(RegisterInput); in.Kind != RegRead && rng.IntN(50) == 0 {
				op.Status = history.Unknown
				eff = rng.IntN(2) == 0
			}
			evs = append(evs, ev{op: op, lin: t + rng.Int64N(dur+1), eff: eff})
			ops = append(ops, op)
			t += dur + int64(rng.IntN(5))
			if op.Status == history.Unknown {
				break // the process crashed
			}
		}
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].lin < evs[j].lin })
	state := map[string]string{}
	for _, e := range evs {
		in := e.op.Input.(RegisterInput)
		switch in.Kind {
		case RegRead:
			e.op.Output = RegisterOutput{Value: state[in.Key]}
		case RegWrite:
			if e.eff {
				state[in.Key] = in.Value
			}
			e.op.Output = RegisterOutput{}
		case RegCAS:
			ok := state[in.Key] == in.Expect
			if ok && e.eff {
				state[in.Key] = in.Value
			}
			e.op.Output = RegisterOutput{Succeeded: ok}
		}
		if e.op.Status == history.Unknown {
			e.op.Output, e.op.Return = nil, history.Infinity
		}
	}
	out := make([]history.Op, len(ops))
	for i, op := range ops {
		op.ID = i
		out[i] = *op
	}
	return out
}

// TestRegisterRandomValidHistories: histories linearizable by construction are accepted, within
// a time bound that keeps real runs (thousands of operations, some unknown) checkable.
func TestRegisterRandomValidHistories(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		ops := simulate(seed, 8, 300, 4)
		start := time.Now()
		got := CheckRegister(ops, time.Minute)
		if !got.Valid {
			t.Fatalf("seed %d: linearizable-by-construction history rejected: %v", seed, got.Result)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("seed %d: %d ops took %v to check", seed, len(ops), d)
		}
	}
}

// TestRegisterRandomCorruptedRead: turning one read that follows a completed write into a read
// of a value nobody wrote is always caught, in the middle of a large valid history.
func TestRegisterRandomCorruptedRead(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		ops := simulate(seed, 8, 200, 4)
		i := len(ops) / 2
		for ; i < len(ops); i++ {
			if in := ops[i].Input.(RegisterInput); in.Kind == RegRead && !in.Serializable {
				break
			}
		}
		ops[i].Output = RegisterOutput{Value: "never-written"}
		if got := CheckRegister(ops, time.Minute); got.Valid {
			t.Fatalf("seed %d: corrupted read %d accepted", seed, i)
		}
	}
}
