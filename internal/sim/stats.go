package sim

import (
	"fmt"
	"strings"
)

// Fault kinds counted in Stats.Faults.
const (
	FaultCrash = iota
	FaultRestart
	FaultPartitionSplit
	FaultPartitionOneWay
	FaultIsolateLeader
	FaultLeaderOneWay
	FaultBridge
	FaultHeal
	FaultConfChange
	FaultTransfer
	FaultCampaign
	FaultJointEnter // a held joint reconfiguration proposed (see joint.go)
	FaultJointCut   // one half of a held joint configuration cut off as it was applied
	NumFaults
)

var faultNames = [NumFaults]string{
	"crash", "restart", "partition-split", "partition-one-way", "isolate-leader", "leader-one-way",
	"bridge", "heal", "conf-change", "transfer-leader", "forced-campaign",
	"joint-enter", "joint-cut",
}

// FaultName names a fault kind.
func FaultName(k int) string { return faultNames[k] }

// Stats counts what runs did. Stats of several runs add up with Add.
type Stats struct {
	Seeds      int64
	Ticks      int64
	Violations int64
	// Faults counts injected faults by kind; crashes between Ready steps are under "crash" too
	// (ReadyCrashes counts them separately).
	Faults       [NumFaults]int64
	ReadyCrashes int64
	// SaveCrashes counts the ReadyCrashes that struck inside a Save (see SaveCrasher).
	SaveCrashes int64
	// SnapshotCrashes counts power losses inside a local SaveSnapshot (see SnapshotCrasher),
	// counted under "crash" too.
	SnapshotCrashes int64
	// Under raft.Config.DeferLeaderSync: LeaderWrites counts a leader's Saves left unsynced,
	// LeaderSyncs the syncs reported to its core (raft.Node.LeaderSynced), UnsyncedCrashes the
	// crashes of a node holding unsynced writes, and SyncCrashes those that struck between a
	// sync and its report.
	LeaderWrites, LeaderSyncs, UnsyncedCrashes, SyncCrashes int64

	Sent               int64
	Delivered          int64
	Dropped            int64
	Duplicated         int64
	StepErrors         int64
	Proposed           int64
	Committed          int64 // writes acknowledged to their proposer
	ReadsChecked       int64
	Elections          int64
	Compactions        int64
	SnapshotsInstalled int64
	// LostProposals counts proposals a node failed as certainly not applied (node driver).
	LostProposals int64

	// Under the node driver with internal/fsm (SMFSM): EventsPublished counts the events of the
	// runs' streams, EventsChecked the events read back from members' stores and compared,
	// EventsAcked the events of acknowledged writes, RegisterReads the registers read from a
	// store after a linearizable read, and FSMRebuilds the stores discarded by the reboot guard
	// after a power loss and rebuilt from the snapshot and the log.
	EventsPublished, EventsChecked, EventsAcked, RegisterReads, FSMRebuilds int64
	// The durable consumers under SMFSM: fetches proposed, deliveries answered (redeliveries
	// among them), acks answered with success and refused (stale attempt, no longer pending),
	// events dead-lettered, and consumer states read back from members' stores and checked.
	ConsumerFetches, ConsumerDeliveries, ConsumerRedeliveries, ConsumerAcks, ConsumerAcksRefused int64
	ConsumerDeadLetters, ConsumerStates                                                          int64
}

// Add accumulates o into s.
func (s *Stats) Add(o Stats) {
	s.Seeds += o.Seeds
	s.Ticks += o.Ticks
	s.Violations += o.Violations
	for k := range s.Faults {
		s.Faults[k] += o.Faults[k]
	}
	s.ReadyCrashes += o.ReadyCrashes
	s.SaveCrashes += o.SaveCrashes
	s.SnapshotCrashes += o.SnapshotCrashes
	s.LeaderWrites += o.LeaderWrites
	s.LeaderSyncs += o.LeaderSyncs
	s.UnsyncedCrashes += o.UnsyncedCrashes
	s.SyncCrashes += o.SyncCrashes
	s.Sent += o.Sent
	s.Delivered += o.Delivered
	s.Dropped += o.Dropped
	s.Duplicated += o.Duplicated
	s.StepErrors += o.StepErrors
	s.Proposed += o.Proposed
	s.Committed += o.Committed
	s.ReadsChecked += o.ReadsChecked
	s.Elections += o.Elections
	s.Compactions += o.Compactions
	s.SnapshotsInstalled += o.SnapshotsInstalled
	s.LostProposals += o.LostProposals
	s.EventsPublished += o.EventsPublished
	s.EventsChecked += o.EventsChecked
	s.EventsAcked += o.EventsAcked
	s.RegisterReads += o.RegisterReads
	s.FSMRebuilds += o.FSMRebuilds
	s.ConsumerFetches += o.ConsumerFetches
	s.ConsumerDeliveries += o.ConsumerDeliveries
	s.ConsumerRedeliveries += o.ConsumerRedeliveries
	s.ConsumerAcks += o.ConsumerAcks
	s.ConsumerAcksRefused += o.ConsumerAcksRefused
	s.ConsumerDeadLetters += o.ConsumerDeadLetters
	s.ConsumerStates += o.ConsumerStates
}

// String renders a multi-line summary.
func (s Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seeds run:          %d\n", s.Seeds)
	fmt.Fprintf(&b, "simulated ticks:    %d (%.1f s at 10 ms/tick)\n", s.Ticks, float64(s.Ticks)/100)
	b.WriteString("faults injected:   ")
	for k, n := range s.Faults {
		fmt.Fprintf(&b, " %s=%d", faultNames[k], n)
	}
	fmt.Fprintf(&b, " ready-step-crash=%d (inside-save=%d) inside-snapshot-save=%d\n", s.ReadyCrashes, s.SaveCrashes, s.SnapshotCrashes)
	fmt.Fprintf(&b, "deferred syncs:     leader-writes=%d syncs-reported=%d crashes-with-unsynced-writes=%d (between-sync-and-report=%d)\n",
		s.LeaderWrites, s.LeaderSyncs, s.UnsyncedCrashes, s.SyncCrashes)
	fmt.Fprintf(&b, "messages:           sent=%d delivered=%d dropped=%d duplicated=%d step-errors=%d\n",
		s.Sent, s.Delivered, s.Dropped, s.Duplicated, s.StepErrors)
	fmt.Fprintf(&b, "proposals:          accepted=%d committed+acknowledged=%d failed-as-lost=%d\n", s.Proposed, s.Committed, s.LostProposals)
	fmt.Fprintf(&b, "reads checked:      %d\n", s.ReadsChecked)
	fmt.Fprintf(&b, "leaders elected:    %d   compactions: %d   snapshots installed: %d\n", s.Elections, s.Compactions, s.SnapshotsInstalled)
	if s.EventsChecked > 0 || s.EventsAcked > 0 {
		fmt.Fprintf(&b, "events (fsm):       in-streams=%d read-back=%d of-acked-writes=%d   register reads: %d   stores rebuilt after power loss: %d\n",
			s.EventsPublished, s.EventsChecked, s.EventsAcked, s.RegisterReads, s.FSMRebuilds)
	}
	if s.ConsumerFetches > 0 {
		fmt.Fprintf(&b, "consumers (fsm):    fetches=%d deliveries=%d (redeliveries=%d) acks=%d acks-refused=%d dead-lettered=%d states-checked=%d\n",
			s.ConsumerFetches, s.ConsumerDeliveries, s.ConsumerRedeliveries, s.ConsumerAcks, s.ConsumerAcksRefused, s.ConsumerDeadLetters, s.ConsumerStates)
	}
	fmt.Fprintf(&b, "violations:         %d\n", s.Violations)
	return b.String()
}
