package raft

import (
	"math"
	"slices"
)

// voteResult is the outcome of counting votes (or acknowledgements) in a configuration.
type voteResult uint8

const (
	votePending voteResult = iota // neither a quorum of grants nor of rejections yet
	voteWon                       // a quorum granted
	voteLost                      // enough rejected that a quorum can no longer grant
)

// majorityCommitted returns the largest index that a majority of voters have matched (paper
// §5.3: "a log entry is committed once the leader that created the entry has replicated it on a
// majority of the servers"). An empty voter set imposes no constraint, which is what makes the
// joint rule below reduce to the simple one outside a joint configuration.
func majorityCommitted(voters []NodeID, match func(NodeID) uint64) uint64 {
	if len(voters) == 0 {
		return math.MaxUint64
	}
	// Small clusters: a stack array avoids an allocation per commit check.
	var stack [7]uint64
	var idx []uint64
	if len(voters) <= len(stack) {
		idx = stack[:len(voters)]
	} else {
		idx = make([]uint64, len(voters))
	}
	for i, id := range voters {
		idx[i] = match(id)
	}
	slices.Sort(idx)
	// Ascending order: the element at n - (n/2+1) is matched by n/2+1 voters (itself and all
	// larger ones), and no larger element is.
	return idx[len(idx)-(len(idx)/2+1)]
}

// majorityVote tallies votes (true = granted) among voters; absent voters have not answered.
func majorityVote(voters []NodeID, votes map[NodeID]bool) voteResult {
	if len(voters) == 0 {
		return voteWon
	}
	granted, missing := 0, 0
	for _, id := range voters {
		v, ok := votes[id]
		switch {
		case !ok:
			missing++
		case v:
			granted++
		}
	}
	q := len(voters)/2 + 1
	switch {
	case granted >= q:
		return voteWon
	case granted+missing >= q:
		return votePending
	}
	return voteLost
}

// jointCommitted is the commit index of a (possibly joint) configuration: during joint consensus
// an entry must be matched by a majority of both the incoming and the outgoing voters
// (dissertation §4.3).
func jointCommitted(incoming, outgoing []NodeID, match func(NodeID) uint64) uint64 {
	return min(majorityCommitted(incoming, match), majorityCommitted(outgoing, match))
}

// jointVote tallies votes in a (possibly joint) configuration: an election needs a majority of
// both halves (dissertation §4.3).
func jointVote(incoming, outgoing []NodeID, votes map[NodeID]bool) voteResult {
	a, b := majorityVote(incoming, votes), majorityVote(outgoing, votes)
	switch {
	case a == voteWon && b == voteWon:
		return voteWon
	case a == voteLost || b == voteLost:
		return voteLost
	}
	return votePending
}
