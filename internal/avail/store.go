package avail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caucus/caucus/internal/crdt"
	"github.com/caucus/caucus/internal/hlc"
)

// Named limits of the store. Value limits are the crdt package's (crdt.MaxRegisterValueBytes,
// crdt.MaxSetElementBytes, crdt.MaxCounterMembers, ...).
const (
	// MaxKeyBytes bounds a key. Keys travel in anti-entropy key lists, so the bound also sets
	// the smallest useful message size (MinMessageBytes).
	MaxKeyBytes = 4096
	// MaxKeyspaceNameBytes bounds a keyspace's name.
	MaxKeyspaceNameBytes = 128
	// MaxKeyspaces bounds the keyspaces of one store. Each holds an in-memory Merkle tree of
	// about 100 KiB (see Tree), so the bound also bounds that memory (25 MiB).
	MaxKeyspaces = 256
	// MaxStateBytes bounds the encoding of a key's state after a local operation (a register's
	// value plus 30 bytes fits; a large set is refused). Merges cannot refuse (a join is total),
	// so a merged state may be larger; anti-entropy skips states that do not fit in a message.
	MaxStateBytes = 2 << 20
	// MaxQueuedWrites bounds the writes waiting for the committer; callers beyond it wait
	// (within their context's deadline) for room.
	MaxQueuedWrites = 4096
	// MaxBatchWrites bounds the writes the committer puts in one bbolt transaction.
	MaxBatchWrites = 1024
)

// Kind is the CRDT type a key holds. Its values are the kind bytes that open the crdt
// package's encodings, so the stored state names its own kind.
type Kind byte

const (
	// KindAny is a keyspace's kind when each key's kind is fixed by its first write.
	KindAny      Kind = 0
	KindRegister Kind = 'R'
	KindCounter  Kind = 'C'
	KindSet      Kind = 'S'
)

func (k Kind) String() string {
	switch k {
	case KindAny:
		return "any"
	case KindRegister:
		return "register"
	case KindCounter:
		return "counter"
	case KindSet:
		return "set"
	}
	return fmt.Sprintf("kind(%#x)", byte(k))
}

func (k Kind) valid() bool {
	return k == KindAny || k == KindRegister || k == KindCounter || k == KindSet
}

// Errors. Each error returned wraps one of them (or a crdt or hlc error, or a context error).
var (
	ErrNotFound   = errors.New("avail: key not found")
	ErrNoKeyspace = errors.New("avail: no such keyspace")
	ErrKind       = errors.New("avail: kind mismatch")
	ErrLimit      = errors.New("avail: limit exceeded")
	ErrInvalid    = errors.New("avail: invalid argument")
	ErrClosed     = errors.New("avail: store closed")
	ErrCorrupt    = errors.New("avail: corrupt store")
)

var (
	bucketMeta      = []byte("meta")
	bucketKeyspaces = []byte("keyspaces")
	metaVersion     = []byte("version")
	metaMaxStamp    = []byte("max-stamp")
	formatVersion   = []byte{1}
)

// dataBucket holds a keyspace's states by key; indexBucket its anti-entropy index:
// leafKey(key) -> the state's crdt.Digest, in the Merkle tree's leaf order.
func dataBucket(ks string) []byte  { return append([]byte("d/"), ks...) }
func indexBucket(ks string) []byte { return append([]byte("x/"), ks...) }

// Origin is who performs an operation and when: the member id that owns the write (the
// register's tie-break, the counter's entry, the set's dots), its hybrid logical clock and the
// physical time in ns since the epoch. The store uses Clock only from its committer goroutine,
// so callers of one store may share a clock as long as nothing else uses it concurrently.
type Origin struct {
	Member   uint64
	Clock    *hlc.Clock
	Physical int64
}

// Options configure Open.
type Options struct {
	// NoSync skips fsync on commit. Only for tests and benchmarks on throwaway data: a crash
	// loses acknowledged writes.
	NoSync bool
	Logger *slog.Logger
}

// Store is one member's local store of the available keyspaces: a bbolt file of its own
// (never part of the Raft state or its snapshots). Safe for concurrent use.
type Store struct {
	db  *bolt.DB
	log *slog.Logger

	reqs chan *request
	quit chan struct{}
	done chan struct{}
	once sync.Once

	mu        sync.RWMutex // guards keyspaces
	keyspaces map[string]*keyspace

	maxStamp atomic.Pointer[hlc.Timestamp]
	commits  atomic.Uint64
	writes   atomic.Uint64
}

type keyspace struct {
	name string
	kind Kind
	tree *Tree
}

// Stats counts the store's work since Open.
type Stats struct {
	Commits uint64 // bbolt transactions committed (one fsync each)
	Writes  uint64 // write requests answered, including refused ones
}

// Open opens or creates the store at path and rebuilds each keyspace's Merkle tree from its
// index.
func Open(path string, opts Options) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoSync: opts.NoSync})
	if err != nil {
		return nil, fmt.Errorf("avail: open %s: %w", path, err)
	}
	s := &Store{
		db:        db,
		log:       opts.Logger,
		reqs:      make(chan *request, MaxQueuedWrites),
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
		keyspaces: make(map[string]*keyspace),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.maxStamp.Store(&hlc.Timestamp{})
	if err := s.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("avail: open %s: %w", path, err)
	}
	go s.run()
	return s, nil
}

func (s *Store) load() error {
	start := time.Now()
	keys := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		switch v := meta.Get(metaVersion); {
		case v == nil:
			if err := meta.Put(metaVersion, formatVersion); err != nil {
				return err
			}
		case !bytes.Equal(v, formatVersion):
			return fmt.Errorf("%w: format version %v, this build reads %v", ErrCorrupt, v, formatVersion)
		}
		if v := meta.Get(metaMaxStamp); v != nil {
			ts, err := hlc.Decode(v)
			if err != nil {
				return fmt.Errorf("%w: max stamp: %w", ErrCorrupt, err)
			}
			s.maxStamp.Store(&ts)
		}
		kss, err := tx.CreateBucketIfNotExists(bucketKeyspaces)
		if err != nil {
			return err
		}
		return kss.ForEach(func(name, v []byte) error {
			if len(v) != 1 || !Kind(v[0]).valid() {
				return fmt.Errorf("%w: keyspace %q has kind %v", ErrCorrupt, name, v)
			}
			ks := &keyspace{name: string(name), kind: Kind(v[0]), tree: NewTree()}
			n, err := rebuildTree(tx, ks)
			if err != nil {
				return err
			}
			keys += n
			s.keyspaces[ks.name] = ks
			return nil
		})
	})
	if err != nil {
		return err
	}
	s.log.Debug("avail: store opened", "keyspaces", len(s.keyspaces), "keys", keys, "rebuild", time.Since(start))
	return nil
}

// rebuildTree fills ks.tree from the keyspace's index bucket and returns the number of keys.
func rebuildTree(tx *bolt.Tx, ks *keyspace) (int, error) {
	idx := tx.Bucket(indexBucket(ks.name))
	if idx == nil {
		return 0, fmt.Errorf("%w: keyspace %q has no index bucket", ErrCorrupt, ks.name)
	}
	n := 0
	err := idx.ForEach(func(k, v []byte) error {
		if len(k) <= leafPrefixLen || len(v) != len(crdt.Digest{}) {
			return fmt.Errorf("%w: keyspace %q: malformed index entry", ErrCorrupt, ks.name)
		}
		key := k[leafPrefixLen:]
		ks.tree.add(leafOfPrefix(k), keyHash(key, crdt.Digest(v)))
		n++
		return nil
	})
	return n, err
}

// Close stops the committer (queued writes fail with ErrClosed) and closes the file.
func (s *Store) Close() error {
	s.once.Do(func() { close(s.quit) })
	<-s.done
	return s.db.Close()
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	return Stats{Commits: s.commits.Load(), Writes: s.writes.Load()}
}

// MaxStamp returns the greatest register stamp this store has written or merged. A member
// restores its clock with it at start (hlc.Clock.Restore), so a physical clock that went back
// across a restart cannot make its writes lose to its own older ones.
func (s *Store) MaxStamp() hlc.Timestamp { return *s.maxStamp.Load() }

func (s *Store) keyspace(name string) (*keyspace, error) {
	s.mu.RLock()
	ks := s.keyspaces[name]
	s.mu.RUnlock()
	if ks == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoKeyspace, name)
	}
	return ks, nil
}

// Keyspaces returns the keyspaces and their kinds.
func (s *Store) Keyspaces() map[string]Kind {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]Kind, len(s.keyspaces))
	for n, ks := range s.keyspaces {
		out[n] = ks.kind
	}
	return out
}

// Root returns the Merkle root of a keyspace: equal roots mean (but for a 2^-256 chance) equal
// contents.
func (s *Store) Root(name string) (Hash, error) {
	ks, err := s.keyspace(name)
	if err != nil {
		return Hash{}, err
	}
	return ks.tree.Node(0, 0), nil
}

func checkKey(key []byte) error {
	if len(key) == 0 {
		return fmt.Errorf("%w: empty key", ErrInvalid)
	}
	if len(key) > MaxKeyBytes {
		return fmt.Errorf("%w: key of %d bytes, limit %d", ErrLimit, len(key), MaxKeyBytes)
	}
	return nil
}

// Entry is one key's state as read from the store.
type Entry struct {
	Key  []byte
	Kind Kind
	// Register is set for KindRegister: the value and the stamp of the write that won.
	Register crdt.Register
	Counter  *crdt.Counter // for KindCounter
	Set      *crdt.Set     // for KindSet
}

// Live reports whether the entry holds a value (a register tombstone does not).
func (e *Entry) Live() bool { return e.Kind != KindRegister || e.Register.Live() }

// Digest returns the digest of the entry's state, as anti-entropy compares it.
func (e *Entry) Digest() crdt.Digest {
	switch e.Kind {
	case KindRegister:
		return e.Register.Digest()
	case KindCounter:
		return e.Counter.Digest()
	}
	return e.Set.Digest()
}

// decodeState decodes a stored or received state, whose first byte names its kind.
func decodeState(key, b []byte) (Entry, error) {
	e := Entry{Key: key}
	if len(b) == 0 {
		return e, fmt.Errorf("%w: empty state", crdt.ErrDecode)
	}
	e.Kind = Kind(b[0])
	var err error
	switch e.Kind {
	case KindRegister:
		err = e.Register.Unmarshal(b)
	case KindCounter:
		e.Counter = new(crdt.Counter)
		err = e.Counter.Unmarshal(b)
	case KindSet:
		e.Set = new(crdt.Set)
		err = e.Set.Unmarshal(b)
	default:
		err = fmt.Errorf("%w: unknown kind byte %#x", crdt.ErrDecode, b[0])
	}
	return e, err
}

// Get returns a key's state. A register tombstone reads as ErrNotFound (Tombstones lists them).
// Get reads what is committed (durable), never a write still waiting for its fsync.
func (s *Store) Get(name string, key []byte) (Entry, error) {
	if _, err := s.keyspace(name); err != nil {
		return Entry{}, err
	}
	var e Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(dataBucket(name)).Get(key)
		if b == nil {
			return fmt.Errorf("%w: keyspace %q key %q", ErrNotFound, name, key)
		}
		var err error
		e, err = decodeState(bytes.Clone(key), b)
		if err != nil {
			return fmt.Errorf("%w: keyspace %q key %q: %w", ErrCorrupt, name, key, err)
		}
		return nil
	})
	if err != nil {
		return Entry{}, err
	}
	if !e.Live() {
		return Entry{}, fmt.Errorf("%w: keyspace %q key %q (deleted at %v)", ErrNotFound, name, key, e.Register.Stamp)
	}
	return e, nil
}

// Range calls fn for each live key in [start, end) in key order (end nil: to the last key),
// until fn returns false. Tombstones are skipped.
func (s *Store) Range(name string, start, end []byte, fn func(Entry) bool) error {
	if _, err := s.keyspace(name); err != nil {
		return err
	}
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(dataBucket(name)).Cursor()
		for k, v := c.Seek(start); k != nil && (end == nil || bytes.Compare(k, end) < 0); k, v = c.Next() {
			e, err := decodeState(bytes.Clone(k), v)
			if err != nil {
				return fmt.Errorf("%w: keyspace %q key %q: %w", ErrCorrupt, name, k, err)
			}
			if !e.Live() {
				continue
			}
			if !fn(e) {
				return nil
			}
		}
		return nil
	})
}

// Tombstones calls fn with the key and stamp of each register tombstone of a keyspace, in key
// order, until fn returns false: what a tombstone collector needs to choose its watermark.
func (s *Store) Tombstones(name string, fn func(key []byte, stamp hlc.Timestamp) bool) error {
	if _, err := s.keyspace(name); err != nil {
		return err
	}
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(dataBucket(name)).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) == 0 || Kind(v[0]) != KindRegister {
				continue
			}
			var r crdt.Register
			if err := r.Unmarshal(v); err != nil {
				return fmt.Errorf("%w: keyspace %q key %q: %w", ErrCorrupt, name, k, err)
			}
			if r.Deleted && !fn(bytes.Clone(k), r.Stamp) {
				return nil
			}
		}
		return nil
	})
}

// States returns the encoded states of keys (nil for a key the store does not hold), tombstones
// included: what anti-entropy ships.
func (s *Store) States(name string, keys [][]byte) ([][]byte, error) {
	if _, err := s.keyspace(name); err != nil {
		return nil, err
	}
	out := make([][]byte, len(keys))
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(dataBucket(name))
		for i, k := range keys {
			if v := b.Get(k); v != nil {
				out[i] = bytes.Clone(v)
			}
		}
		return nil
	})
	return out, err
}

// ctxErr wraps a context error with what was waiting.
func ctxErr(ctx context.Context, what string) error {
	return fmt.Errorf("avail: %s: %w", what, context.Cause(ctx))
}
