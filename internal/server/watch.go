package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/internal/watch"
)

// Watch streams key changes and events (internal/watch). The handler's goroutine is the
// watcher's: it sends what the member's hub queues for it, or catches it up from the store.
// A send that waits watch.Options.StallTimeout for the client ends the stream with
// ResourceExhausted naming the revision to resume from: on the native protocol the stream's
// credit wait is aborted and the status follows the messages already sent; over HTTP the
// stream's write deadline is moved to now, which resets an HTTP/2 stream (the client sees the
// reset, not the status, and resumes from the last revision it read).
func (e *eventsService) Watch(ctx context.Context, req *connect.Request[caucusv1.WatchRequest], stream *connect.ServerStream[caucusv1.WatchResponse]) error {
	m := req.Msg
	w, err := e.s.watch.Watch(watch.Request{
		Key: m.GetKey(), RangeEnd: m.GetRangeEnd(), Topics: m.GetTopics(), StartRevision: m.GetStartRevision(),
		PrevKV: m.GetPrevKv(), ProgressNotify: m.GetProgressNotify(),
	})
	if err != nil {
		return watchError(err)
	}
	defer w.Close()
	send := func(r *watch.Response) error {
		h := e.s.header(r.Revision)
		h.Revision = r.Revision // header(0) would mean the store's revision
		return stream.Send(&caucusv1.WatchResponse{Header: h, Items: r.Items, Progress: r.Progress})
	}
	return watchError(w.Run(ctx, send, sendAborter(ctx, stream.Conn())))
}

// sendAborter returns the function that makes a stream's blocked Send fail, for the hub's stall
// detection; nil when the transport offers none.
func sendAborter(ctx context.Context, conn connect.StreamingHandlerConn) func() {
	if a, ok := conn.(interface{ AbortSend(error) }); ok { // the native protocol
		return func() {
			a.AbortSend(connect.NewError(connect.CodeResourceExhausted, watch.ErrStalled))
		}
	}
	if rc, ok := ctx.Value(responseControllerKey{}).(*http.ResponseController); ok {
		return func() { _ = rc.SetWriteDeadline(time.Now()) }
	}
	return nil
}

// responseControllerKey carries the http.ResponseController of a Watch request over HTTP into
// its handler's context (see withResponseController).
type responseControllerKey struct{}

// withResponseController lets the Watch handler reach its HTTP stream's write deadline, which
// connect does not expose.
func withResponseController(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, caucusv1connect.EventsWatchProcedure) {
			r = r.WithContext(context.WithValue(r.Context(), responseControllerKey{}, http.NewResponseController(w)))
		}
		h.ServeHTTP(w, r)
	})
}

// watchError maps the hub's errors to status codes.
func watchError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, watch.ErrStalled), errors.Is(err, watch.ErrTooManyWatchers):
		return connect.NewError(connect.CodeResourceExhausted, err)
	case errors.Is(err, watch.ErrClosed), errors.Is(err, watch.ErrUnavailable):
		return connect.NewError(connect.CodeUnavailable, err)
	case errors.Is(err, watch.ErrInvalid):
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	return toConnect(err)
}

// CloseWatches ends every watch (the member is stopping): clients resume on another member.
func (s *Server) CloseWatches() { s.watch.Close() }

// WatchStats describes the member's watchers.
func (s *Server) WatchStats() watch.Stats { return s.watch.Stats() }
