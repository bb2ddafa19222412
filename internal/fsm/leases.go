package fsm

import (
	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// The lease concern: grants, revocations, keep-alives, and the expiry the leader proposes when a
// lease's TTL has passed on its clock (chores.go); a lease is expired only if it is still past
// its deadline at the command's time, so a keep-alive that raced the expiry wins.

func grantLease(g *logpb.LeaseGrantRequest) mvcc.Op {
	return func(b *mvcc.Batch) (proto.Message, error) { return b.LeaseGrant(g) }
}

func revokeLease(r *logpb.LeaseRevokeRequest) mvcc.Op {
	return func(b *mvcc.Batch) (proto.Message, error) { return b.LeaseRevoke(r.GetId()) }
}

func keepLeaseAlive(k *logpb.LeaseKeepAliveRequest) mvcc.Op {
	return func(b *mvcc.Batch) (proto.Message, error) { return b.LeaseKeepAlive(k.GetId()) }
}

func expireLeases(e *logpb.LeaseExpire) mvcc.Op {
	return func(b *mvcc.Batch) (proto.Message, error) { return b.LeaseExpire(e.GetIds()) }
}
