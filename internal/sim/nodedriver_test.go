package sim

import (
	"testing"
)

func TestNodeDriverSmoke(t *testing.T) {
	for seed := uint64(1); seed <= 1; seed++ {
		res := Run(Options{Seed: seed, Nodes: 3, Driver: DriverNode})
		if res.Violation != nil {
			t.Fatalf("%v", res.Violation)
		}
		t.Logf("seed %d: %s", seed, res.Stats.String())
	}
}
