package fsm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/raft"
)

func entryOf(t *testing.T, index uint64, c *logpb.Command) raft.Entry {
	t.Helper()
	b, err := proto.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return raft.Entry{Index: index, Term: 1, Type: raft.EntryNormal, Data: b}
}

// TestApplyRefusesUnknownLogVersion: an entry of a newer log format version is not applied, in
// part or at all: Apply fails with an error that names the version needed, and the state stays
// at the entry before it.
func TestApplyRefusesUnknownLogVersion(t *testing.T) {
	f, err := Open(Options{ID: 1, DataDir: t.TempDir(), Store: mvcc.Options{NoSync: true}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ok := entryOf(t, 1, putCmd("a", "1"))
	future := putCmd("b", "2")
	future.Version = logpb.MaxVersion + 1
	_, err = f.Apply([]raft.Entry{ok, entryOf(t, 2, future)})
	var uv *logpb.UnknownVersionError
	if !errors.As(err, &uv) || uv.Index != 2 || uv.Version != logpb.MaxVersion+1 {
		t.Fatalf("apply of a version %d entry: %v, want an UnknownVersionError for entry 2", logpb.MaxVersion+1, err)
	}
	for _, want := range []string{
		fmt.Sprintf("log entry 2 needs log format version %d", logpb.MaxVersion+1),
		fmt.Sprintf("applies versions 1 to %d", logpb.MaxVersion), "upgrade this member",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
	}
	f.Abort()
	if got := f.AppliedIndex(); got != 0 {
		t.Fatalf("applied index %d after the refused batch, want 0", got)
	}
	// Version 1 stamped or not, and version 2, apply.
	v1 := putCmd("c", "3")
	v1.Version = logpb.Version1
	settings := &logpb.Command{Version: logpb.Version2, Op: &logpb.Command_Settings{Settings: &logpb.SettingsUpdate{Set: &logpb.Settings{MaxTxnOps: 7}}}}
	if _, err := f.Apply([]raft.Entry{ok, entryOf(t, 2, v1), entryOf(t, 3, settings)}); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if f.AppliedIndex() != 3 || f.Store().Limits().MaxTxnOps != 7 {
		t.Fatalf("applied %d, limits %+v", f.AppliedIndex(), f.Store().Limits())
	}
}

// TestMemberStopsAtUnknownLogVersion: a member that meets a committed entry of a log format
// version it does not know stops with the error, and stops again at every start, before
// applying it or anything after it: the log keeps the entry for a release that knows it, and
// what came before is intact.
func TestMemberStopsAtUnknownLogVersion(t *testing.T) {
	dir := t.TempDir()
	m := startSingle(t, dir, 0)
	putAll(t, m, 0, 5)
	future := putCmd("from-the-future", "x")
	future.Version = 9
	future.Id, future.Proposer = m.NextProposalID(), uint64(m.ID())
	data, err := proto.Marshal(future)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.Propose(ctx, future.Id, data); err == nil {
		t.Fatal("a proposal of an unknown log format version was answered")
	}
	<-m.Done()
	if err := m.Err(); err == nil || !strings.Contains(err.Error(), "needs log format version 9") {
		t.Fatalf("member stopped with %v, want the unknown version named", err)
	}
	for i := 0; i < 2; i++ {
		m2, err := openMember(singleConfig(dir, 0))
		if err != nil {
			t.Fatalf("reopen %d: %v", i, err)
		}
		m2.SetTransport(nopTransport{}, nil)
		m2.Start()
		select {
		case <-m2.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("restart %d did not stop at the entry", i)
		}
		if err := m2.Err(); err == nil || !strings.Contains(err.Error(), "needs log format version 9") {
			t.Fatalf("restart %d stopped with %v", i, err)
		}
	}
	// What was applied before the entry is there, and nothing of it.
	f, err := Open(Options{ID: 1, DataDir: dir, Store: mvcc.Options{NoSync: true}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := f.Store().Range(&logpb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	if err != nil || len(res.Kvs) != 5 {
		t.Fatalf("%d keys before the entry (%v), want 5", len(res.GetKvs()), err)
	}
	if res, _ := f.Store().Range(&logpb.RangeRequest{Key: []byte("from-the-future")}); len(res.GetKvs()) != 0 {
		t.Fatal("the unknown entry was applied")
	}
}

// TestEveryOperationHasAnApplier: every kind of command in the log format has an applier, and
// one without an operation is refused deterministically (the same refusal on every member, which
// a session can record).
func TestEveryOperationHasAnApplier(t *testing.T) {
	oneof := (&logpb.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("op")
	for i := 0; i < oneof.Fields().Len(); i++ {
		fd := oneof.Fields().Get(i)
		c := &logpb.Command{}
		m := c.ProtoReflect()
		m.Set(fd, m.NewField(fd))
		if applierOf(c) == nil || fmt.Sprintf("%p", applierOf(c)) == fmt.Sprintf("%p", mvcc.Op(refuse)) {
			t.Errorf("operation %s has no applier", fd.Name())
		}
	}
	_, err := refuse(nil)
	var me *mvcc.Error
	if !errors.As(err, &me) || !errors.Is(err, mvcc.ErrInvalidArgument) {
		t.Fatalf("refusal %v is not a deterministic InvalidArgument", err)
	}
}

// TestConsumerCommandsNeedVersion3: the consumers' commands, and a transaction that
// acknowledges, are stamped with log format version 3, so that a member of an older release
// never meets one (it would stop).
func TestConsumerCommandsNeedVersion3(t *testing.T) {
	for _, c := range []*logpb.Command{
		{Op: &logpb.Command_ConsumerCreate{ConsumerCreate: &logpb.ConsumerCreateRequest{}}},
		{Op: &logpb.Command_ConsumerDelete{ConsumerDelete: &logpb.ConsumerDeleteRequest{}}},
		{Op: &logpb.Command_Fetch{Fetch: &logpb.FetchRequest{}}},
		{Op: &logpb.Command_Ack{Ack: &logpb.AckRequest{}}},
		{Op: &logpb.Command_Txn{Txn: &logpb.TxnRequest{Failure: []*logpb.RequestOp{{Request: &logpb.RequestOp_RequestAck{RequestAck: &logpb.AckRequest{}}}}}}},
	} {
		if v := logpb.Needs(c); v != logpb.Version3 {
			t.Errorf("%T needs version %d, want 3", c.GetOp(), v)
		}
	}
}
