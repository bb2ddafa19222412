package server

import (
	"log/slog"
	"path/filepath"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// TestLogVersionCheckFollowsMembership: a command of log format version 3 is refused while a
// member applies an older version, accepted once it publishes version 3 (the cached answer is
// dropped when the membership table changes), and refused again when a member of an older
// release joins.
func TestLogVersionCheckFollowsMembership(t *testing.T) {
	st, err := mvcc.Open(filepath.Join(t.TempDir(), "kv.db"), mvcc.Options{NoSync: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	index := uint64(0)
	apply := func(f func(b *mvcc.Batch, index uint64)) {
		b := st.Begin()
		index++
		f(b, index)
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	attrs := func(id uint64, v uint32) func(*mvcc.Batch, uint64) {
		a := &logpb.MemberAttributes{Id: id, LogVersion: v}
		return func(b *mvcc.Batch, index uint64) {
			b.ApplyOp(index, &logpb.Command{Op: &logpb.Command_MemberAttributes{MemberAttributes: a}},
				func(b *mvcc.Batch) (proto.Message, error) { return b.MemberAttributes(a) })
		}
	}
	apply(func(b *mvcc.Batch, index uint64) {
		b.ApplyMembers(index, []*logpb.MemberContext{{Id: 0xa1, Name: "a"}, {Id: 0xb2, Name: "b"}}, false)
	})
	apply(attrs(0xa1, logpb.Version3))
	s := &Server{store: st, log: slog.New(slog.DiscardHandler)}
	publish := &logpb.Command{Op: &logpb.Command_Publish{Publish: &logpb.PublishRequest{Events: []*logpb.Event{{Topic: "t"}}}}}
	if err := s.checkLogVersion(publish); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("with member b on version 1: %v, want FailedPrecondition", err)
	}
	apply(attrs(0xb2, logpb.Version3))
	if err := s.checkLogVersion(publish); err != nil {
		t.Fatalf("every member on version 3: %v", err)
	}
	if err := s.checkLogVersion(publish); err != nil { // from the cache
		t.Fatalf("every member on version 3, cached: %v", err)
	}
	apply(func(b *mvcc.Batch, index uint64) {
		b.ApplyMember(index, &logpb.MemberContext{Id: 0xc3, Name: "c"}, true)
	})
	if err := s.checkLogVersion(publish); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("after member c (no version published) joined: %v, want FailedPrecondition", err)
	}
}
