package gossip

import "testing"

// BenchmarkTick measures one tick of one member of an idle group of 100 (timers, the probe, the
// reap scan amortised over a period).
func BenchmarkTick(b *testing.B) {
	c := newCluster(b, 1)
	c.fullMesh(100)
	n := c.node("n0").n
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		n.Tick()
		if n.HasReady() {
			n.Ready()
		}
	}
}

// BenchmarkStepPing measures handling a ping that carries a few piggybacked updates, and the ack
// it produces.
func BenchmarkStepPing(b *testing.B) {
	c := newCluster(b, 1)
	c.fullMesh(100)
	a, n := c.node("n1").n, c.node("n0").n
	for i := range 5 {
		a.broadcastAlive(a.members[nodeName(10+i)])
	}
	a.send(nodeAddr(0), &msg{typ: msgPing, seq: 1, name: "n0", from: "n1", fromAddr: nodeAddr(1)}, nil)
	p := a.Ready().Packets[0]
	p.Addr = nodeAddr(1)
	b.SetBytes(int64(len(p.Data)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := n.Step(p); err != nil {
			b.Fatal(err)
		}
		n.Ready()
	}
}
