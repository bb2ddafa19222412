package gossip

import (
	"fmt"
	"slices"
)

// State is what a node believes about a member.
//
// ONLY APPEND TO THIS LIST: the numbers are part of the push-pull encoding.
type State uint8

const (
	StateAlive   State = 0
	StateSuspect State = 1
	StateDead    State = 2
	StateLeft    State = 3
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// live reports whether a member in this state is still part of the group (probed, counted in N).
func (s State) live() bool { return s == StateAlive || s == StateSuspect }

// Member is one node's view of a member of the group.
type Member struct {
	Name        string
	Addr        string // host:port, for packets and streams alike
	Incarnation uint64
	State       State
	Meta        []byte // at most MaxMetaBytes, opaque to the core
	// Since is the tick (of the observing node's clock) at which the member entered State.
	Since uint64
}

func (m Member) clone() Member {
	m.Meta = slices.Clone(m.Meta)
	return m
}

// EventType is the kind of a membership change.
type EventType uint8

const (
	// EventJoin: a member became alive that was unknown, dead or left (including a name
	// reclaimed by a new address).
	EventJoin EventType = iota + 1
	// EventUpdate: an alive member's metadata or address changed.
	EventUpdate
	// EventSuspect: a member became suspect.
	EventSuspect
	// EventAlive: a suspect member refuted the suspicion (alive again).
	EventAlive
	// EventDead: a member was declared dead (its suspicion timed out, or news of its death).
	EventDead
	// EventLeft: a member left gracefully.
	EventLeft
	// EventReap: a dead or left member was forgotten after Config.ReapAfter.
	EventReap
)

func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventSuspect:
		return "suspect"
	case EventAlive:
		return "alive"
	case EventDead:
		return "dead"
	case EventLeft:
		return "left"
	case EventReap:
		return "reap"
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// Event is a membership change seen by this node. Member is a copy of the member's state after
// the change.
type Event struct {
	Type   EventType
	Member Member
}

func (e Event) String() string {
	return fmt.Sprintf("%s %s@%s inc=%d", e.Type, e.Member.Name, e.Member.Addr, e.Member.Incarnation)
}

// Packet is a message on the network. Going out (Ready.Packets) Addr is the destination; coming in
// (Step) it is the sender's transport address, used only in errors. Data is an encoded message
// that carries the cluster label.
//
// Stream false means a datagram (UDP): at most Config.MaxPacketBytes, may be lost or reordered,
// and the driver need not report failures. Stream true means a reliable exchange (TCP): push-pull
// state and the fallback probe, at most Config.MaxStreamBytes. A stream answer is addressed to
// the requester's advertised address; a driver may carry it back on the connection the request
// came in on (Reply says it is one), or open a new one.
type Packet struct {
	Addr   string
	Stream bool
	Reply  bool
	Data   []byte
}

// Ready is what the node asks the caller to do: send Packets, deliver Events to the application.
// Ready hands them over and forgets them; there is no Advance.
type Ready struct {
	Packets []Packet
	Events  []Event
}

// Counters are monotonic counts of things the core dropped or refused, for metrics.
type Counters struct {
	LabelMismatch        uint64 // messages with another cluster label, dropped
	DecodeErrors         uint64 // malformed or oversized messages, dropped
	BroadcastsDropped    uint64 // updates pushed out of a full broadcast queue before their retransmits
	BroadcastsSuperseded uint64 // queued updates replaced by newer news about the same member
	NameConflicts        uint64 // alive claims of a live member's name from another address, refused
	Misaddressed         uint64 // pings meant for another name (an address now used by someone else)
	Refutations          uint64 // times this node refuted a suspicion or death of itself
	ProbeFailures        uint64 // probes that ended without an ack (before any suspicion)
	StreamRescues        uint64 // probes that failed over packets but were answered over a stream
	OversizedState       uint64 // push-pull states that did not fit MaxStreamBytes (truncated)
}

// PacketTrouble reports a member that this node cannot reach with packets although streams work:
// a firewall that blocks UDP (on either side), not a failed member. The core does not suspect such
// a member; it reports it here (and logs it once) so that an operator can fix the network.
type PacketTrouble struct {
	Name     string
	Addr     string
	Since    uint64 // tick of the first probe in the current run of failures
	Failures int    // consecutive probes that failed over packets and succeeded over a stream
}

func (p PacketTrouble) String() string {
	return fmt.Sprintf("packets to %s (%s) fail but streams work: check that UDP port %s is open on both sides",
		p.Name, p.Addr, portOf(p.Addr))
}

// Status is a snapshot of the node's state.
type Status struct {
	Name        string
	Addr        string
	Incarnation uint64
	Tick        uint64
	// Health is Lifeguard's local health score, 0 (healthy) to AwarenessMax-1: probe intervals and
	// timeouts are multiplied by Health+1.
	Health int
	// Live is the number of alive and suspect members, this node included (the N of the formulas).
	Live int
	// Left is true once Leave was called; LeaveSpread once the left announcement has been sent as
	// often as the retransmit limit asks (or pushed out of the queue).
	Left, LeaveSpread bool
	// QueuedBroadcasts is the length of the broadcast queue.
	QueuedBroadcasts int
	// PacketTrouble lists members reachable over streams only (sorted by name).
	PacketTrouble []PacketTrouble
	Counters      Counters
}

func portOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[i+1:]
		}
	}
	return addr
}
