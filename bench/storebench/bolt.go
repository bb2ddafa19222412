package storebench

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltFile is the database file inside the engine's directory.
const boltFile = "state.db"

// boltEngine keeps the tables as bbolt buckets, opened as internal/mvcc opens its store.
type boltEngine struct {
	dir     string
	cfg     Config
	db      *bolt.DB
	rev     int64
	applied uint64
}

var _ Engine = (*boltEngine)(nil)

func boltOptions(cfg Config) *bolt.Options {
	return &bolt.Options{
		Timeout:         10 * time.Second,
		NoSync:          true,
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: cfg.BoltInitialMmapSize,
	}
}

// OpenBolt opens the bbolt engine in dir with internal/mvcc's options (NoSync, no freelist sync,
// map freelist).
func OpenBolt(dir string, cfg Config) (Engine, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("storebench: bbolt: create %s: %w", dir, err)
	}
	db, err := bolt.Open(filepath.Join(dir, boltFile), 0o600, boltOptions(cfg))
	if err != nil {
		return nil, fmt.Errorf("storebench: bbolt: open in %s: %w", dir, err)
	}
	e := &boltEngine{dir: dir, db: db, cfg: cfg}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, t := range Tables {
			if _, err := tx.CreateBucketIfNotExists(t.bucket()); err != nil {
				return fmt.Errorf("create bucket %s: %w", t.bucket(), err)
			}
		}
		meta := tx.Bucket(TableMeta.bucket())
		e.rev = int64(getU64(meta.Get(metaRev)))
		if e.rev == 0 {
			e.rev = 1 // as internal/mvcc: revision 1 is the empty store
		}
		e.applied = getU64(meta.Get(metaApplied))
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("storebench: bbolt: initialize %s: %w", dir, err)
	}
	return e, nil
}

func (e *boltEngine) Dir() string     { return e.dir }
func (e *boltEngine) Rev() int64      { return e.rev }
func (e *boltEngine) Applied() uint64 { return e.applied }

func (e *boltEngine) Apply(index uint64, puts []Put) error {
	rev := e.rev
	err := e.db.Update(func(tx *bolt.Tx) error {
		kv, live, revs := tx.Bucket(TableKV.bucket()), tx.Bucket(TableLive.bucket()), tx.Bucket(TableRev.bucket())
		for _, p := range puts {
			rev++
			rec, err := nextVersion(live.Get(p.Key), rev)
			if err != nil {
				return fmt.Errorf("previous version of %x: %w", p.Key, err)
			}
			// bbolt keeps references to keys and values until commit: each needs its own memory.
			if err := kv.Put(kvKey(nil, p.Key, rev, 0), encodeVersion(nil, rec, p.Value)); err != nil {
				return fmt.Errorf("write version of %x: %w", p.Key, err)
			}
			if err := revs.Put(revKey(nil, rev, 0), append([]byte{0}, p.Key...)); err != nil {
				return fmt.Errorf("write revision %d: %w", rev, err)
			}
			if err := live.Put(bytes.Clone(p.Key), encodeLive(nil, rev, 0, rec)); err != nil {
				return fmt.Errorf("index newest version of %x: %w", p.Key, err)
			}
		}
		meta := tx.Bucket(TableMeta.bucket())
		if err := meta.Put(metaRev, putU64(nil, uint64(rev))); err != nil {
			return fmt.Errorf("write revision: %w", err)
		}
		if err := meta.Put(metaApplied, putU64(nil, index)); err != nil {
			return fmt.Errorf("write applied index: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storebench: bbolt: apply batch up to index %d: %w", index, err)
	}
	e.rev, e.applied = rev, index
	return nil
}

func (e *boltEngine) Get(key, dst []byte) ([]byte, bool, error) {
	var ok bool
	err := e.db.View(func(tx *bolt.Tx) error {
		l := tx.Bucket(TableLive.bucket()).Get(key)
		if l == nil {
			return nil
		}
		_, rev, sub, err := decodeLive(l)
		if err != nil {
			return err
		}
		var kbuf [64]byte
		v, err := versionValue(tx.Bucket(TableKV.bucket()).Get(kvKey(kbuf[:0], key, rev, sub)))
		if err != nil {
			return fmt.Errorf("version %d of %x: %w", rev, key, err)
		}
		dst, ok = append(dst, v...), true
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("storebench: bbolt: get %x: %w", key, err)
	}
	return dst, ok, nil
}

func (e *boltEngine) Range(start []byte, limit int) (keys, n int, err error) {
	err = e.db.View(func(tx *bolt.Tx) error {
		kv := tx.Bucket(TableKV.bucket())
		c := tx.Bucket(TableLive.bucket()).Cursor()
		var kbuf []byte
		for k, l := c.Seek(start); k != nil && keys < limit; k, l = c.Next() {
			_, rev, sub, err := decodeLive(l)
			if err != nil {
				return err
			}
			kbuf = kvKey(kbuf[:0], k, rev, sub)
			v, err := versionValue(kv.Get(kbuf))
			if err != nil {
				return fmt.Errorf("version %d of %x: %w", rev, k, err)
			}
			keys, n = keys+1, n+len(v)
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("storebench: bbolt: range from %x: %w", start, err)
	}
	return keys, n, nil
}

func (e *boltEngine) WriteSnapshot(w io.Writer) (int64, error) {
	var n int64
	err := e.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("storebench: bbolt: write snapshot: %w", err)
	}
	return n, nil
}

// RestoreBolt writes the snapshot stream to the database file, fsyncs it and opens it: a bbolt
// snapshot is the database file itself.
func RestoreBolt(dir string, cfg Config, r io.Reader) (Engine, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("storebench: bbolt: restore: create %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, boltFile), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("storebench: bbolt: restore: %w", err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return nil, fmt.Errorf("storebench: bbolt: restore: write %s: %w", f.Name(), err)
	}
	if err := syncFile(f); err != nil {
		return nil, fmt.Errorf("storebench: bbolt: restore: %w", err)
	}
	return OpenBolt(dir, cfg)
}

func (e *boltEngine) CompactHistory(budget int) (int, error) {
	var (
		from    []byte // the next kv key to examine; nil: the start
		lastEsc []byte // the escaped user key of the previous kv key examined
		removed int
	)
	for {
		done := false
		err := e.db.Update(func(tx *bolt.Tx) error {
			kv, revs := tx.Bucket(TableKV.bucket()), tx.Bucket(TableRev.bucket())
			// Collect first, delete after: a bbolt cursor must not walk across its own deletions.
			var doomed [][]byte
			c := kv.Cursor()
			k, _ := c.First()
			if from != nil {
				k, _ = c.Seek(from)
			}
			for ; k != nil && len(doomed) < budget; k, _ = c.Next() {
				esc, _, _, err := splitKVKey(k)
				if err != nil {
					return err
				}
				if bytes.Equal(esc, lastEsc) {
					doomed = append(doomed, bytes.Clone(k))
				} else {
					lastEsc = bytes.Clone(esc)
				}
			}
			if k == nil {
				done = true
			} else {
				from = bytes.Clone(k)
			}
			for _, d := range doomed {
				_, rev, sub, _ := splitKVKey(d) // checked above
				if err := kv.Delete(d); err != nil {
					return fmt.Errorf("delete version %d: %w", rev, err)
				}
				if err := revs.Delete(revKey(nil, rev, sub)); err != nil {
					return fmt.Errorf("delete revision %d: %w", rev, err)
				}
			}
			removed += len(doomed)
			return nil
		})
		if err != nil {
			return removed, fmt.Errorf("storebench: bbolt: compact history: %w", err)
		}
		if done {
			return removed, nil
		}
	}
}

// Reclaim rewrites the database into a new file (bbolt never shrinks its file: freed pages only
// go to the freelist) and swaps it in, as a defragmentation does.
func (e *boltEngine) Reclaim() error {
	path := filepath.Join(e.dir, boltFile)
	tmp := path + ".defrag"
	dst, err := bolt.Open(tmp, 0o600, boltOptions(e.cfg))
	if err != nil {
		return fmt.Errorf("storebench: bbolt: defrag: open %s: %w", tmp, err)
	}
	if err := bolt.Compact(dst, e.db, 64<<20); err != nil {
		dst.Close()
		return fmt.Errorf("storebench: bbolt: defrag: copy: %w", err)
	}
	if err := dst.Sync(); err != nil {
		dst.Close()
		return fmt.Errorf("storebench: bbolt: defrag: fsync %s: %w", tmp, err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("storebench: bbolt: defrag: close %s: %w", tmp, err)
	}
	if err := e.db.Close(); err != nil {
		return fmt.Errorf("storebench: bbolt: defrag: close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("storebench: bbolt: defrag: rename: %w", err)
	}
	db, err := bolt.Open(path, 0o600, boltOptions(e.cfg))
	if err != nil {
		return fmt.Errorf("storebench: bbolt: defrag: reopen: %w", err)
	}
	e.db = db
	return nil
}

// Settle returns at once: bbolt does all its work inside Commit.
func (e *boltEngine) Settle() error { return nil }

func (e *boltEngine) Dump(fn func(t Table, k, v []byte) error) error {
	return e.db.View(func(tx *bolt.Tx) error {
		for _, t := range Tables {
			if err := tx.Bucket(t.bucket()).ForEach(func(k, v []byte) error { return fn(t, k, v) }); err != nil {
				return err
			}
		}
		return nil
	})
}

func (e *boltEngine) Close() error {
	if err := e.db.Close(); err != nil {
		return fmt.Errorf("storebench: bbolt: close: %w", err)
	}
	return nil
}
