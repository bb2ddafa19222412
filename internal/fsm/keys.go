package fsm

import (
	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// The key-value concern: puts, range deletes and transactions, applied to the store's revisions.
// The events a write carries are stored by the same Op, in the same batch as its data (see
// events.go and mvcc's events.go).

func putKey(p *logpb.PutRequest) mvcc.Op {
	return func(b *mvcc.Batch) (proto.Message, error) { return b.Put(p) }
}

func deleteKeys(d *logpb.DeleteRangeRequest) mvcc.Op {
	return func(b *mvcc.Batch) (proto.Message, error) { return b.DeleteRange(d) }
}

func txn(t *logpb.TxnRequest) mvcc.Op {
	return func(b *mvcc.Batch) (proto.Message, error) { return b.Txn(t) }
}
