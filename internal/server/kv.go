package server

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/logpb"
)

type kvService struct{ s *Server }

func (k *kvService) Range(ctx context.Context, req *connect.Request[caucusv1.RangeRequest]) (*connect.Response[caucusv1.RangeResponse], error) {
	s := k.s
	r := rangeToLog(req.Msg)
	if err := s.store.Limits().ValidateRange(r); err != nil {
		return nil, toConnect(err)
	}
	if req.Msg.Consistency != caucusv1.Consistency_CONSISTENCY_SERIALIZABLE {
		if err := s.linearize(ctx); err != nil {
			return nil, err
		}
	}
	resp, err := s.store.Range(r)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(rangeFromLog(resp, s.header(resp.GetHeader().GetRevision()))), nil
}

func (k *kvService) Put(ctx context.Context, req *connect.Request[caucusv1.PutRequest]) (*connect.Response[caucusv1.PutResponse], error) {
	return write(ctx, k.s, &logpb.Command{Op: &logpb.Command_Put{Put: putToLog(req.Msg)}}, putFromLog)
}

func (k *kvService) DeleteRange(ctx context.Context, req *connect.Request[caucusv1.DeleteRangeRequest]) (*connect.Response[caucusv1.DeleteRangeResponse], error) {
	return write(ctx, k.s, &logpb.Command{Op: &logpb.Command_DeleteRange{DeleteRange: deleteToLog(req.Msg)}}, deleteFromLog)
}

func (k *kvService) Txn(ctx context.Context, req *connect.Request[caucusv1.TxnRequest]) (*connect.Response[caucusv1.TxnResponse], error) {
	// Every transaction goes through the log, even a read-only one: it is then trivially
	// linearizable and atomic with respect to concurrent writes.
	return write(ctx, k.s, &logpb.Command{Op: &logpb.Command_Txn{Txn: txnToLog(req.Msg)}}, txnFromLog)
}

func (k *kvService) Compact(ctx context.Context, req *connect.Request[caucusv1.CompactionRequest]) (*connect.Response[caucusv1.CompactionResponse], error) {
	return write(ctx, k.s, &logpb.Command{Op: &logpb.Command_Compaction{Compaction: compactionToLog(req.Msg)}}, compactionFromLog)
}

// write replicates cmd and translates the state machine's response (of log type L) to the API
// with conv, giving it this member's header at the revision the state machine reported.
func write[L interface {
	proto.Message
	GetHeader() *logpb.ResponseHeader
}, A any](ctx context.Context, s *Server, cmd *logpb.Command, conv func(L, *caucusv1.ResponseHeader) *A) (*connect.Response[A], error) {
	r, err := s.propose(ctx, cmd)
	if err != nil {
		return nil, err
	}
	resp, ok := r.(L)
	if !ok {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("server: state machine returned %T for %T", r, cmd.GetOp()))
	}
	return connect.NewResponse(conv(resp, s.header(resp.GetHeader().GetRevision()))), nil
}
