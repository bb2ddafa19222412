package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// Lease response types.
type (
	LeaseGrantResponse      = caucusv1.LeaseGrantResponse
	LeaseRevokeResponse     = caucusv1.LeaseRevokeResponse
	LeaseKeepAliveResponse  = caucusv1.LeaseKeepAliveResponse
	LeaseTimeToLiveResponse = caucusv1.LeaseTimeToLiveResponse
	LeaseLeasesResponse     = caucusv1.LeaseLeasesResponse
)

// ErrLeaseNotFound is returned (wrapped) by KeepAliveOnce and KeepAlive when the lease does not
// exist any more: it expired or was revoked.
var ErrLeaseNotFound = errors.New("client: lease not found (expired or revoked)")

// Grant creates a lease of ttl seconds with an id chosen by the server. Granting is not
// idempotent, so an attempt is retried only when it certainly was not applied: after an
// ambiguous failure a lease may exist that the caller never learns of, and it expires after ttl.
func (c *Client) Grant(ctx context.Context, ttl int64) (*LeaseGrantResponse, error) {
	req := &caucusv1.LeaseGrantRequest{Ttl: ttl}
	return unary(ctx, c, "lease grant", leaderEndpoint, retryNotApplied, func(ctx context.Context, ep *endpoint) (*connect.Response[LeaseGrantResponse], error) {
		return ep.lease.LeaseGrant(ctx, connect.NewRequest(req))
	})
}

// GrantID creates a lease of ttl seconds with the given id (non-zero); it fails with
// AlreadyExists if a lease has that id.
func (c *Client) GrantID(ctx context.Context, id, ttl int64) (*LeaseGrantResponse, error) {
	req := &caucusv1.LeaseGrantRequest{Ttl: ttl, Id: id}
	return unary(ctx, c, "lease grant", leaderEndpoint, retryNotApplied, func(ctx context.Context, ep *endpoint) (*connect.Response[LeaseGrantResponse], error) {
		return ep.lease.LeaseGrant(ctx, connect.NewRequest(req))
	})
}

// Revoke deletes lease id and every key attached to it. It is retried like a read: when a retry
// finds the lease gone after an attempt whose outcome is unknown, that attempt revoked it, and
// Revoke succeeds.
func (c *Client) Revoke(ctx context.Context, id int64) (*LeaseRevokeResponse, error) {
	req := &caucusv1.LeaseRevokeRequest{Id: id}
	var resp *LeaseRevokeResponse
	ambiguous := false
	err := c.call(ctx, "lease revoke", leaderEndpoint, retryTransient, func(ctx context.Context, ep *endpoint) error {
		r, err := ep.lease.LeaseRevoke(ctx, connect.NewRequest(req))
		switch {
		case err == nil:
			resp = r.Msg
			return nil
		case ambiguous && IsNotFound(err):
			resp = &LeaseRevokeResponse{}
			return nil
		case !neverSent(err) && !isNotLeader(err):
			ambiguous = true
		}
		return err
	})
	return resp, err
}

// KeepAliveOnce renews lease id once. It fails with ErrLeaseNotFound (wrapped) when the lease
// is gone.
func (c *Client) KeepAliveOnce(ctx context.Context, id int64) (*LeaseKeepAliveResponse, error) {
	req := &caucusv1.LeaseKeepAliveRequest{Id: id}
	var resp *LeaseKeepAliveResponse
	err := c.call(ctx, "lease keep-alive", leaderEndpoint, retryTransient, func(ctx context.Context, ep *endpoint) error {
		r, err := ep.lease.LeaseKeepAlive(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		resp = r.Msg
		return nil
	})
	if err != nil {
		if IsNotFound(err) {
			return nil, fmt.Errorf("keep-alive of lease %x: %w: %w", id, ErrLeaseNotFound, err)
		}
		return nil, err
	}
	if resp.GetTtl() <= 0 {
		return nil, fmt.Errorf("keep-alive of lease %x: %w", id, ErrLeaseNotFound)
	}
	return resp, nil
}

// KeepAlive renews lease id until ctx is canceled, the client is closed, or the lease is lost,
// and reports each renewal on the returned channel, which it closes when it stops. The first
// renewal happens before KeepAlive returns, so an error (such as ErrLeaseNotFound) means no
// loop was started.
//
// Renewals are sent every third of the granted TTL, so two consecutive ones may fail before
// the lease expires. A failed renewal is retried until the lease's deadline passes as far as
// the client can tell, then the loop gives up. The channel holds the latest response: a reader
// that falls behind misses intermediate ones, never blocks the loop.
func (c *Client) KeepAlive(ctx context.Context, id int64) (<-chan *LeaseKeepAliveResponse, error) {
	first, err := c.KeepAliveOnce(ctx, id)
	if err != nil {
		return nil, err
	}
	ch := make(chan *LeaseKeepAliveResponse, 1)
	ch <- first
	started := c.goBackground(func() {
		defer close(ch)
		c.keepAliveLoop(ctx, id, first, ch)
	})
	if !started {
		return nil, ErrClosed
	}
	return ch, nil
}

func (c *Client) keepAliveLoop(ctx context.Context, id int64, last *LeaseKeepAliveResponse, ch chan *LeaseKeepAliveResponse) {
	ttl := time.Duration(last.GetTtl()) * time.Second
	expiry := time.Now().Add(ttl)
	wait := ttl / 3
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		// Bound the attempt by the lease's expiry: renewing after it is pointless.
		actx, cancel := context.WithDeadline(ctx, expiry)
		sent := time.Now()
		resp, err := c.KeepAliveOnce(actx, id)
		cancel()
		if err != nil {
			switch {
			case ctx.Err() != nil || c.ctx.Err() != nil:
			case errors.Is(err, ErrLeaseNotFound):
				c.log.Warn("caucus client: lease lost, keep-alive stopped", "lease", fmt.Sprintf("%x", id), "err", err)
			case time.Now().After(expiry):
				c.log.Warn("caucus client: lease expired before it could be renewed, keep-alive stopped",
					"lease", fmt.Sprintf("%x", id), "err", err)
			default:
				c.log.Debug("caucus client: lease renewal failed, retrying", "lease", fmt.Sprintf("%x", id), "err", err)
				wait = min(time.Second, max(time.Until(expiry)/4, 50*time.Millisecond))
				continue
			}
			return
		}
		// The lease lives ttl from when the leader renewed it, which is after we sent the
		// request: counting from the send time is the safe side.
		ttl = time.Duration(resp.GetTtl()) * time.Second
		expiry = sent.Add(ttl)
		wait = ttl / 3
		select {
		case ch <- resp:
		default:
			// Replace the unread response with the newer one; only this goroutine sends, so
			// the second send cannot block.
			select {
			case <-ch:
			default:
			}
			ch <- resp
		}
	}
}

// LeaseOption modifies a TimeToLive request.
type LeaseOption func(*caucusv1.LeaseTimeToLiveRequest)

// WithAttachedKeys makes TimeToLive list the keys attached to the lease.
func WithAttachedKeys() LeaseOption {
	return func(r *caucusv1.LeaseTimeToLiveRequest) { r.Keys = true }
}

// TimeToLive returns the remaining and granted TTL of lease id; a TTL of -1 means the lease
// does not exist.
func (c *Client) TimeToLive(ctx context.Context, id int64, opts ...LeaseOption) (*LeaseTimeToLiveResponse, error) {
	req := &caucusv1.LeaseTimeToLiveRequest{Id: id}
	for _, o := range opts {
		o(req)
	}
	return unary(ctx, c, "lease time-to-live", anyEndpoint, retryTransient, func(ctx context.Context, ep *endpoint) (*connect.Response[LeaseTimeToLiveResponse], error) {
		return ep.lease.LeaseTimeToLive(ctx, connect.NewRequest(req))
	})
}

// Leases lists the ids of the live leases.
func (c *Client) Leases(ctx context.Context) (*LeaseLeasesResponse, error) {
	return unary(ctx, c, "lease list", anyEndpoint, retryTransient, func(ctx context.Context, ep *endpoint) (*connect.Response[LeaseLeasesResponse], error) {
		return ep.lease.LeaseLeases(ctx, connect.NewRequest(&caucusv1.LeaseLeasesRequest{}))
	})
}
