package client

import (
	"context"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// Cluster response types.
type (
	Member                = caucusv1.Member
	MemberListResponse    = caucusv1.MemberListResponse
	MemberAddResponse     = caucusv1.MemberAddResponse
	MemberRemoveResponse  = caucusv1.MemberRemoveResponse
	MemberPromoteResponse = caucusv1.MemberPromoteResponse
)

// MemberList lists the members. The list is read linearizably (through the leader's ReadIndex)
// unless WithSerializable is given, in which case the answering member's view is returned.
func (c *Client) MemberList(ctx context.Context, opts ...OpOption) (*MemberListResponse, error) {
	var op Op
	for _, o := range opts {
		o(&op)
	}
	req := &caucusv1.MemberListRequest{Linearizable: !op.serial}
	return unary(ctx, c, "member list", anyEndpoint, retryTransient, func(ctx context.Context, ep *endpoint) (*connect.Response[MemberListResponse], error) {
		return ep.cluster.MemberList(ctx, connect.NewRequest(req))
	})
}

// MemberAdd adds a voting member named name reachable at peerURLs. Membership changes are not
// idempotent, so an attempt is retried only when it certainly was not applied.
func (c *Client) MemberAdd(ctx context.Context, name string, peerURLs []string) (*MemberAddResponse, error) {
	return c.memberAdd(ctx, &caucusv1.MemberAddRequest{Name: name, PeerUrls: peerURLs})
}

// MemberAddLearner adds a non-voting member (a learner) named name reachable at peerURLs. Promote
// it with MemberPromote once it has caught up.
func (c *Client) MemberAddLearner(ctx context.Context, name string, peerURLs []string) (*MemberAddResponse, error) {
	return c.memberAdd(ctx, &caucusv1.MemberAddRequest{Name: name, PeerUrls: peerURLs, IsLearner: true})
}

func (c *Client) memberAdd(ctx context.Context, req *caucusv1.MemberAddRequest) (*MemberAddResponse, error) {
	return unary(ctx, c, "member add", leaderEndpoint, retryNotApplied, func(ctx context.Context, ep *endpoint) (*connect.Response[MemberAddResponse], error) {
		return ep.cluster.MemberAdd(ctx, connect.NewRequest(req))
	})
}

// MemberRemove removes member id.
func (c *Client) MemberRemove(ctx context.Context, id uint64) (*MemberRemoveResponse, error) {
	req := &caucusv1.MemberRemoveRequest{Id: id}
	return unary(ctx, c, "member remove", leaderEndpoint, retryNotApplied, func(ctx context.Context, ep *endpoint) (*connect.Response[MemberRemoveResponse], error) {
		return ep.cluster.MemberRemove(ctx, connect.NewRequest(req))
	})
}

// MemberPromote turns learner id into a voting member.
func (c *Client) MemberPromote(ctx context.Context, id uint64) (*MemberPromoteResponse, error) {
	req := &caucusv1.MemberPromoteRequest{Id: id}
	return unary(ctx, c, "member promote", leaderEndpoint, retryNotApplied, func(ctx context.Context, ep *endpoint) (*connect.Response[MemberPromoteResponse], error) {
		return ep.cluster.MemberPromote(ctx, connect.NewRequest(req))
	})
}
