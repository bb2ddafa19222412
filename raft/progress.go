package raft

import "fmt"

// Progress is the leader's view of one follower (paper Figure 2, nextIndex and matchIndex),
// extended with a replication mode so that the leader neither floods a follower whose position it
// does not know nor waits a round trip per append to one that is in sync:
//
//   - probe: the follower's match is unknown (new leader, a rejected append, an unreachable
//     report). The leader sends one append at a time, starting at Next, and waits for the answer
//     (or a heartbeat response) before sending another. A rejection moves Next back using the
//     follower's conflict hint.
//   - replicate: the follower accepted an append, so the leader knows where its log ends. Appends
//     are pipelined optimistically (Next advances on send) within the inflight window
//     (MaxInflightMsgs messages, MaxInflightBytes bytes); acknowledgements free the window. A
//     rejection falls back to probe.
//   - snapshot: Next is before the leader's first index, so the follower needs the snapshot. The
//     leader sends it in chunks of MaxSnapshotChunkBytes, one chunk in flight at a time, and no
//     appends. When the follower reports its log at or beyond the snapshot the leader probes again.
type progress struct {
	match, next uint64
	state       ProgressState
	// probeSent pauses a probing follower after one append until it answers.
	probeSent bool
	// recentActive: the follower was heard from since the last check-quorum round.
	recentActive bool
	learner      bool
	inflights    *inflights
	// sentCommit is the highest commit index sent to the follower (in an append or heartbeat),
	// so that a deferred commit broadcast (Config.DeferCommitBroadcast) goes only to followers
	// that have not heard of it.
	sentCommit uint64

	// Snapshot transfer (state == ProgressSnapshot).
	pendingSnapshot uint64    // index of the snapshot being sent
	snap            *Snapshot // the snapshot being sent, kept even if the leader compacts again
	snapOffset      uint64    // bytes the follower has acknowledged; the chunk in flight starts here
	snapChunkLen    uint64    // length of the chunk in flight
	snapStalls      int       // heartbeat intervals without an acknowledgement
}

func newProgress(next uint64, maxInflight int, maxInflightBytes uint64, learner bool) *progress {
	return &progress{next: next, learner: learner, inflights: newInflights(maxInflight, maxInflightBytes)}
}

func (p *progress) resetState(s ProgressState) {
	p.probeSent = false
	p.state = s
	p.inflights.reset()
	p.pendingSnapshot = 0
	p.snap = nil
	p.snapOffset, p.snapChunkLen, p.snapStalls = 0, 0, 0
}

func (p *progress) becomeProbe() {
	// Coming back from a snapshot, the follower will have at least the snapshot once it installs
	// it, so probe just after it rather than from a match that predates it.
	if p.state == ProgressSnapshot {
		ps := p.pendingSnapshot
		p.resetState(ProgressProbe)
		p.next = max(p.match+1, ps+1)
		return
	}
	p.resetState(ProgressProbe)
	p.next = p.match + 1
}

func (p *progress) becomeReplicate() {
	p.resetState(ProgressReplicate)
	p.next = p.match + 1
}

func (p *progress) becomeSnapshot(s *Snapshot) {
	p.resetState(ProgressSnapshot)
	p.pendingSnapshot = s.Meta.Index
	p.snap = s
}

// maybeUpdate records that the follower's log matches the leader's up to n. It returns false for
// a stale acknowledgement.
func (p *progress) maybeUpdate(n uint64) bool {
	updated := false
	if p.match < n {
		p.match = n
		updated = true
		p.probeSent = false
	}
	p.next = max(p.next, n+1)
	return updated
}

// maybeDecrTo handles a rejected append of index rejected. matchHint is the index the leader
// computed from the follower's conflict hint: entries after it cannot match. It returns false if
// the rejection is stale (answers an append the leader has already given up on).
func (p *progress) maybeDecrTo(rejected, matchHint uint64) bool {
	if p.state == ProgressReplicate {
		// Appends at or before match were accepted; a rejection there is a duplicate.
		if rejected <= p.match {
			return false
		}
		p.next = p.match + 1
		return true
	}
	// Probe: only the answer to the one outstanding probe counts.
	if p.next-1 != rejected {
		return false
	}
	p.next = max(min(rejected, matchHint+1), p.match+1)
	p.probeSent = false
	return true
}

// isPaused reports whether the leader must not send appends now.
func (p *progress) isPaused() bool {
	switch p.state {
	case ProgressProbe:
		return p.probeSent
	case ProgressReplicate:
		return p.inflights.full()
	}
	return true
}

// sentEntries records an append of n entries totalling bytes whose last index is last.
func (p *progress) sentEntries(last uint64, n int, bytes uint64) {
	switch p.state {
	case ProgressReplicate:
		if n > 0 {
			p.next = last + 1
			p.inflights.add(last, bytes)
		}
	case ProgressProbe:
		p.probeSent = true
	default:
		panic(fmt.Sprintf("raft: sending entries in progress state %v", p.state))
	}
}

// inflights is a ring buffer of the appends in flight to one follower, bounded by count and
// bytes. Each is identified by its last index; an acknowledgement of index i frees every append
// whose last index is <= i.
type inflights struct {
	start, count int
	bytes        uint64
	maxCount     int
	maxBytes     uint64 // 0: no byte bound
	buf          []inflight
}

type inflight struct {
	index, bytes uint64
}

func newInflights(maxCount int, maxBytes uint64) *inflights {
	return &inflights{maxCount: maxCount, maxBytes: maxBytes}
}

func (in *inflights) full() bool {
	return in.count >= in.maxCount || (in.maxBytes != 0 && in.bytes >= in.maxBytes)
}

func (in *inflights) add(index, bytes uint64) {
	if in.full() {
		panic("raft: inflights: add to a full window")
	}
	if in.buf == nil || in.count == len(in.buf) {
		// Grow lazily: most followers never need the whole window.
		n := min(max(2*len(in.buf), 4), in.maxCount)
		nb := make([]inflight, n)
		for i := 0; i < in.count; i++ {
			nb[i] = in.buf[(in.start+i)%len(in.buf)]
		}
		in.buf, in.start = nb, 0
	}
	in.buf[(in.start+in.count)%len(in.buf)] = inflight{index: index, bytes: bytes}
	in.count++
	in.bytes += bytes
}

// freeLE frees every append whose last index is <= index.
func (in *inflights) freeLE(index uint64) {
	for in.count > 0 {
		f := in.buf[in.start]
		if f.index > index {
			break
		}
		in.bytes -= f.bytes
		in.start = (in.start + 1) % len(in.buf)
		in.count--
	}
	if in.count == 0 {
		in.start = 0
	}
}

// freeFirst frees the oldest append.
func (in *inflights) freeFirst() {
	if in.count > 0 {
		in.freeLE(in.buf[in.start].index)
	}
}

func (in *inflights) reset() {
	in.start, in.count, in.bytes = 0, 0, 0
}
