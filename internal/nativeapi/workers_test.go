package nativeapi

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// TestCallsReuseWorkers: sequential calls run on reused goroutines, not one new goroutine each
// (whose stack would grow again for every call). A call may occasionally start a worker while
// the previous one is between queueing its response and waiting again, so the bound is loose.
func TestCallsReuseWorkers(t *testing.T) {
	kv := &testKV{put: func(context.Context, *caucusv1.PutRequest) (*caucusv1.PutResponse, error) {
		return &caucusv1.PutResponse{}, nil
	}}
	f := newFixture(t, kv, 0)
	c := KVClient{f.client(t)}
	const calls = 1000
	for range calls {
		if _, err := c.Put(context.Background(), connect.NewRequest(&caucusv1.PutRequest{Key: []byte("k")})); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.native.work.started.Load(); n < 1 || n > calls/2 {
		t.Fatalf("%d sequential calls started %d workers, want at least 1 and far fewer than calls", calls, n)
	}
}
