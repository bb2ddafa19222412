package embed

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/client"
)

// TestDefragmentShrinksEveryMember: after many keys are written, deleted and compacted, each
// member's file keeps its peak size; defragmenting the members one at a time through the public
// client shrinks every file, and the cluster keeps agreeing on the data and serving writes and
// linearizable reads through every member.
func TestDefragmentShrinksEveryMember(t *testing.T) {
	// A defragment holds its member's loop (about 200 ms for these 32 MiB under the race detector
	// on two busy cores). With the fast test timeouts (100 ms) that cost the leader its
	// leadership, and a write it had just appended waited out its deadline. The default election
	// timeout (1 s) is what a real cluster has.
	tc := newTestClusterWith(t, 3, func(c *Config) { c.ElectionTimeout = time.Second })
	tc.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// 4,000 keys of 2 KiB (8 MiB), written 100 per transaction.
	const keys, perTxn = 4000, 100
	val := bytes.Repeat([]byte("v"), 2048)
	for i := 0; i < keys; i += perTxn {
		var ops []*caucusv1.RequestOp
		for j := i; j < i+perTxn; j++ {
			ops = append(ops, &caucusv1.RequestOp{Request: &caucusv1.RequestOp_RequestPut{
				RequestPut: &caucusv1.PutRequest{Key: []byte(fmt.Sprintf("k/%05d", j)), Value: val}}})
		}
		if _, err := kv(tc.members[i/perTxn%3]).Txn(ctx, connect.NewRequest(&caucusv1.TxnRequest{Success: ops})); err != nil {
			t.Fatalf("txn at key %d: %v", i, err)
		}
	}
	// Keep the last 5%.
	del, err := kv(tc.members[0]).DeleteRange(ctx, connect.NewRequest(&caucusv1.DeleteRangeRequest{
		Key: []byte("k/"), RangeEnd: []byte(fmt.Sprintf("k/%05d", keys*95/100))}))
	if err != nil || del.Msg.Deleted != keys*95/100 {
		t.Fatalf("delete: %v (%v)", del, err)
	}
	if _, err := kv(tc.members[1]).Compact(ctx, connect.NewRequest(&caucusv1.CompactionRequest{Revision: del.Msg.Header.Revision})); err != nil {
		t.Fatalf("compact: %v", err)
	}
	// Physical compaction runs a bounded share in each state machine commit: give it commits.
	// A linearizable read on every member forces each to commit what it applied.
	for i := range 10 {
		if err := put(ctx, tc.members[i%3], "tick", fmt.Sprint(i)); err != nil {
			t.Fatalf("put tick: %v", err)
		}
		for _, m := range tc.members {
			get(ctx, t, m, "tick", caucusv1.Consistency_CONSISTENCY_LINEARIZABLE_UNSPECIFIED)
		}
	}

	var eps []string
	for _, m := range tc.members {
		eps = append(eps, m.ClientURL)
	}
	cli, err := client.New(client.Config{Endpoints: eps, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for i, m := range tc.members {
		path := filepath.Join(tc.cfgs[i].DataDir, "kv.db")
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Defragment(ctx, m.ClientURL)
		if err != nil {
			t.Fatalf("defragment member %d: %v", i+1, err)
		}
		t.Logf("member %d: %d -> %d bytes", i+1, resp.DbSizeBefore, resp.DbSizeAfter)
		if resp.Header.MemberId != uint64(m.ID) {
			t.Errorf("member %d answered by %x, want %x", i+1, resp.Header.MemberId, m.ID)
		}
		if resp.DbSizeBefore != fi.Size() || resp.DbSizeBefore < keys*2048 {
			t.Errorf("member %d: size before %d, file was %d bytes: want the same, and at least the %d bytes written",
				i+1, resp.DbSizeBefore, fi.Size(), keys*2048)
		}
		if resp.DbSizeAfter*4 > resp.DbSizeBefore {
			t.Errorf("member %d: %d -> %d bytes, want at least 4x smaller after deleting 95%% of the data", i+1, resp.DbSizeBefore, resp.DbSizeAfter)
		}
		if fi, err := os.Stat(path); err != nil || fi.Size() != resp.DbSizeAfter {
			t.Errorf("member %d: file after %v (%v), reported %d", i+1, fi, err, resp.DbSizeAfter)
		}
		// The defragmented member serves writes and linearizable reads at once.
		key := fmt.Sprintf("after/%d", i)
		if err := put(ctx, m, key, "x"); err != nil {
			t.Fatalf("put through member %d after its defragment: %v", i+1, err)
		}
		for _, other := range tc.members {
			if got := get(ctx, t, other, key, caucusv1.Consistency_CONSISTENCY_LINEARIZABLE_UNSPECIFIED); got != "x" {
				t.Fatalf("%s = %q on %s after member %d defragmented, want x", key, got, other.ClientURL, i+1)
			}
		}
	}

	// Every member holds the same data at the same revision: a linearizable read of the whole
	// keyspace on each, then the same revision read serializably from each.
	whole := &caucusv1.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}
	first, err := kv(tc.members[0]).Range(ctx, connect.NewRequest(whole))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(first.Msg.Kvs); n != keys-keys*95/100+1+3 {
		t.Fatalf("%d keys after defragmenting, want %d", n, keys-keys*95/100+1+3)
	}
	rev := first.Msg.Header.Revision
	for _, m := range tc.members[1:] {
		// A linearizable read first, so that the member has applied rev.
		get(ctx, t, m, "tick", caucusv1.Consistency_CONSISTENCY_LINEARIZABLE_UNSPECIFIED)
		at := &caucusv1.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev,
			Consistency: caucusv1.Consistency_CONSISTENCY_SERIALIZABLE}
		r, err := kv(m).Range(ctx, connect.NewRequest(at))
		if err != nil {
			t.Fatalf("range on %s: %v", m.ClientURL, err)
		}
		if len(r.Msg.Kvs) != len(first.Msg.Kvs) {
			t.Fatalf("%s holds %d keys at revision %d, member 1 %d", m.ClientURL, len(r.Msg.Kvs), rev, len(first.Msg.Kvs))
		}
		for j := range r.Msg.Kvs {
			if !proto.Equal(r.Msg.Kvs[j], first.Msg.Kvs[j]) {
				t.Fatalf("%s differs from member 1 at revision %d: %v vs %v", m.ClientURL, rev, r.Msg.Kvs[j], first.Msg.Kvs[j])
			}
		}
	}
}
