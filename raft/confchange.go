package raft

import (
	"errors"
	"fmt"
	"slices"
)

// membership is a cluster configuration in the form the core computes with: sorted, duplicate-free
// ID slices. Sorted slices (rather than maps) keep every iteration, and so every message the core
// emits, in a deterministic order.
type membership struct {
	voters       []NodeID // the incoming (or only) voter set
	outgoing     []NodeID // the outgoing voters; non-empty only in a joint configuration
	learners     []NodeID
	learnersNext []NodeID // outgoing voters that become learners when the joint config is left
	autoLeave    bool
}

func (c membership) joint() bool { return len(c.outgoing) > 0 }

// isVoter reports whether id votes in either half of the configuration.
func (c membership) isVoter(id NodeID) bool {
	return sortedHas(c.voters, id) || sortedHas(c.outgoing, id)
}

// voterIDs returns the union of both voter halves, sorted.
func (c membership) voterIDs() []NodeID { return sortedUnion(c.voters, c.outgoing) }

// ids returns every member (voter or learner), sorted.
func (c membership) ids() []NodeID {
	return sortedUnion(sortedUnion(c.voters, c.outgoing), sortedUnion(c.learners, c.learnersNext))
}

// isSingleton reports whether id alone forms every quorum.
func (c membership) isSingleton(id NodeID) bool {
	return len(c.voters) == 1 && c.voters[0] == id && len(c.outgoing) == 0
}

func (c membership) clone() membership {
	return membership{
		voters:       slices.Clone(c.voters),
		outgoing:     slices.Clone(c.outgoing),
		learners:     slices.Clone(c.learners),
		learnersNext: slices.Clone(c.learnersNext),
		autoLeave:    c.autoLeave,
	}
}

func (c membership) confState() ConfState {
	return ConfState{
		Voters:         slices.Clone(c.voters),
		VotersOutgoing: slices.Clone(c.outgoing),
		Learners:       slices.Clone(c.learners),
		LearnersNext:   slices.Clone(c.learnersNext),
		AutoLeave:      c.autoLeave,
	}
}

// membershipFromConfState validates cs (it comes from disk or from a leader's snapshot) and
// converts it.
func membershipFromConfState(cs ConfState) (membership, error) {
	c := membership{
		voters:       sortedSet(cs.Voters),
		outgoing:     sortedSet(cs.VotersOutgoing),
		learners:     sortedSet(cs.Learners),
		learnersNext: sortedSet(cs.LearnersNext),
		autoLeave:    cs.AutoLeave,
	}
	for _, set := range [][]NodeID{c.voters, c.outgoing, c.learners, c.learnersNext} {
		if sortedHas(set, None) {
			return membership{}, fmt.Errorf("raft: conf state %+v: node ID 0 is reserved for None", cs)
		}
	}
	for _, id := range c.learners {
		if c.isVoter(id) {
			return membership{}, fmt.Errorf("raft: conf state %+v: node %d is both learner and voter", cs, id)
		}
	}
	for _, id := range c.learnersNext {
		if !sortedHas(c.outgoing, id) || sortedHas(c.voters, id) {
			return membership{}, fmt.Errorf("raft: conf state %+v: next learner %d must be an outgoing voter only", cs, id)
		}
	}
	if !c.joint() && (c.autoLeave || len(c.learnersNext) > 0) {
		return membership{}, fmt.Errorf("raft: conf state %+v: AutoLeave/LearnersNext outside a joint configuration", cs)
	}
	return c, nil
}

// isJointChange reports whether cc goes through a joint configuration (dissertation §4.3):
// several changes at once, or one explicitly marked Joint. An empty change leaves the joint
// configuration instead.
func isJointChange(cc ConfChange) bool {
	return len(cc.Changes) > 1 || (cc.Joint && len(cc.Changes) > 0)
}

// applyConfChange returns the configuration that results from applying cc to c, or why cc is not
// applicable. It does not modify c. The leader runs it on proposal (to refuse a bad change before
// it enters the log) and every member runs it again on apply; because only one change may be
// pending, both runs see the same c and agree.
func applyConfChange(c membership, cc ConfChange) (membership, error) {
	if err := checkConfChangeLimits(cc); err != nil {
		return c, err
	}
	n := c.clone()
	if len(cc.Changes) == 0 {
		// Leave the joint configuration: C_new alone decides from now on (dissertation §4.3).
		if !c.joint() {
			return c, errors.New("raft: conf change: cannot leave a joint configuration: not in one")
		}
		n.outgoing = nil
		n.learners = sortedUnion(n.learners, n.learnersNext)
		n.learnersNext = nil
		n.autoLeave = false
		return n, nil
	}
	if c.joint() {
		// Stacking joint configurations would need a quorum of three sets; the dissertation's
		// protocol (and ours) finishes one transition before starting the next.
		return c, errors.New("raft: conf change: already in a joint configuration; leave it first")
	}
	// From an empty configuration (bootstrap, or a node that has not applied the bootstrap entry
	// yet) there is no old majority to overlap with, so even several changes apply directly.
	joint := isJointChange(cc) && len(c.voters) > 0
	if joint {
		n.outgoing = slices.Clone(c.voters)
		n.autoLeave = cc.AutoLeave
	}
	for _, ch := range cc.Changes {
		if ch.NodeID == None {
			return c, errors.New("raft: conf change: node ID 0 is reserved for None")
		}
		id := ch.NodeID
		switch ch.Type {
		case ConfChangeAddVoter:
			n.voters = sortedInsert(n.voters, id)
			n.learners = sortedRemove(n.learners, id)
			n.learnersNext = sortedRemove(n.learnersNext, id)
		case ConfChangeAddLearner:
			n.voters = sortedRemove(n.voters, id)
			if sortedHas(n.outgoing, id) {
				// Still an outgoing voter until the joint configuration is left.
				n.learnersNext = sortedInsert(n.learnersNext, id)
			} else {
				n.learners = sortedInsert(n.learners, id)
			}
		case ConfChangeRemoveNode:
			n.voters = sortedRemove(n.voters, id)
			n.learners = sortedRemove(n.learners, id)
			n.learnersNext = sortedRemove(n.learnersNext, id)
		default:
			return c, fmt.Errorf("raft: conf change: unknown change type %d for node %d", ch.Type, id)
		}
	}
	if len(n.voters) == 0 {
		return c, errors.New("raft: conf change: would remove every voter")
	}
	if !joint && len(c.voters) > 0 && symmetricDiff(c.voters, n.voters) > 1 {
		// Unreachable with one change, kept as the statement of why a single change is safe to
		// apply directly: old and new majorities overlap only if at most one voter differs.
		return c, errors.New("raft: conf change: a direct change may alter at most one voter")
	}
	return n, nil
}

// checkConfChangeLimits enforces MaxConfChanges and MaxConfChangeContextBytes, the bounds
// DecodeConfChange also enforces, so that every proposed change can be decoded.
func checkConfChangeLimits(cc ConfChange) error {
	if len(cc.Changes) > MaxConfChanges {
		return fmt.Errorf("raft: conf change: %d changes exceed MaxConfChanges %d", len(cc.Changes), MaxConfChanges)
	}
	if len(cc.Context) > MaxConfChangeContextBytes {
		return fmt.Errorf("raft: conf change: context of %d bytes exceeds MaxConfChangeContextBytes %d", len(cc.Context), MaxConfChangeContextBytes)
	}
	return nil
}

func symmetricDiff(a, b []NodeID) int {
	d := 0
	for _, id := range a {
		if !sortedHas(b, id) {
			d++
		}
	}
	for _, id := range b {
		if !sortedHas(a, id) {
			d++
		}
	}
	return d
}

func sortedSet(ids []NodeID) []NodeID {
	if len(ids) == 0 {
		return nil
	}
	s := slices.Clone(ids)
	slices.Sort(s)
	return slices.Compact(s)
}

func sortedHas(s []NodeID, id NodeID) bool {
	_, ok := slices.BinarySearch(s, id)
	return ok
}

func sortedInsert(s []NodeID, id NodeID) []NodeID {
	i, ok := slices.BinarySearch(s, id)
	if ok {
		return s
	}
	return slices.Insert(s, i, id)
}

func sortedRemove(s []NodeID, id NodeID) []NodeID {
	i, ok := slices.BinarySearch(s, id)
	if !ok {
		return s
	}
	s = slices.Delete(s, i, i+1)
	if len(s) == 0 {
		return nil
	}
	return s
}

func sortedUnion(a, b []NodeID) []NodeID {
	if len(b) == 0 {
		return slices.Clone(a)
	}
	out := make([]NodeID, 0, len(a)+len(b))
	out = append(out, a...)
	out = append(out, b...)
	return sortedSet(out)
}
