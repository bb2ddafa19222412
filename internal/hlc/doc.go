// Package hlc implements hybrid logical clocks (Kulkarni, Demirbas, Madappa, Avva, Leone:
// "Logical Physical Clocks", 2014) for the available keyspace, where writes accepted by any
// member are ordered without consensus.
//
// A Timestamp is a wall time in nanoseconds since the Unix epoch plus a logical counter; it is
// close to physical time, yet it respects causality: a member that has seen a timestamp issues
// only greater ones afterwards, whatever its own clock says.
//
// The package is pure: no goroutines, no I/O and no clock reads. Callers pass the physical time
// (time.Now().UnixNano() in production, anything in simulations and tests) to Clock.Now and
// Clock.Update. A Clock is not safe for concurrent use; its owner serializes calls.
//
// # Invariants
//
//   - Timestamps are totally ordered by (Wall, Logical) (Timestamp.Compare).
//   - Every timestamp a Clock returns from Now or Update is greater than every timestamp it
//     returned before and than every remote timestamp it accepted, even when the physical time
//     passed in goes backwards.
//   - A remote timestamp more than the clock's MaxSkew ahead of the local physical time is
//     refused (*SkewError, matching ErrSkew) and leaves the clock unchanged: one member with a
//     clock far in the future must not drag every member's timestamps along and make
//     last-writer-wins ignore the others' writes until real time catches up.
//   - The logical counter never wraps: when it would pass math.MaxUint32 the wall time advances
//     by 1 ns and the counter restarts at 0. That keeps timestamps strictly increasing at the cost
//     of running 1 ns ahead of physical time per 2^32 events in one nanosecond, which real
//     workloads never reach.
//   - The encoding (AppendBinary, MarshalBinary) is a fixed EncodedLen = 12 bytes: the wall time
//     with its sign bit flipped, then the counter, both big endian, so that comparing encodings
//     bytewise orders them exactly as Compare does (usable as a sort key). Decode rejects any
//     other length.
package hlc
