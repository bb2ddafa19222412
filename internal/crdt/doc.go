// Package crdt holds the conflict-free replicated data types of the available keyspace, where
// any member accepts writes and replicas converge by merging states without consensus:
//
//   - Register: a last-writer-wins register ordered by (hlc.Timestamp, member id), with
//     tombstones for deletes.
//   - Counter: a PN-counter (per-member increment and decrement counts).
//   - Set: an add-wins observed-remove set, whose causal context (a version vector plus a dot
//     cloud for dots seen out of order) lets a remove delete only the adds it observed.
//
// Each type is a join semilattice with deltas (Almeida, Shoker, Baquero, "Delta State Replicated
// Data Types", 2018): an operation mutates the local state and returns a delta, a small state
// that carries only the operation's effect. Merging a delta, a group of deltas merged together,
// or a whole state is the same join, so replication may ship deltas when it can and full states
// when it must (anti-entropy, a member that missed deltas), in any order, any number of times.
//
// The package is pure: no goroutines, no I/O, no clock reads (timestamps are passed in). Values
// are not safe for concurrent use.
//
// # Invariants
//
//   - Merge is commutative, associative and idempotent, and never loses what either side had
//     (the result is above both inputs in the type's order); it does not modify its argument
//     and the result shares no mutable memory with it.
//   - Each state has one canonical representation, hence one encoding: equal states encode to
//     equal bytes and have equal Digests, so anti-entropy can compare digests.
//   - Encodings start with a kind byte and the format Version; Unmarshal accepts exactly the
//     canonical encodings (sorted, no duplicates or empty entries, minimal varints, no trailing
//     bytes), never panics, checks every count against the named limits and against the
//     remaining input before allocating, and leaves the receiver unchanged on error.
//   - Operations refuse to pass the named limits (ErrLimit) or to overflow a count
//     (ErrOverflow). Merge cannot refuse: a join must be total, so where concurrent operations
//     can together pass an operation limit (set elements), decoding accepts a larger bound.
//   - Replicas converge: any replicas that have merged the same operations, in any order and
//     however often, through deltas or states, have equal states.
//   - Correctness rests on two promises of the caller: a member never reuses its member id for a
//     different history (a Set member never issues one dot twice, so its state must be durable
//     before its deltas leave), and Register stamps come from an hlc.Clock that has seen every
//     stamp merged into the register (then a member's own write always wins locally).
//
// # Files
//
// register.go, counter.go, orset.go (and context.go, orset_codec.go for the causal context and
// the set's encoding), codec.go for what the encodings share. The tests check the lattice laws
// and convergence generically (laws_test.go) and show the checkers catch planted bad merges.
package crdt
