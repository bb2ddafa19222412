package mvcc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
)

// Durable consumers: a named position in the event stream and the deliveries of the events it
// selects, kept in the replicated state, so that they survive leader changes, restarts and the
// replacement of members (they are in the snapshot, which is the bbolt file).
//
// Every change goes through the log: a fetch is a command (it records each delivery's attempt
// and deadline, computed from the command's time, never a local clock), and so is an ack or a
// nak. A consumer's events are
//
//   - before its ack floor: acknowledged (or dead-lettered);
//   - pending: delivered and awaiting an ack (attempt >= 1, with a deadline), or waiting behind
//     an earlier unacknowledged event of their key (attempt 0);
//   - between the ack floor and next, and not pending: acknowledged;
//   - from next on: not looked at yet.
//
// Per-key ordering: the pending events of one key form a queue (ckeys); only its head is ever
// delivered, so the next event of a key is handed out only after the previous one is
// acknowledged (or dead-lettered). Events without a key have no queue. The ready index (cready)
// orders by deadline the pending events that a fetch may hand out: every delivery (due for
// redelivery at its deadline) and a waiting event once it heads its queue (deadline 0). A
// delivery out with a deadline to come is handed to nobody else, so fetchers sharing a consumer
// work as a queue. After MaxDeliver attempts, the next fetch that finds the event due publishes
// it to the dead-letter topic (an event of the same command) and counts it as acknowledged.
//
// Layout (name is the consumer's name, which holds no zero byte):
//
//	consumer  name                             -> logpb.ConsumerRecord
//	cpending  name 0 rev index                 -> flags(1) attempt(4) deadline(8) event key
//	ckeys     name 0 uvarint(len) key rev index -> ""   (each key's pending events, in order)
//	cready    name 0 orderedTime(deadline) rev index -> ""
//	cfloor    ack_floor_rev(8) name            -> ""   (consumers that hold events)
//
// Retention (consumer_retention.go) keeps the events at and after the lowest ack floor of
// cfloor, within each consumer's max age and bytes.

// Limits of the consumers. They are constants, not replicated settings: each bounds the work one
// command may cost (a fetch, an ack) or the state a consumer may hold.
const (
	// MaxConsumers bounds the consumers of a cluster.
	MaxConsumers = 1000
	// MaxConsumerNameBytes bounds a consumer's name: letters, digits and "._-".
	MaxConsumerNameBytes = 255
	// MaxFetchEvents bounds the deliveries of one fetch; MaxFetchBytes their events' bytes (a
	// fetch returns at least one delivery whatever its size).
	MaxFetchEvents = 1000
	MaxFetchBytes  = 8 << 20
	// MaxAckPendingCeiling bounds a consumer's max_ack_pending. As many events again may wait
	// behind their keys: a consumer holds at most twice this many pending events.
	MaxAckPendingCeiling = 10_000
	// MaxDeliverCeiling bounds a consumer's max_deliver.
	MaxDeliverCeiling = 1000
	// MinAckWait and MaxAckWait bound a consumer's ack_wait.
	MinAckWait = 10 * time.Millisecond
	MaxAckWait = 24 * time.Hour
	// MaxFetchWait bounds how long a fetch waits for events at the server (FetchRequest.wait_ms).
	MaxFetchWait = 30 * time.Second

	// Defaults of ConsumerConfig's zero fields.
	DefaultAckWait          = 30 * time.Second
	DefaultMaxDeliver       = 5
	DefaultMaxAckPending    = 1000
	DefaultConsumerMaxAge   = 7 * 24 * time.Hour
	DefaultConsumerMaxBytes = 1 << 30

	// fetchScanBudget bounds the stored events one fetch examines for new ones (those of other
	// topics included); the next fetch goes on from there.
	fetchScanBudget = 10_000
	// retentionScanBudget bounds the events one compaction command examines to move idle
	// consumers past the topics they do not select; consumers left over are checked by the
	// next compaction (or their next fetch).
	retentionScanBudget = 100_000
)

// Headers of a dead-letter event, naming the event it stands for.
const (
	HeaderDeadLetterConsumer = "caucus-dead-letter-consumer"
	HeaderOriginalTopic      = "caucus-original-topic"
	HeaderOriginalID         = "caucus-original-id"
	HeaderOriginalPosition   = "caucus-original-position"
	HeaderAttempts           = "caucus-attempts"
)

// Errors of the consumers.
var (
	ErrConsumerNotFound = &Error{Code: "consumer_not_found", Message: "consumer not found"}
	ErrConsumerExists   = &Error{Code: "consumer_exists", Message: "a consumer of that name exists with another configuration"}
	ErrTooManyConsumers = &Error{Code: "too_many_consumers", Message: "too many consumers"}
	// ErrStaleAttempt refuses an ack or nak of an older attempt than the event's latest
	// delivery: the event was delivered again meanwhile, and the newer delivery decides.
	ErrStaleAttempt = &Error{Code: "stale_attempt", Message: "the event was delivered again since this attempt"}
	// ErrNotPending refuses an ack or nak of an event that awaits no ack from the consumer: it
	// was acknowledged or dead-lettered already, never delivered, or not selected.
	ErrNotPending = &Error{Code: "not_pending", Message: "event is not awaiting an ack"}
)

func init() {
	for _, e := range []*Error{ErrConsumerNotFound, ErrConsumerExists, ErrTooManyConsumers, ErrStaleAttempt, ErrNotPending} {
		sentinels[e.Code] = e
	}
	allBuckets = append(allBuckets, bucketEvSize, bucketConsumer, bucketCPending, bucketCKeys, bucketCReady, bucketCFloor)
}

var (
	bucketConsumer = []byte("consumer")
	bucketCPending = []byte("cpending")
	bucketCKeys    = []byte("ckeys")
	bucketCReady   = []byte("cready")
	bucketCFloor   = []byte("cfloor")
	// metaConsumers counts the entries of the consumer bucket.
	metaConsumers = []byte("consumers")
)

// consumerBuckets are the buckets of the consumers, in a read or a write transaction.
type consumerBuckets struct {
	rec, pending, keys, ready, floor, evsize, events *bolt.Bucket
}

func openConsumerBuckets(tx *bolt.Tx) consumerBuckets {
	return consumerBuckets{
		rec: tx.Bucket(bucketConsumer), pending: tx.Bucket(bucketCPending), keys: tx.Bucket(bucketCKeys),
		ready: tx.Bucket(bucketCReady), floor: tx.Bucket(bucketCFloor), evsize: tx.Bucket(bucketEvSize),
		events: tx.Bucket(bucketEvents),
	}
}

// position is an event's place in the stream.
type position struct {
	rev int64
	idx int32
}

func (p position) less(q position) bool { return p.rev < q.rev || p.rev == q.rev && p.idx < q.idx }

// after is the position right after p.
func (p position) after() position { return position{p.rev, p.idx + 1} }

func (p position) String() string { return fmt.Sprintf("%d.%d", p.rev, p.idx) }

func (p position) key() []byte { return eventKey(p.rev, p.idx) }

func maxPos(p, q position) position {
	if p.less(q) {
		return q
	}
	return p
}

func splitPos(k []byte) (position, bool) {
	r, i, ok := splitEventKey(k)
	return position{r, i}, ok
}

func nextOf(r *logpb.ConsumerRecord) position {
	return position{r.NextRevision, r.NextIndex}
}

func ackFloorOf(r *logpb.ConsumerRecord) position {
	return position{r.AckFloorRevision, r.AckFloorIndex}
}

// consPrefix starts every key of a consumer's entries.
func consPrefix(name string) []byte { return append([]byte(name), 0) }

func pendingKey(name string, p position) []byte { return append(consPrefix(name), p.key()...) }

func keyQueuePrefix(name string, key []byte) []byte {
	k := binary.AppendUvarint(consPrefix(name), uint64(len(key)))
	return append(k, key...)
}

func keyQueueKey(name string, key []byte, p position) []byte {
	return append(keyQueuePrefix(name, key), p.key()...)
}

func readyKey(name string, deadline int64, p position) []byte {
	k := binary.BigEndian.AppendUint64(consPrefix(name), orderedTime(deadline))
	return append(k, p.key()...)
}

// splitReadyKey decodes the part of a cready key after the consumer's prefix.
func splitReadyKey(k []byte) (deadline int64, p position, ok bool) {
	if len(k) != 20 {
		return 0, position{}, false
	}
	p, ok = splitPos(k[8:])
	return int64(binary.BigEndian.Uint64(k) ^ (1 << 63)), p, ok
}

func floorKey(rev int64, name string) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(rev)), name...)
}

// pendingEntry is a pending event of a consumer.
type pendingEntry struct {
	// indexed: the entry is in the ready index, at deadline.
	indexed  bool
	attempt  int32
	deadline int64
	key      []byte
}

func (e pendingEntry) encode() []byte {
	v := make([]byte, 13, 13+len(e.key))
	if e.indexed {
		v[0] = 1
	}
	binary.BigEndian.PutUint32(v[1:], uint32(e.attempt))
	binary.BigEndian.PutUint64(v[5:], uint64(e.deadline))
	return append(v, e.key...)
}

func decodePending(v []byte) (pendingEntry, error) {
	if len(v) < 13 {
		return pendingEntry{}, errorCorrupt(fmt.Sprintf("pending delivery of %d bytes", len(v)))
	}
	return pendingEntry{indexed: v[0]&1 != 0, attempt: int32(binary.BigEndian.Uint32(v[1:])),
		deadline: int64(binary.BigEndian.Uint64(v[5:])), key: bytes.Clone(v[13:])}, nil
}

// CheckConsumerName reports whether name is a valid consumer name.
func CheckConsumerName(name string) error {
	if name == "" {
		return errorf(ErrInvalidArgument, "empty consumer name")
	}
	if len(name) > MaxConsumerNameBytes {
		return errorf(ErrInvalidArgument, "consumer name is %d bytes, limit %d", len(name), MaxConsumerNameBytes)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			continue
		}
		return errorf(ErrInvalidArgument, "consumer name %q has byte %q at %d (letters, digits and \"._-\" only)", name, c, i)
	}
	return nil
}

// ConsumerDefaults returns cfg with its zero fields replaced by their defaults.
func ConsumerDefaults(cfg *logpb.ConsumerConfig) *logpb.ConsumerConfig {
	c := proto.CloneOf(cfg)
	if c == nil {
		c = &logpb.ConsumerConfig{}
	}
	if c.AckWaitMs == 0 {
		c.AckWaitMs = DefaultAckWait.Milliseconds()
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.DeadLetterTopic == "" {
		c.DeadLetterTopic = c.Name + ".dead-letter"
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = DefaultMaxAckPending
	}
	if c.MaxAgeSeconds == 0 {
		c.MaxAgeSeconds = int64(DefaultConsumerMaxAge / time.Second)
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultConsumerMaxBytes
	}
	return c
}

// validateConsumerConfig checks a consumer's configuration (its zero fields take defaults).
func validateConsumerConfig(cfg *logpb.ConsumerConfig) error {
	if cfg == nil {
		return errorf(ErrInvalidArgument, "consumer create without a configuration")
	}
	if err := CheckConsumerName(cfg.GetName()); err != nil {
		return err
	}
	if len(cfg.GetTopics()) == 0 {
		return errorf(ErrInvalidArgument, "consumer %q selects no topic", cfg.GetName())
	}
	f, err := NewEventFilter(cfg.GetTopics())
	if err != nil {
		return errorf(ErrInvalidTopic, "consumer %q: %v", cfg.GetName(), err)
	}
	c := ConsumerDefaults(cfg)
	switch {
	case c.StartRevision < 0:
		return errorf(ErrInvalidArgument, "negative start revision %d", c.StartRevision)
	case c.AckWaitMs < MinAckWait.Milliseconds() || c.AckWaitMs > MaxAckWait.Milliseconds():
		return errorf(ErrInvalidArgument, "ack wait %d ms outside [%d, %d]", c.AckWaitMs, MinAckWait.Milliseconds(), MaxAckWait.Milliseconds())
	case c.MaxDeliver < 1 || c.MaxDeliver > MaxDeliverCeiling:
		return errorf(ErrInvalidArgument, "max deliver %d outside [1, %d]", c.MaxDeliver, MaxDeliverCeiling)
	case c.MaxAckPending < 1 || c.MaxAckPending > MaxAckPendingCeiling:
		return errorf(ErrInvalidArgument, "max ack pending %d outside [1, %d]", c.MaxAckPending, MaxAckPendingCeiling)
	case c.MaxAgeSeconds < 0 || c.MaxBytes < 0:
		return errorf(ErrInvalidArgument, "negative retention (max age %d s, max bytes %d)", c.MaxAgeSeconds, c.MaxBytes)
	}
	if err := CheckTopic(c.DeadLetterTopic); err != nil {
		return errorf(ErrInvalidTopic, "dead-letter topic %q of consumer %q", c.DeadLetterTopic, c.Name)
	}
	if f.Match(c.DeadLetterTopic) {
		// Its own dead letters would come back to it, and fail again, for ever.
		return errorf(ErrInvalidArgument, "consumer %q selects its own dead-letter topic %q: choose topics that exclude it, or another dead-letter topic",
			c.Name, c.DeadLetterTopic)
	}
	return nil
}

func validateFetch(f *logpb.FetchRequest) error {
	if err := CheckConsumerName(f.GetConsumer()); err != nil {
		return err
	}
	if f.GetMaxEvents() < 0 || f.GetMaxEvents() > MaxFetchEvents {
		return errorf(ErrInvalidArgument, "max events %d outside [1, %d]", f.GetMaxEvents(), MaxFetchEvents)
	}
	if f.GetWaitMs() < 0 {
		return errorf(ErrInvalidArgument, "negative wait %d ms", f.GetWaitMs())
	}
	return nil
}

func validateAck(a *logpb.AckRequest) error {
	if err := CheckConsumerName(a.GetConsumer()); err != nil {
		return err
	}
	n := len(a.GetAcks()) + len(a.GetNaks())
	if n == 0 {
		return errorf(ErrInvalidArgument, "ack of consumer %q names no event", a.GetConsumer())
	}
	if n > MaxFetchEvents {
		return errorf(ErrInvalidArgument, "%d events in one ack, limit %d", n, MaxFetchEvents)
	}
	seen := make(map[position]bool, n)
	for _, list := range [][]*logpb.EventPosition{a.GetAcks(), a.GetNaks()} {
		for _, p := range list {
			pos := position{p.GetRevision(), p.GetIndex()}
			if p.GetRevision() < 1 || p.GetIndex() < 0 || p.GetAttempt() < 1 {
				return errorf(ErrInvalidArgument, "event position %s attempt %d (revisions and attempts start at 1)", pos, p.GetAttempt())
			}
			if seen[pos] {
				return errorf(ErrInvalidArgument, "event %s is named twice in one ack", pos)
			}
			seen[pos] = true
		}
	}
	return nil
}

// loadRecord reads a consumer's record from rec; nil if there is none.
func loadRecord(rec *bolt.Bucket, name string) (*logpb.ConsumerRecord, error) {
	v := rec.Get([]byte(name))
	if v == nil {
		return nil, nil
	}
	r := &logpb.ConsumerRecord{}
	if err := proto.Unmarshal(v, r); err != nil {
		return nil, errorCorrupt(fmt.Sprintf("consumer %q: %v", name, err))
	}
	return r, nil
}

// consumer is a consumer being changed by a command.
type consumer struct {
	name   string
	rec    *logpb.ConsumerRecord
	filter EventFilter
}

func (b *Batch) loadConsumer(name string) (*consumer, error) {
	r, err := loadRecord(b.cons.rec, name)
	if err != nil {
		b.fail(err)
		return nil, err
	}
	if r == nil {
		return nil, errorf(ErrConsumerNotFound, "%q", name)
	}
	f, err := NewEventFilter(r.GetConfig().GetTopics())
	if err != nil {
		b.fail(errorCorrupt(fmt.Sprintf("consumer %q topics: %v", name, err)))
		return nil, err
	}
	return &consumer{name: name, rec: r, filter: f}, nil
}

func (b *Batch) saveConsumer(c *consumer) {
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(c.rec)
	if err != nil {
		b.fail(fmt.Errorf("encode consumer %q: %w", c.name, err))
		return
	}
	if err := b.cons.rec.Put([]byte(c.name), v); err != nil {
		b.fail(fmt.Errorf("store consumer %q: %w", c.name, err))
		return
	}
	b.consChanged = true
}

// ConsumerCreate creates a consumer. Creating an existing consumer with the same configuration
// (defaults filled in) changes nothing and answers its state, so that a retry is harmless.
func (b *Batch) ConsumerCreate(req *logpb.ConsumerCreateRequest) (proto.Message, error) {
	cfg := ConsumerDefaults(req.GetConfig())
	old, err := loadRecord(b.cons.rec, cfg.Name)
	if err != nil {
		b.fail(err)
		return nil, nil
	}
	if old != nil {
		if !proto.Equal(old.Config, cfg) {
			return nil, errorf(ErrConsumerExists, "%q", cfg.Name)
		}
		return &logpb.ConsumerCreateResponse{Consumer: b.stateOf(old)}, nil
	}
	if b.st.consumers >= MaxConsumers {
		return nil, errorf(ErrTooManyConsumers, "%d consumers, limit %d", b.st.consumers, MaxConsumers)
	}
	start := position{b.st.rev + 1, 0}
	if cfg.StartRevision > 0 {
		if cfg.StartRevision < b.st.evFloor {
			return nil, errorf(ErrCompacted, "consumer %q starts at revision %d, events are retained from %d", cfg.Name, cfg.StartRevision, b.st.evFloor)
		}
		start = position{cfg.StartRevision, 0}
	}
	c := &consumer{name: cfg.Name, rec: &logpb.ConsumerRecord{
		Config: cfg, CreatedRevision: b.st.rev,
		NextRevision: start.rev, NextIndex: start.idx, AckFloorRevision: start.rev, AckFloorIndex: start.idx,
	}}
	if err := b.cons.floor.Put(floorKey(start.rev, c.name), []byte{}); err != nil {
		b.fail(fmt.Errorf("index consumer %q: %w", c.name, err))
		return nil, nil
	}
	b.st.consumers++
	b.saveConsumer(c)
	b.refreshEventsFloor()
	b.s.log.Info("consumer created", "consumer", c.name, "topics", cfg.Topics, "start", start.rev, "index", b.index)
	return &logpb.ConsumerCreateResponse{Consumer: b.stateOf(c.rec)}, nil
}

// ConsumerDelete deletes a consumer and its pending deliveries; the events it held are released.
func (b *Batch) ConsumerDelete(req *logpb.ConsumerDeleteRequest) (proto.Message, error) {
	c, err := b.loadConsumer(req.GetName())
	if err != nil {
		return nil, err
	}
	prefix := consPrefix(c.name)
	for _, bk := range []*bolt.Bucket{b.cons.pending, b.cons.keys, b.cons.ready} {
		var keys [][]byte
		cur := bk.Cursor()
		for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			if err := bk.Delete(k); err != nil {
				b.fail(fmt.Errorf("delete consumer %q: %w", c.name, err))
				return nil, nil
			}
		}
	}
	if !c.rec.Stalled {
		if err := b.cons.floor.Delete(floorKey(c.rec.AckFloorRevision, c.name)); err != nil {
			b.fail(fmt.Errorf("unindex consumer %q: %w", c.name, err))
			return nil, nil
		}
	}
	if err := b.cons.rec.Delete([]byte(c.name)); err != nil {
		b.fail(fmt.Errorf("delete consumer %q: %w", c.name, err))
		return nil, nil
	}
	b.st.consumers--
	b.consChanged = true
	b.refreshEventsFloor()
	b.s.log.Info("consumer deleted", "consumer", c.name, "index", b.index)
	return &logpb.ConsumerDeleteResponse{}, nil
}

// stateOf is a consumer's state as of the batch, for a response.
func (b *Batch) stateOf(r *logpb.ConsumerRecord) *logpb.ConsumerState {
	st, err := consumerState(b.cons, b.st, r, b.now)
	if err != nil {
		b.fail(err)
	}
	return st
}

// removeEntry forgets a pending event (acknowledged, dead-lettered or lost), and lets the next
// event of its key, if any, be delivered. It reads the entry afresh: removing one event may
// have promoted another.
func (b *Batch) removeEntry(c *consumer, p position) {
	e, err := decodePending(b.cons.pending.Get(pendingKey(c.name, p)))
	if err != nil {
		b.fail(fmt.Errorf("consumer %q: remove %s: %w", c.name, p, err))
		return
	}
	if err := b.cons.pending.Delete(pendingKey(c.name, p)); err != nil {
		b.fail(fmt.Errorf("consumer %q: remove %s: %w", c.name, p, err))
		return
	}
	if e.indexed {
		if err := b.cons.ready.Delete(readyKey(c.name, e.deadline, p)); err != nil {
			b.fail(fmt.Errorf("consumer %q: unindex %s: %w", c.name, p, err))
			return
		}
	}
	if e.attempt > 0 {
		c.rec.AckPending--
	} else {
		c.rec.Waiting--
	}
	if len(e.key) == 0 {
		return
	}
	if err := b.cons.keys.Delete(keyQueueKey(c.name, e.key, p)); err != nil {
		b.fail(fmt.Errorf("consumer %q: dequeue %s: %w", c.name, p, err))
		return
	}
	// The key's new head, if it is waiting, becomes ready now.
	prefix := keyQueuePrefix(c.name, e.key)
	k, _ := b.cons.keys.Cursor().Seek(prefix)
	if k == nil || !bytes.HasPrefix(k, prefix) || len(k) != len(prefix)+12 {
		return
	}
	head, _ := splitPos(k[len(prefix):])
	hk := pendingKey(c.name, head)
	he, err := decodePending(b.cons.pending.Get(hk))
	if err != nil {
		b.fail(fmt.Errorf("consumer %q: head of a key at %s: %w", c.name, head, err))
		return
	}
	if he.indexed {
		return
	}
	he.indexed, he.deadline = true, 0
	b.putEntry(c, head, he)
}

// putEntry stores a pending entry and, if indexed, its ready index entry (the caller removed any
// previous one).
func (b *Batch) putEntry(c *consumer, p position, e pendingEntry) {
	if err := b.cons.pending.Put(pendingKey(c.name, p), e.encode()); err != nil {
		b.fail(fmt.Errorf("consumer %q: store %s: %w", c.name, p, err))
		return
	}
	if e.indexed {
		if err := b.cons.ready.Put(readyKey(c.name, e.deadline, p), []byte{}); err != nil {
			b.fail(fmt.Errorf("consumer %q: index %s: %w", c.name, p, err))
		}
	}
}

// settle recomputes a consumer's ack floor (the first pending event, or next), moves its
// retention entry, and saves it.
func (b *Batch) settle(c *consumer) {
	floor := nextOf(c.rec)
	prefix := consPrefix(c.name)
	if k, _ := b.cons.pending.Cursor().Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
		p, ok := splitPos(k[len(prefix):])
		if !ok {
			b.fail(errorCorrupt(fmt.Sprintf("pending key %x", k)))
			return
		}
		if p.less(floor) {
			floor = p
		}
	}
	old := ackFloorOf(c.rec)
	if floor.less(old) {
		b.fail(errorCorrupt(fmt.Sprintf("consumer %q: ack floor would move back from %s to %s", c.name, old, floor)))
		return
	}
	if floor != old {
		if !c.rec.Stalled && floor.rev != old.rev {
			if err := b.cons.floor.Delete(floorKey(old.rev, c.name)); err != nil {
				b.fail(fmt.Errorf("consumer %q: move retention entry: %w", c.name, err))
				return
			}
			if err := b.cons.floor.Put(floorKey(floor.rev, c.name), []byte{}); err != nil {
				b.fail(fmt.Errorf("consumer %q: move retention entry: %w", c.name, err))
				return
			}
		}
		c.rec.AckFloorRevision, c.rec.AckFloorIndex = floor.rev, floor.idx
	}
	b.saveConsumer(c)
	b.refreshEventsFloor()
}
