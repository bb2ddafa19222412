// Package gossipnet drives one gossip.Node (the pure SWIM+Lifeguard core of package gossip) on
// real sockets: the core decides, this package does the I/O.
//
// # Job
//
// A Driver binds one UDP socket and one TCP listener on the same host:port (as memberlist does)
// and runs one goroutine that owns the node: a ticker calls Tick every Core.TickInterval;
// received datagrams and stream frames arrive on a channel and are Stepped; calls (Join, Members,
// Status, UpdateMeta, Leave) run on the same goroutine. After each input it sends what Ready
// asks: datagrams with one WriteTo each; stream messages as length-prefixed frames (4-byte
// big-endian length) over a TCP connection dialed with DialTimeout, whose write side is then
// closed and whose answers are read and stepped until the peer closes. A stream answer
// (Packet.Reply) to a frame that arrived on an inbound connection is written back on that
// connection; other stream messages get a connection of their own. Events go to subscribers
// through bounded buffers: a full buffer drops the event and counts it, the loop never blocks.
//
// # Invariants
//
//   - Only the loop goroutine touches the gossip.Node.
//   - Nothing received reaches the core unless it fits the limits and, with a keyring, opens
//     with one of its keys.
//   - Nothing blocks the loop on the network: datagram writes do not wait for a peer, stream
//     sends run on goroutines of their own (at most MaxOutboundStreams; more are dropped, which
//     the core tolerates as a lost message), inbound answers are handed to the connection's
//     goroutine.
//   - Close announces the leave and waits for Status.LeaveSpread (at most LeaveTimeout) before
//     stopping; Abort stops at once, which the others see as a crash.
//
// # Limits (named, with defaults)
//
// Datagrams: Core.MaxPacketBytes (+ Overhead with a keyring); larger ones are dropped.
// Stream frames: Core.MaxStreamBytes (+ Overhead); a larger length closes the connection.
// DialTimeout 2 s, ReadTimeout 5 s (per frame), WriteTimeout 5 s, MaxInboundStreams 64
// (connections over it are closed at once), MaxOutboundStreams 64, LeaveTimeout 3 s. What is
// dropped or refused is counted (Stats, and the core's Status().Counters) and logged at debug
// level with the keys "member" and "addr".
//
// # Encryption and key rotation
//
// With a Keyring every datagram and frame is sealed with AES-GCM (keys of 16, 24 or 32 bytes)
// under the primary key: a random 12-byte nonce, then ciphertext and 16-byte tag (Overhead, 28
// bytes, which gossip.DefaultMaxPacketBytes leaves room for under a 1500-byte MTU). A message
// is opened by trying every key of the ring; one no key opens (another cluster's key, or no
// encryption) is refused and counted as Undecryptable. The label is checked by the core after.
//
// A keyring file holds one base64 key per line, the first the primary (blank lines and #
// comments ignored); Reload rereads it without a restart (`caucus server` calls it on SIGHUP).
// A file that does not parse leaves the keys in use. To rotate without downtime:
//
//  1. Add the new key as a second line on every member and reload each.
//  2. When every member has it, move it to the first line (primary) on every member and reload.
//  3. When every member seals with it, remove the old key everywhere and reload.
//
// Between steps every member can open what every other sends, so nobody is suspected; a member
// that skipped step 1 is refused by those past step 2 until it catches up.
package gossipnet
