package gossip

import (
	"strings"
	"testing"
)

// ticksPerSecond under the LAN profile (10 ms ticks).
const lanSecond = 100

// joinBound is how long tests wait for news to reach everyone when they do not measure it:
// gossip usually takes well under a second, but it is probabilistic (with simultaneous joins in
// a small group an update's few retransmissions can miss a member, about 1 seed in 20 here), and
// the periodic push-pull (30 s, first one at a random point of the period) is the backstop.
const joinBound = 40 * lanSecond

func TestJoinConverges(t *testing.T) {
	c := newCluster(t, testSeed(t, 1))
	c.start(20)
	took := c.converge(joinBound)
	t.Logf("20 members converged %d ticks after the joins", took)
	if k := c.countEvents(EventSuspect) + c.countEvents(EventDead); k != 0 {
		t.Fatalf("%d suspect or dead events during a fault-free join", k)
	}
}

// crashBound is how long after a crash every live member must have declared it dead: up to two
// protocol periods until some member probes it and finishes that probe, the maximum suspicion
// timeout (no confirmation at all), and two seconds of dissemination.
func crashBound(cfg Config, n int) uint64 {
	t := cfg.timing()
	_, hi := suspicionBounds(cfg.SuspicionMult, cfg.SuspicionMaxMult, t.probeInterval, n)
	return 2*t.probeInterval + hi + 2*lanSecond
}

func TestCrashDetected(t *testing.T) {
	const n = 20
	c := newCluster(t, testSeed(t, 2))
	c.start(n)
	c.converge(joinBound)
	c.clearEvents()
	c.node("n7").down = true
	cfg := DefaultLANConfig("x", "y")
	took := c.runUntil(crashBound(cfg, n), "every live member declares n7 dead", func() bool {
		for _, tn := range c.nodes {
			if !tn.down && c.stateOf(tn.name, "n7") != "dead" {
				return false
			}
		}
		return true
	})
	// With 19 probers, confirmations arrive within a few periods, so the suspicion timeout comes
	// down toward its minimum (Lifeguard): a quarter of the way from min to max at most (30 seeds
	// took 636 to 1023 ticks; without confirmations it would be over 3120).
	lo, hi := suspicionBounds(cfg.SuspicionMult, cfg.SuspicionMaxMult, cfg.timing().probeInterval, n)
	t.Logf("n7 dead everywhere %d ticks after the crash (suspicion %d..%d)", took, lo, hi)
	if bound := lo + (hi-lo)/4; took > bound {
		t.Fatalf("detection took %d ticks, want under %d: confirmations did not shorten the suspicion", took, bound)
	}
	if dead := c.eventsAbout("n7", EventDead); len(dead) != n-1 {
		t.Fatalf("%d dead events about n7, want %d: %v", len(dead), n-1, dead)
	}
	for _, tn := range c.nodes {
		for _, e := range tn.events {
			if e.Member.Name != "n7" {
				t.Fatalf("%s: event about a live member after the crash: %v", tn.name, e.Event)
			}
		}
		// Intermediaries nack the probes of the crashed member, so no prober blames itself.
		if h := tn.n.Status().Health; !tn.down && h != 0 {
			t.Errorf("%s: health %d after detecting a crash, want 0 (nacks were missed?)", tn.name, h)
		}
	}
}

func TestNoFalsePositivesWithoutFaults(t *testing.T) {
	const n = 50
	c := newCluster(t, testSeed(t, 3))
	c.maxDelay = 5 // 10 to 50 ms each way
	c.start(n)
	c.converge(joinBound)
	c.clearEvents()
	c.run(200 * lanSecond) // 200 protocol periods: each member probed about 200 times
	if k := c.countEvents(EventSuspect) + c.countEvents(EventDead); k != 0 {
		for _, tn := range c.nodes {
			t.Logf("%s: %v", tn.name, tn.events)
		}
		t.Fatalf("%d suspect or dead events in a run without faults", k)
	}
	if !c.allSeeAllAlive() {
		t.Fatal("not every member sees every member alive")
	}
}

// runPartition isolates n3 from the others for d ticks, heals, and runs until everyone sees
// everyone alive again.
func runPartition(t *testing.T, c *cluster, d uint64, opts ...cfgFn) {
	c.start(10, opts...)
	c.converge(joinBound)
	c.clearEvents()
	c.partition(1, "n3")
	c.run(d)
	c.heal()
	c.converge(60 * lanSecond)
}

// slowSuspicion makes the minimum suspicion timeout 8 s in a group of 10.
func slowSuspicion(cfg *Config) { cfg.SuspicionMult = 8 }

// A partition shorter than the minimum suspicion timeout: members on both sides suspect each
// other, and once it heals every suspicion is refuted: nobody is declared dead.
func TestPartitionHealsByRefutation(t *testing.T) {
	c := newCluster(t, testSeed(t, 4))
	runPartition(t, c, 5*lanSecond, slowSuspicion)
	if len(c.eventsAbout("n3", EventSuspect)) == 0 {
		t.Fatal("nobody suspected n3 during the partition: the test did not exercise refutation")
	}
	if dead := c.countEvents(EventDead); dead != 0 {
		t.Fatalf("%d members declared dead after a partition shorter than the suspicion timeout: %v", dead, c.eventsAbout("n3", EventDead))
	}
	if inc := c.node("n3").n.Status().Incarnation; inc == 0 {
		t.Fatal("n3 never refuted (incarnation 0)")
	}
}

// The same test catches a node that does not refute.
func TestPartitionCatchesPlantedNoRefute(t *testing.T) {
	c := newCluster(t, testSeed(t, 4))
	c.start(10, slowSuspicion)
	c.converge(joinBound)
	c.node("n3").n.bugs.noRefute = true
	c.partition(1, "n3")
	c.run(5 * lanSecond)
	c.heal()
	c.run(60 * lanSecond)
	if len(c.eventsAbout("n3", EventDead)) == 0 {
		t.Fatal("with refutation disabled n3 should have been declared dead")
	}
}

// A partition longer than the suspicion timeout: n3 and the others declare each other dead; after
// healing, the dead news gossiped to the dead (GossipToDead) reaches them, they refute, and
// everyone is alive again.
func TestLongPartitionRejoins(t *testing.T) {
	c := newCluster(t, testSeed(t, 5))
	runPartition(t, c, 15*lanSecond)
	if len(c.eventsAbout("n3", EventDead)) == 0 {
		t.Fatal("n3 was not declared dead during a 15 s partition")
	}
	if len(c.eventsAbout("n3", EventJoin)) == 0 {
		t.Fatal("n3 did not rejoin (no join event about it)")
	}
}

// A member paused for one second (a GC pause, a stalled VM) is suspected by some but refutes in
// time: never declared dead (Lifeguard). Each pause starts when another member pings it, so that
// the probe fails and the pause is noticed.
func pausedRun(t *testing.T, c *cluster, plant func(*Node)) {
	c.start(10)
	c.converge(joinBound)
	c.clearEvents()
	if plant != nil {
		plant(c.node("n4").n)
	}
	pinged := false
	c.trace = func(from string, p Packet) {
		if p.Addr == nodeAddr(4) && !p.Stream {
			_, body, _ := decodeHeader(p.Data)
			if parts, _ := decodeParts(body); len(parts) > 0 && parts[0].typ == msgPing {
				pinged = true
			}
		}
	}
	for range 5 {
		pinged = false
		for i := 0; i < 30*lanSecond && !pinged; i++ {
			c.tick() // with a planted bug n4 may be dead and never pinged again
		}
		c.pause("n4")
		c.run(lanSecond)
		c.resume("n4")
		c.run(9 * lanSecond)
	}
	c.run(30 * lanSecond)
}

func TestPausedMemberNotDeclaredDead(t *testing.T) {
	c := newCluster(t, testSeed(t, 6))
	pausedRun(t, c, nil)
	if dead := c.countEvents(EventDead); dead != 0 {
		t.Fatalf("%d dead events after 1 s pauses: %v", dead, c.eventsAbout("n4", EventDead))
	}
	if len(c.eventsAbout("n4", EventSuspect)) == 0 {
		t.Fatal("n4 was never suspected: the pauses were not noticed, the test checks nothing")
	}
}

func TestPausedCatchesPlantedNoRefute(t *testing.T) {
	c := newCluster(t, testSeed(t, 6))
	pausedRun(t, c, func(n *Node) { n.bugs.noRefute = true })
	if len(c.eventsAbout("n4", EventDead)) == 0 {
		t.Fatal("without refutation a suspected n4 should have been declared dead")
	}
}

func TestLabelMismatchNeverMerges(t *testing.T) {
	c := newCluster(t, testSeed(t, 7))
	for i := range 10 {
		label := "blue"
		if i >= 5 {
			label = "green"
		}
		tn := c.add(c.lanCfg(nodeName(i), nodeAddr(i), func(cfg *Config) { cfg.Label = label }))
		// Every node tries both clusters' seeds.
		tn.n.Join(nodeAddr(0), nodeAddr(5))
		c.drain(tn)
	}
	c.run(40 * lanSecond)
	for i, tn := range c.nodes {
		ms := tn.n.Members()
		if len(ms) != 5 {
			t.Errorf("%s knows %d members, want its own cluster's 5: %v", tn.name, len(ms), ms)
		}
		for _, m := range ms {
			var j int
			if _, err := fmtSscan(m.Name, &j); err != nil || (i < 5) != (j < 5) {
				t.Errorf("%s (cluster %d) knows %s of the other cluster", tn.name, i/5, m.Name)
			}
		}
		if tn.n.Status().Counters.LabelMismatch == 0 && (i == 0 || i == 5) {
			t.Errorf("%s counted no label mismatch though the other cluster joined it", tn.name)
		}
	}
}

func TestLeave(t *testing.T) {
	c := newCluster(t, testSeed(t, 8))
	c.start(10)
	c.converge(joinBound)
	c.clearEvents()
	c.node("n5").n.Leave()
	c.drain(c.node("n5"))
	c.runUntil(joinBound, "every member sees n5 left", func() bool {
		for _, tn := range c.nodes {
			if tn.name != "n5" && c.stateOf(tn.name, "n5") != "left" {
				return false
			}
		}
		return true
	})
	c.runUntil(10*lanSecond, "n5's leave announcement is spread", func() bool { return c.node("n5").n.Status().LeaveSpread })
	c.node("n5").down = true
	c.run(20 * lanSecond)
	if k := c.countEvents(EventSuspect) + c.countEvents(EventDead); k != 0 {
		t.Fatalf("%d suspect or dead events after a graceful leave", k)
	}
	if left := c.eventsAbout("n5", EventLeft); len(left) != 9 {
		t.Fatalf("%d left events, want 9: %v", len(left), left)
	}
	for _, tn := range c.nodes[:5] {
		if c.stateOf(tn.name, "n5") != "left" {
			t.Fatalf("%s forgot n5 before ReapAfter", tn.name)
		}
	}
}

func TestReapAndReclaim(t *testing.T) {
	c := newCluster(t, testSeed(t, 9))
	c.start(5)
	c.converge(joinBound)
	cfg := DefaultLANConfig("x", "y")
	tm := cfg.timing()

	// n2 crashes and is declared dead by n0.
	c.node("n2").down = true
	c.runUntil(60*lanSecond, "n0 declares n2 dead", func() bool { return c.stateOf("n0", "n2") == "dead" })
	deadAt := c.now

	// A new process takes the name n2 at another address before ReclaimAfter: refused.
	c.byName["n2"] = nil
	imp := c.add(c.lanCfg("n2", "10.9.9.9:7946"))
	imp.n.Join(nodeAddr(0))
	c.drain(imp)
	c.run(2 * lanSecond)
	if m, _ := c.node("n0").n.Member("n2"); m.Addr != nodeAddr(2) || m.State != StateDead {
		t.Fatalf("n0 accepted a new address for n2 %d ticks after its death (ReclaimAfter %d): %+v", c.now-deadAt, tm.reclaim, m)
	}
	if c.node("n0").n.Status().Counters.NameConflicts == 0 {
		t.Fatal("the refused claim was not counted")
	}

	// After ReclaimAfter the same claim is accepted.
	c.run(deadAt + tm.reclaim - c.now)
	imp.n.Join(nodeAddr(0))
	c.drain(imp)
	c.runUntil(joinBound, "every member sees n2 alive at its new address", func() bool {
		for _, tn := range c.nodes {
			if tn.down || tn.name == "n2" {
				continue
			}
			if m, _ := tn.n.Member("n2"); m.Addr != "10.9.9.9:7946" || m.State != StateAlive {
				return false
			}
		}
		return true
	})

	// A left member's name is free at once; a left member is reaped after ReapAfter.
	c.node("n3").n.Leave()
	c.drain(c.node("n3"))
	c.runUntil(joinBound, "n0 sees n3 left", func() bool { return c.stateOf("n0", "n3") == "left" })
	leftAt := c.now
	c.node("n3").down = true
	c.runUntil(tm.reap+2*tm.probeInterval, "n0 reaps n3", func() bool { return c.stateOf("n0", "n3") == "" })
	if c.now-leftAt < tm.reap {
		t.Fatalf("n3 reaped %d ticks after leaving, before ReapAfter %d", c.now-leftAt, tm.reap)
	}
	if len(c.eventsAbout("n3", EventReap)) == 0 {
		t.Fatal("no reap event")
	}

	c.node("n4").n.Leave()
	c.drain(c.node("n4"))
	c.runUntil(joinBound, "n0 sees n4 left", func() bool { return c.stateOf("n0", "n4") == "left" })
	c.node("n4").down = true
	c.byName["n4"] = nil
	n4b := c.add(c.lanCfg("n4", "10.9.9.10:7946"))
	n4b.n.Join(nodeAddr(0))
	c.drain(n4b)
	c.runUntil(2*lanSecond, "n0 sees n4 alive at its new address", func() bool {
		m, _ := c.node("n0").n.Member("n4")
		return m.State == StateAlive && m.Addr == "10.9.9.10:7946"
	})
}

// A member whose packets are all dropped (a firewall closing its UDP port) while streams work is
// not suspected: the stream fallback probe answers, and both sides report packet trouble.
func TestBlockedUDPDiagnosed(t *testing.T) {
	c := newCluster(t, testSeed(t, 10))
	c.start(5)
	c.converge(joinBound)
	c.clearEvents()
	c.udpBlocked[nodeAddr(2)] = true
	c.run(60 * lanSecond)
	if k := c.countEvents(EventSuspect) + c.countEvents(EventDead); k != 0 {
		t.Fatalf("%d suspect or dead events though streams to n2 work", k)
	}
	st := c.node("n0").n.Status()
	if len(st.PacketTrouble) != 1 || st.PacketTrouble[0].Name != "n2" {
		t.Fatalf("n0's packet trouble: %v, want n2", st.PacketTrouble)
	}
	msg := st.PacketTrouble[0].String()
	if !strings.Contains(msg, "UDP port 7946") || !strings.Contains(msg, "streams work") {
		t.Fatalf("diagnosis %q does not name the UDP port", msg)
	}
	if st2 := c.node("n2").n.Status(); len(st2.PacketTrouble) != 4 {
		t.Fatalf("n2 reports packet trouble with %v, want all 4 others", st2.PacketTrouble)
	}
	// Unblocked, the first packet ack clears the report.
	delete(c.udpBlocked, nodeAddr(2))
	c.runUntil(60*lanSecond, "n0 clears its report on n2", func() bool { return len(c.node("n0").n.Status().PacketTrouble) == 0 })
}

// Without the stream fallback the same network makes n2 dead: the fallback is what saves it.
func TestBlockedUDPWithoutFallbackIsDead(t *testing.T) {
	c := newCluster(t, testSeed(t, 10))
	c.start(5, func(cfg *Config) { cfg.StreamFallback = false })
	c.converge(joinBound)
	c.udpBlocked[nodeAddr(2)] = true
	c.run(60 * lanSecond)
	if len(c.eventsAbout("n2", EventDead)) == 0 {
		t.Fatal("n2 was not declared dead without the stream fallback")
	}
}

// A member that hears nothing (its inbound packets dropped, no fallback) misses acks and nacks:
// its health score rises and stretches its probe interval; restored, it returns to 0.
func TestHealthScalesProbing(t *testing.T) {
	c := newCluster(t, testSeed(t, 11))
	c.start(6, func(cfg *Config) { cfg.StreamFallback = false; cfg.SuspicionMult = 1000 })
	c.converge(joinBound)
	deaf := c.node("n1")
	var pings []uint64
	c.trace = func(from string, p Packet) {
		if from != deaf.addr || p.Stream {
			return
		}
		_, body, _ := decodeHeader(p.Data)
		if parts, _ := decodeParts(body); len(parts) > 0 && parts[0].typ == msgPing {
			pings = append(pings, c.now)
		}
	}
	drop := func(from string, p Packet) bool { return p.Addr == deaf.addr }
	c.dropIf = drop
	c.run(30 * lanSecond)
	h := deaf.n.Status().Health
	if h != deaf.n.cfg.AwarenessMax-1 {
		t.Fatalf("deaf member's health %d, want the maximum %d", h, deaf.n.cfg.AwarenessMax-1)
	}
	if gap := pings[len(pings)-1] - pings[len(pings)-2]; gap != uint64(h+1)*lanSecond {
		t.Fatalf("probe interval %d ticks at health %d, want %d", gap, h, (h+1)*lanSecond)
	}
	// The healthy members refute the deaf member's suspicions of them, one point each, taken back
	// by their next successful probe.
	for _, tn := range c.nodes {
		if tn != deaf && tn.n.Status().Health > 1 {
			t.Fatalf("%s's health is %d: the healthy members should stay near 0", tn.name, tn.n.Status().Health)
		}
	}
	c.dropIf = nil
	c.runUntil(120*lanSecond, "the deaf member's health returns to 0", func() bool { return deaf.n.Status().Health == 0 })
}
