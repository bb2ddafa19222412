// Package gossip is caucus's membership and failure detection core: SWIM (Das, Gupta, Motivala
// 2002) with the Lifeguard extensions (Dadgar et al. 2017), as a pure, deterministic state
// machine.
//
// The core has no goroutines, no clock, no sockets and no global randomness. Time is a call to
// Tick; the network is Step (messages in) and Ready.Packets (messages out); membership changes
// come out as Ready.Events; randomness comes from Config.Seed. The same inputs in the same order
// always produce the same outputs, so a simulator can run a thousand members from one seed.
//
// # The contract
//
// The caller owns one *Node per member and drives it from a single goroutine:
//
//  1. Create it with New(cfg) (Config from DefaultLANConfig, DefaultWANConfig or
//     DefaultLocalConfig). It knows only itself; Join(addrs...) starts push-pulls with members
//     of a group (any one suffices).
//  2. Call Tick once per Config.TickInterval: every duration of the Config is counted in ticks
//     (ceil(d / TickInterval)), so a late tick stretches every timer alike.
//  3. Step each message received: Packet.Stream false for a datagram (UDP), true for a stream
//     message (TCP). Step returns an error for a malformed message or another cluster's, which it
//     also counts (Status.Counters); the caller may log it.
//  4. When HasReady, take rd := Ready(): send each Packet (a datagram of at most MaxPacketBytes,
//     or a stream message of at most MaxStreamBytes; losing either is allowed), deliver the
//     Events. Ready hands them over and forgets them; there is no Advance.
//  5. UpdateMeta announces new metadata; Leave announces a graceful departure; Members, Member
//     and Status report the node's view.
//
// Encryption (AES-GCM with a keyring and key rotation) is the I/O layer's job, not the core's: it
// seals each Packet's Data before sending and opens it before Step (trying every key of the ring,
// sealing with the primary), so the core never sees keys. internal/gossipnet is that layer for
// caucus members. Its overhead (nonce and tag, 28 bytes)
// fits in the room DefaultMaxPacketBytes leaves under a 1500-byte MTU.
//
// # The protocol
//
// Probing. Every protocol period (ProbeInterval) a node pings the next member of a randomized
// round-robin (every live member once per round, in a fresh random order each round). Without an
// ack after ProbeTimeout it asks IndirectChecks random members to ping the target for it
// (ping-req) and, with StreamFallback, pings the target over a stream as well. An intermediary
// relays the target's ack, or sends a nack after its own ProbeTimeout. If the period ends without
// an ack the target becomes suspect, unless the stream ping was answered: then the member is
// reachable and only packets fail, which the node reports (Status.PacketTrouble, "packets to X
// fail but streams work: check that UDP port P is open") and logs once, instead of suspecting it.
//
// Suspicion and incarnations. News about a member carries its incarnation, which only the member
// itself increments. At one incarnation left beats dead beats suspect beats alive, and an alive
// needs a strictly higher incarnation to override anything (state.go states the rules). A node
// that hears itself suspected or declared dead refutes by announcing alive with a higher
// incarnation; a restarted node learns its old incarnation the same way. A suspect is declared
// dead when its suspicion times out.
//
// Lifeguard. (1) Local health awareness: a health score in [0, AwarenessMax-1] grows by one per
// probe that failed with nobody to ask, by the number of missing nacks of a failed probe, and by
// one per refutation; it shrinks by one per successful probe. ProbeInterval and ProbeTimeout are
// multiplied by score+1, so a node that is itself slow probes less and waits longer before
// blaming others. (2) Dynamic suspicion: the timeout starts at max = SuspicionMaxMult * min and
// shrinks toward min = SuspicionMult * max(1, log10 N) * ProbeInterval as independent
// confirmations (suspicions of the same member by other members) arrive, logarithmically,
// reaching min at SuspicionConfirmations (capped at N-2) of them. (3) Nacks, as above. (4) Buddy
// system: a ping to a suspect carries the suspicion ahead of any other update, so the suspect can
// refute on that packet even if the gossip missed it.
//
// Dissemination. Updates (alive, suspect, dead, left) queue for piggybacking on every packet the
// node sends (pings, acks, ping-reqs) and on gossip packets sent every GossipInterval to
// GossipFanout random members (dead and left members included for GossipToDead, so that a member
// wrongly declared dead learns it and refutes). Each update is sent RetransmitMult *
// ceil(log10(N+1)) times, fewest transmissions first, newest first among equals, as many as fit in
// MaxPacketBytes. The queue holds at most MaxBroadcasts updates and one per member: newer news
// about a member supersedes the queued one; when full, the update sent most often (the oldest
// among equals) is dropped. Both are counted.
//
// Push-pull. Every PushPullInterval (longer in groups above 32) a node exchanges its full state
// with a random alive member over a stream; Join does the same with the given addresses. States
// merge with the same rules as gossip, except that a remote dead is merged as a suspicion.
//
// Leave, reaping and names. Leave announces left (at the current incarnation); the node stops
// probing but keeps answering and gossiping until the announcement is spread (Status.LeaveSpread).
// Others keep a left or dead member for ReapAfter, then forget it (EventReap). A name is bound to
// its address: an alive claim of it from another address is refused (counted as NameConflicts)
// while the member is alive or suspect, accepted at once when it left, and accepted once it has
// been dead for ReclaimAfter.
//
// Cluster label. Every message carries Config.Label; a message with another label is dropped and
// counted before anything in it is read, so two groups on one network never merge.
//
// Invariants the tests check: no member alive and reachable is declared dead in a run without
// faults; a crashed member is declared dead by every live member within two periods plus the
// maximum suspicion timeout; every datagram fits MaxPacketBytes; no node learns a member of a
// group with another label.
//
// # Where the core departs from the papers and from memberlist
//
//   - Time is ticks, not a clock: timeouts are counted in the caller's ticks.
//   - Left is a state of its own, not a dead member that declared itself.
//   - A probe that fails over packets but succeeds over a stream never leads to a suspicion, and
//     is reported as packet trouble; memberlist logs a warning on the same finding.
//   - News learned from a push-pull is gossiped on like any other (a joiner's queue fills with
//     the group's records, bounded by MaxBroadcasts); the retransmit limit counts every known
//     member (dead and left ones too), as memberlist does.
//   - A claim of this node's own name from another address is counted and logged but not
//     refuted: the others refuse it while this node is alive, and competing refutations would
//     never end.
//   - Intermediaries nack after their own unscaled ProbeTimeout; Validate requires ProbeInterval
//     >= 2 * ProbeTimeout so that the nacks arrive within the prober's period.
//   - The wire encoding is this package's own (codec.go), not memberlist's: a node of this
//     package cannot join a memberlist cluster.
package gossip
