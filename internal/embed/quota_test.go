package embed

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/client"
)

// TestQuotaBackendBytes: once the state machine's file reaches --quota-backend-bytes, writes
// that would grow it (puts, transactions with a put, new leases) are refused with
// ResourceExhausted naming the quota, while reads, deletes, transactions without puts and
// compaction still work; after compaction and a defragment shrink the file, writes resume.
func TestQuotaBackendBytes(t *testing.T) {
	const quota = 1 << 20
	tc := newTestClusterWith(t, 1, func(c *Config) { c.QuotaBackendBytes = quota })
	tc.waitLeader()
	m := tc.members[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	val := string(bytes.Repeat([]byte("v"), 64<<10))
	var refused error
	n := 0
	for ; n < 100 && refused == nil; n++ {
		refused = put(ctx, m, fmt.Sprintf("k/%03d", n), val)
	}
	if refused == nil {
		t.Fatalf("100 puts of 64 KiB were all accepted under a %d-byte quota", quota)
	}
	if n < 2 {
		t.Fatalf("the first put was refused (%v): the quota is reached only by the data", refused)
	}
	wantNoSpace := func(what string, err error) {
		t.Helper()
		if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "database space exceeded") ||
			!strings.Contains(err.Error(), "--quota-backend-bytes") {
			t.Fatalf("%s over the quota: %v; want ResourceExhausted naming the quota", what, err)
		}
	}
	wantNoSpace("put", refused)
	putOp := &caucusv1.RequestOp{Request: &caucusv1.RequestOp_RequestPut{RequestPut: &caucusv1.PutRequest{Key: []byte("t"), Value: []byte("v")}}}
	_, err := kv(m).Txn(ctx, connect.NewRequest(&caucusv1.TxnRequest{Failure: []*caucusv1.RequestOp{putOp}}))
	wantNoSpace("txn with a put", err)
	_, err = caucusv1connect.NewLeaseClient(http.DefaultClient, m.ClientURL).LeaseGrant(ctx, connect.NewRequest(&caucusv1.LeaseGrantRequest{Ttl: 60}))
	wantNoSpace("lease grant", err)

	// What frees space or reads still works.
	if got := get(ctx, t, m, "k/000", caucusv1.Consistency_CONSISTENCY_LINEARIZABLE_UNSPECIFIED); got != val {
		t.Fatalf("read over the quota returned %d bytes", len(got))
	}
	delOp := &caucusv1.RequestOp{Request: &caucusv1.RequestOp_RequestDeleteRange{RequestDeleteRange: &caucusv1.DeleteRangeRequest{Key: []byte("k/000")}}}
	if _, err := kv(m).Txn(ctx, connect.NewRequest(&caucusv1.TxnRequest{Success: []*caucusv1.RequestOp{delOp}})); err != nil {
		t.Fatalf("txn without a put over the quota: %v", err)
	}
	del, err := kv(m).DeleteRange(ctx, connect.NewRequest(&caucusv1.DeleteRangeRequest{Key: []byte("k/"), RangeEnd: []byte("k0")}))
	if err != nil {
		t.Fatalf("delete over the quota: %v", err)
	}
	if _, err := kv(m).Compact(ctx, connect.NewRequest(&caucusv1.CompactionRequest{Revision: del.Msg.Header.Revision})); err != nil {
		t.Fatalf("compact over the quota: %v", err)
	}
	// Physical compaction runs a bounded share in each state machine commit: give it commits
	// (deletes are never refused; a linearizable read forces the commit).
	for i := range 10 {
		if _, err := kv(m).DeleteRange(ctx, connect.NewRequest(&caucusv1.DeleteRangeRequest{Key: []byte(fmt.Sprint("tick", i))})); err != nil {
			t.Fatal(err)
		}
		get(ctx, t, m, "tick", caucusv1.Consistency_CONSISTENCY_LINEARIZABLE_UNSPECIFIED)
	}
	cli, err := client.New(client.Config{Endpoints: []string{m.ClientURL}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Defragment(ctx, m.ClientURL); err != nil {
		t.Fatalf("defragment: %v", err)
	}
	if err := put(ctx, m, "after", "defrag"); err != nil {
		t.Fatalf("put after compaction and defragment: %v; want writes to resume", err)
	}
}
