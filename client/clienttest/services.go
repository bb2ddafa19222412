package clienttest

import (
	"context"
	"fmt"
	"slices"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
)

// snapshotChunk is the blob size of one Snapshot stream message; small, so that tests see a
// multi-message stream.
const snapshotChunk = 64

type kvService struct {
	caucusv1connect.UnimplementedKVHandler
	m *Member
}

func (s *kvService) Range(_ context.Context, req *connect.Request[caucusv1.RangeRequest]) (*connect.Response[caucusv1.RangeResponse], error) {
	c := s.m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	resp, err := c.doRange(s.m, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func (s *kvService) Put(_ context.Context, req *connect.Request[caucusv1.PutRequest]) (*connect.Response[caucusv1.PutResponse], error) {
	c := s.m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	resp, err := c.dedup(req.Msg.GetSession(), func() (proto.Message, error) {
		if err := c.checkPut(req.Msg); err != nil {
			return nil, err
		}
		c.rev++
		return c.doPut(s.m, req.Msg, c.rev)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp.(*caucusv1.PutResponse)), nil
}

func (s *kvService) DeleteRange(_ context.Context, req *connect.Request[caucusv1.DeleteRangeRequest]) (*connect.Response[caucusv1.DeleteRangeResponse], error) {
	c := s.m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	resp, err := c.dedup(req.Msg.GetSession(), func() (proto.Message, error) {
		if len(req.Msg.GetKey()) == 0 {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("empty key"))
		}
		if len(c.keysIn(req.Msg.GetKey(), req.Msg.GetRangeEnd(), c.rev)) == 0 {
			return &caucusv1.DeleteRangeResponse{Header: s.m.header()}, nil // nothing to delete: no new revision
		}
		c.rev++
		return c.doDelete(s.m, req.Msg, c.rev), nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp.(*caucusv1.DeleteRangeResponse)), nil
}

func (s *kvService) Txn(_ context.Context, req *connect.Request[caucusv1.TxnRequest]) (*connect.Response[caucusv1.TxnResponse], error) {
	c := s.m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	resp, err := c.dedup(req.Msg.GetSession(), func() (proto.Message, error) {
		return c.doTxn(s.m, req.Msg)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp.(*caucusv1.TxnResponse)), nil
}

func (s *kvService) Compact(_ context.Context, req *connect.Request[caucusv1.CompactionRequest]) (*connect.Response[caucusv1.CompactionResponse], error) {
	c := s.m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	rev := req.Msg.GetRevision()
	switch {
	case rev > c.rev:
		return nil, connect.NewError(connect.CodeOutOfRange, fmt.Errorf("required revision is a future revision"))
	case rev <= c.compacted:
		return nil, connect.NewError(connect.CodeOutOfRange, fmt.Errorf("required revision has been compacted"))
	}
	c.compacted = rev
	return connect.NewResponse(&caucusv1.CompactionResponse{Header: s.m.header()}), nil
}

type leaseService struct {
	caucusv1connect.UnimplementedLeaseHandler
	m *Member
}

func (s *leaseService) LeaseGrant(_ context.Context, req *connect.Request[caucusv1.LeaseGrantRequest]) (*connect.Response[caucusv1.LeaseGrantResponse], error) {
	c := s.m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if req.Msg.GetTtl() <= 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("lease ttl %d is not positive", req.Msg.GetTtl()))
	}
	id := req.Msg.GetId()
	if id == 0 {
		id = c.nextLease
		c.nextLease++
	}
	if c.leases[id] != nil {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("lease %x already exists", id))
	}
	c.leases[id] = &lease{ttl: req.Msg.GetTtl(), keys: make(map[string]bool)}
	return connect.NewResponse(&caucusv1.LeaseGrantResponse{Header: s.m.header(), Id: id, Ttl: req.Msg.GetTtl()}), nil
}

func (s *leaseService) LeaseRevoke(_ context.Context, req *connect.Request[caucusv1.LeaseRevokeRequest]) (*connect.Response[caucusv1.LeaseRevokeResponse], error) {
	c := s.m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.revokeLocked(req.Msg.GetId()) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("lease %x not found", req.Msg.GetId()))
	}
	return connect.NewResponse(&caucusv1.LeaseRevokeResponse{Header: s.m.header()}), nil
}

func (s *leaseService) LeaseKeepAlive(_ context.Context, req *connect.Request[caucusv1.LeaseKeepAliveRequest]) (*connect.Response[caucusv1.LeaseKeepAliveResponse], error) {
	c := s.m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.leases[req.Msg.GetId()]
	if l == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("lease %x not found", req.Msg.GetId()))
	}
	return connect.NewResponse(&caucusv1.LeaseKeepAliveResponse{Header: s.m.header(), Id: req.Msg.GetId(), Ttl: l.ttl}), nil
}

func (s *leaseService) LeaseTimeToLive(_ context.Context, req *connect.Request[caucusv1.LeaseTimeToLiveRequest]) (*connect.Response[caucusv1.LeaseTimeToLiveResponse], error) {
	c := s.m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	resp := &caucusv1.LeaseTimeToLiveResponse{Header: s.m.header(), Id: req.Msg.GetId(), Ttl: -1}
	if l := c.leases[req.Msg.GetId()]; l != nil {
		resp.Ttl, resp.GrantedTtl = l.ttl, l.ttl
		if req.Msg.GetKeys() {
			for k := range l.keys {
				resp.Keys = append(resp.Keys, []byte(k))
			}
			slices.SortFunc(resp.Keys, func(a, b []byte) int { return slices.Compare(a, b) })
		}
	}
	return connect.NewResponse(resp), nil
}

func (s *leaseService) LeaseLeases(context.Context, *connect.Request[caucusv1.LeaseLeasesRequest]) (*connect.Response[caucusv1.LeaseLeasesResponse], error) {
	c := s.m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	resp := &caucusv1.LeaseLeasesResponse{Header: s.m.header()}
	for id := range c.leases {
		resp.Ids = append(resp.Ids, id)
	}
	slices.Sort(resp.Ids)
	return connect.NewResponse(resp), nil
}

type clusterService struct {
	caucusv1connect.UnimplementedClusterHandler
	m *Member
}

// membersLocked returns a copy of the member list. c.mu must be held.
func (c *Cluster) membersLocked() []*caucusv1.Member {
	out := make([]*caucusv1.Member, len(c.members))
	for i, m := range c.members {
		out[i] = proto.Clone(m).(*caucusv1.Member)
	}
	return out
}

func (c *Cluster) memberIndex(id uint64) int {
	return slices.IndexFunc(c.members, func(m *caucusv1.Member) bool { return m.GetId() == id })
}

func (s *clusterService) MemberList(context.Context, *connect.Request[caucusv1.MemberListRequest]) (*connect.Response[caucusv1.MemberListResponse], error) {
	c := s.m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return connect.NewResponse(&caucusv1.MemberListResponse{Header: s.m.header(), Members: c.membersLocked()}), nil
}

func (s *clusterService) MemberAdd(_ context.Context, req *connect.Request[caucusv1.MemberAddRequest]) (*connect.Response[caucusv1.MemberAddResponse], error) {
	c := s.m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(req.Msg.GetPeerUrls()) == 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("no peer urls"))
	}
	for _, m := range c.members {
		for _, u := range m.GetPeerUrls() {
			if slices.Contains(req.Msg.GetPeerUrls(), u) {
				return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("peer url %s is already member %x's", u, m.GetId()))
			}
		}
	}
	nm := &caucusv1.Member{Id: c.newMemberID(), Name: req.Msg.GetName(), PeerUrls: req.Msg.GetPeerUrls(), IsLearner: req.Msg.GetIsLearner()}
	c.members = append(c.members, nm)
	return connect.NewResponse(&caucusv1.MemberAddResponse{
		Header: s.m.header(), Member: proto.Clone(nm).(*caucusv1.Member), Members: c.membersLocked(),
	}), nil
}

func (s *clusterService) MemberRemove(_ context.Context, req *connect.Request[caucusv1.MemberRemoveRequest]) (*connect.Response[caucusv1.MemberRemoveResponse], error) {
	c := s.m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	i := c.memberIndex(req.Msg.GetId())
	if i < 0 {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("member %x not found", req.Msg.GetId()))
	}
	c.members = slices.Delete(c.members, i, i+1)
	return connect.NewResponse(&caucusv1.MemberRemoveResponse{Header: s.m.header(), Members: c.membersLocked()}), nil
}

func (s *clusterService) MemberPromote(_ context.Context, req *connect.Request[caucusv1.MemberPromoteRequest]) (*connect.Response[caucusv1.MemberPromoteResponse], error) {
	c := s.m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	i := c.memberIndex(req.Msg.GetId())
	switch {
	case i < 0:
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("member %x not found", req.Msg.GetId()))
	case !c.members[i].GetIsLearner():
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("member %x is not a learner", req.Msg.GetId()))
	}
	c.members[i].IsLearner = false
	return connect.NewResponse(&caucusv1.MemberPromoteResponse{Header: s.m.header(), Members: c.membersLocked()}), nil
}

type maintenanceService struct {
	caucusv1connect.UnimplementedMaintenanceHandler
	m *Member
}

func (s *maintenanceService) Status(context.Context, *connect.Request[caucusv1.StatusRequest]) (*connect.Response[caucusv1.StatusResponse], error) {
	c := s.m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return connect.NewResponse(&caucusv1.StatusResponse{
		Header: s.m.header(), Version: "clienttest", DbSize: int64(len(c.history)) * 64,
		Leader: c.leader, RaftIndex: uint64(c.rev), RaftTerm: c.term, RaftAppliedIndex: uint64(c.rev),
	}), nil
}

func (s *maintenanceService) MoveLeader(_ context.Context, req *connect.Request[caucusv1.MoveLeaderRequest]) (*connect.Response[caucusv1.MoveLeaderResponse], error) {
	c := s.m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	i := c.memberIndex(req.Msg.GetTargetId())
	switch {
	case i < 0:
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("member %x not found", req.Msg.GetTargetId()))
	case c.members[i].GetIsLearner():
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("member %x is a learner", req.Msg.GetTargetId()))
	}
	if c.leader != req.Msg.GetTargetId() {
		c.leader = req.Msg.GetTargetId()
		c.term++
	}
	return connect.NewResponse(&caucusv1.MoveLeaderResponse{Header: s.m.header()}), nil
}

func (s *maintenanceService) Snapshot(ctx context.Context, _ *connect.Request[caucusv1.SnapshotRequest], stream *connect.ServerStream[caucusv1.SnapshotResponse]) error {
	blob := s.m.c.Snapshot()
	for off := 0; ; off += snapshotChunk {
		end := min(off+snapshotChunk, len(blob))
		msg := &caucusv1.SnapshotResponse{Blob: blob[off:end], RemainingBytes: uint64(len(blob) - end)}
		if err := stream.Send(msg); err != nil {
			return fmt.Errorf("sending snapshot chunk at %d: %w", off, err)
		}
		if end == len(blob) {
			return ctx.Err()
		}
	}
}
