package nativeapi

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
)

// Helpers of the generated client stubs (stubs_gen.go). Request and response headers and
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
