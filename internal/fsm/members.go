package fsm

import (
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/internal/node"
	"github.com/caucus/caucus/raft"
)

// The membership table: who the members are and where to reach them. The Raft core keeps the
// configuration (who votes); the table adds names and URLs, taken from the Context of each
// configuration change (logpb.ConfChangeContext, or logpb.BootstrapMembers in entry 1) and
// from the members' own MemberAttributes commands.

// BootstrapContext encodes the Context of a new cluster's bootstrap configuration change: every
// initial member writes identical bytes (members sorted by id, deterministic encoding), so that
// a member that joins later learns the initial members' names and addresses from the log.
func BootstrapContext(members []node.Member) ([]byte, error) {
	ms := append([]node.Member(nil), members...)
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
	bm := &logpb.BootstrapMembers{}
	for _, m := range ms {
		bm.Members = append(bm.Members, &logpb.MemberContext{Id: uint64(m.ID), Name: m.Name, PeerUrls: m.PeerURLs})
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(bm)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode bootstrap members: %w", err)
	}
	return b, nil
}

// applyConfChange records the membership change of entry e in the table, committed on its own
// (so that Peers, read from the committed state, includes it). It returns the proposal id and
// proposer recorded in the change's context.
func (f *FSM) applyConfChange(e *raft.Entry) (uint64, raft.NodeID, error) {
	cc, err := raft.DecodeConfChange(e.Data)
	if err != nil {
		return 0, 0, fmt.Errorf("fsm: decode committed conf change %d: %w", e.Index, err)
	}
	members := map[uint64]*logpb.MemberContext{}
	var pid uint64
	var proposer raft.NodeID
	if e.Index == 1 && len(cc.Context) > 0 {
		var bm logpb.BootstrapMembers
		if err := proto.Unmarshal(cc.Context, &bm); err != nil {
			return 0, 0, fmt.Errorf("fsm: decode bootstrap members in entry 1: %w", err)
		}
		for _, m := range bm.Members {
			members[m.Id] = m
		}
	} else if len(cc.Context) > 0 {
		var c logpb.ConfChangeContext
		if err := proto.Unmarshal(cc.Context, &c); err != nil {
			return 0, 0, fmt.Errorf("fsm: decode conf change context in entry %d: %w", e.Index, err)
		}
		pid, proposer = c.ProposalId, raft.NodeID(c.Proposer)
		if c.Member != nil && c.Member.Id != 0 && len(c.Member.PeerUrls) > 0 {
			members[c.Member.Id] = c.Member
		}
	}
	// The table is read back from the committed store: commit what came before first.
	if err := f.Commit(); err != nil {
		return 0, 0, err
	}
	existing := map[uint64]mvcc.Member{}
	for _, m := range f.store.Members() {
		existing[m.ID] = m
	}
	chs := make([]mvcc.MemberChange, 0, len(cc.Changes))
	for _, ch := range cc.Changes {
		id := uint64(ch.NodeID)
		mc := members[id]
		if mc == nil {
			if old, ok := existing[id]; ok {
				mc = &logpb.MemberContext{Id: id, Name: old.Name, PeerUrls: old.PeerURLs, ClientUrls: old.ClientURLs}
			} else {
				mc = &logpb.MemberContext{Id: id}
			}
		}
		switch ch.Type {
		case raft.ConfChangeAddVoter, raft.ConfChangeAddLearner:
			chs = append(chs, mvcc.MemberChange{Member: mc, Learner: ch.Type == raft.ConfChangeAddLearner})
		case raft.ConfChangeRemoveNode:
			chs = append(chs, mvcc.MemberChange{Member: mc, Remove: true})
		}
	}
	f.open().ApplyMembership(e.Index, chs)
	if err := f.Commit(); err != nil {
		return 0, 0, err
	}
	f.log.Info("applied membership change", "index", e.Index, "changes", len(cc.Changes))
	return pid, proposer, nil
}

// memberAttributes records the client URLs and log format version a member publishes.
func memberAttributes(a *logpb.MemberAttributes) mvcc.Op {
	return func(b *mvcc.Batch) (proto.Message, error) { return b.MemberAttributes(a) }
}

// Peers implements node.StateMachine: the peer URLs of every member in the committed table.
func (f *FSM) Peers() map[raft.NodeID][]string {
	out := map[raft.NodeID][]string{}
	for _, m := range f.store.Members() {
		out[raft.NodeID(m.ID)] = m.PeerURLs
	}
	return out
}
