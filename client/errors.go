package client

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"connectrpc.com/connect"
)

// Errors of the client itself. Errors from the cluster are connect errors (*connect.Error,
// possibly wrapped); classify them with the Is* helpers or connect.CodeOf.
var (
	// ErrNoEndpoints is returned by New when Config.Endpoints is empty.
	ErrNoEndpoints = errors.New("client: no endpoints configured")
	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("client: closed")
	// ErrSnapshotTruncated is returned by SnapshotSave when the stream ended before the member
	// announced the last chunk.
	ErrSnapshotTruncated = errors.New("client: snapshot stream ended before the last chunk")
	// ErrOutcomeUnknown wraps the error of a write (Put, Delete, Txn commit) that may or may
	// not have been applied and that the client will not re-send: an attempt may have been
	// applied (its answer was lost), and by the time it was retried the cluster had forgotten
	// the write's session, so a retry could no longer be told apart from a new write. Read the
	// keys to find out what happened. The cause stays reachable with errors.As.
	ErrOutcomeUnknown = errors.New("client: write outcome unknown: an attempt may have been applied, and its session expired before the retry")
)

// IsUnavailable reports whether err means the cluster could not serve the request now (no
// quorum, no leader, member unreachable): the request may succeed later.
func IsUnavailable(err error) bool {
	return connect.CodeOf(err) == connect.CodeUnavailable
}

// IsDeadlineExceeded reports whether err is a timeout, on the client or the server side.
func IsDeadlineExceeded(err error) bool {
	return connect.CodeOf(err) == connect.CodeDeadlineExceeded || errors.Is(err, context.DeadlineExceeded)
}

// IsCompacted reports whether err means a read asked for a revision that was compacted away.
func IsCompacted(err error) bool {
	return connect.CodeOf(err) == connect.CodeOutOfRange && strings.Contains(errorMessage(err), "compacted")
}

// IsFutureRevision reports whether err means a read asked for a revision above the current one.
func IsFutureRevision(err error) bool {
	return connect.CodeOf(err) == connect.CodeOutOfRange && strings.Contains(errorMessage(err), "future")
}

// IsInvalidArgument reports whether the server rejected the request as malformed (empty key,
// key or value too large, bad range...). Retrying it cannot succeed.
func IsInvalidArgument(err error) bool {
	return connect.CodeOf(err) == connect.CodeInvalidArgument
}

// IsFailedPrecondition reports whether the request was valid but the cluster state refused it
// (e.g. a membership change while another one is pending).
func IsFailedPrecondition(err error) bool {
	return connect.CodeOf(err) == connect.CodeFailedPrecondition
}

// IsNotFound reports whether the request named something that does not exist (a lease, a
// member).
func IsNotFound(err error) bool {
	return connect.CodeOf(err) == connect.CodeNotFound
}

// IsResourceExhausted reports whether the cluster refused the request for lack of a bounded
// resource: a write needing a new session while the session table is full of sessions used too
// recently to be evicted, or a write that would grow a state machine already at its quota
// ("database space exceeded": compact and defragment). Nothing was applied; the request may
// succeed later.
func IsResourceExhausted(err error) bool {
	return connect.CodeOf(err) == connect.CodeResourceExhausted
}

// isSessionExpired reports whether the server refused a write because it no longer remembers
// the write's client id (mvcc.ErrSessionExpired). Nothing was applied by that attempt.
func isSessionExpired(err error) bool {
	return connect.CodeOf(err) == connect.CodeFailedPrecondition && strings.Contains(errorMessage(err), "session expired")
}

// isTooManySessions reports whether the server refused to open a session for a write
// (mvcc.ErrTooManySessions). Nothing was applied by that attempt.
func isTooManySessions(err error) bool {
	return connect.CodeOf(err) == connect.CodeResourceExhausted && strings.Contains(errorMessage(err), "too many sessions")
}

// errorMessage returns the server's message of a connect error, or err's text otherwise.
func errorMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// isNotLeader reports whether the member refused the request before proposing it because it is
// not (or no longer) the leader, knows no leader, or Raft dropped the proposal. Such a request was
// certainly not applied, unlike one that failed with "no quorum" after it was proposed.
func isNotLeader(err error) bool {
	if connect.CodeOf(err) != connect.CodeUnavailable {
		return false
	}
	msg := errorMessage(err)
	return strings.Contains(msg, "not leader") || strings.Contains(msg, "no leader") ||
		strings.Contains(msg, "proposal dropped")
}

// provablyNotApplied reports whether a failed write attempt certainly changed nothing: it was
// refused before being proposed, never reached a member, or was refused by the session rules.
// Any other failure leaves the attempt's outcome open (e.g. its answer was lost).
func provablyNotApplied(err error) bool {
	return isNotLeader(err) || neverSent(err) || isSessionExpired(err) || isTooManySessions(err)
}

// retryable reports whether a failed attempt may be repeated under pol.
func retryable(err error, pol policy) bool {
	if isNotLeader(err) || neverSent(err) {
		return true
	}
	if pol == retryNotApplied {
		return false
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable:
		return true
	case connect.CodeDeadlineExceeded:
		// Reached only while the call's own deadline is still running (call checks it
		// first): this attempt's share of the budget expired, so the member is slow or
		// unreachable.
		return true
	case connect.CodeUnknown, connect.CodeInternal:
		// A connection that broke mid-response surfaces as a non-wire error; a server-side
		// internal error is not retried.
		return !connect.IsWireError(err) && isTransportError(err)
	}
	return false
}

// neverSent reports whether err proves the request never reached a member: the connection
// could not be established.
func neverSent(err error) bool {
	if connect.IsWireError(err) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// isTransportError reports whether err comes from a broken connection rather than from the
// client's own encoding.
func isTransportError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}
