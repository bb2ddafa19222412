package nativeapi

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
)

// Method is the number of an RPC of api/caucus/v1 on the wire. The numbers come from methods.registry
// (the generated constants in methods_gen.go): a number is never changed or reused for another
// RPC. Each service has blocks of 16 so that services can grow. Values from 0xFF00 up are not
// methods: they are the stream frame types (see the package documentation).
type Method uint16

// methodSpec is how the server decodes and runs one method.
type methodSpec struct {
	procedure string
	// streamType is connect.StreamTypeUnary for unary methods, which use decode and invoke;
	// streaming methods use newHandler instead.
	streamType connect.StreamType
	newHandler func(h *Handlers, opts ...connect.HandlerOption) *connect.Handler
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
		procedure:  procedure,
		streamType: connect.StreamTypeUnary,
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

// streaming builds the spec of a streaming method: newHandler builds the connect handler of the
// configured service (nil when it is absent), from which the server takes the implementation.
func streaming(procedure string, st connect.StreamType, newHandler func(h *Handlers, opts ...connect.HandlerOption) *connect.Handler) methodSpec {
	return methodSpec{procedure: procedure, streamType: st, newHandler: newHandler}
}

// methods maps method numbers to their specs. Indexing a slice is cheaper than a map lookup on
// every call; the numbers are small.
var methods = func() []methodSpec {
	specs := methodSpecs()
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
	if int(m) >= len(methods) || methods[m].procedure == "" {
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
