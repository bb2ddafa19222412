package mvcc

import (
	"bytes"
	"encoding/binary"
	"fmt"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/cmdpb"
	"google.golang.org/protobuf/proto"
)

// Exactly-once sessions. A write carrying Session{client_id, sequence} is applied at most once:
// the store remembers, per client, the last sequence and its result. Sessions are state like any
// other (persisted, in snapshots) and their expiry uses command times, so every member agrees
// on which retries are deduplicated. A session unused for Limits.SessionTTL is forgotten, and at
// most Limits.MaxSessions are kept (the least recently used is forgotten first); a retry after
// its session was forgotten is applied again.
//
// session bucket value: sequence(8) last_use(8) result
// sesslru bucket key:   orderedTime(last_use)(8) client_id(8)

// Stored result kinds.
const (
	resultError byte = iota
	resultPut
	resultDelete
	resultTxn
)

func sessionOf(cmd *cmdpb.Command) *caucusv1.Session {
	switch op := cmd.GetOp().(type) {
	case *cmdpb.Command_Put:
		return op.Put.GetSession()
	case *cmdpb.Command_DeleteRange:
		return op.DeleteRange.GetSession()
	case *cmdpb.Command_Txn:
		return op.Txn.GetSession()
	}
	return nil
}

func sessLRUKey(lastUse int64, client uint64) []byte {
	k := binary.BigEndian.AppendUint64(nil, orderedTime(lastUse))
	return binary.BigEndian.AppendUint64(k, client)
}

// checkSession decides a sessioned write before it is applied: done is set if res is the answer
// (a retry's stored result, or ErrStaleSequence).
func (b *Batch) checkSession(s *caucusv1.Session) (res Result, done bool, err error) {
	v := b.sess.Get(putU64(s.GetClientId()))
	if v == nil {
		return Result{}, false, nil
	}
	if len(v) < 17 {
		return Result{}, false, errorCorrupt(fmt.Sprintf("session %d record of %d bytes", s.GetClientId(), len(v)))
	}
	last := binary.BigEndian.Uint64(v)
	switch {
	case s.GetSequence() > last:
		return Result{}, false, nil
	case s.GetSequence() < last:
		return Result{Err: errorf(ErrStaleSequence, "client %d sequence %d, last applied %d", s.GetClientId(), s.GetSequence(), last)}, true, nil
	}
	res, err = decodeResult(v[16:])
	if err != nil {
		return Result{}, false, fmt.Errorf("session %d: %w", s.GetClientId(), err)
	}
	// A retry is a use: it keeps the session alive.
	if err := b.touchSession(s.GetClientId(), int64(binary.BigEndian.Uint64(v[8:])), bytes.Clone(v)); err != nil {
		return Result{}, false, err
	}
	return res, true, nil
}

// touchSession moves a session to the current clock in the LRU order.
func (b *Batch) touchSession(client uint64, lastUse int64, v []byte) error {
	if err := b.sessLRU.Delete(sessLRUKey(lastUse, client)); err != nil {
		return fmt.Errorf("unindex session %d: %w", client, err)
	}
	binary.BigEndian.PutUint64(v[8:], uint64(b.st.clock))
	if err := b.sess.Put(putU64(client), v); err != nil {
		return fmt.Errorf("store session %d: %w", client, err)
	}
	if err := b.sessLRU.Put(sessLRUKey(b.st.clock, client), []byte{}); err != nil {
		return fmt.Errorf("index session %d: %w", client, err)
	}
	return nil
}

// rememberSession stores the result of a newly applied sessioned write.
func (b *Batch) rememberSession(s *caucusv1.Session, res Result) error {
	enc, err := encodeResult(res)
	if err != nil {
		return fmt.Errorf("session %d: %w", s.GetClientId(), err)
	}
	client := s.GetClientId()
	if old := b.sess.Get(putU64(client)); old != nil {
		if len(old) < 16 {
			return errorCorrupt(fmt.Sprintf("session %d record of %d bytes", client, len(old)))
		}
		if err := b.sessLRU.Delete(sessLRUKey(int64(binary.BigEndian.Uint64(old[8:])), client)); err != nil {
			return fmt.Errorf("unindex session %d: %w", client, err)
		}
	} else {
		b.st.sessions++
	}
	v := binary.BigEndian.AppendUint64(nil, s.GetSequence())
	v = binary.BigEndian.AppendUint64(v, uint64(b.st.clock))
	v = append(v, enc...)
	if err := b.sess.Put(putU64(client), v); err != nil {
		return fmt.Errorf("store session %d: %w", client, err)
	}
	if err := b.sessLRU.Put(sessLRUKey(b.st.clock, client), []byte{}); err != nil {
		return fmt.Errorf("index session %d: %w", client, err)
	}
	// Evict the least recently used sessions beyond the bound.
	for b.st.sessions > int64(b.s.limits.MaxSessions) {
		k, _ := b.sessLRU.Cursor().First()
		if k == nil {
			return errorCorrupt("session count exceeds the LRU index")
		}
		if err := b.dropSession(bytes.Clone(k)); err != nil {
			return err
		}
	}
	return nil
}

// expireSessions forgets the sessions unused for SessionTTL at the current clock.
func (b *Batch) expireSessions() error {
	cutoff := addSat(b.st.clock, -int64(b.s.limits.SessionTTL))
	for {
		k, _ := b.sessLRU.Cursor().First()
		if k == nil || int64(binary.BigEndian.Uint64(k)^(1<<63)) > cutoff {
			return nil
		}
		if err := b.dropSession(bytes.Clone(k)); err != nil {
			return err
		}
	}
}

func (b *Batch) dropSession(lruKey []byte) error {
	client := binary.BigEndian.Uint64(lruKey[8:])
	if err := b.sessLRU.Delete(lruKey); err != nil {
		return fmt.Errorf("unindex session %d: %w", client, err)
	}
	if err := b.sess.Delete(putU64(client)); err != nil {
		return fmt.Errorf("forget session %d: %w", client, err)
	}
	b.st.sessions--
	return nil
}

func encodeResult(res Result) ([]byte, error) {
	if res.Err != nil {
		e, ok := res.Err.(*Error)
		if !ok {
			return nil, fmt.Errorf("cannot store non-deterministic error %v", res.Err)
		}
		out := []byte{resultError}
		out = binary.AppendUvarint(out, uint64(len(e.Code)))
		out = append(out, e.Code...)
		return append(out, e.Message...), nil
	}
	var kind byte
	switch res.Resp.(type) {
	case *caucusv1.PutResponse:
		kind = resultPut
	case *caucusv1.DeleteRangeResponse:
		kind = resultDelete
	case *caucusv1.TxnResponse:
		kind = resultTxn
	default:
		return nil, fmt.Errorf("cannot store response %T", res.Resp)
	}
	out, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend([]byte{kind}, res.Resp)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", res.Resp, err)
	}
	return out, nil
}

func decodeResult(v []byte) (Result, error) {
	if len(v) < 1 {
		return Result{}, errorCorrupt("empty session result")
	}
	var m proto.Message
	switch v[0] {
	case resultError:
		n, k := binary.Uvarint(v[1:])
		if k <= 0 || uint64(len(v)-1-k) < n {
			return Result{}, errorCorrupt("bad stored error")
		}
		code := string(v[1+k : 1+k+int(n)])
		return Result{Err: &Error{Code: code, Message: string(v[1+k+int(n):])}}, nil
	case resultPut:
		m = &caucusv1.PutResponse{}
	case resultDelete:
		m = &caucusv1.DeleteRangeResponse{}
	case resultTxn:
		m = &caucusv1.TxnResponse{}
	default:
		return Result{}, errorCorrupt(fmt.Sprintf("stored result kind %d", v[0]))
	}
	if err := proto.Unmarshal(v[1:], m); err != nil {
		return Result{}, fmt.Errorf("mvcc: decode stored %T: %w", m, err)
	}
	return Result{Resp: m}, nil
}
