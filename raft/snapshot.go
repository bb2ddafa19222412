package raft

import "slices"

// Snapshot transfer. Paper §7 sends InstallSnapshot in chunks; here the leader sends one chunk of
// at most MaxSnapshotChunkBytes at a time and waits for the follower's MsgSnapResp, which reports
// how many bytes it holds. A lost chunk or acknowledgement is resent after two heartbeat intervals
// without progress, then after four, eight...; after an election timeout without progress the transfer is abandoned and the
// follower probed again, which restarts it (possibly with a newer snapshot). A restart of the same
// snapshot by the same leader in the same term resumes where the follower is. The follower
// buffers up to MaxSnapshotBytes and restores on the last chunk; its acknowledgement of the whole
// snapshot is an MsgAppResp sent after the snapshot is persisted.

// snapshotRetransmitStalls: heartbeat intervals without progress before the chunk in flight is
// resent.
const snapshotRetransmitStalls = 2

// snapshotReceiver buffers the chunks of one snapshot from one leader in one term.
type snapshotReceiver struct {
	from     NodeID
	term     uint64
	meta     SnapshotMeta
	total    uint64
	received uint64
	data     []byte // nil when the caller keeps the data (Config.SnapshotReceiveOutside)
}

func cloneMeta(m SnapshotMeta) SnapshotMeta {
	cs := m.ConfState
	m.ConfState = ConfState{
		Voters:         slices.Clone(cs.Voters),
		VotersOutgoing: slices.Clone(cs.VotersOutgoing),
		Learners:       slices.Clone(cs.Learners),
		LearnersNext:   slices.Clone(cs.LearnersNext),
		AutoLeave:      cs.AutoLeave,
	}
	return m
}

// sendSnapshot starts sending the latest snapshot to a follower whose next entry is compacted.
func (r *raft) sendSnapshot(to NodeID, pr *progress) bool {
	if r.log.snap.Meta.Index == 0 {
		panic("raft: follower needs a snapshot but the leader has none")
	}
	s := r.log.snap
	pr.becomeSnapshot(&s)
	r.logger.Info("raft: sending snapshot", "to", to, "index", s.Meta.Index, "term", s.Meta.Term, "bytes", s.Len())
	r.sendSnapshotChunk(to, pr)
	return true
}

func (r *raft) sendSnapshotChunk(to NodeID, pr *progress) {
	total := pr.snap.Len()
	off := pr.snapOffset
	end := min(off+r.cfg.MaxSnapshotChunkBytes, total)
	meta := cloneMeta(pr.snap.Meta)
	pr.snapChunkLen = end - off
	ch := &SnapshotChunk{Offset: off, Total: total, Last: end == total}
	if pr.snap.Data != nil {
		ch.Data = pr.snap.Data[off:end:end]
	} else {
		ch.Length = end - off // the caller fills Data from its snapshot store
	}
	r.send(Message{To: to, Type: MsgSnap, Snapshot: &meta, Chunk: ch})
}

// handleSnapshotResponse advances (or rewinds) a transfer by the follower's report.
func (r *raft) handleSnapshotResponse(m Message, pr *progress) {
	if pr.state != ProgressSnapshot || m.Index != pr.pendingSnapshot {
		return // answers a transfer we abandoned
	}
	if m.Reject || m.Chunk == nil {
		r.logger.Warn("raft: follower refused snapshot; probing again", "from", m.From, "index", m.Index)
		pr.resetState(ProgressProbe)
		pr.next = pr.match + 1
		pr.probeSent = true // wait for the next heartbeat response before retrying
		return
	}
	total := pr.snap.Len()
	off := m.Chunk.Offset
	switch {
	case off == pr.snapOffset:
		// A duplicate report (e.g. for a resent chunk); the chunk in flight is still in flight.
		return
	case off == pr.snapOffset+pr.snapChunkLen && off < total:
		pr.snapOffset = off
	case off < total:
		// The follower holds something else than we thought (a lost chunk, a restart).
		pr.snapOffset = off
	default:
		return // the whole snapshot is acknowledged by the MsgAppResp that follows restore
	}
	pr.snapStalls = 0
	r.sendSnapshotChunk(m.From, pr)
}

// tickSnapshots runs every heartbeat interval on the leader: resend stalled chunks, abandon dead
// transfers.
func (r *raft) tickSnapshots() {
	for _, id := range r.memberIDs {
		pr := r.prs[id]
		if id == r.id || pr.state != ProgressSnapshot {
			continue
		}
		pr.snapStalls++
		switch {
		case pr.snapStalls*r.cfg.HeartbeatTick >= r.cfg.ElectionTick:
			r.logger.Warn("raft: snapshot transfer stalled for an election timeout; restarting it", "to", id, "index", pr.pendingSnapshot)
			pr.resetState(ProgressProbe)
			pr.next = pr.match + 1
		case pr.snapStalls >= snapshotRetransmitStalls && pr.snapStalls&(pr.snapStalls-1) == 0:
			// Resent after 2, 4, 8... heartbeat intervals without progress: on a link slower
			// than a chunk per heartbeat, every copy would otherwise queue behind the last.
			r.sendSnapshotChunk(id, pr)
		}
	}
}

// handleSnapshot receives one chunk on a follower.
func (r *raft) handleSnapshot(m Message) {
	if m.Snapshot == nil || m.Chunk == nil {
		r.logger.Warn("raft: ignoring malformed MsgSnap", "from", m.From)
		return
	}
	meta, ch := *m.Snapshot, m.Chunk
	resp := func(offset uint64, reject bool) {
		r.send(Message{To: m.From, Type: MsgSnapResp, Index: meta.Index, Reject: reject, Chunk: &SnapshotChunk{Offset: offset, Total: ch.Total}})
	}
	if ch.Offset == 0 {
		if rc := r.snapRecv; rc != nil && rc.received > 0 && rc.from == m.From && rc.term == r.term &&
			rc.meta.Index == meta.Index && rc.meta.Term == meta.Term && rc.total == ch.Total {
			// The same leader starts the same snapshot over (it abandoned a transfer that
			// stalled, or this is a late duplicate of its first chunk): say how much we hold, so
			// that it resumes there. A slow link then still makes progress from one attempt to
			// the next instead of starting from nothing every election timeout.
			resp(rc.received, false)
			return
		}
		r.snapRecv = nil
		if meta.Index <= r.log.committed {
			// We already have everything it covers (a stale or duplicate transfer).
			r.sendAfterPersist(Message{To: m.From, Type: MsgAppResp, Index: r.log.committed})
			return
		}
		if r.log.matchTerm(meta.Index, meta.Term) {
			// Paper §7: "If existing log entry has same index and term as snapshot's last
			// included entry, retain log entries following it": no need for the data.
			r.log.commitTo(meta.Index)
			r.sendAfterPersist(Message{To: m.From, Type: MsgAppResp, Index: r.log.committed})
			return
		}
		if r.cfg.MaxSnapshotBytes > 0 && ch.Total > r.cfg.MaxSnapshotBytes {
			r.logger.Error("raft: refusing snapshot larger than MaxSnapshotBytes", "from", m.From, "index", meta.Index, "bytes", ch.Total, "max", r.cfg.MaxSnapshotBytes)
			resp(0, true)
			return
		}
		r.snapRecv = &snapshotReceiver{from: m.From, term: r.term, meta: cloneMeta(meta), total: ch.Total}
	}
	rc := r.snapRecv
	if rc == nil || rc.from != m.From || rc.term != r.term || rc.meta.Index != meta.Index || rc.meta.Term != meta.Term || rc.total != ch.Total {
		// A chunk of a transfer we are not receiving: ask for it from the start.
		resp(0, false)
		return
	}
	if ch.Offset != rc.received {
		resp(rc.received, false) // out of order: report what we hold
		return
	}
	n := uint64(len(ch.Data))
	if r.cfg.SnapshotReceiveOutside {
		n = ch.Length
	}
	if rc.received+n > rc.total || (ch.Last && rc.received+n != rc.total) {
		r.logger.Error("raft: snapshot chunks inconsistent with the announced size; aborting transfer", "from", m.From, "index", meta.Index)
		r.snapRecv = nil
		resp(0, true)
		return
	}
	if !r.cfg.SnapshotReceiveOutside {
		rc.data = append(rc.data, ch.Data...)
	}
	rc.received += n
	if !ch.Last {
		resp(rc.received, false)
		return
	}
	r.snapRecv = nil
	if r.cfg.SnapshotReceiveOutside {
		r.restore(m.From, Snapshot{Meta: rc.meta, Size: rc.total})
		return
	}
	r.restore(m.From, Snapshot{Meta: rc.meta, Data: rc.data})
}

// restore replaces the follower's log and configuration with a complete snapshot. The caller
// persists and installs it from Ready.Snapshot; the acknowledgement waits for that.
func (r *raft) restore(from NodeID, s Snapshot) {
	if s.Meta.Index <= r.log.committed {
		r.sendAfterPersist(Message{To: from, Type: MsgAppResp, Index: r.log.committed})
		return
	}
	if r.log.matchTerm(s.Meta.Index, s.Meta.Term) {
		// Checked again on the last chunk: while the chunks travelled, a delayed or duplicated
		// append may have brought the log past the snapshot, and the leader may already count on
		// those entries (its match for us). Paper §7, InstallSnapshot step 6: keep them.
		r.log.commitTo(s.Meta.Index)
		r.sendAfterPersist(Message{To: from, Type: MsgAppResp, Index: r.log.committed})
		return
	}
	conf, err := membershipFromConfState(s.Meta.ConfState)
	if err != nil {
		r.logger.Error("raft: refusing snapshot with invalid configuration", "from", from, "index", s.Meta.Index, "err", err)
		r.send(Message{To: from, Type: MsgSnapResp, Index: s.Meta.Index, Reject: true, Chunk: &SnapshotChunk{}})
		return
	}
	r.log.restore(s)
	r.conf, r.confIndex = conf, s.Meta.Index
	r.syncProgress()
	r.logger.Info("raft: restored snapshot", "from", from, "index", s.Meta.Index, "term", s.Meta.Term)
	r.sendAfterPersist(Message{To: from, Type: MsgAppResp, Index: r.log.lastIndex()})
}
