package server

import (
	"context"
	"fmt"
	"slices"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/raft"
)

// learnerReadyFraction: a learner is promoted only once its log matches at least this fraction
// of the leader's, so that the new voter does not stall commits while it catches up.
const learnerReadyFraction = 0.9

type clusterService struct{ s *Server }

func (c *clusterService) members() []*caucusv1.Member {
	ms := c.s.store.Members()
	out := make([]*caucusv1.Member, 0, len(ms))
	for _, m := range ms {
		mp := memberProto(m)
		if gs := c.s.cfg.GossipState; gs != nil {
			mp.GossipState = gs(m.ID)
		}
		out = append(out, mp)
	}
	return out
}

func memberProto(m mvcc.Member) *caucusv1.Member {
	return &caucusv1.Member{Id: m.ID, Name: m.Name, PeerUrls: m.PeerURLs, ClientUrls: m.ClientURLs, IsLearner: m.IsLearner}
}

func (c *clusterService) find(id uint64) (mvcc.Member, bool) {
	for _, m := range c.s.store.Members() {
		if m.ID == id {
			return m, true
		}
	}
	return mvcc.Member{}, false
}

func (c *clusterService) MemberList(ctx context.Context, req *connect.Request[caucusv1.MemberListRequest]) (*connect.Response[caucusv1.MemberListResponse], error) {
	if req.Msg.Linearizable {
		if err := c.s.linearize(ctx); err != nil {
			return nil, err
		}
	}
	return connect.NewResponse(&caucusv1.MemberListResponse{Header: c.s.header(0), Members: c.members()}), nil
}

func (c *clusterService) MemberAdd(ctx context.Context, req *connect.Request[caucusv1.MemberAddRequest]) (*connect.Response[caucusv1.MemberAddResponse], error) {
	if len(req.Msg.PeerUrls) == 0 {
		return nil, toConnect(fmt.Errorf("%w: member add needs at least one peer URL", errMember))
	}
	for _, m := range c.s.store.Members() {
		for _, u := range req.Msg.PeerUrls {
			if slices.Contains(m.PeerURLs, u) {
				return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("server: peer URL %s is already used by member %x (%s)", u, m.ID, m.Name))
			}
		}
	}
	id := c.s.cfg.MemberID(req.Msg.Name, req.Msg.PeerUrls)
	typ := raft.ConfChangeAddVoter
	if req.Msg.IsLearner {
		typ = raft.ConfChangeAddLearner
	}
	mc := &logpb.MemberContext{Id: id, Name: req.Msg.Name, PeerUrls: req.Msg.PeerUrls}
	if err := c.change(ctx, raft.ConfChangeSingle{Type: typ, NodeID: raft.NodeID(id)}, mc); err != nil {
		return nil, err
	}
	m := &caucusv1.Member{Id: id, Name: req.Msg.Name, PeerUrls: req.Msg.PeerUrls, IsLearner: req.Msg.IsLearner}
	return connect.NewResponse(&caucusv1.MemberAddResponse{Header: c.s.header(0), Member: m, Members: c.members()}), nil
}

func (c *clusterService) MemberRemove(ctx context.Context, req *connect.Request[caucusv1.MemberRemoveRequest]) (*connect.Response[caucusv1.MemberRemoveResponse], error) {
	if _, ok := c.find(req.Msg.Id); !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("server: member %x not found", req.Msg.Id))
	}
	if err := c.change(ctx, raft.ConfChangeSingle{Type: raft.ConfChangeRemoveNode, NodeID: raft.NodeID(req.Msg.Id)}, &logpb.MemberContext{Id: req.Msg.Id}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&caucusv1.MemberRemoveResponse{Header: c.s.header(0), Members: c.members()}), nil
}

func (c *clusterService) MemberPromote(ctx context.Context, req *connect.Request[caucusv1.MemberPromoteRequest]) (*connect.Response[caucusv1.MemberPromoteResponse], error) {
	m, ok := c.find(req.Msg.Id)
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("server: member %x not found", req.Msg.Id))
	}
	if !m.IsLearner {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("server: member %x is already a voter", req.Msg.Id))
	}
	st := c.s.n.Status()
	if st.SoftState.State == raft.StateLeader {
		pr, ok := st.Progress[raft.NodeID(req.Msg.Id)]
		if !ok || float64(pr.Match) < float64(st.LastIndex)*learnerReadyFraction {
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("server: learner %x is not in sync with the leader yet (match %d of %d); retry later", req.Msg.Id, pr.Match, st.LastIndex))
		}
	}
	mc := &logpb.MemberContext{Id: m.ID, Name: m.Name, PeerUrls: m.PeerURLs, ClientUrls: m.ClientURLs}
	if err := c.change(ctx, raft.ConfChangeSingle{Type: raft.ConfChangeAddVoter, NodeID: raft.NodeID(m.ID)}, mc); err != nil {
		return nil, err
	}
	return connect.NewResponse(&caucusv1.MemberPromoteResponse{Header: c.s.header(0), Members: c.members()}), nil
}

func (c *clusterService) change(ctx context.Context, ch raft.ConfChangeSingle, mc *logpb.MemberContext) error {
	ctx, cancel := c.s.withDeadline(ctx)
	defer cancel()
	if err := c.s.prop.ProposeConfChange(ctx, raft.ConfChange{Changes: []raft.ConfChangeSingle{ch}}, mc); err != nil {
		return toConnect(err)
	}
	return nil
}

type maintenanceService struct{ s *Server }

func (m *maintenanceService) Status(ctx context.Context, req *connect.Request[caucusv1.StatusRequest]) (*connect.Response[caucusv1.StatusResponse], error) {
	s := m.s
	st := s.n.Status()
	resp := &caucusv1.StatusResponse{
		Header:           s.header(0),
		Version:          Version,
		DbSize:           s.store.Size(),
		Leader:           uint64(st.SoftState.Lead),
		RaftIndex:        st.LastIndex,
		RaftTerm:         st.HardState.Term,
		RaftAppliedIndex: s.store.AppliedIndex(),
		IsLearner:        slices.Contains(st.ConfState.Learners, s.n.ID()),
	}
	if err := s.n.Err(); err != nil {
		resp.Errors = append(resp.Errors, err.Error())
	}
	if st.SoftState.Lead == raft.None {
		resp.Errors = append(resp.Errors, "no leader")
	}
	return connect.NewResponse(resp), nil
}

func (m *maintenanceService) MoveLeader(ctx context.Context, req *connect.Request[caucusv1.MoveLeaderRequest]) (*connect.Response[caucusv1.MoveLeaderResponse], error) {
	ctx, cancel := m.s.withDeadline(ctx)
	defer cancel()
	if err := m.s.n.TransferLeadership(ctx, raft.NodeID(req.Msg.TargetId)); err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&caucusv1.MoveLeaderResponse{Header: m.s.header(0)}), nil
}
