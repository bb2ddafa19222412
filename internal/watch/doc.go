// Package watch is the fan-out of a member's committed history to its watchers: key changes
// (mvcc.Store.Changes) and published events (mvcc.Store.Events), filtered per watcher by key,
// range or prefix and by topic patterns, from any retained revision.
//
// # Shape
//
// One Hub per member. Its feed goroutine wakes at every commit that publishes a revision
// (mvcc.Store.RevChanged), reads the newly committed revisions once, in chunks of ReadChunk
// items, and hands each watcher that is live the items it selects: one read of the store per
// commit, however many watchers. A watcher that is not live (it starts in the past, or it fell
// behind) is caught up by its own goroutine, reading the store from its position in chunks of
// ReadChunk items, until it reaches the feed; then it joins the feed. The goroutine that serves
// a watcher (Watcher.Run) is the RPC's: the hub adds the feed and one sweeper goroutine per
// member, nothing per watcher.
//
// # Invariants
//
//   - Order: a watcher sees the items it selects in revision order, and within one revision the
//     key changes first (in the order the revision wrote them), then the events by index.
//   - Exactly once: each watcher has a position, next, the first revision it has not queued.
//     Everything below next is in its queue or sent. The feed's position is rev: it has
//     dispatched every revision up to rev to the live watchers. A live watcher's position is
//     max(next, rev+1), and the feed skips, for it, every item below its next. A catching-up
//     watcher reads from next; it joins the feed only once next-1 >= rev, under the hub's lock,
//     so the feed delivers exactly the revisions after its reads: no gap, no duplicate at the
//     switch.
//   - Completeness: every response carries the revision up to which the watch is complete once
//     the client has read it (Response.Revision): a client resumes at Revision+1. A revision
//     whose items exceed MaxResponseItems or MaxResponseBytes is split; all but its last part
//     carry the revision before it (the watch is not complete through it yet), so a client
//     resuming after a part sees the revision from its start and skips the items it already
//     has (the order within a revision is fixed).
//   - The first response of every watch is a progress response (no items), complete through
//     StartRevision-1, or further when nothing the watch selects happened meanwhile: a watch
//     from the current revision (start 0) tells the client where it stands.
//   - Bounded memory: a live watcher's queue holds at most BufferBytes of items beyond the
//     batch it is given when its queue is empty, and all queues together at most
//     TotalBufferBytes; a batch that does not fit demotes the watcher to catching up from the
//     store, which holds one read chunk at a time. Items are shared between the watchers that
//     select them. A Send that does not complete within StallTimeout (the client stopped
//     reading) ends the watch with ErrStalled, naming the revision to resume from; the caller's
//     abort function unblocks that Send.
//   - Compaction: a watcher whose position is at or below the compacted revision ends with
//     mvcc.ErrCompacted, naming the oldest retained revision (compacted revision + 1), after the
//     responses already queued: at the start, when a compaction overtakes it while it catches
//     up, or when a compaction overtakes the feed itself (possible only when a compaction
//     commits in the same store commit as the revisions it compacts). A snapshot restore is
//     the same: watchers whose position the restored store still retains continue, others end
//     with the compacted error; a restore that moves the store's revision back only makes
//     the watchers wait for it to catch up with their positions.
//
// # Limits (Options)
//
// ProgressInterval (DefaultProgressInterval, 1 s): an idle live watcher that asked for progress
// gets a progress response at most this often; it is also the period of the sweep that finds
// stalled sends, so a client that stopped reading is cut off between StallTimeout
// (DefaultStallTimeout, 30 s) and StallTimeout + ProgressInterval after the send began.
// MaxWatchers (DefaultMaxWatchers, 10,000) per member. MaxResponseItems (1000) and
// MaxResponseBytes (256 KiB) per response; a single larger item travels alone. BufferBytes
// (1 MiB) per watcher, TotalBufferBytes (64 MiB) per member. ReadChunk (1000 items) per read of
// the store; a single revision is never split by a read, so a revision that deleted a large
// range is read whole. MaxConcurrentCatchups (8) reads of catching-up watchers at once.
package watch
