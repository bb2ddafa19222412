// Package raftbench compares caucus's Raft core (github.com/caucus/caucus/raft) with etcd's
// (go.etcd.io/raft/v3 RawNode + MemoryStorage) by driving both through the same in-memory
// three-member harness.
//
// # What is measured
//
// One goroutine owns all three nodes. Proposals go straight to the leader; a "proposer" is one
// outstanding proposal slot: when the leader applies a proposal, its slot is freed and the next
// proposal is submitted before the next round. Each round the harness handles at most one Ready
// per node, in node order, and delivers every message by calling Step on the destination
// immediately. So the cost per committed proposal covers: proposing, building Readys,
// replicating (MsgApp/MsgAppResp and commit propagation), the "persistence" an implementation
// needs (appending entries to an in-memory log, recording the HardState), applying committed
// entries, and the periodic log compaction a real server does (every Options.CompactEvery applied
// entries, keeping Options.KeepEntries behind for slow followers, etcd's server defaults).
//
// With Options.Wire set, every delivered message is also encoded and decoded with the
// implementation's real wire format (caucus internal/wire, etcd protobuf) and every persisted
// record is encoded into a reused WAL buffer, which adds the serialization cost a server pays.
//
// # What is not measured
//
// No disk (no fsync, which dominates a real server), no network, no goroutine hand-offs, no
// ticking (heartbeats are rare at these rates and elections cannot happen without ticks), no
// client request decoding. The proposal payload is one shared byte slice, so the harness itself
// allocates nothing per proposal in memory mode: allocations per operation are the library's
// (in Wire mode the decoders' copies are included, as a transport would pay them).
//
// # Symmetry
//
// Both implementations get the same configuration (pre-vote, check-quorum, ReadOnlySafe,
// 1 MiB per message, 256 in-flight appends, 32 MiB in-flight bytes, 64 MiB uncommitted bytes),
// the same bootstrap (three voters known at index 1, term 1), the same election (node 1
// campaigns) and the same round structure. The only asymmetry is inherent: etcd's core reads its
// log back from Storage, caucus's keeps the log in memory and only hands entries out to persist,
// so both append to an in-memory log but only etcd reads from it.
package raftbench

import (
	"errors"
	"fmt"
)

// Impl names a Raft implementation under test.
type Impl string

// The implementations the harness can drive.
const (
	Caucus Impl = "caucus"
	Etcd   Impl = "etcd"
)

// Impls lists the implementations in the order tables print them.
var Impls = []Impl{Caucus, Etcd}

// Options configures a cluster. Zero fields take the defaults of DefaultOptions.
type Options struct {
	// Payload is the size in bytes of each proposal.
	Payload int
	// Wire encodes and decodes every delivered message and encodes every persisted record.
	Wire bool
	// CompactEvery compacts a node's log each time it has applied this many entries.
	CompactEvery uint64
	// KeepEntries is how many applied entries a compaction leaves in the log.
	KeepEntries uint64
}

// DefaultOptions returns 256-byte proposals and etcd's server compaction defaults (snapshot every
// 10000 entries, keep 5000 for catching up followers).
func DefaultOptions() Options {
	return Options{Payload: 256, CompactEvery: 10000, KeepEntries: 5000}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.Payload <= 0 {
		o.Payload = d.Payload
	}
	if o.CompactEvery == 0 {
		o.CompactEvery = d.CompactEvery
	}
	if o.KeepEntries == 0 || o.KeepEntries >= o.CompactEvery {
		o.KeepEntries = d.KeepEntries
	}
	return o
}

// Shared raft settings, so that both sides are configured from one place.
const (
	numNodes         = 3
	electionTick     = 10
	heartbeatTick    = 1
	maxMsgBytes      = 1 << 20
	maxInflightMsgs  = 256
	maxInflightBytes = 32 << 20
	maxUncommitted   = 64 << 20
	// maxIdleRounds is how many rounds without any Ready the driver tolerates before declaring
	// the cluster stuck (a dropped proposal, a lost leader): a healthy cluster with outstanding
	// proposals always has work.
	maxIdleRounds = 3
	// maxElectionRounds bounds the rounds an election may take (it needs about six).
	maxElectionRounds = 1000
)

// cluster is what the driver needs from one implementation's three-node cluster.
type cluster interface {
	// campaign makes node i start an election.
	campaign(i int) error
	// leader returns the index of the node that believes it leads, or -1.
	leader() int
	// propose submits data to node i, which must be the leader.
	propose(i int, data []byte) error
	// round handles at most one Ready on each node in order, delivering the messages it produces
	// straight to their destinations. It reports how many application entries node counted
	// applied and whether any node had a Ready.
	round(counted int) (applied int, busy bool, err error)
	// appliedIndexes returns each node's last applied index.
	appliedIndexes() []uint64
}

// Cluster is a three-member cluster of one implementation with an elected leader.
type Cluster struct {
	impl    Impl
	c       cluster
	lead    int
	payload []byte
}

// New builds a cluster of impl, elects node 1 and commits one proposal so that the first
// measured proposal finds a settled leader.
func New(impl Impl, opts Options) (*Cluster, error) {
	opts = opts.withDefaults()
	var (
		c   cluster
		err error
	)
	switch impl {
	case Caucus:
		c, err = newCaucusCluster(opts)
	case Etcd:
		c, err = newEtcdCluster(opts)
	default:
		return nil, fmt.Errorf("raftbench: unknown implementation %q", impl)
	}
	if err != nil {
		return nil, err
	}
	// Handle the bootstrap Readys first (caucus persists and applies its membership entry 1, and
	// refuses to campaign before it is applied).
	for r := 0; ; r++ {
		_, busy, err := c.round(-1)
		if err != nil {
			return nil, fmt.Errorf("raftbench: %s: bootstrap: %w", impl, err)
		}
		if !busy {
			break
		}
		if r > maxElectionRounds {
			return nil, fmt.Errorf("raftbench: %s: bootstrap does not settle", impl)
		}
	}
	if err := c.campaign(0); err != nil {
		return nil, fmt.Errorf("raftbench: %s: campaign: %w", impl, err)
	}
	lead := -1
	for r := 0; r < maxElectionRounds && lead < 0; r++ {
		if _, _, err := c.round(-1); err != nil {
			return nil, fmt.Errorf("raftbench: %s: election: %w", impl, err)
		}
		lead = c.leader()
	}
	if lead < 0 {
		return nil, fmt.Errorf("raftbench: %s: no leader after %d rounds", impl, maxElectionRounds)
	}
	payload := make([]byte, opts.Payload)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	cl := &Cluster{impl: impl, c: c, lead: lead, payload: payload}
	if err := cl.Drive(1, 1); err != nil {
		return nil, err
	}
	return cl, cl.Settle()
}

// Impl returns the implementation the cluster runs.
func (cl *Cluster) Impl() Impl { return cl.impl }

// Drive commits n proposals with at most proposers of them outstanding at a time, and returns
// once the leader has applied all n. Followers may still have to learn the last commit index;
// Settle finishes that.
func (cl *Cluster) Drive(proposers, n int) error {
	if proposers <= 0 {
		return errors.New("raftbench: proposers must be > 0")
	}
	outstanding, proposed, done, idle := 0, 0, 0, 0
	for done < n {
		for outstanding < proposers && proposed < n {
			if err := cl.c.propose(cl.lead, cl.payload); err != nil {
				return fmt.Errorf("raftbench: %s: propose %d: %w", cl.impl, proposed, err)
			}
			outstanding++
			proposed++
		}
		applied, busy, err := cl.c.round(cl.lead)
		if err != nil {
			return fmt.Errorf("raftbench: %s: %w", cl.impl, err)
		}
		if applied > outstanding {
			return fmt.Errorf("raftbench: %s: applied %d proposals but only %d were outstanding", cl.impl, applied, outstanding)
		}
		done += applied
		outstanding -= applied
		if busy {
			idle = 0
		} else if idle++; idle > maxIdleRounds {
			return fmt.Errorf("raftbench: %s: stuck with %d proposals outstanding (%d/%d done, leader %d)",
				cl.impl, outstanding, done, n, cl.c.leader())
		}
	}
	return nil
}

// Settle runs rounds until no node has work left, then checks that every node applied the same
// index: a cheap end-to-end check that the harness really replicated everything.
func (cl *Cluster) Settle() error {
	for r := 0; ; r++ {
		if r > maxElectionRounds {
			return fmt.Errorf("raftbench: %s: does not settle", cl.impl)
		}
		applied, busy, err := cl.c.round(cl.lead)
		if err != nil {
			return fmt.Errorf("raftbench: %s: %w", cl.impl, err)
		}
		if applied != 0 {
			return fmt.Errorf("raftbench: %s: %d proposals applied with none outstanding", cl.impl, applied)
		}
		if !busy {
			break
		}
	}
	idx := cl.c.appliedIndexes()
	for _, v := range idx[1:] {
		if v != idx[0] {
			return fmt.Errorf("raftbench: %s: nodes applied different indexes %v", cl.impl, idx)
		}
	}
	return nil
}

// AppliedIndexes returns each node's last applied index.
func (cl *Cluster) AppliedIndexes() []uint64 { return cl.c.appliedIndexes() }
