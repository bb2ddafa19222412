package mvcc

import (
	"errors"

	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
)

// Applying one command. The application (internal/fsm) decides what a command does and runs it
// as an Op inside ApplyOp, which does what every command shares: the applied index, the command
// clock, session expiry, the exactly-once session check and record, validation against the
// replicated limits, and the revision the command's writes take. The Ops are the exported
// operations below, one per kind of command.

// Op runs one command's operation in b and returns its response (nil for none). Its writes take
// the command's revision; it must check everything that can refuse the command before its
// first write (Batch has no savepoints).
type Op func(b *Batch) (proto.Message, error)

// ApplyOp applies the command committed at index by running op. It is deterministic: the same
// commands on the same state give the same results and state on every member. Results become
// visible to readers only when Commit succeeds, so deliver them to clients after Commit, which
// keeps a client's read after its write consistent.
//
// A command with a session (client id, sequence) that the session table has already seen gets
// its recorded result back and op does not run.
func (b *Batch) ApplyOp(index uint64, cmd *logpb.Command, op Op) Result {
	return b.ApplyEncodedOp(index, cmd, -1, op)
}

// ApplyEncodedOp is ApplyOp of a command decoded from size bytes (the log entry's data), which
// the request size limit then takes as the command's size instead of encoding it again: the
// same number on every member, as they decode the same entry.
func (b *Batch) ApplyEncodedOp(index uint64, cmd *logpb.Command, size int, op Op) Result {
	b.cmdSize = size
	if b.err != nil {
		return Result{Err: b.err}
	}
	if b.done {
		return Result{Err: errors.New("mvcc: apply on a finished batch")}
	}
	if !b.advance(index) {
		return Result{Skipped: true}
	}
	b.now = cmd.GetTimeUnixNano()
	if b.now > b.st.clock {
		b.st.clock = b.now
	}
	// Sessions expire per command, not per batch, so that batching cannot change the outcome.
	if err := b.expireSessions(); err != nil {
		b.fail(err)
		return Result{Err: b.err}
	}
	if err := b.expireIdemKeys(); err != nil {
		b.fail(err)
		return Result{Err: b.err}
	}
	sess := sessionOf(cmd)
	if key := sess.GetIdempotencyKey(); key != "" {
		return b.applyKeyed(cmd, key, op)
	}
	if sess.GetClientId() != 0 {
		res, done, err := b.checkSession(sess)
		if err != nil {
			b.fail(err)
			return Result{Err: b.err}
		}
		if done {
			return res
		}
	}
	res := b.exec(cmd, op)
	if b.err != nil {
		return Result{Err: b.err}
	}
	if sess.GetClientId() != 0 {
		if err := b.rememberSession(sess, res); err != nil {
			b.fail(err)
			return Result{Err: b.err}
		}
	}
	return res
}

// exec validates and runs one command's op. Every check that can reject the command runs before
// its first write.
func (b *Batch) exec(cmd *logpb.Command, op Op) Result {
	if err := b.limits.validate(cmd, b.cmdSize); err != nil {
		return Result{Err: err}
	}
	b.pendRev, b.sub, b.wrote, b.evIndex = b.st.rev+1, 0, false, 0
	resp, err := op(b)
	if b.wrote {
		b.st.rev = b.pendRev
	}
	if err != nil || b.err != nil {
		return Result{Err: err}
	}
	if resp == nil {
		return Result{}
	}
	setRevision(resp, b.st.rev)
	return Result{Resp: resp}
}

// The operations, for Ops. Each returns an untyped nil response when it returns an error.

// Put writes a key.
func (b *Batch) Put(p *logpb.PutRequest) (proto.Message, error) { return nonNil(b.put(p)) }

// DeleteRange deletes the live keys of a range.
func (b *Batch) DeleteRange(d *logpb.DeleteRangeRequest) (proto.Message, error) {
	if err := b.checkTopics(d.GetEvents()); err != nil {
		return nil, err
	}
	return nonNil(b.deleteRange(d), nil)
}

// Txn runs a transaction: its compares, then one branch.
func (b *Batch) Txn(t *logpb.TxnRequest) (proto.Message, error) { return nonNil(b.txn(t)) }

// Compact discards the versions no read at or above rev can observe, and the events below rev
// that no consumer holds (consumer_retention.go).
func (b *Batch) Compact(rev int64) (proto.Message, error) {
	resp, err := b.compact(rev)
	if err == nil {
		b.holdForConsumers()
	}
	return nonNil(resp, err)
}

// LeaseGrant creates a lease.
func (b *Batch) LeaseGrant(g *logpb.LeaseGrantRequest) (proto.Message, error) {
	return nonNil(b.leaseGrant(g))
}

// LeaseRevoke revokes a lease and deletes its keys.
func (b *Batch) LeaseRevoke(id int64) (proto.Message, error) { return nonNil(b.leaseRevoke(id)) }

// LeaseKeepAlive renews a lease's deadline.
func (b *Batch) LeaseKeepAlive(id int64) (proto.Message, error) { return nonNil(b.leaseKeepAlive(id)) }

// LeaseExpire revokes the leases that are still past their deadline at the command's time.
func (b *Batch) LeaseExpire(ids []int64) (proto.Message, error) {
	return nonNil(b.leaseExpire(ids), nil)
}

// MemberAttributes records a member's published attributes; it has no response.
func (b *Batch) MemberAttributes(a *logpb.MemberAttributes) (proto.Message, error) {
	b.memberAttributes(a)
	return nil, nil
}

// UpdateSettings changes the replicated settings (settings.go).
func (b *Batch) UpdateSettings(u *logpb.SettingsUpdate) (proto.Message, error) {
	return nonNil(b.applySettings(u))
}

// ConsumerCreate, ConsumerDelete, Fetch and Ack are the durable consumers' operations
// (consumer.go, consumer_fetch.go, consumer_ack.go).

// nonNil turns a typed nil response into an untyped nil, so that a caller's nil check works.
func nonNil[M interface {
	proto.Message
	comparable
}](m M, err error) (proto.Message, error) {
	var zero M
	if m == zero {
		return nil, err
	}
	return m, err
}
