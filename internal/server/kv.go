package server

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/cmdpb"
)

type kvService struct{ s *Server }

func (k *kvService) Range(ctx context.Context, req *connect.Request[caucusv1.RangeRequest]) (*connect.Response[caucusv1.RangeResponse], error) {
	s := k.s
	if err := s.cfg.Limits.ValidateRange(req.Msg); err != nil {
		return nil, toConnect(err)
	}
	if req.Msg.Consistency != caucusv1.Consistency_CONSISTENCY_SERIALIZABLE {
		if err := s.linearize(ctx); err != nil {
			return nil, err
		}
	}
	resp, err := s.n.Store().Range(req.Msg)
	if err != nil {
		return nil, toConnect(err)
	}
	resp.Header = s.header(resp.GetHeader().GetRevision())
	return connect.NewResponse(resp), nil
}

func (k *kvService) Put(ctx context.Context, req *connect.Request[caucusv1.PutRequest]) (*connect.Response[caucusv1.PutResponse], error) {
	return write[caucusv1.PutResponse](ctx, k.s, &cmdpb.Command{Op: &cmdpb.Command_Put{Put: req.Msg}})
}

func (k *kvService) DeleteRange(ctx context.Context, req *connect.Request[caucusv1.DeleteRangeRequest]) (*connect.Response[caucusv1.DeleteRangeResponse], error) {
	return write[caucusv1.DeleteRangeResponse](ctx, k.s, &cmdpb.Command{Op: &cmdpb.Command_DeleteRange{DeleteRange: req.Msg}})
}

func (k *kvService) Txn(ctx context.Context, req *connect.Request[caucusv1.TxnRequest]) (*connect.Response[caucusv1.TxnResponse], error) {
	// Every transaction goes through the log, even a read-only one: it is then trivially
	// linearizable and atomic with respect to concurrent writes.
	return write[caucusv1.TxnResponse](ctx, k.s, &cmdpb.Command{Op: &cmdpb.Command_Txn{Txn: req.Msg}})
}

func (k *kvService) Compact(ctx context.Context, req *connect.Request[caucusv1.CompactionRequest]) (*connect.Response[caucusv1.CompactionResponse], error) {
	return write[caucusv1.CompactionResponse](ctx, k.s, &cmdpb.Command{Op: &cmdpb.Command_Compaction{Compaction: req.Msg}})
}

// write replicates cmd and returns the state machine's response of type M with the header set.
func write[M any, PM interface {
	*M
	proto.Message
}](ctx context.Context, s *Server, cmd *cmdpb.Command) (*connect.Response[M], error) {
	r, err := s.propose(ctx, cmd)
	if err != nil {
		return nil, err
	}
	resp, ok := r.(PM)
	if !ok {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("server: state machine returned %T, want %T", r, resp))
	}
	s.setHeader(resp)
	return connect.NewResponse((*M)(resp)), nil
}

// setHeader fills the "header" field every response message has, keeping the revision the state
// machine put there.
func (s *Server) setHeader(m proto.Message) {
	rm := m.ProtoReflect()
	fd := rm.Descriptor().Fields().ByName("header")
	if fd == nil {
		return
	}
	var rev int64
	if h, ok := rm.Get(fd).Message().Interface().(*caucusv1.ResponseHeader); ok && h != nil {
		rev = h.GetRevision()
	}
	rm.Set(fd, protoreflect.ValueOfMessage(s.header(rev).ProtoReflect()))
}
