package gossip

import (
	"testing"
)

// ticksPerSecond under the LAN profile (10 ms ticks).
const lanSecond = 100

func TestJoinConverges(t *testing.T) {
	c := newCluster(t, testSeed(t, 1))
	c.start(20)
	took := c.converge(10 * lanSecond)
	t.Logf("20 members converged %d ticks after the joins", took)
	if k := c.countEvents(EventSuspect) + c.countEvents(EventDead); k != 0 {
		t.Fatalf("%d suspect or dead events during a fault-free join", k)
	}
}
