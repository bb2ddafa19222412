package mvcc

import "fmt"

// Error is a deterministic application error: every member applying the same command returns an
// Error with the same Code and message. Code is stable and meant for mapping to API status codes;
// Message is for humans. errors.Is matches an *Error against the sentinel with the same Code, so
// an error stored in a session and decoded later still matches, e.g., ErrCompacted.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return "mvcc: " + e.Message }

// Is reports whether target is an *Error with the same Code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinel errors; compare with errors.Is. Errors returned by the store carry more detail in the
// message but the same Code.
var (
	ErrCompacted       = &Error{Code: "compacted", Message: "required revision has been compacted"}
	ErrFutureRev       = &Error{Code: "future_revision", Message: "required revision is a future revision"}
	ErrLeaseNotFound   = &Error{Code: "lease_not_found", Message: "requested lease not found"}
	ErrLeaseExists     = &Error{Code: "lease_exists", Message: "lease already exists"}
	ErrTooManyLeases   = &Error{Code: "too_many_leases", Message: "too many leases"}
	ErrKeyTooLarge     = &Error{Code: "key_too_large", Message: "key is too large"}
	ErrValueTooLarge   = &Error{Code: "value_too_large", Message: "value is too large"}
	ErrRequestTooLarge = &Error{Code: "request_too_large", Message: "request is too large"}
	ErrTooManyOps      = &Error{Code: "too_many_ops", Message: "too many operations in txn request"}
	ErrDuplicateKey    = &Error{Code: "duplicate_key", Message: "duplicate key given in txn request"}
	ErrStaleSequence   = &Error{Code: "stale_sequence", Message: "session sequence is older than the last applied one"}
	// ErrSessionExpired: a write with sequence > 1 names a client id the store does not
	// remember (its session expired or was evicted). Nothing was applied. The store cannot tell
	// a retry of an already applied write from the client's next write, so it refuses both; the
	// client must not re-send the write under a new client id unless it knows no earlier attempt
	// was applied.
	ErrSessionExpired = &Error{Code: "session_expired", Message: "session expired: the store no longer remembers this client id"}
	// ErrTooManySessions: a new session (sequence 1) was refused because the table holds
	// Limits.MaxSessions sessions, all used within Limits.SessionRetryWindow. Nothing was
	// applied; the write may be retried once older sessions leave the window.
	ErrTooManySessions = &Error{Code: "too_many_sessions", Message: "too many sessions used within the retry window"}
	ErrUnknownKeyspace = &Error{Code: "unknown_keyspace", Message: "unknown keyspace"}
	ErrEmptyKey        = &Error{Code: "empty_key", Message: "key is not provided"}
	ErrInvalidArgument = &Error{Code: "invalid_argument", Message: "invalid argument"}
	ErrInvalidTopic    = &Error{Code: "invalid_topic", Message: "invalid topic"}
	ErrEventTooLarge   = &Error{Code: "event_too_large", Message: "event is too large"}
	ErrTooManyEvents   = &Error{Code: "too_many_events", Message: "too many events in one write"}
	// ErrTooManyTopics: the write would add a topic past Limits.MaxTopics. Nothing was applied;
	// it may succeed once compaction empties a topic.
	ErrTooManyTopics = &Error{Code: "too_many_topics", Message: "too many topics"}
	// ErrIdempotencyKeyReused: the write's idempotency key names another request. Nothing was
	// applied.
	ErrIdempotencyKeyReused = &Error{Code: "idempotency_key_reused", Message: "idempotency key already used for a different request"}
	// ErrTooManyIdempotencyKeys: the table of idempotency keys is full for the retention.
	// Nothing was applied; the write may succeed once older keys expire.
	ErrTooManyIdempotencyKeys = &Error{Code: "too_many_idempotency_keys", Message: "too many idempotency keys"}
)

var sentinels = map[string]*Error{}

func init() {
	for _, e := range []*Error{ErrCompacted, ErrFutureRev, ErrLeaseNotFound, ErrLeaseExists, ErrTooManyLeases,
		ErrKeyTooLarge, ErrValueTooLarge, ErrRequestTooLarge, ErrTooManyOps, ErrDuplicateKey,
		ErrStaleSequence, ErrSessionExpired, ErrTooManySessions, ErrUnknownKeyspace, ErrEmptyKey, ErrInvalidArgument,
		ErrInvalidTopic, ErrEventTooLarge, ErrTooManyEvents, ErrTooManyTopics,
		ErrIdempotencyKeyReused, ErrTooManyIdempotencyKeys} {
		sentinels[e.Code] = e
	}
}

// errorf returns an *Error with kind's Code and a detailed message.
func errorf(kind *Error, format string, args ...any) *Error {
	return &Error{Code: kind.Code, Message: kind.Message + ": " + fmt.Sprintf(format, args...)}
}
