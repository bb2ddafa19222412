package server

import (
	"context"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/cmdpb"
)

type leaseService struct{ s *Server }

func (l *leaseService) LeaseGrant(ctx context.Context, req *connect.Request[caucusv1.LeaseGrantRequest]) (*connect.Response[caucusv1.LeaseGrantResponse], error) {
	return write[caucusv1.LeaseGrantResponse](ctx, l.s, &cmdpb.Command{Op: &cmdpb.Command_LeaseGrant{LeaseGrant: req.Msg}})
}

func (l *leaseService) LeaseRevoke(ctx context.Context, req *connect.Request[caucusv1.LeaseRevokeRequest]) (*connect.Response[caucusv1.LeaseRevokeResponse], error) {
	return write[caucusv1.LeaseRevokeResponse](ctx, l.s, &cmdpb.Command{Op: &cmdpb.Command_LeaseRevoke{LeaseRevoke: req.Msg}})
}

func (l *leaseService) LeaseKeepAlive(ctx context.Context, req *connect.Request[caucusv1.LeaseKeepAliveRequest]) (*connect.Response[caucusv1.LeaseKeepAliveResponse], error) {
	return write[caucusv1.LeaseKeepAliveResponse](ctx, l.s, &cmdpb.Command{Op: &cmdpb.Command_LeaseKeepAlive{LeaseKeepAlive: req.Msg}})
}

func (l *leaseService) LeaseTimeToLive(ctx context.Context, req *connect.Request[caucusv1.LeaseTimeToLiveRequest]) (*connect.Response[caucusv1.LeaseTimeToLiveResponse], error) {
	if err := l.s.linearize(ctx); err != nil {
		return nil, err
	}
	resp, err := l.s.n.Store().LeaseTimeToLive(req.Msg.Id, req.Msg.Keys, time.Now())
	if err != nil {
		return nil, toConnect(err)
	}
	resp.Header = l.s.header(0)
	return connect.NewResponse(resp), nil
}

func (l *leaseService) LeaseLeases(ctx context.Context, req *connect.Request[caucusv1.LeaseLeasesRequest]) (*connect.Response[caucusv1.LeaseLeasesResponse], error) {
	if err := l.s.linearize(ctx); err != nil {
		return nil, err
	}
	resp, err := l.s.n.Store().Leases()
	if err != nil {
		return nil, toConnect(err)
	}
	resp.Header = l.s.header(0)
	return connect.NewResponse(resp), nil
}
