// Package relay forwards the events of a durable consumer to systems outside caucus: NATS
// JetStream and HTTP webhooks. It is how the outbox reaches the rest of a company's services
// without anyone writing a polling relay.
//
// Guarantees, and what they rest on:
//   - At least once: an event is acknowledged to caucus only after its destination acknowledged
//     it (JetStream's PubAck, a 2xx answer). A relay that crashes between the two sends the
//     event again after the consumer's ack wait; that is the only source of duplicates.
//   - Duplicates are harmless downstream: the event id travels as JetStream's Nats-Msg-Id (the
//     stream drops a repeated id within its duplicate window) and as the webhook's
//     Idempotency-Key header.
//   - In order per key: the relay delivers one key's events one at a time, in stream order
//     (the consumer hands out a key's next event only after the previous one is acknowledged),
//     and keys in parallel.
//   - Bounded retries: a delivery that fails is retried with exponential backoff for a bounded
//     time, then given back (nak) so the consumer counts the attempt; after the consumer's
//     max_deliver attempts the event goes to its dead-letter topic. Errors a retry cannot fix (a
//     webhook's 4xx other than 408 and 429) give the delivery back at once.
//   - Crash and resume: the relay keeps no state of its own; its position is the durable
//     consumer's, in the replicated state.
package relay
