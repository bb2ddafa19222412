package nativeapi

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
)

// The generated client interfaces, implemented over a Client, so that code written against
// caucusv1connect switches protocol by swapping the value. Request and response headers and
// trailers are not carried: the API keeps everything it needs in its messages.

// invoke runs one unary call and wraps the response like a connect client does.
func invoke[Resp any, PResp interface {
	*Resp
	proto.Message
}](ctx context.Context, c *Client, m Method, req proto.Message) (*connect.Response[Resp], error) {
	resp := PResp(new(Resp))
	if err := c.Invoke(ctx, m, req, resp); err != nil {
		return nil, err
	}
	return connect.NewResponse((*Resp)(resp)), nil
}

// KVClient implements caucusv1connect.KVClient over the native protocol.
type KVClient struct{ C *Client }

var _ caucusv1connect.KVClient = KVClient{}

func (x KVClient) Range(ctx context.Context, req *connect.Request[caucusv1.RangeRequest]) (*connect.Response[caucusv1.RangeResponse], error) {
	return invoke[caucusv1.RangeResponse](ctx, x.C, MethodKVRange, req.Msg)
}

func (x KVClient) Put(ctx context.Context, req *connect.Request[caucusv1.PutRequest]) (*connect.Response[caucusv1.PutResponse], error) {
	return invoke[caucusv1.PutResponse](ctx, x.C, MethodKVPut, req.Msg)
}

func (x KVClient) DeleteRange(ctx context.Context, req *connect.Request[caucusv1.DeleteRangeRequest]) (*connect.Response[caucusv1.DeleteRangeResponse], error) {
	return invoke[caucusv1.DeleteRangeResponse](ctx, x.C, MethodKVDeleteRange, req.Msg)
}

func (x KVClient) Txn(ctx context.Context, req *connect.Request[caucusv1.TxnRequest]) (*connect.Response[caucusv1.TxnResponse], error) {
	return invoke[caucusv1.TxnResponse](ctx, x.C, MethodKVTxn, req.Msg)
}

func (x KVClient) Compact(ctx context.Context, req *connect.Request[caucusv1.CompactionRequest]) (*connect.Response[caucusv1.CompactionResponse], error) {
	return invoke[caucusv1.CompactionResponse](ctx, x.C, MethodKVCompact, req.Msg)
}

// LeaseClient implements caucusv1connect.LeaseClient over the native protocol.
type LeaseClient struct{ C *Client }

var _ caucusv1connect.LeaseClient = LeaseClient{}

func (x LeaseClient) LeaseGrant(ctx context.Context, req *connect.Request[caucusv1.LeaseGrantRequest]) (*connect.Response[caucusv1.LeaseGrantResponse], error) {
	return invoke[caucusv1.LeaseGrantResponse](ctx, x.C, MethodLeaseGrant, req.Msg)
}

func (x LeaseClient) LeaseRevoke(ctx context.Context, req *connect.Request[caucusv1.LeaseRevokeRequest]) (*connect.Response[caucusv1.LeaseRevokeResponse], error) {
	return invoke[caucusv1.LeaseRevokeResponse](ctx, x.C, MethodLeaseRevoke, req.Msg)
}

func (x LeaseClient) LeaseKeepAlive(ctx context.Context, req *connect.Request[caucusv1.LeaseKeepAliveRequest]) (*connect.Response[caucusv1.LeaseKeepAliveResponse], error) {
	return invoke[caucusv1.LeaseKeepAliveResponse](ctx, x.C, MethodLeaseKeepAlive, req.Msg)
}

func (x LeaseClient) LeaseTimeToLive(ctx context.Context, req *connect.Request[caucusv1.LeaseTimeToLiveRequest]) (*connect.Response[caucusv1.LeaseTimeToLiveResponse], error) {
	return invoke[caucusv1.LeaseTimeToLiveResponse](ctx, x.C, MethodLeaseTimeToLive, req.Msg)
}

func (x LeaseClient) LeaseLeases(ctx context.Context, req *connect.Request[caucusv1.LeaseLeasesRequest]) (*connect.Response[caucusv1.LeaseLeasesResponse], error) {
	return invoke[caucusv1.LeaseLeasesResponse](ctx, x.C, MethodLeaseLeases, req.Msg)
}

// ClusterClient implements caucusv1connect.ClusterClient over the native protocol.
type ClusterClient struct{ C *Client }

var _ caucusv1connect.ClusterClient = ClusterClient{}

func (x ClusterClient) MemberList(ctx context.Context, req *connect.Request[caucusv1.MemberListRequest]) (*connect.Response[caucusv1.MemberListResponse], error) {
	return invoke[caucusv1.MemberListResponse](ctx, x.C, MethodClusterMemberList, req.Msg)
}

func (x ClusterClient) MemberAdd(ctx context.Context, req *connect.Request[caucusv1.MemberAddRequest]) (*connect.Response[caucusv1.MemberAddResponse], error) {
	return invoke[caucusv1.MemberAddResponse](ctx, x.C, MethodClusterMemberAdd, req.Msg)
}

func (x ClusterClient) MemberRemove(ctx context.Context, req *connect.Request[caucusv1.MemberRemoveRequest]) (*connect.Response[caucusv1.MemberRemoveResponse], error) {
	return invoke[caucusv1.MemberRemoveResponse](ctx, x.C, MethodClusterMemberRemove, req.Msg)
}

func (x ClusterClient) MemberPromote(ctx context.Context, req *connect.Request[caucusv1.MemberPromoteRequest]) (*connect.Response[caucusv1.MemberPromoteResponse], error) {
	return invoke[caucusv1.MemberPromoteResponse](ctx, x.C, MethodClusterMemberPromote, req.Msg)
}

func (x ClusterClient) Settings(ctx context.Context, req *connect.Request[caucusv1.SettingsRequest]) (*connect.Response[caucusv1.SettingsResponse], error) {
	return invoke[caucusv1.SettingsResponse](ctx, x.C, MethodClusterSettings, req.Msg)
}

func (x ClusterClient) UpdateSettings(ctx context.Context, req *connect.Request[caucusv1.UpdateSettingsRequest]) (*connect.Response[caucusv1.UpdateSettingsResponse], error) {
	return invoke[caucusv1.UpdateSettingsResponse](ctx, x.C, MethodClusterUpdateSettings, req.Msg)
}

// MaintenanceClient implements caucusv1connect.MaintenanceClient over the native protocol. Snapshot, which is
// server-streaming, goes to Stream (a connect client for the same member).
type MaintenanceClient struct {
	C      *Client
	Stream caucusv1connect.MaintenanceClient
}

var _ caucusv1connect.MaintenanceClient = MaintenanceClient{}

// Snapshot delegates to the connect client: the native protocol carries unary calls only.
func (x MaintenanceClient) Snapshot(ctx context.Context, req *connect.Request[caucusv1.SnapshotRequest]) (*connect.ServerStreamForClient[caucusv1.SnapshotResponse], error) {
	return x.Stream.Snapshot(ctx, req)
}

func (x MaintenanceClient) Status(ctx context.Context, req *connect.Request[caucusv1.StatusRequest]) (*connect.Response[caucusv1.StatusResponse], error) {
	return invoke[caucusv1.StatusResponse](ctx, x.C, MethodMaintenanceStatus, req.Msg)
}

func (x MaintenanceClient) MoveLeader(ctx context.Context, req *connect.Request[caucusv1.MoveLeaderRequest]) (*connect.Response[caucusv1.MoveLeaderResponse], error) {
	return invoke[caucusv1.MoveLeaderResponse](ctx, x.C, MethodMaintenanceMoveLeader, req.Msg)
}

// Defragment implements caucusv1connect.MaintenanceClient.
func (x MaintenanceClient) Defragment(ctx context.Context, req *connect.Request[caucusv1.DefragmentRequest]) (*connect.Response[caucusv1.DefragmentResponse], error) {
	return invoke[caucusv1.DefragmentResponse](ctx, x.C, MethodMaintenanceDefragment, req.Msg)
}
