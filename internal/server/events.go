package server

import (
	"context"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/internal/logpb"
)

// eventsService serves publishing and watching. Events published with a put, a delete or a
// transaction go through kvService: the write and its events are one command.
type eventsService struct {
	s *Server
	caucusv1connect.UnimplementedEventsHandler
}

func (e *eventsService) Publish(ctx context.Context, req *connect.Request[caucusv1.PublishRequest]) (*connect.Response[caucusv1.PublishResponse], error) {
	return write(ctx, e.s, &logpb.Command{Op: &logpb.Command_Publish{Publish: publishToLog(req.Msg)}}, publishFromLog)
}
