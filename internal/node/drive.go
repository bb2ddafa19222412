package node

import (
	"errors"
	"fmt"

	"github.com/caucus/caucus/raft"
)

// Executor runs the loop's background work: writing a snapshot, and the leader's deferred log
// sync (leadersync.go). Each task reports to the loop through a channel the loop polls, so an
// executor that runs a task late, or never (a simulated crash), only delays that report.
// Production uses goroutines (Config.Executor nil); the simulator queues the tasks and runs
// them at points it chooses, so that crashes fall between a write, its sync and its report.
type Executor interface {
	// Go runs task in the background; it must not block the caller on the task.
	Go(task func())
	// Flush runs, or waits for, every task handed to Go so far. The loop calls it before it
	// blocks on a task's result.
	Flush()
}

// background runs task on the executor, or on a goroutine.
func (n *Node) background(task func()) {
	if n.exec == nil {
		go task()
		return
	}
	n.exec.Go(task)
}

// flushBackground makes sure every background task handed out will report.
func (n *Node) flushBackground() {
	if n.exec != nil {
		n.exec.Flush()
	}
}

// awaitSnapshot waits for the background snapshot writer's result.
func (n *Node) awaitSnapshot() snapResult {
	n.flushBackground()
	return <-n.snapDone
}

// startLeaderSync hands the leader's deferred sync to the syncer goroutine, or to the executor.
func (n *Node) startLeaderSync() {
	if n.exec == nil {
		n.lsync.req <- struct{}{}
		return
	}
	n.exec.Go(func() { n.lsync.res <- n.syncWritten() })
}

// syncWritten is the leader's background sync.
func (n *Node) syncWritten() error {
	if n.cfg.Bugs.ReportUnsyncedLeaderSync {
		return nil // planted bug: reported durable without any sync
	}
	return n.wal.SyncWritten()
}

// Driver runs a node's loop from the caller's goroutine, one input at a time, for the
// deterministic simulator: each method takes one input as run takes it from a channel, then does
// everything run does after it (drain, Readys, timers, status). The node must not be started,
// the caller must not use it from another goroutine, and it gives the node a Clock (whose timers
// it fires by moving time) and an Executor (whose tasks it runs) of its own, so that nothing
// happens behind its back. A crash is simulated by dropping the node and its driver without
// stopping them, and opening the member's storage again.
//
// A method's error is the fatal error the loop would stop on (Node.Err reports it too); the
// node must not be driven afterwards.
type Driver struct {
	n *Node
}

// NewDriver returns the driver of n, which must not have been started.
func NewDriver(n *Node) *Driver { return &Driver{n: n} }

// Node returns the driven node.
func (d *Driver) Node() *Node { return d.n }

// errDriverStopped is returned by a driver whose node met a fatal error before.
var errDriverStopped = errors.New("node: driven after a fatal error")

func (d *Driver) after(err error) error {
	n := d.n
	if err == nil {
		if n.Err() != nil {
			return fmt.Errorf("%w: %w", errDriverStopped, n.Err())
		}
		err = n.process()
	}
	if err != nil {
		n.fail(err)
	}
	return err
}

// Tick is one tick of the loop's ticker.
func (d *Driver) Tick() error {
	d.n.tick()
	return d.after(nil)
}

// Step takes a message from a peer.
func (d *Driver) Step(m raft.Message) error {
	d.n.stepPeer(m)
	return d.after(nil)
}

// ReportUnreachable reports that a message to id could not be sent.
func (d *Driver) ReportUnreachable(id raft.NodeID) error {
	d.n.rn.ReportUnreachable(id)
	return d.after(nil)
}

// Campaign makes the member start an election, as an operator's forced campaign does.
func (d *Driver) Campaign() error {
	if err := d.n.rn.Campaign(); err != nil {
		d.n.log.Debug("campaign refused", "err", err)
	}
	return d.after(nil)
}

// TransferLeadership asks the leader to hand leadership to to.
func (d *Driver) TransferLeadership(to raft.NodeID) error {
	if err := d.n.rn.TransferLeadership(to); err != nil {
		d.n.log.Debug("leadership transfer refused", "err", err)
	}
	return d.after(nil)
}

// Proposal is a proposal submitted through a Driver.
type Proposal struct {
	n *Node
	p *proposal
}

// Propose submits data, whose application decodes id from it (see StateMachine.Apply), as
// Node.Propose does without waiting: the answer arrives through the returned Proposal.
func (d *Driver) Propose(id uint64, data []byte) (*Proposal, error) {
	return d.submit(&proposal{id: id, data: data, done: make(chan proposalResult, 1)})
}

// ProposeConfChange submits a membership change, whose Context the application decodes id
// from (see StateMachine.Apply), as Node.ProposeConfChange does without waiting.
func (d *Driver) ProposeConfChange(id uint64, cc raft.ConfChange) (*Proposal, error) {
	return d.submit(&proposal{id: id, cc: &cc, done: make(chan proposalResult, 1)})
}

func (d *Driver) submit(p *proposal) (*Proposal, error) {
	n := d.n
	n.mu.Lock()
	n.waiters[p.id] = p
	n.mu.Unlock()
	n.handleProposal(p)
	return &Proposal{n: n, p: p}, d.after(nil)
}

// Result returns the proposal's answer once the node gave it: the result its state machine
// returned, or why it failed. ok is false while it is unanswered.
func (p *Proposal) Result() (res any, err error, ok bool) {
	select {
	case r := <-p.p.done:
		p.n.mu.Lock()
		delete(p.n.waiters, p.p.id)
		p.n.mu.Unlock()
		return r.res, r.err, true
	default:
		return nil, nil, false
	}
}

// Read is a linearizable read submitted through a Driver.
type Read struct{ rw *readWaiter }

// Read submits a linearizable read, as Node.LinearizableRead does without waiting.
func (d *Driver) Read() (*Read, error) {
	rw := &readWaiter{done: make(chan error, 1)}
	d.n.reads.add(rw)
	return &Read{rw: rw}, d.after(nil)
}

// Result returns nil once the member has applied, and committed to its state machine, every
// write acknowledged before the read (a read of the state machine is then linearizable), with
// the state machine's visible applied index at that moment, or why the read failed. ok is
// false while it is unanswered.
func (r *Read) Result() (served uint64, err error, ok bool) {
	select {
	case err := <-r.rw.done:
		return r.rw.served, err, true
	default:
		return 0, nil, false
	}
}

// Poll takes one input that became ready by itself, a fired timer or a background task's
// report, in a fixed order (run selects among them at random; a simulation must not), and
// handles it. It reports whether there was one.
func (d *Driver) Poll() (bool, error) {
	n := d.n
	var err error
	select {
	case <-n.commitTimer.C():
		err = n.commitApplied()
	default:
		select {
		case <-n.bcastTimer.C():
			n.broadcastTimerFired()
		default:
			select {
			case <-n.lsync.timer.C():
				n.lsync.armed = false
			default:
				select {
				case r := <-n.lsync.res:
					err = n.finishLeaderSync(r)
				default:
					select {
					case r := <-n.snapDone:
						err = n.snapshotWritten(r)
					default:
						return false, nil
					}
				}
			}
		}
	}
	return true, d.after(err)
}

// Status returns the Raft core's status now (Node.Status publishes it on ticks and role
// changes only).
func (d *Driver) Status() raft.Status { return d.n.rn.Status() }

// ProposalLost reports whether err, a proposal's failure, says its write was certainly not
// applied and never will be (see lostProposals), as opposed to an outcome left unknown.
func ProposalLost(err error) bool { return errors.Is(err, errProposalLost) }
