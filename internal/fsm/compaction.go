package fsm

import (
	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// The compaction concern: a compaction, manual or proposed by the leader's automatic compaction
// (autocompact.go), discards history below its revision on every member at the same point of
// the log; the store then removes the versions a step per batch.

func compact(c *logpb.CompactionRequest) mvcc.Op {
	return func(b *mvcc.Batch) (proto.Message, error) { return b.Compact(c.GetRevision()) }
}
