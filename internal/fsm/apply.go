package fsm

import (
	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// Applying a normal entry: the command's kind picks its applier, one per concern (keys.go,
// events.go, consumers.go, leases.go, compaction.go, members.go, settings.go), which runs inside mvcc.Batch.ApplyOp.
// ApplyOp does what every command shares: the applied index, the command clock, the
// exactly-once session check and record (sessions), validation against the replicated limits,
// and the revision the command's writes take.

// applyCommand applies cmd, committed at index and decoded from size bytes, in b.
func applyCommand(b *mvcc.Batch, index uint64, cmd *logpb.Command, size int) mvcc.Result {
	return b.ApplyEncodedOp(index, cmd, size, applierOf(cmd))
}

// applierOf returns the Op that applies cmd. A command without an operation, or with one this
// release does not know (its version would have been refused first), is refused by ApplyOp's
// validation before any Op runs; the Op returned for it refuses it too.
func applierOf(cmd *logpb.Command) mvcc.Op {
	switch op := cmd.GetOp().(type) {
	case *logpb.Command_Put:
		return putKey(op.Put)
	case *logpb.Command_DeleteRange:
		return deleteKeys(op.DeleteRange)
	case *logpb.Command_Txn:
		return txn(op.Txn)
	case *logpb.Command_LeaseGrant:
		return grantLease(op.LeaseGrant)
	case *logpb.Command_LeaseRevoke:
		return revokeLease(op.LeaseRevoke)
	case *logpb.Command_LeaseKeepAlive:
		return keepLeaseAlive(op.LeaseKeepAlive)
	case *logpb.Command_LeaseExpire:
		return expireLeases(op.LeaseExpire)
	case *logpb.Command_Compaction:
		return compact(op.Compaction)
	case *logpb.Command_MemberAttributes:
		return memberAttributes(op.MemberAttributes)
	case *logpb.Command_Settings:
		return updateSettings(op.Settings)
	case *logpb.Command_Publish:
		return publish(op.Publish)
	case *logpb.Command_ConsumerCreate:
		return createConsumer(op.ConsumerCreate)
	case *logpb.Command_ConsumerDelete:
		return deleteConsumer(op.ConsumerDelete)
	case *logpb.Command_Fetch:
		return fetch(op.Fetch)
	case *logpb.Command_Ack:
		return ack(op.Ack)
	}
	return refuse
}
