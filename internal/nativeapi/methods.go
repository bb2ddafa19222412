package nativeapi

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
)

// Method numbers every unary RPC of api/caucus/v1. They are wire values: a number is never
// reused for another RPC. Each service has its own block of 16 so that services can grow.
type Method uint16

// The methods. Maintenance.Snapshot (server-streaming) has no number: it stays on connect.
const (
	MethodKVRange       Method = 1
	MethodKVPut         Method = 2
	MethodKVDeleteRange Method = 3
	MethodKVTxn         Method = 4
	MethodKVCompact     Method = 5

	MethodLeaseGrant      Method = 16
	MethodLeaseRevoke     Method = 17
	MethodLeaseKeepAlive  Method = 18
	MethodLeaseTimeToLive Method = 19
	MethodLeaseLeases     Method = 20

	MethodClusterMemberList     Method = 32
	MethodClusterMemberAdd      Method = 33
	MethodClusterMemberRemove   Method = 34
	MethodClusterMemberPromote  Method = 35
	MethodClusterSettings       Method = 36
	MethodClusterUpdateSettings Method = 37

	MethodMaintenanceStatus     Method = 48
	MethodMaintenanceMoveLeader Method = 49
	MethodMaintenanceDefragment Method = 50
)

// Handlers are the services a Server dispatches to: the same implementations the connect
// handlers serve. A nil service answers its methods with connect.CodeUnimplemented.
type Handlers struct {
	KV          caucusv1connect.KVHandler
	Lease       caucusv1connect.LeaseHandler
	Cluster     caucusv1connect.ClusterHandler
	Maintenance caucusv1connect.MaintenanceHandler
	// Intercept, when set, wraps every call, like a connect unary interceptor: procedure is the
	// connect procedure name (e.g. caucusv1connect.KVPutProcedure) and next runs the handler.
	// req.Spec() is empty on this protocol: use procedure.
	Intercept func(ctx context.Context, procedure string, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error)
}

// methodSpec is how the server decodes and runs one method.
type methodSpec struct {
	procedure string
	// decode unmarshals a request payload into a connect request of the method's type.
	decode func(payload []byte) (connect.AnyRequest, error)
	// invoke runs the handler; ok is false when the service is not configured.
	invoke func(ctx context.Context, h *Handlers, req connect.AnyRequest) (connect.AnyResponse, error)
}

// unary builds the spec of a method whose handler is fn(h) (nil when the service is absent).
func unary[Req, Resp any, PReq interface {
	*Req
	proto.Message
}](procedure string, fn func(h *Handlers) func(context.Context, *connect.Request[Req]) (*connect.Response[Resp], error)) methodSpec {
	return methodSpec{
		procedure: procedure,
		decode: func(payload []byte) (connect.AnyRequest, error) {
			msg := PReq(new(Req))
			if err := proto.Unmarshal(payload, msg); err != nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("decoding %s request: %w", procedure, err))
			}
			return connect.NewRequest((*Req)(msg)), nil
		},
		invoke: func(ctx context.Context, h *Handlers, req connect.AnyRequest) (connect.AnyResponse, error) {
			f := fn(h)
			if f == nil {
				return nil, connect.NewError(connect.CodeUnimplemented, fmt.Errorf("%s is not served here", procedure))
			}
			resp, err := f(ctx, req.(*connect.Request[Req]))
			if err != nil {
				return nil, err
			}
			if resp == nil {
				return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("%s returned neither a response nor an error", procedure))
			}
			return resp, nil
		},
	}
}

// methods maps method numbers to their specs. Indexing a slice is cheaper than a map lookup on
// every call; the numbers are small.
var methods = func() []methodSpec {
	specs := map[Method]methodSpec{
		MethodKVRange: unary(caucusv1connect.KVRangeProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.RangeRequest]) (*connect.Response[caucusv1.RangeResponse], error) {
			if h.KV == nil {
				return nil
			}
			return h.KV.Range
		}),
		MethodKVPut: unary(caucusv1connect.KVPutProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.PutRequest]) (*connect.Response[caucusv1.PutResponse], error) {
			if h.KV == nil {
				return nil
			}
			return h.KV.Put
		}),
		MethodKVDeleteRange: unary(caucusv1connect.KVDeleteRangeProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.DeleteRangeRequest]) (*connect.Response[caucusv1.DeleteRangeResponse], error) {
			if h.KV == nil {
				return nil
			}
			return h.KV.DeleteRange
		}),
		MethodKVTxn: unary(caucusv1connect.KVTxnProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.TxnRequest]) (*connect.Response[caucusv1.TxnResponse], error) {
			if h.KV == nil {
				return nil
			}
			return h.KV.Txn
		}),
		MethodKVCompact: unary(caucusv1connect.KVCompactProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.CompactionRequest]) (*connect.Response[caucusv1.CompactionResponse], error) {
			if h.KV == nil {
				return nil
			}
			return h.KV.Compact
		}),
		MethodLeaseGrant: unary(caucusv1connect.LeaseLeaseGrantProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.LeaseGrantRequest]) (*connect.Response[caucusv1.LeaseGrantResponse], error) {
			if h.Lease == nil {
				return nil
			}
			return h.Lease.LeaseGrant
		}),
		MethodLeaseRevoke: unary(caucusv1connect.LeaseLeaseRevokeProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.LeaseRevokeRequest]) (*connect.Response[caucusv1.LeaseRevokeResponse], error) {
			if h.Lease == nil {
				return nil
			}
			return h.Lease.LeaseRevoke
		}),
		MethodLeaseKeepAlive: unary(caucusv1connect.LeaseLeaseKeepAliveProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.LeaseKeepAliveRequest]) (*connect.Response[caucusv1.LeaseKeepAliveResponse], error) {
			if h.Lease == nil {
				return nil
			}
			return h.Lease.LeaseKeepAlive
		}),
		MethodLeaseTimeToLive: unary(caucusv1connect.LeaseLeaseTimeToLiveProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.LeaseTimeToLiveRequest]) (*connect.Response[caucusv1.LeaseTimeToLiveResponse], error) {
			if h.Lease == nil {
				return nil
			}
			return h.Lease.LeaseTimeToLive
		}),
		MethodLeaseLeases: unary(caucusv1connect.LeaseLeaseLeasesProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.LeaseLeasesRequest]) (*connect.Response[caucusv1.LeaseLeasesResponse], error) {
			if h.Lease == nil {
				return nil
			}
			return h.Lease.LeaseLeases
		}),
		MethodClusterMemberList: unary(caucusv1connect.ClusterMemberListProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.MemberListRequest]) (*connect.Response[caucusv1.MemberListResponse], error) {
			if h.Cluster == nil {
				return nil
			}
			return h.Cluster.MemberList
		}),
		MethodClusterMemberAdd: unary(caucusv1connect.ClusterMemberAddProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.MemberAddRequest]) (*connect.Response[caucusv1.MemberAddResponse], error) {
			if h.Cluster == nil {
				return nil
			}
			return h.Cluster.MemberAdd
		}),
		MethodClusterMemberRemove: unary(caucusv1connect.ClusterMemberRemoveProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.MemberRemoveRequest]) (*connect.Response[caucusv1.MemberRemoveResponse], error) {
			if h.Cluster == nil {
				return nil
			}
			return h.Cluster.MemberRemove
		}),
		MethodClusterMemberPromote: unary(caucusv1connect.ClusterMemberPromoteProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.MemberPromoteRequest]) (*connect.Response[caucusv1.MemberPromoteResponse], error) {
			if h.Cluster == nil {
				return nil
			}
			return h.Cluster.MemberPromote
		}),
		MethodClusterSettings: unary(caucusv1connect.ClusterSettingsProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.SettingsRequest]) (*connect.Response[caucusv1.SettingsResponse], error) {
			if h.Cluster == nil {
				return nil
			}
			return h.Cluster.Settings
		}),
		MethodClusterUpdateSettings: unary(caucusv1connect.ClusterUpdateSettingsProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.UpdateSettingsRequest]) (*connect.Response[caucusv1.UpdateSettingsResponse], error) {
			if h.Cluster == nil {
				return nil
			}
			return h.Cluster.UpdateSettings
		}),
		MethodMaintenanceStatus: unary(caucusv1connect.MaintenanceStatusProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.StatusRequest]) (*connect.Response[caucusv1.StatusResponse], error) {
			if h.Maintenance == nil {
				return nil
			}
			return h.Maintenance.Status
		}),
		MethodMaintenanceMoveLeader: unary(caucusv1connect.MaintenanceMoveLeaderProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.MoveLeaderRequest]) (*connect.Response[caucusv1.MoveLeaderResponse], error) {
			if h.Maintenance == nil {
				return nil
			}
			return h.Maintenance.MoveLeader
		}),
		MethodMaintenanceDefragment: unary(caucusv1connect.MaintenanceDefragmentProcedure, func(h *Handlers) func(context.Context, *connect.Request[caucusv1.DefragmentRequest]) (*connect.Response[caucusv1.DefragmentResponse], error) {
			if h.Maintenance == nil {
				return nil
			}
			return h.Maintenance.Defragment
		}),
	}
	var hi Method
	for m := range specs {
		hi = max(hi, m)
	}
	table := make([]methodSpec, hi+1)
	for m, s := range specs {
		table[m] = s
	}
	return table
}()

// lookup returns the spec of m, or false for an unknown method.
func lookup(m Method) (*methodSpec, bool) {
	if int(m) >= len(methods) || methods[m].decode == nil {
		return nil, false
	}
	return &methods[m], true
}

// Procedure returns the connect procedure name of m, or "" for an unknown method.
func (m Method) Procedure() string {
	if s, ok := lookup(m); ok {
		return s.procedure
	}
	return ""
}

func (m Method) String() string {
	if p := m.Procedure(); p != "" {
		return p
	}
	return fmt.Sprintf("method(%d)", uint16(m))
}
