package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Size limits of the encoding. A name, an address and metadata at their limits still fit, with
// the header and a ping, in a packet of minPacketBytes.
const (
	MaxNameBytes  = 128
	MaxAddrBytes  = 128
	MaxLabelBytes = 128
	MaxMetaBytes  = 512
	// DefaultMaxPacketBytes keeps a datagram under the 1500-byte Ethernet MTU with room for IP,
	// UDP and an encryption layer's nonce and tag (the I/O layer adds those).
	DefaultMaxPacketBytes = 1400
	// minPacketBytes is the smallest MaxPacketBytes Validate accepts: the largest single
	// message (an alive update at every limit) must fit with the header.
	minPacketBytes = 1024
)

// ErrInvalidConfig is wrapped by every error of Config.Validate.
var ErrInvalidConfig = errors.New("gossip: invalid config")

// Config configures one node's core. Start from DefaultLANConfig, DefaultWANConfig or
// DefaultLocalConfig; Validate states the rules between fields.
//
// Durations are converted to ticks at New: the driver promises to call Tick once per
// TickInterval, and each duration becomes ceil(d / TickInterval) ticks (at least one). The core
// never reads a clock.
type Config struct {
	Name  string // unique in the group
	Addr  string // host:port where this node receives packets and streams
	Label string // cluster label: messages carrying another label are dropped
	Meta  []byte // at most MaxMetaBytes
	Seed  uint64 // all of the core's randomness comes from it
	// Logger receives warnings (packet trouble, name conflicts, refutations). Nil discards.
	Logger *slog.Logger

	TickInterval time.Duration

	// ProbeInterval is the protocol period: one member is probed per period. ProbeTimeout is how
	// long a direct ping waits for its ack before the indirect round (ping-req through
	// IndirectChecks members, and the stream fallback if enabled). Both are multiplied by the
	// health score + 1 (Lifeguard local health awareness).
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	IndirectChecks int
	// StreamFallback also probes over a stream, in parallel with the indirect round.
	StreamFallback bool
	// PacketTroubleAfter is how many consecutive probes of one member must fail over packets but
	// succeed over a stream before it is reported in Status.PacketTrouble.
	PacketTroubleAfter int

	// Suspicion (Lifeguard dynamic suspicion): a suspicion times out after between min and max,
	// min = SuspicionMult * max(1, log10(N)) * ProbeInterval and max = SuspicionMaxMult * min,
	// starting at max and shrinking (log-scaled) with each independent confirmation, reaching min
	// at SuspicionConfirmations of them (capped by N-2).
	SuspicionMult          int
	SuspicionMaxMult       int
	SuspicionConfirmations int
	// AwarenessMax bounds the health score: it stays in [0, AwarenessMax-1].
	AwarenessMax int

	// Dissemination: every GossipInterval the node sends queued updates to GossipFanout random
	// members (live ones, and dead or left ones for GossipToDead after their change). Each update
	// is sent RetransmitMult * ceil(log10(N+1)) times. The queue holds at most MaxBroadcasts
	// updates.
	GossipInterval time.Duration
	GossipFanout   int
	GossipToDead   time.Duration
	RetransmitMult int
	MaxBroadcasts  int

	// PushPullInterval is the period of full state exchanges with a random member, scaled up in
	// large groups (see pushPullScale). Zero disables them (joins still push-pull).
	PushPullInterval time.Duration

	// ReclaimAfter is how long a dead member's name stays bound to its address: after it, an
	// alive claim of the name from another address is accepted. A left member's name can be
	// reclaimed at once. ReapAfter is when dead and left members are forgotten.
	ReclaimAfter time.Duration
	ReapAfter    time.Duration

	MaxPacketBytes int
	MaxStreamBytes int
}

// DefaultLANConfig suits a data centre: round trips under a millisecond, rare loss. A 1 s
// protocol period with a 400 ms direct timeout leaves 600 ms for the indirect round and its nacks;
// three indirect probes and three confirmations follow the Lifeguard paper's evaluation. With
// SuspicionMult 4 a crash in a group of 100 is declared after 8 s (all confirmations) to 48 s (no
// confirmation), plus about one period to be probed. A 10 ms tick gives timers a 1% resolution.
func DefaultLANConfig(name, addr string) Config {
	return Config{
		Name: name, Addr: addr,
		TickInterval:           10 * time.Millisecond,
		ProbeInterval:          time.Second,
		ProbeTimeout:           400 * time.Millisecond,
		IndirectChecks:         3,
		StreamFallback:         true,
		PacketTroubleAfter:     2,
		SuspicionMult:          4,
		SuspicionMaxMult:       6,
		SuspicionConfirmations: 3,
		AwarenessMax:           8,
		GossipInterval:         200 * time.Millisecond,
		GossipFanout:           3,
		GossipToDead:           30 * time.Second,
		RetransmitMult:         4,
		MaxBroadcasts:          4096,
		PushPullInterval:       30 * time.Second,
		ReclaimAfter:           30 * time.Second,
		ReapAfter:              5 * time.Minute,
		MaxPacketBytes:         DefaultMaxPacketBytes,
		MaxStreamBytes:         8 << 20,
	}
}

// DefaultWANConfig suits members across regions: round trips up to a few hundred milliseconds and
// real loss. The period is 5 s and the direct timeout 2 s (room for two round trips and the
// indirect round); suspicion is longer (SuspicionMult 6) because a false positive across a WAN
// costs more than slow detection; gossip is less frequent but reaches more members per round,
// and full state is exchanged every minute.
func DefaultWANConfig(name, addr string) Config {
	c := DefaultLANConfig(name, addr)
	c.TickInterval = 50 * time.Millisecond
	c.ProbeInterval = 5 * time.Second
	c.ProbeTimeout = 2 * time.Second
	c.SuspicionMult = 6
	c.GossipInterval = 500 * time.Millisecond
	c.GossipFanout = 4
	c.GossipToDead = time.Minute
	c.RetransmitMult = 5
	c.PushPullInterval = time.Minute
	c.ReclaimAfter = time.Minute
	c.ReapAfter = 10 * time.Minute
	return c
}

// DefaultLocalConfig suits members on one host (loopback, tests): no loss and sub-millisecond
// delivery, so everything is faster: a 500 ms period with a 150 ms timeout, suspicion of
// 3 periods at the minimum, gossip every 100 ms and full state every 15 s.
func DefaultLocalConfig(name, addr string) Config {
	c := DefaultLANConfig(name, addr)
	c.TickInterval = 5 * time.Millisecond
	c.ProbeInterval = 500 * time.Millisecond
	c.ProbeTimeout = 150 * time.Millisecond
	c.SuspicionMult = 3
	c.GossipInterval = 100 * time.Millisecond
	c.GossipToDead = 15 * time.Second
	c.RetransmitMult = 3
	c.PushPullInterval = 15 * time.Second
	c.ReclaimAfter = 10 * time.Second
	c.ReapAfter = time.Minute
	return c
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
}

// Validate reports the first rule the configuration breaks.
func (c *Config) Validate() error {
	switch {
	case c.Name == "" || len(c.Name) > MaxNameBytes:
		return invalid("Name %q must be 1 to %d bytes", c.Name, MaxNameBytes)
	case c.Addr == "" || len(c.Addr) > MaxAddrBytes:
		return invalid("Addr %q must be 1 to %d bytes", c.Addr, MaxAddrBytes)
	case len(c.Label) > MaxLabelBytes:
		return invalid("Label is %d bytes, more than %d", len(c.Label), MaxLabelBytes)
	case len(c.Meta) > MaxMetaBytes:
		return invalid("Meta is %d bytes, more than %d", len(c.Meta), MaxMetaBytes)
	case c.TickInterval <= 0:
		return invalid("TickInterval %v must be > 0", c.TickInterval)
	case c.ProbeTimeout < c.TickInterval:
		return invalid("ProbeTimeout %v must be at least one TickInterval (%v)", c.ProbeTimeout, c.TickInterval)
	case c.ProbeInterval < 2*c.ProbeTimeout:
		return invalid("ProbeInterval %v must be at least 2*ProbeTimeout (%v): the indirect round and its nacks need a timeout of their own",
			c.ProbeInterval, 2*c.ProbeTimeout)
	case c.IndirectChecks < 0:
		return invalid("IndirectChecks %d must be >= 0", c.IndirectChecks)
	case c.PacketTroubleAfter < 1:
		return invalid("PacketTroubleAfter %d must be >= 1", c.PacketTroubleAfter)
	case c.SuspicionMult < 1 || c.SuspicionMaxMult < 1:
		return invalid("SuspicionMult %d and SuspicionMaxMult %d must be >= 1", c.SuspicionMult, c.SuspicionMaxMult)
	case c.SuspicionConfirmations < 0:
		return invalid("SuspicionConfirmations %d must be >= 0", c.SuspicionConfirmations)
	case c.AwarenessMax < 1:
		return invalid("AwarenessMax %d must be >= 1 (1 disables local health awareness)", c.AwarenessMax)
	case c.GossipInterval < c.TickInterval:
		return invalid("GossipInterval %v must be at least one TickInterval (%v)", c.GossipInterval, c.TickInterval)
	case c.GossipFanout < 1:
		return invalid("GossipFanout %d must be >= 1", c.GossipFanout)
	case c.GossipToDead < 0:
		return invalid("GossipToDead %v must be >= 0", c.GossipToDead)
	case c.RetransmitMult < 1:
		return invalid("RetransmitMult %d must be >= 1", c.RetransmitMult)
	case c.MaxBroadcasts < 1:
		return invalid("MaxBroadcasts %d must be >= 1", c.MaxBroadcasts)
	case c.PushPullInterval < 0:
		return invalid("PushPullInterval %v must be >= 0 (0 disables periodic push-pull)", c.PushPullInterval)
	case c.ReclaimAfter < 0:
		return invalid("ReclaimAfter %v must be >= 0", c.ReclaimAfter)
	case c.ReapAfter < c.ReclaimAfter:
		return invalid("ReapAfter %v must be >= ReclaimAfter %v", c.ReapAfter, c.ReclaimAfter)
	case c.MaxPacketBytes < minPacketBytes:
		return invalid("MaxPacketBytes %d must be >= %d (the largest single update must fit)", c.MaxPacketBytes, minPacketBytes)
	case c.MaxStreamBytes < c.MaxPacketBytes:
		return invalid("MaxStreamBytes %d must be >= MaxPacketBytes %d", c.MaxStreamBytes, c.MaxPacketBytes)
	}
	return nil
}

// timing is the configuration's durations in ticks.
type timing struct {
	probeInterval, probeTimeout, gossipInterval, gossipToDead, pushPull, reclaim, reap uint64
}

func (c Config) timing() timing {
	t := func(d time.Duration) uint64 {
		if d <= 0 {
			return 0
		}
		return uint64((d + c.TickInterval - 1) / c.TickInterval)
	}
	return timing{
		probeInterval: t(c.ProbeInterval), probeTimeout: t(c.ProbeTimeout),
		gossipInterval: t(c.GossipInterval), gossipToDead: t(c.GossipToDead),
		pushPull: t(c.PushPullInterval), reclaim: t(c.ReclaimAfter), reap: t(c.ReapAfter),
	}
}
