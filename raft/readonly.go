package raft

// maxPendingReadIndex bounds the ReadIndex requests a leader holds: those waiting for its first
// commit in the term plus those waiting for a heartbeat quorum. Beyond it requests are refused
// (ErrProposalDropped locally, a rejected MsgReadIndexResp remotely) rather than buffered without
// limit while the leader cannot answer.
const maxPendingReadIndex = 4096

// readRequest is one ReadIndex request awaiting confirmation of leadership (dissertation §6.4,
// steps 1-3): index is the commit index when it arrived; acks are the voters that answered a
// heartbeat carrying its context (or a later one).
type readRequest struct {
	index uint64
	from  NodeID
	ctx   []byte
	acks  map[NodeID]bool
}

// readOnly holds the ReadIndex requests in arrival order. A heartbeat response acknowledges the
// request whose context it echoes and, because heartbeats carry the latest context and a leader
// that is confirmed later was also the leader earlier, every request before it too.
type readOnly struct {
	pending map[string]*readRequest
	queue   []string
}

func newReadOnly() *readOnly { return &readOnly{pending: map[string]*readRequest{}} }

func (ro *readOnly) len() int { return len(ro.queue) }

// add records a request; a duplicate context is ignored (contexts must be unique).
func (ro *readOnly) add(index uint64, from NodeID, ctx []byte) {
	k := string(ctx)
	if _, ok := ro.pending[k]; ok {
		return
	}
	ro.pending[k] = &readRequest{index: index, from: from, ctx: ctx, acks: map[NodeID]bool{}}
	ro.queue = append(ro.queue, k)
}

// recvAck records that id acknowledged the round for ctx and returns the acks so far (nil if the
// context is unknown, e.g. already answered).
func (ro *readOnly) recvAck(id NodeID, ctx []byte) map[NodeID]bool {
	rr, ok := ro.pending[string(ctx)]
	if !ok {
		return nil
	}
	rr.acks[id] = true
	return rr.acks
}

// advance removes and returns every request up to and including the one for ctx.
func (ro *readOnly) advance(ctx []byte) []*readRequest {
	k := string(ctx)
	if _, ok := ro.pending[k]; !ok {
		return nil
	}
	var out []*readRequest
	i := 0
	for ; i < len(ro.queue); i++ {
		rr := ro.pending[ro.queue[i]]
		out = append(out, rr)
		delete(ro.pending, ro.queue[i])
		if ro.queue[i] == k {
			i++
			break
		}
	}
	ro.queue = ro.queue[i:]
	return out
}

// lastPendingCtx is the context of the newest request, carried by every heartbeat so that a lost
// heartbeat round is retried by the next one.
func (ro *readOnly) lastPendingCtx() []byte {
	if len(ro.queue) == 0 {
		return nil
	}
	return ro.pending[ro.queue[len(ro.queue)-1]].ctx
}
