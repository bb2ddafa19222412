package fsm

import (
	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// The events concern: events published without a key change. Events carried by puts, deletes
// and transaction branches are stored by the key-value appliers (keys.go), in the same command.

func publish(p *logpb.PublishRequest) mvcc.Op {
	return func(b *mvcc.Batch) (proto.Message, error) { return b.Publish(p) }
}
