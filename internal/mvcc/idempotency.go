package mvcc

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
)

// Idempotency keys: the other identity of the exactly-once table.
//
// A write names itself with Session{client_id, sequence} (a client library's own retries, see
// session.go) or with Session{idempotency_key} (the application's name for the write, which
// outlives the client that first sent it: a service that crashed and a new process that sends
// the write again). Both go through the same check in ApplyOp, answer a repeat with the stored
// result of the first application, and store results in the same encoding; they differ in what
// identifies the write and in how long it is remembered.
//
// A write with an idempotency key K:
//
//   - K unknown: the write is applied; if it succeeded, K is remembered with a fingerprint of
//     the request (SHA-256 of the command's operation, session cleared) and the result. A
//     refused write is not remembered: it changed nothing, so sending it again is safe, and it
//     may succeed later (a full topic table, say).
//   - K known, same fingerprint: a repeat. Answered with the stored result, nothing applied, no
//     event published again.
//   - K known, another fingerprint: refused with ErrIdempotencyKeyReused, nothing applied.
//
// K is remembered for Limits.IdempotencyRetention of store clock after the write (24 h by
// default), then forgotten. At most Limits.MaxIdempotencyKeys are remembered: a write with a
// new key while the table is full is refused with ErrTooManyIdempotencyKeys (nothing is evicted
// before its retention ends, so the guarantee holds for the whole retention).
//
// idemkey bucket value: fingerprint(32) applied_at(8) result
// idemexp bucket key:   orderedTime(applied_at)(8) K

var (
	bucketIdemKey = []byte("idemkey")
	bucketIdemExp = []byte("idemexp")
	metaIdemKeys  = []byte("idem_keys")
)

// MaxIdempotencyKeyBytes bounds an idempotency key.
const MaxIdempotencyKeyBytes = 256

// Defaults of the idempotency limits.
const (
	DefaultIdempotencyRetention = 24 * time.Hour
	DefaultMaxIdempotencyKeys   = 1_000_000
)

// fingerprint identifies a keyed write's request: its operation with the session cleared,
// encoded deterministically.
func fingerprint(cmd *logpb.Command) ([32]byte, error) {
	var m proto.Message
	switch op := cmd.GetOp().(type) {
	case *logpb.Command_Put:
		c := proto.CloneOf(op.Put)
		c.Session = nil
		m = c
	case *logpb.Command_DeleteRange:
		c := proto.CloneOf(op.DeleteRange)
		c.Session = nil
		m = c
	case *logpb.Command_Txn:
		c := proto.CloneOf(op.Txn)
		c.Session = nil
		m = c
	case *logpb.Command_Publish:
		c := proto.CloneOf(op.Publish)
		c.Session = nil
		m = c
	case *logpb.Command_Ack:
		c := proto.CloneOf(op.Ack)
		c.Session = nil
		m = c
	default:
		return [32]byte{}, fmt.Errorf("no idempotency fingerprint for %T", op)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return [32]byte{}, fmt.Errorf("fingerprint %T: %w", m, err)
	}
	// The operation's kind is part of the request: a put and a delete may encode alike.
	h := sha256.New()
	fmt.Fprintf(h, "%T\x00", m)
	h.Write(b)
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, nil
}

func idemExpKey(at int64, key string) []byte {
	k := binary.BigEndian.AppendUint64(nil, orderedTime(at))
	return append(k, key...)
}

// checkIdemKey decides a keyed write before it is applied: done is set if res is the answer.
func (b *Batch) checkIdemKey(key string, fp [32]byte) (res Result, done bool, err error) {
	v := b.idem.Get([]byte(key))
	if v == nil {
		if b.st.idemKeys >= int64(b.limits.MaxIdempotencyKeys) {
			return Result{Err: errorf(ErrTooManyIdempotencyKeys, "%d keys remembered (limit %d) for the retention of %v",
				b.st.idemKeys, b.limits.MaxIdempotencyKeys, b.limits.IdempotencyRetention)}, true, nil
		}
		return Result{}, false, nil
	}
	if len(v) < 40 {
		return Result{}, false, errorCorrupt(fmt.Sprintf("idempotency key %q record of %d bytes", key, len(v)))
	}
	if !bytes.Equal(v[:32], fp[:]) {
		at := time.Unix(0, int64(binary.BigEndian.Uint64(v[32:]))).UTC()
		return Result{Err: errorf(ErrIdempotencyKeyReused, "key %q was used for a different request at %s (remembered until %s)",
			key, at.Format(time.RFC3339), at.Add(b.limits.IdempotencyRetention).Format(time.RFC3339))}, true, nil
	}
	res, err = decodeResult(v[40:])
	if err != nil {
		return Result{}, false, fmt.Errorf("idempotency key %q: %w", key, err)
	}
	return res, true, nil
}

// rememberIdemKey stores the result of a keyed write that was applied.
func (b *Batch) rememberIdemKey(key string, fp [32]byte, res Result) error {
	if res.Err != nil {
		return nil // a refused write changed nothing: its key stays free
	}
	enc, err := encodeResult(res)
	if err != nil {
		return fmt.Errorf("idempotency key %q: %w", key, err)
	}
	v := append(fp[:], binary.BigEndian.AppendUint64(nil, uint64(b.st.clock))...)
	v = append(v, enc...)
	if err := b.idem.Put([]byte(key), v); err != nil {
		return fmt.Errorf("store idempotency key %q: %w", key, err)
	}
	if err := b.idemExp.Put(idemExpKey(b.st.clock, key), []byte{}); err != nil {
		return fmt.Errorf("index idempotency key %q: %w", key, err)
	}
	b.st.idemKeys++
	return nil
}

// expireIdemKeys forgets the keys older than the retention at the current clock.
func (b *Batch) expireIdemKeys() error {
	cutoff := addSat(b.st.clock, -int64(b.limits.IdempotencyRetention))
	c := b.idemExp.Cursor()
	for {
		k, _ := c.First()
		if k == nil {
			return nil
		}
		if len(k) < 8 {
			return errorCorrupt(fmt.Sprintf("idempotency index key of %d bytes", len(k)))
		}
		if int64(binary.BigEndian.Uint64(k)^(1<<63)) > cutoff {
			return nil
		}
		key := bytes.Clone(k[8:])
		if err := b.idemExp.Delete(bytes.Clone(k)); err != nil {
			return fmt.Errorf("unindex idempotency key %q: %w", key, err)
		}
		if err := b.idem.Delete(key); err != nil {
			return fmt.Errorf("forget idempotency key %q: %w", key, err)
		}
		b.st.idemKeys--
	}
}

// applyKeyed applies a write named by an idempotency key (see above).
func (b *Batch) applyKeyed(cmd *logpb.Command, key string, op Op) Result {
	// A command the limits refuse (no operation, a bad key) is refused before fingerprinting.
	if err := b.limits.validate(cmd, b.cmdSize); err != nil {
		return Result{Err: err}
	}
	fp, err := fingerprint(cmd)
	if err != nil {
		return Result{Err: errorf(ErrInvalidArgument, "%v", err)}
	}
	res, done, err := b.checkIdemKey(key, fp)
	if err != nil {
		b.fail(err)
		return Result{Err: b.err}
	}
	if done {
		return res
	}
	res = b.exec(cmd, op)
	if b.err != nil {
		return Result{Err: b.err}
	}
	if err := b.rememberIdemKey(key, fp, res); err != nil {
		b.fail(err)
		return Result{Err: b.err}
	}
	return res
}
