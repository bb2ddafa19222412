package server

import (
	"context"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/fsm"
)

// DefragmentWaitLimit bounds how long a Defragment request waits when the client set no
// deadline. Unlike a write it waits for local work, not for a quorum, and that work is
// proportional to the data (a large store takes minutes), so RequestTimeout does not apply.
// Expiry only ends the wait: a defragmentation that started runs to completion.
const DefragmentWaitLimit = 30 * time.Minute

// Defragment compacts this member's database file. The member serves nothing else meanwhile
// (see fsm.Defragment), so operators run it on one member at a time.
func (m *maintenanceService) Defragment(ctx context.Context, req *connect.Request[caucusv1.DefragmentRequest]) (*connect.Response[caucusv1.DefragmentResponse], error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefragmentWaitLimit)
		defer cancel()
	}
	start := time.Now()
	before, after, err := fsm.Defragment(ctx, m.s.n, m.s.store)
	if err != nil {
		m.s.log.Warn("defragment failed", "err", err, "took", time.Since(start))
		return nil, toConnect(err)
	}
	m.s.log.Info("defragmented", "before_bytes", before, "after_bytes", after, "took", time.Since(start))
	return connect.NewResponse(&caucusv1.DefragmentResponse{Header: m.s.header(0), DbSizeBefore: before, DbSizeAfter: after}), nil
}
