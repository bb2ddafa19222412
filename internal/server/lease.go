package server

import (
	"context"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/logpb"
)

type leaseService struct{ s *Server }

func (l *leaseService) LeaseGrant(ctx context.Context, req *connect.Request[caucusv1.LeaseGrantRequest]) (*connect.Response[caucusv1.LeaseGrantResponse], error) {
	return write(ctx, l.s, &logpb.Command{Op: &logpb.Command_LeaseGrant{LeaseGrant: leaseGrantToLog(req.Msg)}}, leaseGrantFromLog)
}

func (l *leaseService) LeaseRevoke(ctx context.Context, req *connect.Request[caucusv1.LeaseRevokeRequest]) (*connect.Response[caucusv1.LeaseRevokeResponse], error) {
	return write(ctx, l.s, &logpb.Command{Op: &logpb.Command_LeaseRevoke{LeaseRevoke: leaseRevokeToLog(req.Msg)}}, leaseRevokeFromLog)
}

func (l *leaseService) LeaseKeepAlive(ctx context.Context, req *connect.Request[caucusv1.LeaseKeepAliveRequest]) (*connect.Response[caucusv1.LeaseKeepAliveResponse], error) {
	return write(ctx, l.s, &logpb.Command{Op: &logpb.Command_LeaseKeepAlive{LeaseKeepAlive: leaseKeepAliveToLog(req.Msg)}}, leaseKeepAliveFromLog)
}

func (l *leaseService) LeaseTimeToLive(ctx context.Context, req *connect.Request[caucusv1.LeaseTimeToLiveRequest]) (*connect.Response[caucusv1.LeaseTimeToLiveResponse], error) {
	if err := l.s.linearize(ctx); err != nil {
		return nil, err
	}
	info, err := l.s.store.LeaseTimeToLive(req.Msg.Id, req.Msg.Keys, time.Now())
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&caucusv1.LeaseTimeToLiveResponse{
		Header: l.s.header(info.Rev), Id: info.ID, Ttl: info.TTL, GrantedTtl: info.GrantedTTL, Keys: info.Keys,
	}), nil
}

func (l *leaseService) LeaseLeases(ctx context.Context, req *connect.Request[caucusv1.LeaseLeasesRequest]) (*connect.Response[caucusv1.LeaseLeasesResponse], error) {
	if err := l.s.linearize(ctx); err != nil {
		return nil, err
	}
	ids, rev, err := l.s.store.Leases()
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&caucusv1.LeaseLeasesResponse{Header: l.s.header(rev), Ids: ids}), nil
}
