package mvcc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caucus/caucus/internal/logpb"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"
)

// Options configure a Store.
type Options struct {
	// NoSync skips fsync on commit (bbolt NoSync). Safe only because the Raft WAL is the source
	// of truth: after a crash the node replays committed entries above the persisted applied
	// index. Call Sync before compacting the WAL past AppliedIndex.
	NoSync bool
	// Limits; zero fields take their defaults. Must be identical on every member.
	Limits Limits
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// InitialMmapSize is passed to bbolt; a large value avoids remapping (which waits for
	// readers) as the file grows. 0 lets bbolt choose.
	InitialMmapSize int
}

// Member is a cluster member as recorded by applied configuration changes.
type Member struct {
	ID         uint64
	Name       string
	PeerURLs   []string
	ClientURLs []string
	IsLearner  bool
	// LogVersion is the newest log format version the member published that it applies (0: it
	// published none).
	LogVersion uint32
	// GossipAddr is the host:port of the member's gossip as it published it ("" if none).
	GossipAddr string
}

// Store is the multi-version key-value state machine. Its methods are safe for concurrent use;
// at most one Batch may be open at a time.
type Store struct {
	path string
	opts Options
	log  *slog.Logger
	// limits are the limits of the committed state (settings.go); hasSettings says whether
	// they are replicated settings rather than Options.Limits.
	limits      atomic.Pointer[Limits]
	hasSettings atomic.Bool

	// mu guards db against replacement: readers and a Batch hold it shared; Restore, Defragment
	// and Close exclusively.
	mu sync.RWMutex
	db *bolt.DB
	// idx is the key index of db's history (index.go); replaced with db, under mu.
	idx *index

	// compactBudget bounds the physical compaction work of one batch (defaultCompactBudget;
	// tests lower it).
	compactBudget int

	// Committed state, published after each commit for cheap reads.
	rev        atomic.Int64
	compactRev atomic.Int64
	applied    atomic.Uint64
	revs       revNotifier
	// cons wakes fetches waiting for a consumer's state to change (consumer.go).
	cons revNotifier
	// prompt says whether readers wait for the next commit (notify.go).
	prompt promptReaders
	// membersGen counts commits and restores that changed the membership table.
	membersGen atomic.Uint64
}

// ErrClosed is returned by operations on a closed Store.
var ErrClosed = errors.New("mvcc: store is closed")

// ErrCorrupt marks a store file that cannot be opened because its structure is damaged: bbolt
// found no valid meta page, or hit a page that is not what its parent says while it walked the
// file to rebuild its freelist (bbolt panics there; Open turns that into this error). bbolt
// keeps no checksums of data pages, so damage inside a value is not detected. The file is
// derived state: internal/node rebuilds it from the newest snapshot and the log.
var ErrCorrupt = errors.New("mvcc: store file is corrupt")

// Open opens (creating if needed) the store at path.
func Open(path string, opts Options) (*Store, error) {
	opts.Limits = opts.Limits.withDefaults()
	if err := opts.Limits.check(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Store{path: path, opts: opts, log: opts.Logger.With("component", "mvcc"),
		compactBudget: defaultCompactBudget}
	db, idx, err := s.openDB(true)
	if err != nil {
		return nil, err
	}
	s.db, s.idx = db, idx
	return s, nil
}

// updateRecovering runs fn in a write transaction, turning a bbolt panic (or a memory fault)
// over a damaged page into ErrCorrupt.
func updateRecovering(db *bolt.DB, fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(db.Path(), &err)
	return db.Update(fn)
}

// recoverCorrupt, deferred, turns a bbolt assertion (a panic) or a memory fault on the calling
// goroutine (with SetPanicOnFault) into ErrCorrupt in *err.
func recoverCorrupt(path string, err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("mvcc: open %s: %w: bbolt: %v", path, ErrCorrupt, r)
	}
}

// openError classifies an error of bolt.Open: bbolt's verdicts on the file's meta pages are
// ErrCorrupt, anything else (permissions, a lock timeout) is returned as it is.
func openError(path string, err error) error {
	if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch) {
		return fmt.Errorf("mvcc: open %s: %w: %w", path, ErrCorrupt, err)
	}
	return fmt.Errorf("mvcc: open %s: %w", path, err)
}

// openBolt opens the bbolt file at path, reporting structural damage as ErrCorrupt instead of
// bbolt's panic or a fault. A file shorter than its meta page says is refused before bbolt maps
// it: the freelist walk of a writable open would touch the missing pages, a SIGBUS. Any other
// assertion or fault during the open becomes ErrCorrupt too; such an attempt leaks its file
// handle and mapping, which costs one descriptor, once, since the caller moves the file aside.
func openBolt(path string, o *bolt.Options) (db *bolt.DB, err error) {
	if err := checkFileSize(path); err != nil {
		return nil, err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(path, &err)
	db, err = bolt.Open(path, 0o600, o)
	if err != nil {
		return nil, openError(path, err)
	}
	return db, nil
}

// checkFileSize refuses (ErrCorrupt) an existing file shorter than its meta page's high-water
// mark. A read-only open reads the meta pages only.
func checkFileSize(path string) (err error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) || (err == nil && fi.Size() == 0) {
		return nil // bbolt creates it
	}
	if err != nil {
		return fmt.Errorf("mvcc: open %s: %w", path, err)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(path, &err)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 10 * time.Second, ReadOnly: true})
	if err != nil {
		return openError(path, err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		if tx.Size() > fi.Size() {
			return fmt.Errorf("mvcc: open %s: %w: the file is %d bytes, its meta page says %d", path, ErrCorrupt, fi.Size(), tx.Size())
		}
		return nil
	})
}

// openDB opens the store file, creating or migrating it as needed, and with withIndex builds
// its key index.
func (s *Store) openDB(withIndex bool) (*bolt.DB, *index, error) {
	db, err := openBolt(s.path, &bolt.Options{
		Timeout: 10 * time.Second,
		NoSync:  s.opts.NoSync,
		// Growing the file otherwise truncates and fsyncs it, flushing every dirty page of an
		// unsynced store on the apply path (about 3% of a follower's loop time at 64 clients
		// while the file grows). Without fsync on commit that buys nothing: pages are written
		// before they are read, a process crash keeps the page cache, and after a power loss
		// the node rebuilds the store (see NoSync).
		NoGrowSync:      s.opts.NoSync,
		NoFreelistSync:  true, // the freelist is rebuilt on open; fewer pages written per commit
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: s.opts.InitialMmapSize,
	})
	if err != nil {
		return nil, nil, err
	}
	var idx *index
	err = updateRecovering(db, func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return fmt.Errorf("create bucket %s: %w", bucketMeta, err)
		}
		schema := u64(meta.Get(metaSchema))
		if err := checkSchema(schema); err != nil {
			return err
		}
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		switch schema {
		case 0:
			// A new store: revision 1 is the empty store, like etcd, so the first write is 2
			// and a mod_revision of 0 always means "absent".
			for k, v := range map[string]uint64{string(metaSchema): schemaVersion, string(metaRev): 1} {
				if err := meta.Put([]byte(k), putU64(v)); err != nil {
					return fmt.Errorf("init meta: %w", err)
				}
			}
		case 2, 3:
			start := time.Now()
			if err := migrateToHistory(tx, schema); err != nil {
				return err
			}
			s.log.Info("migrated store", "from_schema", schema, "to_schema", schemaVersion, "took", time.Since(start))
		}
		st := loadState(tx)
		s.rev.Store(st.rev)
		s.compactRev.Store(st.compactRev)
		s.applied.Store(st.applied)
		if withIndex {
			if idx, err = buildIndex(tx, st.compactRev); err != nil {
				return err
			}
		}
		return s.publishLimits(tx)
	})
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("mvcc: initialize %s: %w", s.path, err)
	}
	return db, idx, nil
}

// checkSchema refuses a store file this release cannot read: 0 is a new file, 2 and 3 are
// migrated on open.
func checkSchema(v uint64) error {
	switch {
	case v == 0 || v == 2 || v == 3 || v == schemaVersion:
		return nil
	case v > schemaVersion:
		return fmt.Errorf("state machine schema version %d is newer than this release's %d: the data directory "+
			"was written by a newer release of caucus; run that release (or a newer one) on it", v, schemaVersion)
	}
	return fmt.Errorf("store schema version %d is too old for this release (which reads 2 to %d)", v, schemaVersion)
}

// buildIndex reads the history bucket, in revision order, into a new key index. Physical
// compaction may lag: the versions it has yet to remove are indexed too, as the file holds
// them, and removed from both when it gets to them.
func buildIndex(tx *bolt.Tx, compactRev int64) (*index, error) {
	idx := newIndex()
	c := tx.Bucket(bucketHistory).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		rev, sub, ok := splitHistKey(k)
		if !ok || sub > math.MaxInt32 {
			return nil, errorCorrupt(fmt.Sprintf("history key %x", k))
		}
		rec, err := decodeRecord(v)
		if err != nil {
			return nil, err
		}
		r := revision{main: rev, sub: int32(sub), tomb: rec.tombstone}
		ki := idx.get(rec.key)
		if ki == nil {
			ki = &keyIndex{key: string(rec.key), last: r}
			idx.tree.ReplaceOrInsert(ki)
		} else {
			ki.push(r)
		}
		ki.create, ki.ver, ki.lease = rec.create, rec.version, rec.lease
		if rec.tombstone {
			ki.create, ki.ver, ki.lease = 0, 0, 0
		}
	}
	idx.compacted = compactRev
	return idx, nil
}

// state is the scalar part of the store's state, kept in the meta bucket.
type state struct {
	rev        int64
	compactRev int64
	applied    uint64
	clock      int64 // the largest command time applied; session times are measured with it
	sessions   int64 // number of sessions
	leases     int64 // number of leases
	topics     int64 // entries of the topics bucket
	idemKeys   int64 // idempotency keys remembered
	// evFloor is the oldest revision whose events are retained: min(compactRev+1, the ack
	// floor of every consumer that holds events); it only grows (consumer_retention.go).
	evFloor int64
	// evBytes and evCount count the bytes and events ever published (consumer retention
	// measures held bytes with them).
	evBytes, evCount int64
	consumers        int64 // entries of the consumer bucket
	// compactNextRev and compactNextSub are where physical compaction resumes; it has caught up
	// when compactNextRev > compactRev.
	compactNextRev, compactNextSub int64
}

func loadState(tx *bolt.Tx) state {
	m := tx.Bucket(bucketMeta)
	st := state{
		rev:        int64(u64(m.Get(metaRev))),
		compactRev: int64(u64(m.Get(metaCompactRev))),
		applied:    u64(m.Get(metaApplied)),
		clock:      int64(u64(m.Get(metaClock))),
		sessions:   int64(u64(m.Get(metaSessions))),
		leases:     int64(u64(m.Get(metaLeases))),
		topics:     int64(u64(m.Get(metaTopics))),
		idemKeys:   int64(u64(m.Get(metaIdemKeys))),
		evFloor:    int64(u64(m.Get(metaEventsFloor))),
		evBytes:    int64(u64(m.Get(metaEventBytes))),
		evCount:    int64(u64(m.Get(metaEventCount))),
		consumers:  int64(u64(m.Get(metaConsumers))),
	}
	if st.evFloor == 0 {
		// A store written before consumers: events went with the key history.
		st.evFloor = st.compactRev + 1
	}
	if v := m.Get(metaCompactNext); len(v) == 16 {
		st.compactNextRev, st.compactNextSub = int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:]))
	}
	return st
}

func (st state) save(tx *bolt.Tx) error {
	m := tx.Bucket(bucketMeta)
	for _, kv := range []struct {
		k []byte
		v uint64
	}{{metaRev, uint64(st.rev)}, {metaCompactRev, uint64(st.compactRev)}, {metaApplied, st.applied},
		{metaClock, uint64(st.clock)}, {metaSessions, uint64(st.sessions)}, {metaLeases, uint64(st.leases)},
		{metaTopics, uint64(st.topics)}, {metaIdemKeys, uint64(st.idemKeys)}, {metaEventsFloor, uint64(st.evFloor)}, {metaEventBytes, uint64(st.evBytes)},
		{metaEventCount, uint64(st.evCount)}, {metaConsumers, uint64(st.consumers)}} {
		if err := m.Put(kv.k, putU64(kv.v)); err != nil {
			return fmt.Errorf("mvcc: save meta %s: %w", kv.k, err)
		}
	}
	if err := m.Put(metaCompactNext, histKey(st.compactNextRev, st.compactNextSub)); err != nil {
		return fmt.Errorf("mvcc: save meta %s: %w", metaCompactNext, err)
	}
	return nil
}

// Close closes the store. Open batches must be finished first.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	err := s.db.Close()
	s.db = nil
	if err != nil {
		return fmt.Errorf("mvcc: close %s: %w", s.path, err)
	}
	return nil
}

// view runs fn in a read transaction.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return ErrClosed
	}
	return s.db.View(fn)
}

// Limits returns the store's effective limits.
func (s *Store) Limits() Limits { return *s.limits.Load() }

// Rev returns the current (committed) revision.
func (s *Store) Rev() int64 { return s.rev.Load() }

// CompactRev returns the revision of the last compaction (0 if none).
func (s *Store) CompactRev() int64 { return s.compactRev.Load() }

// AppliedIndex returns the Raft index of the last committed applied entry.
func (s *Store) AppliedIndex() uint64 { return s.applied.Load() }

// Range serves a read from the committed state. The header carries the revision of the state
// read, which is consistent with the result.
func (s *Store) Range(req *logpb.RangeRequest) (*logpb.RangeResponse, error) {
	if err := s.Limits().ValidateRange(req); err != nil {
		return nil, err
	}
	for {
		var resp *logpb.RangeResponse
		err := s.view(func(tx *bolt.Tx) error {
			meta := tx.Bucket(bucketMeta)
			rev, compactRev := int64(u64(meta.Get(metaRev))), int64(u64(meta.Get(metaCompactRev)))
			r := reader{hist: tx.Bucket(bucketHistory), idx: s.idx, locked: true, floor: compactRev}
			var err error
			resp, err = r.rangeAt(req, rev, compactRev, s.Limits().MaxRangeResults)
			return err
		})
		if !errors.Is(err, errIndexAhead) { // else a compaction overtook the read: start over
			return resp, err
		}
	}
}

// Size returns the size of the database file in bytes, as the file system counts it (what
// Defragment reports before and after, and what a full disk cares about); 0 if it cannot be
// read. The file only grows: space freed by compaction is reused inside it until a defrag.
func (s *Store) Size() int64 {
	fi, err := os.Stat(s.path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Sync forces the data of committed batches to disk; with Options.NoSync it must be called
// before the WAL is compacted past AppliedIndex.
func (s *Store) Sync() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return ErrClosed
	}
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("mvcc: sync %s: %w", s.path, err)
	}
	return nil
}

// MembersGen changes whenever the membership table may have changed (a commit that wrote it, a
// restore): a cache of Members keyed by it is current while it is unchanged.
func (s *Store) MembersGen() uint64 { return s.membersGen.Load() }

// Members returns the members recorded by applied configuration changes, ordered by id.
func (s *Store) Members() []Member {
	var out []Member
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMember).ForEach(func(_, v []byte) error {
			var m logpb.Member
			if err := proto.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("mvcc: decode member: %w", err)
			}
			out = append(out, Member{ID: m.Id, Name: m.Name, PeerURLs: m.PeerUrls, ClientURLs: m.ClientUrls, IsLearner: m.IsLearner, LogVersion: m.LogVersion, GossipAddr: m.GossipAddr})
			return nil
		})
	})
	if err != nil {
		s.log.Error("read members", "err", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// WriteSnapshot writes a consistent copy of the database to w and returns the applied index it
// contains.
func (s *Store) WriteSnapshot(w io.Writer) (uint64, error) {
	var applied uint64
	err := s.view(func(tx *bolt.Tx) error {
		applied = loadState(tx).applied
		if _, err := tx.WriteTo(w); err != nil {
			return fmt.Errorf("mvcc: write snapshot at applied index %d: %w", applied, err)
		}
		return nil
	})
	return applied, err
}

// Restore replaces the whole state by a snapshot written by WriteSnapshot: the data is written to
// a temporary file, synced, checked, and renamed over the database, which is reopened. No Batch
// may be open. On error the previous state is kept unless the rename already happened.
func (s *Store) Restore(r io.Reader) error {
	tmp := s.path + ".restore.tmp"
	if err := writeSynced(tmp, r); err != nil {
		os.Remove(tmp)
		return err
	}
	// Check that the snapshot is a store before replacing anything.
	if err := checkSnapshotFile(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		os.Remove(tmp)
		return ErrClosed
	}
	if err := s.db.Close(); err != nil {
		s.db = nil
		return fmt.Errorf("mvcc: restore: close current database: %w", err)
	}
	s.db = nil
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("mvcc: restore: rename snapshot over %s: %w", s.path, err)
	}
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		return fmt.Errorf("mvcc: restore: %w", err)
	}
	db, idx, err := s.openDB(true)
	if err != nil {
		return fmt.Errorf("mvcc: restore: reopen: %w", err)
	}
	s.db, s.idx = db, idx
	s.membersGen.Add(1)
	s.revs.notify()
	s.log.Info("restored snapshot", "applied_index", s.applied.Load(), "revision", s.rev.Load())
	return nil
}

func writeSynced(path string, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("mvcc: restore: create %s: %w", path, err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("mvcc: restore: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("mvcc: restore: fsync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("mvcc: restore: close %s: %w", path, err)
	}
	return nil
}

func checkSnapshotFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("mvcc: restore: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("mvcc: restore: snapshot is not a database: %w", err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		// A truncated file can have a valid meta page that points past its end; bbolt would
		// then fault (SIGBUS) on the first read of a missing page instead of returning an error.
		if tx.Size() > fi.Size() {
			return fmt.Errorf("mvcc: restore: snapshot is truncated: %d bytes, its meta page says %d", fi.Size(), tx.Size())
		}
		m := tx.Bucket(bucketMeta)
		if m == nil {
			return fmt.Errorf("mvcc: restore: snapshot has no meta bucket")
		}
		v := u64(m.Get(metaSchema))
		if v == 0 {
			return fmt.Errorf("mvcc: restore: snapshot has no schema version")
		}
		if err := checkSchema(v); err != nil { // 2 and 3 migrate on open
			return fmt.Errorf("mvcc: restore: snapshot: %w", err)
		}
		return nil
	})
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

func errorCorrupt(what string) error { return fmt.Errorf("mvcc: corrupt database: %s", what) }

// ReadAppliedIndex reads the applied index recorded in the store file at path without opening
// it for writing (0 if the file does not exist). It lets a caller decide whether a store exists
// before creating anything beside it.
func ReadAppliedIndex(path string) (applied uint64, err error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(path, &err)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return 0, openError(path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if m := tx.Bucket(bucketMeta); m != nil {
			applied = u64(m.Get(metaApplied))
		}
		return nil
	})
	return applied, err
}
