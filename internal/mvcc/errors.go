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
	ErrUnknownKeyspace = &Error{Code: "unknown_keyspace", Message: "unknown keyspace"}
	ErrEmptyKey        = &Error{Code: "empty_key", Message: "key is not provided"}
	ErrInvalidArgument = &Error{Code: "invalid_argument", Message: "invalid argument"}
)

var sentinels = map[string]*Error{}

func init() {
	for _, e := range []*Error{ErrCompacted, ErrFutureRev, ErrLeaseNotFound, ErrLeaseExists, ErrTooManyLeases,
		ErrKeyTooLarge, ErrValueTooLarge, ErrRequestTooLarge, ErrTooManyOps, ErrDuplicateKey,
		ErrStaleSequence, ErrUnknownKeyspace, ErrEmptyKey, ErrInvalidArgument} {
		sentinels[e.Code] = e
	}
}

// errorf returns an *Error with kind's Code and a detailed message.
func errorf(kind *Error, format string, args ...any) *Error {
	return &Error{Code: kind.Code, Message: kind.Message + ": " + fmt.Sprintf(format, args...)}
}
