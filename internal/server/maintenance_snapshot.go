package server

import (
	"context"
	"errors"
	"fmt"
	"io"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/mvcc"
)

// snapshotChunkBytes is the blob size of each message of a streamed snapshot.
const snapshotChunkBytes = 256 << 10

// Snapshot streams a consistent copy of the database in chunks. Every message carries
// remaining_bytes, the bytes still to come after its blob, so the last one says 0 and only the
// last one: clients stop there, and tell a complete copy from a truncated stream by it. The
// size is known before the first byte because the copy is one read transaction of a fixed size.
//
// The copy holds every entry this member has applied: what the group commit still holds is
// committed first. It needs no quorum (a backup is wanted most when the cluster is broken), so
// a member that lags the leader copies what it has.
func (m *maintenanceService) Snapshot(ctx context.Context, _ *connect.Request[caucusv1.SnapshotRequest], stream *connect.ServerStream[caucusv1.SnapshotResponse]) error {
	cctx, cancel := m.s.withDeadline(ctx)
	err := m.s.n.CommitApplied(cctx)
	cancel()
	if err != nil {
		return toConnect(fmt.Errorf("server: snapshot: %w", err))
	}
	snap, err := m.s.store.BeginSnapshot()
	if err != nil {
		if errors.Is(err, mvcc.ErrClosed) {
			return connect.NewError(connect.CodeUnavailable, fmt.Errorf("server: snapshot: %w", err))
		}
		return toConnect(fmt.Errorf("server: snapshot: %w", err))
	}
	total := snap.Size()
	pr, pw := io.Pipe()
	written := make(chan struct{})
	go func() {
		defer close(written)
		_, err := snap.WriteTo(pw)
		pw.CloseWithError(err) // nil: the reader sees io.EOF
	}()
	defer func() {
		pr.Close() // a writer blocked on a stream we gave up on returns
		<-written
		snap.Close()
	}()
	buf := make([]byte, snapshotChunkBytes)
	var sent int64
	for {
		n, err := io.ReadFull(pr, buf)
		if n > 0 {
			sent += int64(n)
			if sent > total {
				return connect.NewError(connect.CodeInternal, fmt.Errorf("server: snapshot: wrote more than its %d bytes", total))
			}
			resp := &caucusv1.SnapshotResponse{Header: m.s.header(0), RemainingBytes: uint64(total - sent), Blob: buf[:n]}
			if serr := stream.Send(resp); serr != nil {
				return serr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			if sent != total {
				return connect.NewError(connect.CodeInternal, fmt.Errorf("server: snapshot: wrote %d of its %d bytes", sent, total))
			}
			return nil
		}
		if err != nil {
			return connect.NewError(connect.CodeInternal, fmt.Errorf("server: snapshot: %w", err))
		}
		if ctx.Err() != nil {
			return connect.NewError(connect.CodeCanceled, ctx.Err())
		}
	}
}
