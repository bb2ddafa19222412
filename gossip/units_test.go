package gossip

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestQueueSupersedesAndDrops(t *testing.T) {
	q := newQueue(3)
	q.push("a", []byte("a1.."))
	q.push("b", []byte("b1.."))
	q.push("a", []byte("a2..")) // supersedes a1
	if q.len() != 2 || q.superseded != 1 || q.dropped != 0 {
		t.Fatalf("len %d superseded %d dropped %d, want 2 1 0", q.len(), q.superseded, q.dropped)
	}
	// Send everything once: both now have one transmission; then a fresh one.
	out := q.fill(nil, 100, 10, "")
	if string(out) != "a2..b1.." {
		t.Fatalf("fill sent %q, want the newest first: a2..b1..", out)
	}
	q.push("c", []byte("c1.."))
	// Full (3): the next push drops the most transmitted, oldest among equals: b1.
	q.push("d", []byte("d1.."))
	if q.dropped != 1 || q.has("b") || !q.has("a") || !q.has("c") || !q.has("d") {
		t.Fatalf("dropped %d, has a=%v b=%v c=%v d=%v: want b (sent once, oldest) dropped", q.dropped, q.has("a"), q.has("b"), q.has("c"), q.has("d"))
	}
	// Fewest transmissions first, newest first among equals; room limits what is taken.
	if out := q.fill(nil, 11, 10, ""); string(out) != "d1..c1.." {
		t.Fatalf("fill sent %q, want d1..c1.. (11 bytes of room hold two)", out)
	}
	// Retired after the limit.
	if out := q.fill(nil, 100, 2, ""); len(out) != 12 || q.len() != 0 {
		t.Fatalf("sent %q and %d left: every update had one transmission, a second should retire all", out, q.len())
	}
}

func TestRetransmitLimit(t *testing.T) {
	for _, c := range []struct{ n, want int }{{1, 4}, {9, 4}, {10, 8}, {99, 8}, {100, 12}, {1000, 16}} {
		if got := retransmitLimit(4, c.n); got != c.want {
			t.Errorf("retransmitLimit(4, %d) = %d, want %d", c.n, got, c.want)
		}
	}
}

func TestSuspicionTimeoutShrinks(t *testing.T) {
	lo, hi := suspicionBounds(4, 6, 100, 100) // 4 * log10(100) * 100 = 800, max 4800
	if lo != 800 || hi != 4800 {
		t.Fatalf("bounds %d..%d, want 800..4800", lo, hi)
	}
	if lo, _ := suspicionBounds(4, 6, 100, 3); lo != 400 {
		t.Fatalf("min for 3 members %d, want 400 (log10 floored at 1)", lo)
	}
	s := newSuspicion(1000, lo, hi, 3, "a")
	prev := s.deadline
	if prev != 1000+hi {
		t.Fatalf("deadline without confirmations %d, want start+max %d", prev, 1000+hi)
	}
	if s.confirm("a") {
		t.Fatal("the first accuser counted as a confirmation")
	}
	for i, from := range []string{"b", "c", "d"} {
		if !s.confirm(from) {
			t.Fatalf("confirmation %d by %s not counted", i+1, from)
		}
		if s.deadline >= prev {
			t.Fatalf("confirmation %d did not shorten the deadline (%d -> %d)", i+1, prev, s.deadline)
		}
		prev = s.deadline
	}
	if s.deadline != 1000+lo {
		t.Fatalf("deadline after k confirmations %d, want start+min %d", s.deadline, 1000+lo)
	}
	if s.confirm("e") || s.deadline != 1000+lo {
		t.Fatal("confirmations beyond k changed the timer")
	}
	if z := newSuspicion(0, lo, hi, 0, "a"); z.deadline != lo {
		t.Fatalf("k=0 deadline %d, want min %d", z.deadline, lo)
	}
}

// pair builds two nodes a and b that know each other, with empty queues.
func pair(t *testing.T) (*Node, *Node) {
	t.Helper()
	mk := func(name, addr string) *Node {
		cfg := DefaultLANConfig(name, addr)
		cfg.Seed = 42
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	a, b := mk("a", "a:1"), mk("b", "b:1")
	a.applyAlive("b", "b:1", 0, nil, false)
	b.applyAlive("a", "a:1", 0, nil, false)
	for _, n := range []*Node{a, b} {
		n.queue = newQueue(n.cfg.MaxBroadcasts)
		n.Ready()
	}
	return a, b
}

// Lifeguard's buddy system: a's ping to a suspected b carries the suspicion, and b refutes on
// that packet alone.
func TestBuddyPingCarriesSuspicion(t *testing.T) {
	for _, planted := range []bool{false, true} {
		a, b := pair(t)
		a.bugs.noBuddy = planted
		a.applySuspect("b", 0, "x")
		a.queue = newQueue(a.cfg.MaxBroadcasts) // only the ping itself may tell b
		for a.probe == nil {
			a.Tick()
		}
		var ping Packet
		for _, p := range a.Ready().Packets {
			if p.Addr == "b:1" && !p.Stream {
				ping = p
			}
		}
		if err := b.Step(ping); err != nil {
			t.Fatal(err)
		}
		refuted := b.Status().Incarnation == 1
		if refuted == planted {
			t.Fatalf("buddy disabled=%v: b refuted=%v (incarnation %d)", planted, refuted, b.Status().Incarnation)
		}
	}
}

// Updates fill a packet up to MaxPacketBytes and no further.
func TestPiggybackFillsPacket(t *testing.T) {
	a, _ := pair(t)
	for i := range 200 {
		a.applyAlive(nodeName(i+10), nodeAddr(i+10), 1, bytes.Repeat([]byte{'m'}, 20), true)
	}
	a.Ready()
	a.send("b:1", &msg{typ: msgAck, seq: 1}, nil)
	p := a.Ready().Packets[0]
	if len(p.Data) > a.cfg.MaxPacketBytes || len(p.Data) < a.cfg.MaxPacketBytes-60 {
		t.Fatalf("packet of %d bytes, want just under %d", len(p.Data), a.cfg.MaxPacketBytes)
	}
	_, body, _ := decodeHeader(p.Data)
	parts, err := decodeParts(body)
	if err != nil || parts[0].typ != msgAck || len(parts) < 20 {
		t.Fatalf("%d parts (err %v), want an ack and many updates", len(parts), err)
	}
}

func TestCodecRoundTrip(t *testing.T) {
	msgs := []msg{
		{typ: msgPing, seq: 7, name: "t", from: "s", fromAddr: "s:1"},
		{typ: msgPingReq, seq: 1 << 40, name: "t", addr: "t:1", fromAddr: "s:1", flag: true},
		{typ: msgAck, seq: 3}, {typ: msgNack, seq: 4},
		{typ: msgAlive, name: "m", addr: "m:1", inc: 9, meta: []byte("meta")},
		{typ: msgSuspect, name: "m", inc: 2, from: "x"}, {typ: msgDead, name: "m", inc: 3, from: "y"},
		{typ: msgLeft, name: "m", inc: 4},
		{typ: msgPushPull, ppFlags: ppJoin, from: "s", fromAddr: "s:1", members: []Member{
			{Name: "a", Addr: "a:1", Incarnation: 5, State: StateSuspect, Meta: []byte{1}},
			{Name: "b", Addr: "b:1", State: StateLeft, Meta: []byte{}},
		}},
	}
	b := appendHeader(nil, "lbl")
	for i := range msgs {
		b = appendMsg(b, &msgs[i])
	}
	label, body, err := decodeHeader(b)
	if err != nil || label != "lbl" {
		t.Fatalf("header: %q %v", label, err)
	}
	got, err := decodeParts(body)
	if err != nil {
		t.Fatal(err)
	}
	for i := range msgs {
		// Re-encoding the decoded part gives the same bytes.
		if x, y := appendMsg(nil, &msgs[i]), appendMsg(nil, &got[i]); !bytes.Equal(x, y) {
			t.Fatalf("part %d: %+v decoded as %+v", i, msgs[i], got[i])
		}
	}
	// Every truncation is an error, never a panic.
	for i := range len(body) {
		if _, err := decodeParts(body[:i]); err == nil && i > 0 {
			// A cut exactly between parts is a valid shorter message.
			continue
		} else if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncation at %d: %v does not wrap ErrMalformed", i, err)
		}
	}
}

func TestStepRejectsLabelAndGarbage(t *testing.T) {
	a, _ := pair(t)
	other := appendMsg(appendHeader(nil, "other"), &msg{typ: msgAck, seq: 1})
	if err := a.Step(Packet{Addr: "x", Data: other}); !errors.Is(err, ErrLabelMismatch) {
		t.Fatalf("another label: %v, want ErrLabelMismatch", err)
	}
	if err := a.Step(Packet{Addr: "x", Data: []byte{1, 0, 99}}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unknown part: %v, want ErrMalformed", err)
	}
	if err := a.Step(Packet{Addr: "x", Data: make([]byte, a.cfg.MaxPacketBytes+1)}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("oversized packet: %v, want ErrMalformed", err)
	}
	c := a.Status().Counters
	if c.LabelMismatch != 1 || c.DecodeErrors != 2 {
		t.Fatalf("counters %+v, want 1 label mismatch and 2 decode errors", c)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, cfg := range map[string]Config{
		"lan": DefaultLANConfig("n", "a:1"), "wan": DefaultWANConfig("n", "a:1"), "local": DefaultLocalConfig("n", "a:1"),
	} {
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s profile: %v", name, err)
		}
	}
	for name, mut := range map[string]func(*Config){
		"no name":        func(c *Config) { c.Name = "" },
		"long meta":      func(c *Config) { c.Meta = make([]byte, MaxMetaBytes+1) },
		"timeout":        func(c *Config) { c.ProbeTimeout = c.ProbeInterval },
		"tick":           func(c *Config) { c.TickInterval = 0 },
		"fanout":         func(c *Config) { c.GossipFanout = 0 },
		"reap < reclaim": func(c *Config) { c.ReapAfter = c.ReclaimAfter - time.Second },
		"small packets":  func(c *Config) { c.MaxPacketBytes = 512 },
		"awareness":      func(c *Config) { c.AwarenessMax = 0 },
		"queue":          func(c *Config) { c.MaxBroadcasts = 0 },
	} {
		cfg := DefaultLANConfig("n", "a:1")
		mut(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", name, err)
		}
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted an invalid config", name)
		}
	}
}

// The largest single message fits the smallest packet Validate allows.
func TestLargestMessageFitsMinPacket(t *testing.T) {
	long := string(bytes.Repeat([]byte{'x'}, MaxNameBytes))
	addr := string(bytes.Repeat([]byte{'a'}, MaxAddrBytes))
	b := appendHeader(nil, string(bytes.Repeat([]byte{'l'}, MaxLabelBytes)))
	b = appendMsg(b, &msg{typ: msgPing, seq: 1 << 63, name: long, from: long, fromAddr: addr})
	b = appendMsg(b, &msg{typ: msgSuspect, name: long, inc: 1 << 63, from: long})
	alive := appendMsg(nil, &msg{typ: msgAlive, name: long, addr: addr, inc: 1 << 63, meta: make([]byte, MaxMetaBytes)})
	if len(b) > minPacketBytes || len(alive)+2+MaxLabelBytes > minPacketBytes {
		t.Fatalf("ping+buddy %d bytes, alive %d: over minPacketBytes %d", len(b), len(alive), minPacketBytes)
	}
}
