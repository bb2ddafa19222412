package raft

import "testing"

// BenchmarkProposeCommit3 measures proposals through a three-node cluster in memory: batches of
// 64 proposals per Ready, each committed and applied on every node.
func BenchmarkProposeCommit3(b *testing.B) {
	nw := newNetwork(b, 3)
	nw.stabilize()
	if err := nw.node(1).Campaign(); err != nil {
		b.Fatal(err)
	}
	nw.stabilize()
	data := make([]byte, 128)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	n1 := nw.node(1)
	for i := 0; i < b.N; i++ {
		if err := n1.Propose(data); err != nil {
			b.Fatal(err)
		}
		if i%64 == 63 {
			nw.stabilize()
			for id := range nw.applied {
				nw.applied[id] = nw.applied[id][:0]
			}
			st := nw.status(1)
			if st.Applied >= st.FirstIndex+10000 {
				b.StopTimer()
				if err := n1.Compact(Snapshot{Meta: SnapshotMeta{Index: st.Applied, Term: st.HardState.Term}}); err != nil {
					b.Fatal(err)
				}
				for _, id := range []NodeID{2, 3} {
					s := nw.status(id)
					if err := nw.node(id).Compact(Snapshot{Meta: SnapshotMeta{Index: s.Applied, Term: st.HardState.Term}}); err != nil {
						b.Fatal(err)
					}
				}
				for _, s := range nw.storage {
					s.ents = nil
				}
				b.StartTimer()
			}
		}
	}
	nw.stabilize()
}
