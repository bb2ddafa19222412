package sim

import "github.com/caucus/caucus/raft"

// transmit checks what a message from node from acknowledges, then puts it on the wire with the
// run's faults. hs and lastIndex describe the sender's durable state; unsynced, if not nil,
// describes the entries it wrote and has not synced; IDs are below maxID. It reports whether
// the sender's transport should report the destination unreachable. Both drivers send through
// it.
func (s *simulation) transmit(from raft.NodeID, m raft.Message, hs raft.HardState, lastIndex uint64, unsynced func() string, maxID int) (unreachable bool) {
	s.st.Sent++
	switch m.Type {
	case raft.MsgVoteResp:
		// The durable state must make a different vote in m.Term impossible after a crash: it
		// records this vote, or a later term.
		if !m.Reject && !s.o.NoAckCheck && (hs.Term < m.Term || hs.Term == m.Term && hs.Vote != m.To) {
			s.fail(AckDurability, "node %d grants its vote to %d in term %d but its durable state is term %d vote %d",
				from, m.To, m.Term, hs.Term, hs.Vote)
		}
		// A former leader syncs its unsynced appends before it votes or acknowledges again
		// (raft.Config.DeferLeaderSync).
		if !m.Reject && !s.o.NoAckCheck && unsynced != nil {
			s.fail(AckDurability, "node %d grants its vote to %d in term %d with %s not synced", from, m.To, m.Term, unsynced())
		}
	case raft.MsgAppResp:
		// The durable state describes the durable log only, so an acknowledgement of entries a
		// leader wrote without syncing fails here too.
		if !m.Reject && !s.o.NoAckCheck && m.Index > lastIndex {
			s.fail(AckDurability, "node %d acknowledges entries through %d but its durable log ends at %d", from, m.Index, lastIndex)
		}
		// Index 0 is a stale leader being told the term, and acknowledges nothing.
		if !m.Reject && m.Index > 0 && !s.o.NoAckCheck && unsynced != nil {
			s.fail(AckDurability, "node %d acknowledges entries through %d with %s not synced", from, m.Index, unsynced())
		}
	case raft.MsgApp, raft.MsgHeartbeat, raft.MsgSnap:
		// Only a leader replicates: a sender of these in term T leads T.
		s.check(ElectionSafety, s.chk.leader(m.Term, m.From, m.Type.String()+" sent"))
	}
	// A forwarded request (MsgProp, MsgReadIndex, MsgTransferLeader) keeps its origin's From, so
	// that the leader answers the origin directly; only the destination must be sane.
	if m.To == from || m.To == raft.None || int(m.To) >= maxID {
		s.fail(CoreContract, "node %d emits a misaddressed %s from %d to %d", from, m.Type, m.From, m.To)
	}
	s.ev(0xf1, uint64(m.Type), uint64(m.From), uint64(m.To), m.Term, m.Index, uint64(len(m.Entries)))
	// A real transport notices some failed connections and says so.
	unreachable = s.net.blocked(from, m.To) && s.rng.IntN(4) == 0
	if s.w.drop > 0 && s.rng.Float64() < s.w.drop {
		s.st.Dropped++
		return unreachable
	}
	s.net.push(s.now+1+uint64(s.rng.IntN(s.w.maxLatency)), from, cloneMessage(m))
	if s.w.dup > 0 && s.rng.Float64() < s.w.dup {
		s.st.Duplicated++
		s.net.push(s.now+1+uint64(s.rng.IntN(s.w.maxLatency)), from, cloneMessage(m))
	}
	return unreachable
}
