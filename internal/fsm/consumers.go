package fsm

import (
	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// The consumers concern: durable consumers whose position and pending deliveries live in the
// store (mvcc's consumer.go). A fetch is a command like any other, so its deliveries, their
// attempts and deadlines (from the command's time) are the same on every member; an ack inside
// a transaction is applied by the key-value applier (keys.go), in the transaction's branch.

func createConsumer(c *logpb.ConsumerCreateRequest) mvcc.Op {
	return func(b *mvcc.Batch) (proto.Message, error) { return b.ConsumerCreate(c) }
}

func deleteConsumer(d *logpb.ConsumerDeleteRequest) mvcc.Op {
	return func(b *mvcc.Batch) (proto.Message, error) { return b.ConsumerDelete(d) }
}

func fetch(f *logpb.FetchRequest) mvcc.Op {
	return func(b *mvcc.Batch) (proto.Message, error) { return b.Fetch(f) }
}

func ack(a *logpb.AckRequest) mvcc.Op {
	return func(b *mvcc.Batch) (proto.Message, error) { return b.Ack(a) }
}
