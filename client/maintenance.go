package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
)

// Maintenance response types.
type (
	StatusResponse     = caucusv1.StatusResponse
	MoveLeaderResponse = caucusv1.MoveLeaderResponse
	DefragmentResponse = caucusv1.DefragmentResponse
)

// Status returns the status of the member at endpointURL, which need not be one of the configured
// endpoints. It makes a single attempt: the caller asked about that member, so failing over to
// another would answer a different question.
func (c *Client) Status(ctx context.Context, endpointURL string) (*StatusResponse, error) {
	maint, known, u, err := c.memberMaintenance(endpointURL)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.RequestTimeout)
		defer cancel()
	}
	r, err := maint.Status(ctx, connect.NewRequest(&caucusv1.StatusRequest{}))
	if err != nil {
		return nil, fmt.Errorf("status via %s: %w", u, err)
	}
	if known != nil {
		known.noteMember(r.Msg.GetHeader().GetMemberId())
	}
	return r.Msg, nil
}

// Defragment compacts the database file of the member at endpointURL (which need not be one of
// the configured endpoints) and reports its size before and after. The member serves nothing else
// until it is done, so defragment members one at a time, waiting for each call to return.
//
// It makes a single attempt and is never retried: a call that timed out may still be running on
// the member, and a second one would only queue behind it. Only ctx bounds the call (the member
// bounds it at server.DefragmentWaitLimit if ctx has no deadline): Config.RequestTimeout does
// not apply, since the work is proportional to the member's data.
func (c *Client) Defragment(ctx context.Context, endpointURL string) (*DefragmentResponse, error) {
	maint, known, u, err := c.memberMaintenance(endpointURL)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.ctx, cancel)() // Close abandons the wait
	r, err := maint.Defragment(ctx, connect.NewRequest(&caucusv1.DefragmentRequest{}))
	if err != nil {
		return nil, fmt.Errorf("defragment via %s: %w", u, err)
	}
	if known != nil {
		known.noteMember(r.Msg.GetHeader().GetMemberId())
	}
	return r.Msg, nil
}

// memberMaintenance returns the maintenance client for one member: the configured endpoint's
// (on its protocol) when endpointURL is one of them, else a connect client made for the call.
func (c *Client) memberMaintenance(endpointURL string) (caucusv1connect.MaintenanceClient, *endpoint, string, error) {
	if c.ctx.Err() != nil {
		return nil, nil, "", ErrClosed
	}
	u, err := normalizeEndpoint(endpointURL)
	if err != nil {
		return nil, nil, "", err
	}
	for _, ep := range c.endpoints {
		if ep.url == u {
			return ep.maint, ep, u, nil
		}
	}
	return caucusv1connect.NewMaintenanceClient(c.httpc, u), nil, u, nil
}

// MoveLeader asks the leader to transfer leadership to member targetID. It is retried like a
// read: a repeated transfer to the member that already leads is a no-op.
func (c *Client) MoveLeader(ctx context.Context, targetID uint64) (*MoveLeaderResponse, error) {
	req := &caucusv1.MoveLeaderRequest{TargetId: targetID}
	var resp *MoveLeaderResponse
	err := c.call(ctx, "move leader", leaderEndpoint, retryTransient, func(ctx context.Context, ep *endpoint) error {
		r, err := ep.maint.MoveLeader(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		resp = r.Msg
		return nil
	})
	if err == nil {
		c.refreshLeaderAsync()
	}
	return resp, err
}

// SnapshotSave streams a consistent copy of one member's database into w and returns the
// number of bytes written. The call fails over between endpoints only until the first byte
// reached w; a stream that breaks later fails the call, since w holds a partial copy. A stream
// that ends before the member announced its last chunk (remaining_bytes = 0) fails with
// ErrSnapshotTruncated. Only ctx bounds the transfer: Config.RequestTimeout does not apply.
func (c *Client) SnapshotSave(ctx context.Context, w io.Writer) (int64, error) {
	if c.ctx.Err() != nil {
		return 0, ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.ctx, cancel)() // Close aborts the transfer
	n := len(c.endpoints)
	start := c.firstEndpoint(anyEndpoint)
	var errs []error
	for try := 0; try < n; try++ {
		ep := c.endpoints[(start+try)%n]
		written, err := snapshotFrom(ctx, ep, w)
		if err == nil {
			return written, nil
		}
		err = fmt.Errorf("snapshot via %s: %w", ep.url, err)
		if written > 0 || ctx.Err() != nil || !retryable(err, retryTransient) {
			return written, err
		}
		errs = append(errs, err)
		c.log.Debug("caucus client: snapshot failed, trying next endpoint", "endpoint", ep.url, "err", err)
	}
	return 0, errors.Join(errs...)
}

func snapshotFrom(ctx context.Context, ep *endpoint, w io.Writer) (int64, error) {
	written, err := snapshotVia(ctx, ep.maint, w)
	if written == 0 && ep.connectMaint != nil && connect.CodeOf(err) == connect.CodeUnimplemented {
		// A member from before native streams answers the native open with Unimplemented.
		return snapshotVia(ctx, ep.connectMaint, w)
	}
	return written, err
}

// snapshotVia streams a snapshot with maint into w. Each message's remaining_bytes must be the
// previous one's less its blob: a stream that skips or repeats data fails instead of leaving a
// corrupt copy.
func snapshotVia(ctx context.Context, maint caucusv1connect.MaintenanceClient, w io.Writer) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // abandons the stream if we return early
	stream, err := maint.Snapshot(ctx, connect.NewRequest(&caucusv1.SnapshotRequest{}))
	if err != nil {
		return 0, err
	}
	defer stream.Close()
	var written int64
	done := false
	var remaining uint64 // what the previous message announced
	for stream.Receive() {
		msg := stream.Msg()
		if done {
			return written, fmt.Errorf("member sent data after the last chunk")
		}
		blob := uint64(len(msg.GetBlob()))
		if written > 0 && msg.GetRemainingBytes()+blob != remaining {
			return written, fmt.Errorf("member announced %d bytes to come, then sent %d with %d remaining", remaining, blob, msg.GetRemainingBytes())
		}
		remaining = msg.GetRemainingBytes()
		if blob > 0 {
			m, err := w.Write(msg.GetBlob())
			written += int64(m)
			if err != nil {
				return written, fmt.Errorf("writing snapshot: %w", err)
			}
		}
		done = remaining == 0
	}
	if err := stream.Err(); err != nil {
		return written, err
	}
	if !done {
		return written, ErrSnapshotTruncated
	}
	return written, nil
}
