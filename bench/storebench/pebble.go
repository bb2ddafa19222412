package storebench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// pebbleEngine keeps the tables in one Pebble key space, each key prefixed by its table byte.
type pebbleEngine struct {
	dir     string
	db      *pebble.DB
	cfg     Config
	rev     int64
	applied uint64
	// Scratch for Apply, which is never concurrent with itself: a Pebble batch copies what it is
	// given, so unlike bbolt the buffers can be reused.
	kbuf, vbuf []byte
}

var _ Engine = (*pebbleEngine)(nil)

// pebbleLogger sends Pebble's informational chatter (flushes, compactions) to slog at debug level.
type pebbleLogger struct{}

func (pebbleLogger) Infof(format string, args ...any) {
	slog.Debug("pebble: " + fmt.Sprintf(format, args...))
}
func (pebbleLogger) Errorf(format string, args ...any) {
	slog.Error("pebble: " + fmt.Sprintf(format, args...))
}

// Fatalf must not return: Pebble calls it on invariant violations it cannot continue from.
func (pebbleLogger) Fatalf(format string, args ...any) {
	slog.Error("pebble: fatal: " + fmt.Sprintf(format, args...))
	os.Exit(1)
}

func tkey(dst []byte, t Table, k []byte) []byte { return append(append(dst, byte(t)), k...) }

// OpenPebble opens the Pebble engine in dir with default tuning except the block cache size and,
// unless cfg.PebbleWAL, without Pebble's WAL.
func OpenPebble(dir string, cfg Config) (Engine, error) {
	cache := cfg.PebbleCacheBytes
	if cache == 0 {
		cache = 64 << 20
	}
	opts := &pebble.Options{
		CacheSize:  cache,
		DisableWAL: !cfg.PebbleWAL,
		Logger:     pebbleLogger{},
	}
	// Bloom filters on every level (later levels inherit L0's policy) let a point lookup skip
	// the sstables that lack the key; Pebble's default has none.
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("storebench: pebble: open %s: %w", dir, err)
	}
	e := &pebbleEngine{dir: dir, db: db, cfg: cfg, rev: 1}
	if v, ok, err := e.getCopy(tkey(nil, TableMeta, metaRev)); err != nil {
		db.Close()
		return nil, err
	} else if ok {
		e.rev = int64(getU64(v))
	}
	if v, ok, err := e.getCopy(tkey(nil, TableMeta, metaApplied)); err != nil {
		db.Close()
		return nil, err
	} else if ok {
		e.applied = getU64(v)
	}
	return e, nil
}

func (e *pebbleEngine) getCopy(k []byte) ([]byte, bool, error) {
	v, closer, err := e.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("storebench: pebble: get %x: %w", k, err)
	}
	defer closer.Close()
	return bytes.Clone(v), true, nil
}

func (e *pebbleEngine) Dir() string     { return e.dir }
func (e *pebbleEngine) Rev() int64      { return e.rev }
func (e *pebbleEngine) Applied() uint64 { return e.applied }

func (e *pebbleEngine) Apply(index uint64, puts []Put) error {
	// An indexed batch reads its own writes, as a bbolt read-write transaction does: a key put
	// twice in one batch sees its first version as the previous one.
	b := e.db.NewIndexedBatch()
	defer b.Close()
	rev := e.rev
	for _, p := range puts {
		rev++
		e.kbuf = tkey(e.kbuf[:0], TableLive, p.Key)
		var prev []byte
		v, closer, err := b.Get(e.kbuf)
		switch {
		case err == nil:
			prev = v
		case !errors.Is(err, pebble.ErrNotFound):
			return fmt.Errorf("storebench: pebble: apply index %d: read previous version of %x: %w", index, p.Key, err)
		}
		rec, err := nextVersion(prev, rev)
		if closer != nil {
			closer.Close()
		}
		if err != nil {
			return fmt.Errorf("storebench: pebble: apply index %d: previous version of %x: %w", index, p.Key, err)
		}
		e.vbuf = encodeLive(e.vbuf[:0], rev, 0, rec)
		if err := b.Set(e.kbuf, e.vbuf, nil); err != nil {
			return fmt.Errorf("storebench: pebble: apply index %d: index newest version of %x: %w", index, p.Key, err)
		}
		e.kbuf = kvKey(append(e.kbuf[:0], byte(TableKV)), p.Key, rev, 0)
		e.vbuf = encodeVersion(e.vbuf[:0], rec, p.Value)
		if err := b.Set(e.kbuf, e.vbuf, nil); err != nil {
			return fmt.Errorf("storebench: pebble: apply index %d: write version of %x: %w", index, p.Key, err)
		}
		e.kbuf = revKey(append(e.kbuf[:0], byte(TableRev)), rev, 0)
		e.vbuf = append(append(e.vbuf[:0], 0), p.Key...)
		if err := b.Set(e.kbuf, e.vbuf, nil); err != nil {
			return fmt.Errorf("storebench: pebble: apply index %d: write revision %d: %w", index, rev, err)
		}
	}
	if err := b.Set(tkey(e.kbuf[:0], TableMeta, metaRev), putU64(e.vbuf[:0], uint64(rev)), nil); err != nil {
		return fmt.Errorf("storebench: pebble: apply index %d: write revision: %w", index, err)
	}
	if err := b.Set(tkey(e.kbuf[:0], TableMeta, metaApplied), putU64(e.vbuf[:0], index), nil); err != nil {
		return fmt.Errorf("storebench: pebble: apply index %d: write applied index: %w", index, err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("storebench: pebble: commit batch up to index %d: %w", index, err)
	}
	e.rev, e.applied = rev, index
	return nil
}

// tableBounds returns the iterator bounds of table t.
func tableBounds(t Table) *pebble.IterOptions {
	return &pebble.IterOptions{LowerBound: []byte{byte(t)}, UpperBound: []byte{byte(t) + 1}}
}

func (e *pebbleEngine) Get(key, dst []byte) ([]byte, bool, error) {
	// Two point lookups instead of one iterator: db.Get consults the bloom filters, and a point
	// iterator costs more to build than both lookups. The pair is still a correct read of the
	// newest value at the moment of the first lookup, because a version record is immutable:
	// if the version it names is found, it holds that value. It can only be missing if history
	// compaction removed it after a newer version was written; then the read starts over.
	var kbuf [64]byte
	for range 8 {
		l, closer, err := e.db.Get(tkey(kbuf[:0], TableLive, key))
		if errors.Is(err, pebble.ErrNotFound) {
			return dst, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("storebench: pebble: get %x: %w", key, err)
		}
		_, rev, sub, err := decodeLive(l)
		closer.Close()
		if err != nil {
			return nil, false, fmt.Errorf("storebench: pebble: get %x: %w", key, err)
		}
		v, closer, err := e.db.Get(kvKey(append(kbuf[:0], byte(TableKV)), key, rev, sub))
		if errors.Is(err, pebble.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("storebench: pebble: get %x version %d: %w", key, rev, err)
		}
		v, err = versionValue(v)
		if err == nil {
			dst = append(dst, v...)
		}
		closer.Close()
		if err != nil {
			return nil, false, fmt.Errorf("storebench: pebble: get %x version %d: %w", key, rev, err)
		}
		return dst, true, nil
	}
	return nil, false, fmt.Errorf("storebench: pebble: get %x: %w: the live entry keeps naming a missing version", key, errCorrupt)
}

func (e *pebbleEngine) Range(start []byte, limit int) (keys, n int, err error) {
	live, err := e.db.NewIter(tableBounds(TableLive))
	if err != nil {
		return 0, 0, fmt.Errorf("storebench: pebble: range from %x: %w", start, err)
	}
	defer live.Close()
	// The clone reads the same state as live.
	kv, err := live.Clone(pebble.CloneOptions{IterOptions: tableBounds(TableKV)})
	if err != nil {
		return 0, 0, fmt.Errorf("storebench: pebble: range from %x: %w", start, err)
	}
	defer kv.Close()
	var kbuf []byte
	for ok := live.SeekGE(tkey(nil, TableLive, start)); ok && keys < limit; ok = live.Next() {
		k := live.Key()[1:]
		_, rev, sub, err := decodeLive(live.Value())
		if err != nil {
			return 0, 0, fmt.Errorf("storebench: pebble: range from %x: %w", start, err)
		}
		kbuf = kvKey(append(kbuf[:0], byte(TableKV)), k, rev, sub)
		if !kv.SeekGE(kbuf) || !bytes.Equal(kv.Key(), kbuf) {
			return 0, 0, fmt.Errorf("storebench: pebble: range from %x: %w: missing version %d of %x", start, errCorrupt, rev, k)
		}
		v, err := versionValue(kv.Value())
		if err != nil {
			return 0, 0, fmt.Errorf("storebench: pebble: range from %x: %w", start, err)
		}
		keys, n = keys+1, n+len(v)
	}
	if err := live.Error(); err != nil {
		return 0, 0, fmt.Errorf("storebench: pebble: range from %x: %w", start, err)
	}
	return keys, n, nil
}

// The Pebble snapshot stream: magic, then (uvarint len(key), key, uvarint len(value), value) for
// every key in order, a zero length as terminator (keys are never empty), and the CRC-32C of
// everything before it, big endian.
var pebbleSnapMagic = []byte("csbpeb01")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (e *pebbleEngine) WriteSnapshot(w io.Writer) (int64, error) {
	it, err := e.db.NewIter(nil) // an iterator is a consistent view for its whole life
	if err != nil {
		return 0, fmt.Errorf("storebench: pebble: write snapshot: %w", err)
	}
	defer it.Close()
	crc := crc32.New(castagnoli)
	cw := &countWriter{w: io.MultiWriter(w, crc)}
	bw := bufio.NewWriterSize(cw, 1<<20)
	var hdr []byte
	if _, err := bw.Write(pebbleSnapMagic); err != nil {
		return cw.n, fmt.Errorf("storebench: pebble: write snapshot: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return cw.n, fmt.Errorf("storebench: pebble: write snapshot: value of %x: %w", it.Key(), err)
		}
		// A bufio.Writer's error is sticky: checking the last write of each record suffices.
		hdr = binary.AppendUvarint(hdr[:0], uint64(len(it.Key())))
		bw.Write(hdr)
		bw.Write(it.Key())
		hdr = binary.AppendUvarint(hdr[:0], uint64(len(v)))
		bw.Write(hdr)
		if _, err := bw.Write(v); err != nil {
			return cw.n, fmt.Errorf("storebench: pebble: write snapshot: %w", err)
		}
	}
	if err := it.Error(); err != nil {
		return cw.n, fmt.Errorf("storebench: pebble: write snapshot: iterate: %w", err)
	}
	if err := bw.WriteByte(0); err != nil {
		return cw.n, fmt.Errorf("storebench: pebble: write snapshot: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return cw.n, fmt.Errorf("storebench: pebble: write snapshot: %w", err)
	}
	n, err := w.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32()))
	if err != nil {
		return cw.n + int64(n), fmt.Errorf("storebench: pebble: write snapshot: checksum: %w", err)
	}
	return cw.n + int64(n), nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// restoreTableBytes bounds each sstable a restore writes before ingesting them.
const restoreTableBytes = 64 << 20

// RestorePebble opens an empty engine in dir, turns the sorted snapshot stream into sstables
// and ingests them once the stream's checksum has been verified: a restore writes each byte once,
// with no memtable, flush or compaction in the way.
func RestorePebble(dir string, cfg Config, r io.Reader) (Engine, error) {
	eng, err := OpenPebble(dir, cfg)
	if err != nil {
		return nil, err
	}
	e := eng.(*pebbleEngine)
	paths, err := e.writeTables(r)
	if err == nil && len(paths) > 0 {
		err = e.db.Ingest(context.Background(), paths)
	}
	for _, p := range paths {
		os.Remove(p) // ingested tables were linked or moved into the store
	}
	if err != nil {
		e.db.Close()
		return nil, fmt.Errorf("storebench: pebble: restore: %w", err)
	}
	e.db.Close()
	return OpenPebble(dir, cfg) // reload revision and applied index
}

func (e *pebbleEngine) writeTables(r io.Reader) (paths []string, err error) {
	br := &crcReader{r: bufio.NewReaderSize(r, 1<<20), crc: crc32.New(castagnoli)}
	magic := make([]byte, len(pebbleSnapMagic))
	if _, err := io.ReadFull(br, magic); err != nil || !bytes.Equal(magic, pebbleSnapMagic) {
		return nil, fmt.Errorf("not a snapshot stream (magic %q, %v)", magic, err)
	}
	format := e.db.FormatMajorVersion().MaxTableFormat()
	var (
		w       *sstable.Writer
		written int64
		k, v    []byte
	)
	defer func() {
		if w != nil {
			w.Close()
		}
		if err != nil {
			for _, p := range paths {
				os.Remove(p)
			}
		}
	}()
	for {
		kl, err := binary.ReadUvarint(br)
		if err != nil {
			return paths, fmt.Errorf("read key length: %w", err)
		}
		if kl == 0 {
			break
		}
		if k, err = readN(br, k, kl); err != nil {
			return paths, fmt.Errorf("read key: %w", err)
		}
		vl, err := binary.ReadUvarint(br)
		if err != nil {
			return paths, fmt.Errorf("read value length: %w", err)
		}
		if v, err = readN(br, v, vl); err != nil {
			return paths, fmt.Errorf("read value: %w", err)
		}
		if w == nil {
			p := filepath.Join(e.dir, fmt.Sprintf("restore-%06d.sst", len(paths)))
			f, err := vfs.Default.Create(p, vfs.WriteCategoryUnspecified)
			if err != nil {
				return paths, fmt.Errorf("create table: %w", err)
			}
			paths = append(paths, p)
			w = sstable.NewWriter(objstorageprovider.NewFileWritable(f), sstable.WriterOptions{TableFormat: format})
			written = 0
		}
		if err := w.Set(k, v); err != nil {
			return paths, fmt.Errorf("write key %x to table: %w", k, err)
		}
		written += int64(len(k) + len(v))
		if written >= restoreTableBytes {
			err := w.Close() // flushes and fsyncs the file
			w = nil
			if err != nil {
				return paths, fmt.Errorf("finish table: %w", err)
			}
		}
	}
	if w != nil {
		err := w.Close()
		w = nil
		if err != nil {
			return paths, fmt.Errorf("finish table: %w", err)
		}
	}
	want := br.crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(br.r, sum[:]); err != nil {
		return paths, fmt.Errorf("read checksum: %w", err)
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return paths, fmt.Errorf("%w: snapshot checksum %08x, computed %08x", errCorrupt, got, want)
	}
	return paths, nil
}

// crcReader checksums exactly the bytes consumed from r (a TeeReader under the buffer would also
// hash the read-ahead).
type crcReader struct {
	r   *bufio.Reader
	crc hash.Hash32
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.crc.Write(p[:n])
	return n, err
}

func (c *crcReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.crc.Write([]byte{b})
	}
	return b, err
}

func readN(r io.Reader, buf []byte, n uint64) ([]byte, error) {
	if n > 1<<30 {
		return buf, fmt.Errorf("%w: length %d", errCorrupt, n)
	}
	if uint64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err := io.ReadFull(r, buf)
	return buf, err
}

func (e *pebbleEngine) CompactHistory(budget int) (int, error) {
	it, err := e.db.NewIter(tableBounds(TableKV))
	if err != nil {
		return 0, fmt.Errorf("storebench: pebble: compact history: %w", err)
	}
	defer it.Close()
	// The iterator keeps its view while the batches commit: it never sees its own deletions.
	var (
		lastEsc []byte
		removed int
		rbuf    []byte
	)
	b := e.db.NewBatch()
	pending := 0
	commit := func() error {
		if err := b.Commit(pebble.NoSync); err != nil {
			return fmt.Errorf("storebench: pebble: compact history: commit: %w", err)
		}
		b.Close()
		b, pending = e.db.NewBatch(), 0
		return nil
	}
	defer func() { b.Close() }()
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		esc, rev, sub, err := splitKVKey(k[1:])
		if err != nil {
			return removed, fmt.Errorf("storebench: pebble: compact history: %w", err)
		}
		if !bytes.Equal(esc, lastEsc) {
			lastEsc = append(lastEsc[:0], esc...)
			continue
		}
		if err := b.Delete(k, nil); err != nil {
			return removed, fmt.Errorf("storebench: pebble: compact history: delete version %d: %w", rev, err)
		}
		rbuf = revKey(append(rbuf[:0], byte(TableRev)), rev, sub)
		if err := b.Delete(rbuf, nil); err != nil {
			return removed, fmt.Errorf("storebench: pebble: compact history: delete revision %d: %w", rev, err)
		}
		removed++
		if pending++; pending >= budget {
			if err := commit(); err != nil {
				return removed, err
			}
		}
	}
	if err := it.Error(); err != nil {
		return removed, fmt.Errorf("storebench: pebble: compact history: iterate: %w", err)
	}
	if pending > 0 {
		if err := commit(); err != nil {
			return removed, err
		}
	}
	return removed, nil
}

// Reclaim flushes the memtables and compacts the whole key space, so that the deleted versions
// and their tombstones leave the sstables.
func (e *pebbleEngine) Reclaim() error {
	if err := e.db.Flush(); err != nil {
		return fmt.Errorf("storebench: pebble: reclaim: flush: %w", err)
	}
	if err := e.db.Compact(context.Background(), []byte{0}, []byte{0xFF}, true); err != nil {
		return fmt.Errorf("storebench: pebble: reclaim: compact: %w", err)
	}
	return nil
}

// Settle polls Pebble's metrics until no flush or compaction has been running and no obsolete
// table has been waiting for deletion for a few polls in a row (Pebble starts the next compaction
// as soon as one ends, so a quiet gap means it chose to stop; it deletes obsolete files in the
// background). Polling is the only way: Pebble has no "wait for idle" call.
func (e *pebbleEngine) Settle() error {
	const quietPolls, poll, limit = 3, 5 * time.Millisecond, 10 * time.Minute
	deadline := time.Now().Add(limit)
	for quiet := 0; quiet < quietPolls; {
		m := e.db.Metrics()
		if m.Compact.NumInProgress == 0 && m.Flush.NumInProgress == 0 && m.Table.ObsoleteCount == 0 {
			quiet++
		} else {
			quiet = 0
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("storebench: pebble: background work still running after %v", limit)
		}
		time.Sleep(poll)
	}
	return nil
}

// Flush persists the memtables (with the WAL disabled, the only way Pebble's state becomes
// durable).
func (e *pebbleEngine) Flush() error {
	if err := e.db.Flush(); err != nil {
		return fmt.Errorf("storebench: pebble: flush: %w", err)
	}
	return nil
}

func (e *pebbleEngine) Dump(fn func(t Table, k, v []byte) error) error {
	for _, t := range Tables {
		it, err := e.db.NewIter(tableBounds(t))
		if err != nil {
			return fmt.Errorf("storebench: pebble: dump: %w", err)
		}
		for ok := it.First(); ok; ok = it.Next() {
			if err := fn(t, it.Key()[1:], it.Value()); err != nil {
				it.Close()
				return err
			}
		}
		if err := it.Close(); err != nil {
			return fmt.Errorf("storebench: pebble: dump: %w", err)
		}
	}
	return nil
}

func (e *pebbleEngine) Close() error {
	if err := e.db.Close(); err != nil {
		return fmt.Errorf("storebench: pebble: close: %w", err)
	}
	return nil
}
