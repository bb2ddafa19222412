package server

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// TestUpdateSettingsWaitsForEveryMember: a settings update is version 2 of the log format, which
// a member of an older release cannot apply (it would stop). While the membership table shows
// such a member, the update is refused before anything is proposed (this server has no
// proposer: reaching it would fail the test), naming the member; values that cannot be
// settings are refused before that.
func TestUpdateSettingsWaitsForEveryMember(t *testing.T) {
	st, err := mvcc.Open(filepath.Join(t.TempDir(), "kv.db"), mvcc.Options{NoSync: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := st.Begin()
	b.ApplyMembers(1, []*logpb.MemberContext{{Id: 0xa1, Name: "new"}, {Id: 0xb2, Name: "old"}}, false)
	attrs := &logpb.MemberAttributes{Id: 0xa1, LogVersion: logpb.Version2}
	b.ApplyOp(2, &logpb.Command{Op: &logpb.Command_MemberAttributes{MemberAttributes: attrs}},
		func(b *mvcc.Batch) (proto.Message, error) { return b.MemberAttributes(attrs) })
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	c := &clusterService{s: &Server{store: st, log: slog.New(slog.DiscardHandler)}}
	update := func(set *caucusv1.ClusterSettings) error {
		_, err := c.UpdateSettings(context.Background(), connect.NewRequest(&caucusv1.UpdateSettingsRequest{Set: set}))
		return err
	}
	err = update(&caucusv1.ClusterSettings{MaxTxnOps: -1})
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "max_txn_ops") {
		t.Fatalf("a negative setting: %v, want InvalidArgument naming it", err)
	}
	err = update(&caucusv1.ClusterSettings{MaxTxnOps: 7})
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "member b2 (old)") {
		t.Fatalf("an update with a member of an older release: %v, want FailedPrecondition naming member b2", err)
	}
}
