package raft

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// snapData is the deterministic state-machine image of a test snapshot at index i.
func snapData(i uint64, size int) []byte {
	return bytes.Repeat([]byte{byte('a' + i%26)}, size)
}

// compact takes a snapshot of id's state machine at its applied index and compacts its log and
// storage.
func (nw *network) compact(id NodeID, size int) Snapshot {
	nw.t.Helper()
	meta := nw.appliedMeta(id)
	return nw.install(id, Snapshot{Meta: meta, Data: snapData(meta.Index, size)})
}

// compactOutside is compact with the snapshot's data held by the caller (Snapshot.Size): it
// returns the snapshot the core keeps and the image the caller must serve chunks from.
func (nw *network) compactOutside(id NodeID, size int) (Snapshot, []byte) {
	nw.t.Helper()
	meta := nw.appliedMeta(id)
	image := snapData(meta.Index, size)
	return nw.install(id, Snapshot{Meta: meta, Size: uint64(size)}), image
}

// appliedMeta is the snapshot metadata of id's state machine at its applied index.
func (nw *network) appliedMeta(id NodeID) SnapshotMeta {
	st := nw.status(id)
	term := uint64(0)
	for _, e := range nw.storage[id].ents {
		if e.Index == st.Applied {
			term = e.Term
		}
	}
	return SnapshotMeta{Index: st.Applied, Term: term, ConfState: st.ConfState}
}

// install compacts id's core and storage to snap.
func (nw *network) install(id NodeID, snap Snapshot) Snapshot {
	nw.t.Helper()
	if err := nw.node(id).Compact(snap); err != nil {
		nw.t.Fatalf("compact %d at %d: %v", id, snap.Meta.Index, err)
	}
	s := nw.storage[id]
	s.snap = &snap
	s.ents = slices.DeleteFunc(s.ents, func(e Entry) bool { return e.Index <= snap.Meta.Index })
	return snap
}

func proposeN(nw *network, id NodeID, n int) {
	for range n {
		nw.propose(id, "x")
	}
}

// Paper §7: a follower behind the leader's compaction point is sent the snapshot; here in chunks of
// MaxSnapshotChunkBytes, each acknowledged, restored on the last chunk (Ready.Snapshot), after
// which normal replication resumes.
func TestSnapshotChunkedCatchUp(t *testing.T) {
	nw := newNetwork(t, 3, func(c *Config) { c.MaxSnapshotChunkBytes = 30 })
	nw.stabilize()
	nw.campaign(1)
	nw.down[3] = true
	proposeN(nw, 1, 10)
	snap := nw.compact(1, 100)
	if st := nw.status(1); st.FirstIndex != snap.Meta.Index+1 {
		t.Fatalf("FirstIndex %d after compacting to %d", st.FirstIndex, snap.Meta.Index)
	}
	var chunks []SnapshotChunk
	nw.trace = func(m Message) {
		if m.Type == MsgSnap {
			chunks = append(chunks, *m.Chunk)
		}
	}
	nw.down[3] = false
	nw.propose(1, "after")
	nw.tick(3)
	if len(chunks) != 4 {
		t.Fatalf("%d chunks, want 4 of <= 30 bytes for 100 bytes", len(chunks))
	}
	var got []byte
	for i, c := range chunks {
		if c.Offset != uint64(len(got)) || c.Total != 100 || c.Last != (i == 3) || len(c.Data) > 30 {
			t.Fatalf("chunk %d: %+v", i, c)
		}
		got = append(got, c.Data...)
	}
	if !bytes.Equal(got, snap.Data) {
		t.Fatal("chunks do not reassemble the snapshot")
	}
	st3 := nw.storage[3]
	if st3.snap == nil || st3.snap.Meta.Index != snap.Meta.Index || !bytes.Equal(st3.snap.Data, snap.Data) {
		t.Fatalf("node 3 did not persist the snapshot: %+v", st3.snap)
	}
	if s := nw.status(3); s.LastIndex != nw.status(1).LastIndex || s.Applied != s.LastIndex || s.FirstIndex != snap.Meta.Index+1 {
		t.Fatalf("node 3 after snapshot: %+v", s)
	}
	if got := nw.appliedData(3); !slices.Equal(got, []string{"after"}) {
		t.Fatalf("node 3 applied %v after the snapshot", got)
	}
	if pr := nw.status(1).Progress[3]; pr.State != ProgressReplicate {
		t.Fatalf("leader's progress for 3: %+v", pr)
	}
	nw.checkApplied()
}

// laggingFollower builds a three-member cluster whose member 3 missed five entries that the
// leader (1) then compacted into a 100-byte snapshot, sent in chunks of chunk bytes.
func laggingFollower(t *testing.T, chunk uint64) (*network, Snapshot) {
	t.Helper()
	nw := newNetwork(t, 3, func(c *Config) { c.MaxSnapshotChunkBytes = chunk })
	nw.stabilize()
	nw.campaign(1)
	nw.down[3] = true
	proposeN(nw, 1, 5)
	snap := nw.compact(1, 100)
	nw.down[3] = false
	return nw, snap
}

// A lost chunk is resent after heartbeats without progress; the transfer completes.
func TestSnapshotLostChunkResent(t *testing.T) {
	nw, snap := laggingFollower(t, 30)
	dropped := false
	nw.drop = func(m Message) bool {
		if m.Type == MsgSnap && m.Chunk.Offset == 60 && !dropped {
			dropped = true
			return true
		}
		return false
	}
	nw.tick(8)
	if !dropped {
		t.Fatal("chunk at 60 never sent")
	}
	if st := nw.storage[3].snap; st == nil || st.Meta.Index != snap.Meta.Index {
		t.Fatalf("snapshot not restored after a lost chunk: %+v", nw.status(3))
	}
}

// A leader change in the middle of a transfer: the new leader starts its own transfer from the
// first chunk and the follower discards the partial one.
func TestSnapshotLeaderChangeMidTransfer(t *testing.T) {
	nw := newNetwork(t, 3, func(c *Config) { c.MaxSnapshotChunkBytes = 30 })
	nw.stabilize()
	nw.campaign(1)
	nw.down[3] = true
	proposeN(nw, 1, 5)
	snap := nw.compact(1, 100)
	nw.compact(2, 100)
	nw.down[3] = false
	// Old leader's chunks beyond the first are lost, then it dies.
	nw.drop = func(m Message) bool { return m.Type == MsgSnap && m.From == 1 && m.Chunk.Offset > 0 }
	nw.tick(1)
	nw.down[1] = true
	nw.drop = nil
	nw.campaign(2)
	nw.tick(5)
	if st := nw.storage[3].snap; st == nil || st.Meta.Index != snap.Meta.Index || !bytes.Equal(st.Data, snap.Data) {
		t.Fatalf("node 3 did not restore the new leader's snapshot: %+v", nw.status(3))
	}
	nw.propose(2, "later")
	if got := nw.appliedData(3); !slices.Equal(got, []string{"later"}) {
		t.Fatalf("node 3 applied %v", got)
	}
	nw.checkApplied()
}

// MaxSnapshotBytes: a follower refuses a snapshot larger than it may buffer; the leader abandons
// the transfer (probe) instead of sending it.
func TestSnapshotTooLargeRefused(t *testing.T) {
	nw := newNetwork(t, 3, func(c *Config) {
		c.MaxSnapshotChunkBytes = 30
		if c.ID == 3 {
			c.MaxSnapshotBytes = 50
		}
	})
	nw.stabilize()
	nw.campaign(1)
	nw.down[3] = true
	proposeN(nw, 1, 5)
	nw.compact(1, 100)
	nw.down[3] = false
	refused := 0
	nw.trace = func(m Message) {
		if m.Type == MsgSnapResp && m.Reject {
			refused++
		}
	}
	nw.tick(3)
	if refused == 0 || nw.storage[3].snap != nil {
		t.Fatalf("refused %d times, restored %+v", refused, nw.storage[3].snap)
	}
	if pr := nw.status(1).Progress[3]; pr.State == ProgressReplicate {
		t.Fatalf("leader thinks 3 is in sync: %+v", pr)
	}
}

// Compact validates its input: only at or below applied, newer than the current snapshot, with the
// log's term.
func TestCompactValidation(t *testing.T) {
	nw := newNetwork(t, 1)
	nw.stabilize()
	nw.campaign(1)
	proposeN(nw, 1, 3)
	n := nw.node(1)
	st := nw.status(1)
	cs := st.ConfState
	if err := n.Compact(Snapshot{Meta: SnapshotMeta{Index: st.Applied + 1, Term: 2, ConfState: cs}}); err == nil {
		t.Error("compaction beyond applied accepted")
	}
	if err := n.Compact(Snapshot{Meta: SnapshotMeta{Index: st.Applied, Term: 1, ConfState: cs}}); err == nil {
		t.Error("compaction with the wrong term accepted")
	}
	if err := n.Compact(Snapshot{Meta: SnapshotMeta{Index: st.Applied, Term: 2, ConfState: cs}}); err != nil {
		t.Fatal(err)
	}
	err := n.Compact(Snapshot{Meta: SnapshotMeta{Index: st.Applied, Term: 2, ConfState: cs}})
	if !errors.Is(err, ErrSnapshotOutOfDate) {
		t.Errorf("repeated compaction: %v", err)
	}
	if s := n.Status(); s.FirstIndex != st.Applied+1 || s.LastIndex != st.LastIndex {
		t.Errorf("after compaction: %+v", s)
	}
}

// Restart from a snapshot plus the entries after it.
func TestRestartFromSnapshot(t *testing.T) {
	nw := newNetwork(t, 3)
	nw.stabilize()
	nw.campaign(1)
	proposeN(nw, 1, 4)
	snap := nw.compact(2, 10)
	nw.propose(1, "tail")
	nw.restart(2)
	if st := nw.status(2); st.FirstIndex != snap.Meta.Index+1 || st.Applied != snap.Meta.Index || !slices.Equal(st.ConfState.Voters, []NodeID{1, 2, 3}) {
		t.Fatalf("restarted from snapshot: %+v", st)
	}
	nw.stabilize()
	// The state machine kept what it applied up to the snapshot; only "tail" is re-applied.
	if got := nw.appliedData(2); !slices.Equal(got, []string{"x", "x", "x", "x", "tail"}) {
		t.Fatalf("applied after restart %v", got)
	}
}

// The leader compacts again while a transfer is in flight: the follower installs the older
// snapshot, and the leader, now unable to continue from it, sends the newer one.
func TestSnapshotLeaderCompactsMidTransfer(t *testing.T) {
	nw := newNetwork(t, 3, func(c *Config) { c.MaxSnapshotChunkBytes = 30 })
	nw.stabilize()
	nw.campaign(1)
	nw.down[3] = true
	proposeN(nw, 1, 5)
	first := nw.compact(1, 100)
	nw.down[3] = false
	hold := true
	nw.drop = func(m Message) bool { return hold && m.Type == MsgSnap && m.Chunk.Offset == 60 }
	nw.tick(1)
	if pr := nw.status(1).Progress[3]; pr.State != ProgressSnapshot {
		t.Fatalf("transfer not in progress: %+v", pr)
	}
	nw.down[3] = true // keep 3 from acknowledging the new entries
	proposeN(nw, 1, 3)
	second := nw.compact(1, 100)
	nw.down[3] = false
	hold = false
	var sent []uint64
	nw.trace = func(m Message) {
		if m.Type == MsgSnap && m.Chunk.Offset == 0 {
			sent = append(sent, m.Snapshot.Index)
		}
	}
	nw.tick(4)
	if st := nw.storage[3].snap; st == nil || st.Meta.Index != second.Meta.Index {
		t.Fatalf("node 3 snapshot %+v, want the newer one at %d (first was %d)", st, second.Meta.Index, first.Meta.Index)
	}
	if len(sent) != 1 || sent[0] != second.Meta.Index {
		t.Fatalf("transfers started %v, want exactly one of %d right after the first completed", sent, second.Meta.Index)
	}
	nw.propose(1, "z")
	if got := nw.appliedData(3); len(got) != 1 || got[0] != "z" {
		t.Fatalf("node 3 applied %v", got)
	}
}

// Paper §7, InstallSnapshot step 6, checked on the last chunk: if a delayed append brought the log
// past the snapshot while its chunks travelled, the follower keeps its log instead of discarding
// entries the leader already counts as matched. (Found by internal/sim: discarding them let a
// later heartbeat commit beyond the follower's log.)
func TestSnapshotLastChunkKeepsMatchingLog(t *testing.T) {
	n := newSingle(t, 2, []NodeID{1, 2, 3})
	step := func(m Message) {
		t.Helper()
		if err := n.Step(m); err != nil {
			t.Fatal(err)
		}
		drain(n)
	}
	meta := SnapshotMeta{Index: 3, Term: 2, ConfState: ConfState{Voters: []NodeID{1, 2, 3}}}
	step(Message{Type: MsgSnap, From: 1, To: 2, Term: 2, Snapshot: &meta, Chunk: &SnapshotChunk{Offset: 0, Total: 4, Data: []byte("ab")}})
	step(Message{Type: MsgApp, From: 1, To: 2, Term: 2, Index: 1, LogTerm: 1, Commit: 1,
		Entries: []Entry{{Index: 2, Term: 2}, {Index: 3, Term: 2, Data: []byte("x")}, {Index: 4, Term: 2, Data: []byte("y")}}})
	m := meta
	if err := n.Step(Message{Type: MsgSnap, From: 1, To: 2, Term: 2, Snapshot: &m, Chunk: &SnapshotChunk{Offset: 2, Total: 4, Data: []byte("cd"), Last: true}}); err != nil {
		t.Fatal(err)
	}
	rds := drain(n)
	for _, rd := range rds {
		if rd.Snapshot != nil {
			t.Fatalf("restored a snapshot the log already contains: %+v", rd.Snapshot.Meta)
		}
	}
	if st := n.Status(); st.LastIndex != 4 || st.HardState.Commit != 3 {
		t.Fatalf("after the last chunk: last %d commit %d, want the log kept (4) and committed to the snapshot (3)", st.LastIndex, st.HardState.Commit)
	}
	// The leader may now tell us to commit what we acknowledged.
	if err := n.Step(Message{Type: MsgHeartbeat, From: 1, To: 2, Term: 2, Commit: 4}); err != nil {
		t.Fatal(err)
	}
	if c := n.Status().HardState.Commit; c != 4 {
		t.Fatalf("commit %d", c)
	}
}

// A leader's snapshot may live outside the core (Data nil, Size set): its chunks then carry a
// Length and no Data, the caller fills them from its own copy, and the follower restores the
// same bytes. The core never needs the image in memory.
func TestSnapshotHeldOutsideTheCore(t *testing.T) {
	nw := newNetwork(t, 3, func(c *Config) { c.MaxSnapshotChunkBytes = 30 })
	nw.stabilize()
	nw.campaign(1)
	nw.down[3] = true
	proposeN(nw, 1, 10)
	external, image := nw.compactOutside(1, 100)

	var lengths []uint64
	nw.rewrite = func(m Message) Message {
		if m.Type != MsgSnap {
			return m
		}
		if m.Chunk.Data != nil {
			t.Fatalf("chunk of an external snapshot carries data from the core: %+v", m.Chunk)
		}
		lengths = append(lengths, m.Chunk.Length)
		c := *m.Chunk
		c.Data = image[c.Offset : c.Offset+c.Length]
		c.Length = 0
		m.Chunk = &c
		return m
	}
	nw.down[3] = false
	nw.propose(1, "after")
	nw.tick(3)
	if !slices.Equal(lengths, []uint64{30, 30, 30, 10}) {
		t.Fatalf("chunk lengths %v, want 30,30,30,10 for 100 bytes", lengths)
	}
	st3 := nw.storage[3]
	if st3.snap == nil || st3.snap.Meta.Index != external.Meta.Index || !bytes.Equal(st3.snap.Data, image) {
		t.Fatalf("node 3 did not restore the caller's image: %+v", st3.snap)
	}
	nw.stabilize()
	if got, want := nw.status(3).HardState.Commit, nw.status(1).HardState.Commit; got != want {
		t.Fatalf("node 3 commit %d after catching up, leader %d", got, want)
	}
}

// With SnapshotReceiveOutside the follower's caller keeps the received data (written at each
// chunk's offset before the chunk is stepped with only its Length), and the core hands over a
// snapshot of nil Data and the right Size: neither side holds the image in memory.
func TestSnapshotReceivedOutsideTheCore(t *testing.T) {
	nw := newNetwork(t, 3, func(c *Config) { c.MaxSnapshotChunkBytes = 30; c.SnapshotReceiveOutside = true })
	nw.stabilize()
	nw.campaign(1)
	nw.down[3] = true
	proposeN(nw, 1, 10)
	external, image := nw.compactOutside(1, 100)

	disk := make([]byte, len(image)) // node 3's caller's storage for the transfer
	nw.rewrite = func(m Message) Message {
		if m.Type != MsgSnap {
			return m
		}
		c := *m.Chunk
		copy(disk[c.Offset:], image[c.Offset:c.Offset+c.Length]) // leader fills, follower stores
		c.Data = nil                                             // ... and steps only the length
		m.Chunk = &c
		return m
	}
	nw.down[3] = false
	nw.propose(1, "after")
	nw.tick(3)
	st3 := nw.storage[3]
	if st3.snap == nil || st3.snap.Meta.Index != external.Meta.Index || st3.snap.Data != nil || st3.snap.Size != uint64(len(image)) {
		t.Fatalf("node 3's Ready.Snapshot = %+v, want nil Data and Size %d", st3.snap, len(image))
	}
	if !bytes.Equal(disk, image) {
		t.Fatal("the chunks stored outside do not reassemble the image")
	}
	nw.stabilize()
	if got, want := nw.status(3).HardState.Commit, nw.status(1).HardState.Commit; got != want {
		t.Fatalf("node 3 commit %d after catching up, leader %d", got, want)
	}
}

// A transfer that stalls for an election timeout is abandoned and started over; the follower
// answers the new first chunk with what it already holds, and the leader resumes there.
func TestSnapshotRestartResumes(t *testing.T) {
	nw, snap := laggingFollower(t, 10)
	// Let half of the snapshot through, then lose every chunk for longer than an election
	// timeout, then heal.
	stall := false
	var sent []SnapshotChunk
	nw.drop = func(m Message) bool {
		if m.Type != MsgSnap {
			return false
		}
		if m.Chunk.Offset >= 50 && !stall && len(sent) < 100 {
			stall = true
		}
		if stall {
			return true
		}
		sent = append(sent, *m.Chunk)
		return false
	}
	nw.tick(2 * nw.cfgs[1].ElectionTick)
	if !stall {
		t.Fatal("the transfer never reached offset 50")
	}
	stall = false
	nw.drop = func(m Message) bool {
		if m.Type == MsgSnap {
			sent = append(sent, *m.Chunk)
		}
		return false
	}
	nw.tick(2 * nw.cfgs[1].ElectionTick)
	if st := nw.storage[3].snap; st == nil || st.Meta.Index != snap.Meta.Index || !bytes.Equal(st.Data, snap.Data) {
		t.Fatalf("snapshot not restored after the stall: %+v", nw.status(3))
	}
	var bytesSent uint64
	restarts := 0
	for _, c := range sent {
		bytesSent += uint64(len(c.Data))
		if c.Offset == 0 {
			restarts++
		}
	}
	if restarts < 2 {
		t.Fatalf("the transfer was never started over (%d first chunks delivered)", restarts)
	}
	// Resumed: what was delivered before the stall is not sent again, apart from the first
	// chunk of each restart.
	if limit := uint64(100 + 10*restarts); bytesSent > limit {
		t.Fatalf("%d snapshot bytes delivered for a 100-byte snapshot over %d starts; a resumed transfer needs at most %d", bytesSent, restarts, limit)
	}
}

// A chunk that gets no answer is resent with backoff (after 2, 4, 8 heartbeats), not on every
// heartbeat: on a slow link each copy would queue behind the previous one.
func TestSnapshotResendBacksOff(t *testing.T) {
	nw, _ := laggingFollower(t, 10)
	var firstChunks int
	nw.drop = func(m Message) bool {
		if m.Type == MsgSnap && m.Chunk.Offset == 0 {
			firstChunks++
			return true // the follower never answers: lost every time
		}
		return false
	}
	// Long enough for the transfer to start and be abandoned once.
	for range nw.cfgs[1].ElectionTick {
		nw.tick(1)
		if firstChunks > 0 {
			break
		}
	}
	if firstChunks == 0 {
		t.Fatal("no snapshot transfer started")
	}
	start := firstChunks
	nw.tick(nw.cfgs[1].ElectionTick - 1)
	// Within one election timeout of stalling: resends after 2, 4 and 8 heartbeats only.
	if resent := firstChunks - start; resent > 3 {
		t.Fatalf("the first chunk was resent %d times within an election timeout; want at most 3 (backoff)", resent)
	}
	if firstChunks-start < 1 {
		t.Fatal("the lost chunk was never resent")
	}
}
