package client

import (
	"context"
	"strings"

	"connectrpc.com/connect"
)

// idempotencyKeyCtx carries an idempotency key in a context.
type idempotencyKeyCtx struct{}

// WithIdempotencyKey returns a context that names the writes made with it (Put, Delete, Txn,
// Publish, Ack) by key instead of by this client's session. The cluster applies a write with a
// given key once within its idempotency retention (24 h by default, a cluster setting), whoever
// sends it: a repeat, from this client or from another process after a crash, gets the first
// application's result back and applies and publishes nothing; a different request with the
// same key fails with IsIdempotencyKeyReused. A write that failed does not use up its key.
// Use one key per logical write (an order id, a request id from your own caller).
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, idempotencyKeyCtx{}, key)
}

// IsIdempotencyKeyReused reports whether a write was refused because its idempotency key names
// a different request.
func IsIdempotencyKeyReused(err error) bool {
	return connect.CodeOf(err) == connect.CodeFailedPrecondition && strings.Contains(errorMessage(err), "idempotency key already used")
}
