package mvcc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caucus/caucus/internal/logpb"
	"google.golang.org/protobuf/proto"
)

// Exactly-once sessions.
//
// A write carrying Session{client_id, sequence} with client_id != 0 is applied at most once: the
// store remembers, per client id, the last sequence it applied and that write's result. Sessions
// are state like any other (persisted, in snapshots), and every decision below reads time only
// from the store clock (the largest command time applied), so every member decides alike.
//
// A sessioned write of a client id the store remembers, with last applied sequence L:
//
//   - sequence > L is the client's next write: applied, its result replaces the stored one;
//   - sequence == L is a retry: answered with the stored result, nothing applied;
//   - sequence < L is refused with ErrStaleSequence, nothing applied.
//
// A sessioned write of a client id the store does not remember:
//
//   - sequence 1 is the client's first write: applied, and a new session remembers it;
//   - sequence > 1 is refused with ErrSessionExpired, nothing applied: the session was
//     forgotten, and the store cannot tell a retry of an applied write from the next write, so
//     it does not guess (the client decides; see package client);
//   - sequence 0 is refused with ErrInvalidArgument (sequences start at 1).
//
// Forgetting. A session is used when a write of it is applied or retried. A session unused for
// Limits.SessionTTL expires. At most Limits.MaxSessions are kept: a new session evicts the least
// recently used one, but only if that one was last used at least Limits.SessionRetryWindow (W)
// ago; when even the least recently used session is younger than W, the new session is refused
// with ErrTooManySessions and nothing is applied. Since W <= SessionTTL, a session is never
// forgotten less than W after its last use (store clock). If MaxSessions is lowered across a
// restart, the table shrinks as sessions leave the window, never by evicting young ones.
//
// Why no write is applied twice. A retry whose session was forgotten either carries a sequence
// > 1 and is refused, or carries sequence 1 and would be taken for a new session: only that
// second case needs an argument, and it rests on time. Let ε bound the error of the clocks of
// the members that stamp commands (node.Propose), s be the real time at which the client first
// sent the write, and T the store clock when a copy of it was first applied. That copy was
// stamped after s, so T >= s-ε, and the session's last use is at least T. Forgetting it needs a
// store clock of at least T+W, that is a command stamped at least T+W, so stamped at real time
// >= T+W-ε >= s+W-2ε, which precedes the later copy in the log. When a leader appends an entry,
// every entry before it in the log already exists, and a command is stamped before its entry is
// created, so the later copy was appended to the log at real time >= s+W-2ε. Therefore no write
// is applied twice provided
//
//	D + δ + 2ε < W
//
// where D bounds how long after its first send a client may still send a write (package client
// stops at MaxWriteRetrySpan, 30 s), and δ bounds the time from sending a request to appending
// its entry to the leader's log or dropping it (network transit, the member's proposal queue,
// which the request's deadline bounds, and the forwarding of a follower's proposal). The
// defaults (W = 2 min, D = 30 s) leave 90 s for δ + 2ε. A client that re-sends a sequence-1
// write later than that, or a request delayed longer in the network, is outside the guarantee:
// it is the price of a bounded table. Writes with sequence > 1 need no assumption of their own:
// once their session is forgotten they are refused, unless a late copy of the client's
// sequence-1 write opened it again, which the condition above excludes.
//
// session bucket value: sequence(8) last_use(8) result
// sesslru bucket key:   orderedTime(last_use)(8) client_id(8)

// Stored result kinds.
const (
	resultError byte = iota
	resultPut
	resultDelete
	resultTxn
	resultPublish
	resultAck
)

func sessionOf(cmd *logpb.Command) *logpb.Session {
	switch op := cmd.GetOp().(type) {
	case *logpb.Command_Put:
		return op.Put.GetSession()
	case *logpb.Command_DeleteRange:
		return op.DeleteRange.GetSession()
	case *logpb.Command_Txn:
		return op.Txn.GetSession()
	case *logpb.Command_Publish:
		return op.Publish.GetSession()
	case *logpb.Command_Ack:
		return op.Ack.GetSession()
	}
	return nil
}

func sessLRUKey(lastUse int64, client uint64) []byte {
	k := binary.BigEndian.AppendUint64(nil, orderedTime(lastUse))
	return binary.BigEndian.AppendUint64(k, client)
}

// sessLRULastUse decodes the last use of a sesslru key.
func sessLRULastUse(k []byte) int64 { return int64(binary.BigEndian.Uint64(k) ^ (1 << 63)) }

// checkSession decides a sessioned write before it is applied: done is set if res is the answer
// (a retry's stored result, or a refusal).
func (b *Batch) checkSession(s *logpb.Session) (res Result, done bool, err error) {
	client, seq := s.GetClientId(), s.GetSequence()
	if seq == 0 {
		return Result{Err: errorf(ErrInvalidArgument, "client %d: session sequence 0 (sequences start at 1)", client)}, true, nil
	}
	v := b.sess.Get(putU64(client))
	if v == nil {
		return b.checkNewSession(client, seq)
	}
	if len(v) < 17 {
		return Result{}, false, errorCorrupt(fmt.Sprintf("session %d record of %d bytes", client, len(v)))
	}
	last := binary.BigEndian.Uint64(v)
	switch {
	case seq > last:
		return Result{}, false, nil
	case seq < last:
		return Result{Err: errorf(ErrStaleSequence, "client %d sequence %d, last applied %d", client, seq, last)}, true, nil
	}
	res, err = decodeResult(v[16:])
	if err != nil {
		return Result{}, false, fmt.Errorf("session %d: %w", client, err)
	}
	// A retry is a use: it keeps the session alive.
	if err := b.touchSession(client, int64(binary.BigEndian.Uint64(v[8:])), bytes.Clone(v)); err != nil {
		return Result{}, false, err
	}
	return res, true, nil
}

// checkNewSession decides a write of a client id the store does not remember. A write it lets
// through creates the session in rememberSession, which then has room: either the table is not
// full or its least recently used session is outside the retry window.
func (b *Batch) checkNewSession(client, seq uint64) (res Result, done bool, err error) {
	if seq > 1 {
		return Result{Err: errorf(ErrSessionExpired, "client %d sequence %d (a session starts at sequence 1)", client, seq)}, true, nil
	}
	if b.st.sessions < int64(b.limits.MaxSessions) {
		return Result{}, false, nil
	}
	lastUse, ok := b.oldestSession()
	if !ok {
		return Result{}, false, errorCorrupt(fmt.Sprintf("%d sessions counted, none indexed", b.st.sessions))
	}
	if b.evictable(lastUse) {
		return Result{}, false, nil
	}
	return Result{Err: errorf(ErrTooManySessions, "client %d: %d sessions (limit %d), the least recently used idle for %v, less than the retry window %v",
		client, b.st.sessions, b.limits.MaxSessions, time.Duration(b.st.clock-lastUse), b.limits.SessionRetryWindow)}, true, nil
}

// oldestSession returns the last use of the least recently used session.
func (b *Batch) oldestSession() (lastUse int64, ok bool) {
	k, _ := b.sessLRU.Cursor().First()
	if len(k) != 16 {
		return 0, false
	}
	return sessLRULastUse(k), true
}

// evictable reports whether a session last used at lastUse is outside the retry window.
func (b *Batch) evictable(lastUse int64) bool {
	return lastUse <= addSat(b.st.clock, -int64(b.limits.SessionRetryWindow))
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
func (b *Batch) rememberSession(s *logpb.Session, res Result) error {
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
	// Evict the least recently used sessions beyond the bound, never one inside the retry
	// window: checkNewSession refused the new session if that would have been needed.
	for b.st.sessions > int64(b.limits.MaxSessions) {
		k, _ := b.sessLRU.Cursor().First()
		if len(k) != 16 {
			return errorCorrupt("session count exceeds the LRU index")
		}
		if !b.evictable(sessLRULastUse(k)) {
			return nil
		}
		if err := b.dropSession(bytes.Clone(k)); err != nil {
			return err
		}
	}
	return nil
}

// expireSessions forgets the sessions unused for SessionTTL at the current clock.
func (b *Batch) expireSessions() error {
	cutoff := addSat(b.st.clock, -int64(b.limits.SessionTTL))
	for {
		k, _ := b.sessLRU.Cursor().First()
		if k == nil {
			return nil
		}
		if len(k) != 16 {
			return errorCorrupt(fmt.Sprintf("session index key of %d bytes", len(k)))
		}
		if sessLRULastUse(k) > cutoff {
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
		// Application errors are *Error, possibly wrapped with deterministic context; the
		// stored message is the whole text, so a retry reads what the first answer said.
		var e *Error
		if !errors.As(res.Err, &e) {
			return nil, fmt.Errorf("cannot store non-deterministic error %v", res.Err)
		}
		msg := e.Message
		if res.Err != error(e) {
			msg = strings.TrimPrefix(res.Err.Error(), "mvcc: ")
		}
		out := []byte{resultError}
		out = binary.AppendUvarint(out, uint64(len(e.Code)))
		out = append(out, e.Code...)
		return append(out, msg...), nil
	}
	var kind byte
	switch res.Resp.(type) {
	case *logpb.PutResponse:
		kind = resultPut
	case *logpb.DeleteRangeResponse:
		kind = resultDelete
	case *logpb.TxnResponse:
		kind = resultTxn
	case *logpb.PublishResponse:
		kind = resultPublish
	case *logpb.AckResponse:
		kind = resultAck
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
		m = &logpb.PutResponse{}
	case resultDelete:
		m = &logpb.DeleteRangeResponse{}
	case resultTxn:
		m = &logpb.TxnResponse{}
	case resultPublish:
		m = &logpb.PublishResponse{}
	case resultAck:
		m = &logpb.AckResponse{}
	default:
		return Result{}, errorCorrupt(fmt.Sprintf("stored result kind %d", v[0]))
	}
	if err := proto.Unmarshal(v[1:], m); err != nil {
		return Result{}, fmt.Errorf("mvcc: decode stored %T: %w", m, err)
	}
	return Result{Resp: m}, nil
}
