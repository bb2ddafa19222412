package fsm

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/internal/node"
	"github.com/caucus/caucus/raft"
)

// Proposer proposes commands through this member's node and returns their results once
// applied here.
type Proposer struct {
	n   *node.Node
	now func() time.Time
}

// NewProposer returns a proposer for n. now stamps each command's time (lease and session
// expiry are measured with it on every member); nil means time.Now.
func NewProposer(n *node.Node, now func() time.Time) *Proposer {
	if now == nil {
		now = time.Now
	}
	return &Proposer{n: n, now: now}
}

// Node returns the node proposals go through.
func (p *Proposer) Node() *node.Node { return p.n }

// Propose stamps cmd with a proposal id, this member as proposer, the time (unless set) and the
// log format version it needs, replicates it and returns its result once applied on this
// member. The context's deadline bounds the wait; on expiry the outcome is unknown and the
// error wraps node.ErrUnavailable.
//
// A command that version 1 applies carries no version field, so it is byte for byte what
// releases before log versions wrote: a member of such a release applies it too.
func (p *Proposer) Propose(ctx context.Context, cmd *logpb.Command) (mvcc.Result, error) {
	cmd.Id = p.n.NextProposalID()
	cmd.Proposer = uint64(p.n.ID())
	if cmd.TimeUnixNano == 0 {
		cmd.TimeUnixNano = p.now().UnixNano()
	}
	if v := logpb.Needs(cmd); v > logpb.Version1 {
		cmd.Version = v
	}
	data, err := proto.Marshal(cmd)
	if err != nil {
		return mvcc.Result{}, fmt.Errorf("fsm: encode command: %w", err)
	}
	r, err := p.n.Propose(ctx, cmd.Id, data)
	if err != nil {
		return mvcc.Result{}, err
	}
	res, ok := r.(mvcc.Result)
	if !ok {
		return mvcc.Result{}, fmt.Errorf("fsm: proposal %d answered with %T", cmd.Id, r)
	}
	return res, nil
}

// ProposeConfChange proposes a membership change about member and waits until it is applied
// here. member names the member added or promoted (only its id for a removal).
func (p *Proposer) ProposeConfChange(ctx context.Context, cc raft.ConfChange, member *logpb.MemberContext) error {
	id := p.n.NextProposalID()
	c, err := proto.Marshal(&logpb.ConfChangeContext{ProposalId: id, Proposer: uint64(p.n.ID()), Member: member})
	if err != nil {
		return fmt.Errorf("fsm: encode conf change context: %w", err)
	}
	cc.Context = c
	return p.n.ProposeConfChange(ctx, id, cc)
}
