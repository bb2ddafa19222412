package mvcc

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
)

// Apply applies cmd at index the way the application does (internal/fsm picks the Op by the
// command's kind), for this package's tests, which drive the store with commands.
func (b *Batch) Apply(index uint64, cmd *logpb.Command) Result {
	return b.ApplyOp(index, cmd, func(b *Batch) (proto.Message, error) {
		switch op := cmd.GetOp().(type) {
		case *logpb.Command_Put:
			return b.Put(op.Put)
		case *logpb.Command_DeleteRange:
			return b.DeleteRange(op.DeleteRange)
		case *logpb.Command_Txn:
			return b.Txn(op.Txn)
		case *logpb.Command_Compaction:
			return b.Compact(op.Compaction.GetRevision())
		case *logpb.Command_LeaseGrant:
			return b.LeaseGrant(op.LeaseGrant)
		case *logpb.Command_LeaseRevoke:
			return b.LeaseRevoke(op.LeaseRevoke.GetId())
		case *logpb.Command_LeaseKeepAlive:
			return b.LeaseKeepAlive(op.LeaseKeepAlive.GetId())
		case *logpb.Command_LeaseExpire:
			return b.LeaseExpire(op.LeaseExpire.GetIds())
		case *logpb.Command_MemberAttributes:
			return b.MemberAttributes(op.MemberAttributes)
		case *logpb.Command_Settings:
			return b.UpdateSettings(op.Settings)
		case *logpb.Command_Publish:
			return b.Publish(op.Publish)
		case *logpb.Command_ConsumerCreate:
			return b.ConsumerCreate(op.ConsumerCreate)
		case *logpb.Command_ConsumerDelete:
			return b.ConsumerDelete(op.ConsumerDelete)
		case *logpb.Command_Fetch:
			return b.Fetch(op.Fetch)
		case *logpb.Command_Ack:
			return b.Ack(op.Ack)
		}
		return nil, fmt.Errorf("test dispatcher: no op for %T", cmd.GetOp())
	})
}
