package gossip

import (
	"bytes"
	"testing"
	"time"
)

// fullMesh adds k nodes that already know each other (as if joined long ago), with empty queues,
// so that a test measures only what comes after.
func (c *cluster) fullMesh(k int, opts ...cfgFn) {
	for i := range k {
		c.add(c.lanCfg(nodeName(i), nodeAddr(i), opts...))
	}
	for _, tn := range c.nodes {
		for _, o := range c.nodes {
			if o != tn {
				tn.n.applyAlive(o.name, o.addr, 0, nil, false)
			}
		}
		tn.n.queue = newQueue(tn.n.cfg.MaxBroadcasts)
		tn.n.Ready()
	}
}

// An update reaches all of 1000 members within 10 gossip intervals (2 s): an epidemic with
// fanout 3 infects all in about log4(1000) + ln(1000)/3, 7 to 8 rounds.
func TestDisseminationReaches1000(t *testing.T) {
	if testing.Short() {
		t.Skip("1000 members")
	}
	const n = 1000
	c := newCluster(t, testSeed(t, 12))
	c.fullMesh(n)
	c.run(lanSecond) // settle the first probes
	meta := []byte("v2")
	if err := c.node("n0").n.UpdateMeta(meta); err != nil {
		t.Fatal(err)
	}
	c.drain(c.node("n0"))
	gi := DefaultLANConfig("x", "y").timing().gossipInterval
	took := c.runUntil(10*gi, "every member has n0's new metadata", func() bool {
		for _, tn := range c.nodes {
			if m, _ := tn.n.Member("n0"); !bytes.Equal(m.Meta, meta) {
				return false
			}
		}
		return true
	})
	t.Logf("1000 members knew the update after %d ticks (%.1f gossip intervals)", took, float64(took)/float64(gi))
	if k := c.countEvents(EventSuspect); k != 0 {
		t.Fatalf("%d suspicions in a fault-free run of 1000", k)
	}
	if u := c.eventsAbout("n0", EventUpdate); len(u) != n-1 {
		t.Fatalf("%d update events, want %d", len(u), n-1)
	}
}

// A queue smaller than the news drops (and counts) the oldest, most sent updates; the group still
// converges through push-pull.
func TestQueueOverflowCountedAndRepaired(t *testing.T) {
	c := newCluster(t, testSeed(t, 13))
	c.start(30, func(cfg *Config) { cfg.MaxBroadcasts = 4; cfg.PushPullInterval = 5 * time.Second })
	c.converge(60 * lanSecond)
	var dropped uint64
	for _, tn := range c.nodes {
		dropped += tn.n.Status().Counters.BroadcastsDropped
	}
	if dropped == 0 {
		t.Fatal("30 joins through queues of 4 dropped nothing")
	}
	t.Logf("dropped %d updates; converged through push-pull", dropped)
}
