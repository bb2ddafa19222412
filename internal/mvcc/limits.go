package mvcc

import (
	"bytes"
	"fmt"
	"time"

	"github.com/caucus/caucus/internal/logpb"
	"google.golang.org/protobuf/proto"
)

// Default limits. They bound the work and memory a single request may cost a member.
const (
	// DefaultMaxKeyBytes bounds a key. Keys are stored escaped (up to twice as long) inside bbolt
	// keys, whose hard limit is 32 KiB; see maxKeyBytesCeiling.
	DefaultMaxKeyBytes = 4 << 10
	// DefaultMaxValueBytes bounds a value; it matches etcd's default request size limit.
	DefaultMaxValueBytes = 3 << 19 // 1.5 MiB
	// DefaultMaxTxnOps bounds each of a transaction's compare, success and failure lists.
	DefaultMaxTxnOps = 128
	// DefaultMaxRangeResults bounds the keys one range returns; a larger (or zero) limit is capped
	// and the response's more flag tells the client to continue.
	DefaultMaxRangeResults = 10000
	// DefaultMaxRequestBytes bounds an encoded command: the largest value plus room for the key
	// and the envelope.
	DefaultMaxRequestBytes = DefaultMaxValueBytes + 64<<10
	// DefaultMaxLeaseTTL bounds a lease's TTL in seconds (etcd's limit).
	DefaultMaxLeaseTTL = 9_000_000_000
	// DefaultMaxLeases bounds the number of leases alive at once.
	DefaultMaxLeases = 1_000_000
	// DefaultSessionTTL is how long a session is remembered after its last write, measured with
	// command times.
	DefaultSessionTTL = time.Hour
	// DefaultMaxSessions bounds the remembered sessions; beyond it the least recently used one
	// is forgotten, unless it is still inside the retry window.
	DefaultMaxSessions = 100_000
	// DefaultSessionRetryWindow is how long after its last use a session is protected from
	// eviction (see Limits.SessionRetryWindow). It is four times the client package's
	// MaxWriteRetrySpan (30 s), itself six server request timeouts (5 s): the rest of the window
	// absorbs the delay between a request's send and its entry in the log, and clock error
	// between members. When SessionTTL is shorter, the window defaults to SessionTTL.
	DefaultSessionRetryWindow = 2 * time.Minute

	// DefaultMaxEventBytes bounds one event as encoded (topic, key, payload, headers, id).
	DefaultMaxEventBytes = 1 << 20
	// DefaultMaxEventsPerWrite bounds the events one write publishes.
	DefaultMaxEventsPerWrite = 128
	// DefaultMaxTopics bounds the topics holding retained events at once.
	DefaultMaxTopics = 10_000
	// MaxTopicBytes bounds a topic name (not a setting: names are part of the stored format).
	MaxTopicBytes = 255

	// maxKeyBytesCeiling keeps an escaped key plus its 18-byte suffix within bbolt's MaxKeySize
	// (32768).
	maxKeyBytesCeiling = (32768 - 18) / 2
)

// Limits bounds requests and remembered state. Every member of a cluster must use identical
// Limits: they are enforced when commands are applied, and a difference would make members
// diverge. The server also checks them before proposing (Validate, ValidateRange) so that
// oversized requests never reach the log.
type Limits struct {
	MaxKeyBytes     int
	MaxValueBytes   int
	MaxTxnOps       int
	MaxRangeResults int64
	MaxRequestBytes int
	MaxLeaseTTL     int64 // seconds
	MaxLeases       int
	SessionTTL      time.Duration
	MaxSessions     int
	// SessionRetryWindow protects recently used sessions: a session used (written or retried)
	// less than this long ago, in command time, is never evicted to make room, and a new session
	// is refused with ErrTooManySessions instead. It must be in (0, SessionTTL]. It is what makes
	// a retry of a write with sequence 1 safe; the timing assumption it rests on is stated in
	// session.go.
	SessionRetryWindow time.Duration
	// MaxEventBytes bounds one event, MaxEventsPerWrite the events of one write, MaxTopics the
	// topics holding retained events (a write that would add one more is refused).
	MaxEventBytes     int
	MaxEventsPerWrite int
	MaxTopics         int
	// IdempotencyRetention is how long an idempotency key is remembered after its write;
	// MaxIdempotencyKeys bounds the keys remembered (idempotency.go).
	IdempotencyRetention time.Duration
	MaxIdempotencyKeys   int
}

// DefaultLimits returns the default limits.
func DefaultLimits() Limits {
	return Limits{
		MaxKeyBytes:        DefaultMaxKeyBytes,
		MaxValueBytes:      DefaultMaxValueBytes,
		MaxTxnOps:          DefaultMaxTxnOps,
		MaxRangeResults:    DefaultMaxRangeResults,
		MaxRequestBytes:    DefaultMaxRequestBytes,
		MaxLeaseTTL:        DefaultMaxLeaseTTL,
		MaxLeases:          DefaultMaxLeases,
		SessionTTL:         DefaultSessionTTL,
		MaxSessions:        DefaultMaxSessions,
		SessionRetryWindow: DefaultSessionRetryWindow,
		MaxEventBytes:      DefaultMaxEventBytes,
		MaxEventsPerWrite:  DefaultMaxEventsPerWrite,
		MaxTopics:          DefaultMaxTopics,

		IdempotencyRetention: DefaultIdempotencyRetention,
		MaxIdempotencyKeys:   DefaultMaxIdempotencyKeys,
	}
}

// withDefaults replaces zero fields by their defaults.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxKeyBytes == 0 {
		l.MaxKeyBytes = d.MaxKeyBytes
	}
	if l.MaxValueBytes == 0 {
		l.MaxValueBytes = d.MaxValueBytes
	}
	if l.MaxTxnOps == 0 {
		l.MaxTxnOps = d.MaxTxnOps
	}
	if l.MaxRangeResults == 0 {
		l.MaxRangeResults = d.MaxRangeResults
	}
	if l.MaxRequestBytes == 0 {
		l.MaxRequestBytes = d.MaxRequestBytes
	}
	if l.MaxLeaseTTL == 0 {
		l.MaxLeaseTTL = d.MaxLeaseTTL
	}
	if l.MaxLeases == 0 {
		l.MaxLeases = d.MaxLeases
	}
	if l.SessionTTL == 0 {
		l.SessionTTL = d.SessionTTL
	}
	if l.MaxSessions == 0 {
		l.MaxSessions = d.MaxSessions
	}
	if l.MaxEventBytes == 0 {
		l.MaxEventBytes = d.MaxEventBytes
	}
	if l.MaxEventsPerWrite == 0 {
		l.MaxEventsPerWrite = d.MaxEventsPerWrite
	}
	if l.MaxTopics == 0 {
		l.MaxTopics = d.MaxTopics
	}
	if l.IdempotencyRetention == 0 {
		l.IdempotencyRetention = d.IdempotencyRetention
	}
	if l.MaxIdempotencyKeys == 0 {
		l.MaxIdempotencyKeys = d.MaxIdempotencyKeys
	}
	if l.SessionRetryWindow == 0 {
		// A shorter TTL caps the default, so that setting only SessionTTL stays valid.
		l.SessionRetryWindow = min(d.SessionRetryWindow, l.SessionTTL)
	}
	return l
}

// check reports limits that cannot work.
func (l Limits) check() error {
	switch {
	case l.MaxKeyBytes < 1 || l.MaxKeyBytes > maxKeyBytesCeiling:
		return fmt.Errorf("mvcc: invalid limits: MaxKeyBytes %d outside [1, %d]", l.MaxKeyBytes, maxKeyBytesCeiling)
	case l.MaxValueBytes < 0:
		return fmt.Errorf("mvcc: invalid limits: negative MaxValueBytes %d", l.MaxValueBytes)
	case l.MaxTxnOps < 1:
		return fmt.Errorf("mvcc: invalid limits: MaxTxnOps %d < 1", l.MaxTxnOps)
	case l.MaxRangeResults < 1:
		return fmt.Errorf("mvcc: invalid limits: MaxRangeResults %d < 1", l.MaxRangeResults)
	case l.MaxRequestBytes < 1:
		return fmt.Errorf("mvcc: invalid limits: MaxRequestBytes %d < 1", l.MaxRequestBytes)
	case l.MaxLeaseTTL < 1 || l.MaxLeaseTTL > 9_000_000_000:
		return fmt.Errorf("mvcc: invalid limits: MaxLeaseTTL %d outside [1, 9e9] seconds", l.MaxLeaseTTL)
	case l.MaxLeases < 1:
		return fmt.Errorf("mvcc: invalid limits: MaxLeases %d < 1", l.MaxLeases)
	case l.SessionTTL <= 0:
		return fmt.Errorf("mvcc: invalid limits: SessionTTL %v <= 0", l.SessionTTL)
	case l.MaxSessions < 1:
		return fmt.Errorf("mvcc: invalid limits: MaxSessions %d < 1", l.MaxSessions)
	case l.MaxEventBytes < 1:
		return fmt.Errorf("mvcc: invalid limits: MaxEventBytes %d < 1", l.MaxEventBytes)
	case l.MaxEventsPerWrite < 1:
		return fmt.Errorf("mvcc: invalid limits: MaxEventsPerWrite %d < 1", l.MaxEventsPerWrite)
	case l.MaxTopics < 1:
		return fmt.Errorf("mvcc: invalid limits: MaxTopics %d < 1", l.MaxTopics)
	case l.IdempotencyRetention <= 0:
		return fmt.Errorf("mvcc: invalid limits: IdempotencyRetention %v <= 0", l.IdempotencyRetention)
	case l.MaxIdempotencyKeys < 1:
		return fmt.Errorf("mvcc: invalid limits: MaxIdempotencyKeys %d < 1", l.MaxIdempotencyKeys)
	case l.SessionRetryWindow <= 0 || l.SessionRetryWindow > l.SessionTTL:
		// A window beyond the TTL would promise protection that expiry takes away.
		return fmt.Errorf("mvcc: invalid limits: SessionRetryWindow %v outside (0, SessionTTL %v]", l.SessionRetryWindow, l.SessionTTL)
	}
	return nil
}

// maxMemberURLs bounds the client URLs one member may publish.
const maxMemberURLs = 16

// Validate checks a command against the limits and the static rules of its request (non-empty
// keys, no duplicate keys in a transaction, known keyspace). It does not look at the store's
// state (lease existence, revisions): those are checked when the command is applied. A nil error
// means the command is worth proposing.
func (l Limits) Validate(cmd *logpb.Command) error { return l.validate(cmd, -1) }

// validate is Validate of a command whose encoding is size bytes (negative: not known).
func (l Limits) validate(cmd *logpb.Command, size int) error {
	l = l.withDefaults()
	if cmd.GetKeyspace() != "" {
		return errorf(ErrUnknownKeyspace, "%q (only the default keyspace \"\" exists)", cmd.GetKeyspace())
	}
	if size < 0 {
		size = proto.Size(cmd)
	}
	if n := size; n > l.MaxRequestBytes {
		return errorf(ErrRequestTooLarge, "command is %d bytes, limit %d", n, l.MaxRequestBytes)
	}
	if s := sessionOf(cmd); s.GetClientId() != 0 && s.GetSequence() == 0 {
		return errorf(ErrInvalidArgument, "client %d: session sequence 0 (sequences start at 1)", s.GetClientId())
	} else if k := s.GetIdempotencyKey(); k != "" {
		if s.GetClientId() != 0 || s.GetSequence() != 0 {
			return errorf(ErrInvalidArgument, "a write carries a client session or an idempotency key, not both")
		}
		if len(k) > MaxIdempotencyKeyBytes {
			return errorf(ErrInvalidArgument, "idempotency key is %d bytes, limit %d", len(k), MaxIdempotencyKeyBytes)
		}
	}
	switch op := cmd.GetOp().(type) {
	case *logpb.Command_Put:
		return l.validatePut(op.Put)
	case *logpb.Command_DeleteRange:
		return l.validateDelete(op.DeleteRange)
	case *logpb.Command_Txn:
		return l.validateTxn(op.Txn)
	case *logpb.Command_Compaction:
		if op.Compaction.GetRevision() < 0 {
			return errorf(ErrInvalidArgument, "negative compaction revision %d", op.Compaction.GetRevision())
		}
	case *logpb.Command_LeaseGrant:
		g := op.LeaseGrant
		if g.GetId() < 0 {
			return errorf(ErrInvalidArgument, "negative lease id %d", g.GetId())
		}
		if g.GetTtl() < 1 || g.GetTtl() > l.MaxLeaseTTL {
			return errorf(ErrInvalidArgument, "lease ttl %d outside [1, %d] seconds", g.GetTtl(), l.MaxLeaseTTL)
		}
	case *logpb.Command_LeaseRevoke:
		if op.LeaseRevoke.GetId() <= 0 {
			return errorf(ErrLeaseNotFound, "lease id %d", op.LeaseRevoke.GetId())
		}
	case *logpb.Command_LeaseKeepAlive:
		if op.LeaseKeepAlive.GetId() <= 0 {
			return errorf(ErrLeaseNotFound, "lease id %d", op.LeaseKeepAlive.GetId())
		}
	case *logpb.Command_Publish:
		evs := op.Publish.GetEvents()
		if len(evs) == 0 {
			return errorf(ErrInvalidArgument, "publish without events")
		}
		if err := l.checkEventCount(len(evs)); err != nil {
			return err
		}
		return l.validateEvents(evs)
	case *logpb.Command_ConsumerCreate:
		return validateConsumerConfig(op.ConsumerCreate.GetConfig())
	case *logpb.Command_ConsumerDelete:
		return CheckConsumerName(op.ConsumerDelete.GetName())
	case *logpb.Command_Fetch:
		return validateFetch(op.Fetch)
	case *logpb.Command_Ack:
		return validateAck(op.Ack)
	case *logpb.Command_LeaseExpire:
	case *logpb.Command_Settings:
		if op.Settings.GetSet() == nil {
			return errorf(ErrInvalidArgument, "settings update sets nothing")
		}
	case *logpb.Command_MemberAttributes:
		if len(op.MemberAttributes.GetClientUrls()) > maxMemberURLs {
			return errorf(ErrInvalidArgument, "%d client URLs, limit %d", len(op.MemberAttributes.GetClientUrls()), maxMemberURLs)
		}
	case nil:
		return errorf(ErrInvalidArgument, "command has no operation")
	default:
		return errorf(ErrInvalidArgument, "unsupported operation %T", op)
	}
	return nil
}

// ValidateRange checks a read request.
func (l Limits) ValidateRange(r *logpb.RangeRequest) error {
	l = l.withDefaults()
	if err := l.checkKey(r.GetKey()); err != nil {
		return err
	}
	if len(r.GetRangeEnd()) > l.MaxKeyBytes {
		return errorf(ErrKeyTooLarge, "range end is %d bytes, limit %d", len(r.GetRangeEnd()), l.MaxKeyBytes)
	}
	if r.GetLimit() < 0 {
		return errorf(ErrInvalidArgument, "negative limit %d", r.GetLimit())
	}
	if r.GetRevision() < 0 {
		return errorf(ErrInvalidArgument, "negative revision %d", r.GetRevision())
	}
	return nil
}

func (l Limits) checkKey(key []byte) error {
	if len(key) == 0 {
		return ErrEmptyKey
	}
	if len(key) > l.MaxKeyBytes {
		return errorf(ErrKeyTooLarge, "key is %d bytes, limit %d", len(key), l.MaxKeyBytes)
	}
	return nil
}

func (l Limits) validatePut(p *logpb.PutRequest) error {
	if err := l.checkKey(p.GetKey()); err != nil {
		return err
	}
	if len(p.GetValue()) > l.MaxValueBytes {
		return errorf(ErrValueTooLarge, "value is %d bytes, limit %d", len(p.GetValue()), l.MaxValueBytes)
	}
	if p.GetLease() < 0 {
		return errorf(ErrLeaseNotFound, "lease id %d", p.GetLease())
	}
	if err := l.checkEventCount(len(p.GetEvents())); err != nil {
		return err
	}
	return l.validateEvents(p.GetEvents())
}

func (l Limits) validateDelete(d *logpb.DeleteRangeRequest) error {
	if err := l.checkKey(d.GetKey()); err != nil {
		return err
	}
	if len(d.GetRangeEnd()) > l.MaxKeyBytes {
		return errorf(ErrKeyTooLarge, "range end is %d bytes, limit %d", len(d.GetRangeEnd()), l.MaxKeyBytes)
	}
	if err := l.checkEventCount(len(d.GetEvents())); err != nil {
		return err
	}
	return l.validateEvents(d.GetEvents())
}

func (l Limits) validateTxn(t *logpb.TxnRequest) error {
	if n := len(t.GetCompare()); n > l.MaxTxnOps {
		return errorf(ErrTooManyOps, "%d compares, limit %d", n, l.MaxTxnOps)
	}
	if n := len(t.GetSuccess()); n > l.MaxTxnOps {
		return errorf(ErrTooManyOps, "%d success ops, limit %d", n, l.MaxTxnOps)
	}
	if n := len(t.GetFailure()); n > l.MaxTxnOps {
		return errorf(ErrTooManyOps, "%d failure ops, limit %d", n, l.MaxTxnOps)
	}
	for _, c := range t.GetCompare() {
		if err := l.checkKey(c.GetKey()); err != nil {
			return err
		}
		if len(c.GetRangeEnd()) > l.MaxKeyBytes {
			return errorf(ErrKeyTooLarge, "compare range end is %d bytes, limit %d", len(c.GetRangeEnd()), l.MaxKeyBytes)
		}
		if c.GetTarget() < logpb.Compare_VERSION || c.GetTarget() > logpb.Compare_LEASE {
			return errorf(ErrInvalidArgument, "unknown compare target %d", c.GetTarget())
		}
		if c.GetResult() < logpb.Compare_EQUAL || c.GetResult() > logpb.Compare_NOT_EQUAL {
			return errorf(ErrInvalidArgument, "unknown compare result %d", c.GetResult())
		}
	}
	for _, ops := range [][]*logpb.RequestOp{t.GetSuccess(), t.GetFailure()} {
		for _, op := range ops {
			var err error
			switch r := op.GetRequest().(type) {
			case *logpb.RequestOp_RequestRange:
				err = l.ValidateRange(r.RequestRange)
			case *logpb.RequestOp_RequestPut:
				err = l.validatePut(r.RequestPut)
			case *logpb.RequestOp_RequestDeleteRange:
				err = l.validateDelete(r.RequestDeleteRange)
			case *logpb.RequestOp_RequestPublish:
				if r.RequestPublish.GetSession() != nil {
					err = errorf(ErrInvalidArgument, "a publish inside a transaction takes the transaction's session, not its own")
				} else {
					err = l.validateEvents(r.RequestPublish.GetEvents())
				}
			case *logpb.RequestOp_RequestAck:
				if r.RequestAck.GetSession() != nil {
					err = errorf(ErrInvalidArgument, "an ack inside a transaction takes the transaction's session, not its own")
				} else {
					err = validateAck(r.RequestAck)
				}
			default:
				err = errorf(ErrInvalidArgument, "txn op without a request")
			}
			if err != nil {
				return err
			}
		}
		if err := checkDuplicates(ops); err != nil {
			return err
		}
		if err := l.checkEventCount(len(branchEvents(ops))); err != nil {
			return err
		}
	}
	return nil
}

// checkDuplicates enforces etcd's rule that a transaction branch writes each key at most once: no
// two puts of one key, and no put of a key that a delete of the same branch covers. Thanks to it
// every write of a transaction sees the pre-transaction state as the key's previous version.
func checkDuplicates(ops []*logpb.RequestOp) error {
	// putKeys keeps op order so that the reported key, like everything at apply, is deterministic.
	puts := make(map[string]struct{})
	var putKeys [][]byte
	var dels []*logpb.DeleteRangeRequest
	for _, op := range ops {
		switch r := op.GetRequest().(type) {
		case *logpb.RequestOp_RequestPut:
			k := string(r.RequestPut.GetKey())
			if _, dup := puts[k]; dup {
				return errorf(ErrDuplicateKey, "key %q is put twice", k)
			}
			puts[k] = struct{}{}
			putKeys = append(putKeys, r.RequestPut.GetKey())
		case *logpb.RequestOp_RequestDeleteRange:
			dels = append(dels, r.RequestDeleteRange)
		}
	}
	for _, d := range dels {
		for _, k := range putKeys {
			if inRange(k, d.GetKey(), d.GetRangeEnd()) {
				return errorf(ErrDuplicateKey, "key %q is both put and deleted", k)
			}
		}
	}
	return nil
}

// inRange reports whether key is selected by (start, end) with the API's range_end rules.
func inRange(key, start, end []byte) bool {
	switch {
	case len(end) == 0:
		return bytes.Equal(key, start)
	case len(end) == 1 && end[0] == 0:
		return bytes.Compare(key, start) >= 0
	default:
		return bytes.Compare(key, start) >= 0 && bytes.Compare(key, end) < 0
	}
}
