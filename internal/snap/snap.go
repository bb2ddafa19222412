// Package snap stores Raft snapshots (state-machine images with their raft.SnapshotMeta) as
// files, atomically and checksummed, over internal/vfs.
//
// # Invariants
//
//   - Save is atomic: the file is written under a temporary name, fdatasynced, renamed into place
//     and the directory fsynced. After a crash at any point, the directory holds every snapshot
//     it held before, plus possibly the new one complete; never a partial file under a snapshot
//     name. Save returns only once the new snapshot is durable.
//   - Every file carries a CRC32C (Castagnoli) over all its bytes. Load returns the newest
//     snapshot that verifies. A newer one that does not is logged at Warn, renamed to
//     <name>.broken so it is not considered again, and skipped; it is never returned.
//   - After a successful Save the store keeps the newest Options.Retain snapshots and removes
//     the older ones, so a corrupt newest snapshot still leaves a valid older one to fall back to.
//
// # File format
//
// A snapshot file is named <index>-<term>.snap (16 lowercase hex digits each) and holds
//
//	magic "caucusSN" | version u8 | metaLen u32 LE | dataLen u64 LE |
//	meta (wire.AppendSnapshotMeta) | data | crc32c u32 LE of everything before it
//
// and the meta's index and term must match the name.
package snap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/caucus/caucus/internal/vfs"
	"github.com/caucus/caucus/internal/wire"
	"github.com/caucus/caucus/raft"
)

// Limits and defaults.
const (
	// DefaultRetain is how many snapshots are kept by default: the newest, and one to fall back
	// to if the newest turns out to be damaged.
	DefaultRetain = 2
	// MaxRetain bounds Options.Retain; more copies of the state machine only waste disk.
	MaxRetain = 64
	// DefaultMaxSnapshotBytes bounds the data of a snapshot Save writes and Load reads (8 GiB,
	// raft.DefaultConfig's MaxSnapshotBytes). Load checks it before allocating, so a corrupt
	// length field cannot make it allocate unboundedly.
	DefaultMaxSnapshotBytes = 8 << 30
	// MaxMetaBytes bounds the encoded SnapshotMeta (it is a few node IDs).
	MaxMetaBytes = 1 << 20
)

var (
	// ErrNoSnapshot is returned by Load when the directory holds no snapshot file.
	ErrNoSnapshot = errors.New("snap: no snapshot")
	// ErrCorrupt is wrapped by errors about a damaged snapshot file, and by Load's error when
	// snapshot files exist but none is valid.
	ErrCorrupt = errors.New("snap: corrupt snapshot")
	// ErrTooLarge is wrapped when a snapshot exceeds Options.MaxSnapshotBytes.
	ErrTooLarge = errors.New("snap: snapshot too large")
)

var (
	magic      = [8]byte{'c', 'a', 'u', 'c', 'u', 's', 'S', 'N'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

const (
	formatVersion byte = 1
	headerBytes        = 8 + 1 + 4 + 8
	crcBytes           = 4
	snapSuffix         = ".snap"
	tmpSuffix          = ".tmp"
	brokenSuffix       = ".broken"
)

// Options configures a Store. The zero value gives the defaults.
type Options struct {
	// Retain is how many of the newest snapshots Save keeps; 0 means DefaultRetain.
	Retain int
	// MaxSnapshotBytes bounds a snapshot's data; 0 means DefaultMaxSnapshotBytes.
	MaxSnapshotBytes int64
	// Logger receives warnings about damaged snapshots. Nil means slog.Default().
	Logger *slog.Logger
}

// Store is a directory of snapshots. It is safe for concurrent use.
type Store struct {
	mu   sync.Mutex
	fs   vfs.FS
	dir  string
	opts Options
	log  *slog.Logger
}

// New opens the snapshot directory dir, creating it if needed, and removes temporary files left
// by a Save that crashed.
func New(fsys vfs.FS, dir string, opts Options) (*Store, error) {
	if opts.Retain == 0 {
		opts.Retain = DefaultRetain
	}
	if opts.Retain < 1 || opts.Retain > MaxRetain {
		return nil, fmt.Errorf("snap: options: Retain %d must be in [1, MaxRetain=%d]", opts.Retain, MaxRetain)
	}
	if opts.MaxSnapshotBytes == 0 {
		opts.MaxSnapshotBytes = DefaultMaxSnapshotBytes
	}
	if opts.MaxSnapshotBytes < 0 {
		return nil, fmt.Errorf("snap: options: MaxSnapshotBytes %d must be positive", opts.MaxSnapshotBytes)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Store{fs: fsys, dir: dir, opts: opts, log: opts.Logger}
	if err := vfs.MkdirAllDurable(fsys, dir, 0o755); err != nil {
		return nil, fmt.Errorf("snap: create directory %s: %w", dir, err)
	}
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("snap: list %s: %w", dir, err)
	}
	for _, n := range names {
		if strings.HasSuffix(n, tmpSuffix) {
			if err := fsys.Remove(filepath.Join(dir, n)); err != nil {
				return nil, fmt.Errorf("snap: remove leftover %s: %w", n, err)
			}
		}
	}
	return s, nil
}

func fileName(index, term uint64) string {
	return fmt.Sprintf("%016x-%016x%s", index, term, snapSuffix)
}

func parseName(name string) (index, term uint64, ok bool) {
	if len(name) != 16+1+16+len(snapSuffix) || name[16] != '-' || !strings.HasSuffix(name, snapSuffix) {
		return 0, 0, false
	}
	index, err1 := strconv.ParseUint(name[:16], 16, 64)
	term, err2 := strconv.ParseUint(name[17:33], 16, 64)
	if err1 != nil || err2 != nil || fileName(index, term) != name {
		return 0, 0, false
	}
	return index, term, true
}

type entry struct {
	index, term uint64
	name        string
}

// list returns the snapshot files, newest (highest index, then term) first.
func (s *Store) list() ([]entry, error) {
	names, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("snap: list %s: %w", s.dir, err)
	}
	var es []entry
	for _, n := range names {
		if idx, term, ok := parseName(n); ok {
			es = append(es, entry{idx, term, n})
		}
	}
	slices.SortFunc(es, func(a, b entry) int {
		if a.index != b.index {
			return cmpU64(b.index, a.index)
		}
		return cmpU64(b.term, a.term)
	})
	return es, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Save writes a snapshot durably and atomically (see the package documentation), then removes
// snapshots beyond the newest Retain. An error from the removal is returned, but the new
// snapshot is durable by then.
func (s *Store) Save(meta raft.SnapshotMeta, data []byte) error {
	return s.SaveStream(meta, uint64(len(data)), func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// SaveStream is Save for data that is written by write, exactly size bytes, so that a large
// snapshot never has to be in memory: the state machine serializes itself straight into the
// file.
func (s *Store) SaveStream(meta raft.SnapshotMeta, size uint64, write func(io.Writer) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if meta.Index == 0 {
		return errors.New("snap: save snapshot: index 0 means no snapshot")
	}
	if size > uint64(s.opts.MaxSnapshotBytes) {
		return fmt.Errorf("snap: save snapshot at index %d: %d bytes: %w (MaxSnapshotBytes %d)", meta.Index, size, ErrTooLarge, s.opts.MaxSnapshotBytes)
	}
	metaBytes := wire.AppendSnapshotMeta(nil, &meta)
	if len(metaBytes) > MaxMetaBytes {
		return fmt.Errorf("snap: save snapshot at index %d: meta is %d bytes: %w (MaxMetaBytes %d)", meta.Index, len(metaBytes), ErrTooLarge, MaxMetaBytes)
	}
	hdr := make([]byte, 0, headerBytes)
	hdr = append(hdr, magic[:]...)
	hdr = append(hdr, formatVersion)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(metaBytes)))
	hdr = binary.LittleEndian.AppendUint64(hdr, size)

	name := filepath.Join(s.dir, fileName(meta.Index, meta.Term))
	tmp := name + tmpSuffix
	if err := s.writeFile(tmp, hdr, metaBytes, size, write); err != nil {
		_ = s.fs.Remove(tmp) // best effort; New removes leftovers too
		return err
	}
	if err := s.fs.Rename(tmp, name); err != nil {
		_ = s.fs.Remove(tmp)
		return fmt.Errorf("snap: rename %s to %s: %w", tmp, name, err)
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		return fmt.Errorf("snap: sync directory %s after saving %s: %w", s.dir, name, err)
	}
	return s.prune()
}

// fileWriter writes the data section of a snapshot file: it checksums and counts what passes.
type fileWriter struct {
	f    vfs.File
	name string
	off  int64
	crc  uint32
	err  error
}

func (w *fileWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.f.Write(p)
	w.crc = crc32.Update(w.crc, castagnoli, p[:n])
	w.off += int64(n)
	if err != nil {
		w.err = fmt.Errorf("snap: write %s at offset %d: %w", w.name, w.off, err)
	}
	return n, w.err
}

func (s *Store) writeFile(name string, hdr, metaBytes []byte, size uint64, write func(io.Writer) error) error {
	f, err := s.fs.Create(name)
	if err != nil {
		return fmt.Errorf("snap: create %s: %w", name, err)
	}
	w := &fileWriter{f: f, name: name}
	_, _ = w.Write(hdr)
	_, _ = w.Write(metaBytes)
	dataStart := w.off
	if w.err == nil {
		if err := write(w); err != nil && w.err == nil {
			w.err = fmt.Errorf("snap: produce data of %s: %w", name, err)
		}
	}
	if w.err == nil && uint64(w.off-dataStart) != size {
		w.err = fmt.Errorf("snap: %s: data is %d bytes, announced %d", name, w.off-dataStart, size)
	}
	if w.err == nil {
		_, _ = w.Write(binary.LittleEndian.AppendUint32(nil, w.crc))
	}
	if w.err != nil {
		_ = f.Close()
		return w.err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("snap: sync %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("snap: close %s: %w", name, err)
	}
	return nil
}

// prune removes snapshots beyond the newest Retain. Removal needs no directory sync to be
// safe: if it is lost in a crash, the old files are merely pruned again next time.
func (s *Store) prune() error {
	es, err := s.list()
	if err != nil {
		return err
	}
	for _, e := range es[min(len(es), s.opts.Retain):] {
		if err := s.fs.Remove(filepath.Join(s.dir, e.name)); err != nil {
			return fmt.Errorf("snap: remove old snapshot %s: %w", e.name, err)
		}
	}
	return nil
}

// Load returns the newest valid snapshot with its data in memory. Damaged newer snapshots are
// logged, set aside as .broken and skipped. It returns ErrNoSnapshot if there is no snapshot
// file, and an error wrapping ErrCorrupt if there are some but none is valid. Open does the same
// without reading the data into memory.
func (s *Store) Load() (raft.Snapshot, error) {
	r, err := s.Open()
	if err != nil {
		return raft.Snapshot{}, err
	}
	defer r.Close()
	snap := raft.Snapshot{Meta: r.Meta}
	if r.Size > 0 {
		snap.Data = make([]byte, r.Size)
		if _, err := r.ReadAt(snap.Data, 0); err != nil {
			return raft.Snapshot{}, fmt.Errorf("snap: read %s: %w", r.path, err)
		}
	}
	return snap, nil
}

// Reader is an open, verified snapshot file: its meta, and its data readable at any offset
// (io.ReaderAt over the data section). Close it when done; the data stays readable after the
// file is pruned, until Close.
type Reader struct {
	Meta raft.SnapshotMeta
	Size uint64 // length of the data
	path string
	f    vfs.File
	data *io.SectionReader
}

// ReadAt reads the data at off (io.ReaderAt).
func (r *Reader) ReadAt(p []byte, off int64) (int, error) { return r.data.ReadAt(p, off) }

// Close closes the file.
func (r *Reader) Close() error { return r.f.Close() }

// Open returns the newest valid snapshot, like Load, without reading its data into memory (the
// checksum is verified by streaming the file once).
func (s *Store) Open() (*Reader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	es, err := s.list()
	if err != nil {
		return nil, err
	}
	if len(es) == 0 {
		return nil, ErrNoSnapshot
	}
	var errs []error
	for _, e := range es {
		path := filepath.Join(s.dir, e.name)
		r, err := s.open(path, e)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, ErrCorrupt) {
			return nil, err // an I/O error says nothing about the file: do not skip it
		}
		s.log.Warn("snap: skipping damaged snapshot", "file", path, "err", err)
		if rerr := s.fs.Rename(path, path+brokenSuffix); rerr != nil {
			s.log.Warn("snap: cannot set damaged snapshot aside", "file", path, "err", rerr)
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("snap: no valid snapshot in %s (%d damaged): %w", s.dir, len(es), errors.Join(errs...))
}

// SetAside renames the snapshot at index and term out of the store (to its name plus suffix,
// kept for inspection): it is no longer listed, opened or counted by pruning.
func (s *Store) SetAside(index, term uint64, suffix string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	path := filepath.Join(s.dir, fileName(index, term))
	if err := s.fs.Rename(path, path+suffix); err != nil {
		return fmt.Errorf("snap: set aside %s: %w", path, err)
	}
	return nil
}

// OpenAt opens and verifies the snapshot at index and term (for sending it to a follower). It
// wraps ErrNoSnapshot if that snapshot is no longer (or not) in the store.
func (s *Store) OpenAt(index, term uint64) (*Reader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := fileName(index, term)
	path := filepath.Join(s.dir, name)
	r, err := s.open(path, entry{name: name, index: index, term: term})
	if err != nil && errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("snap: snapshot %d-%d: %w", index, term, ErrNoSnapshot)
	}
	return r, err
}

// verifyChunk is how much of a snapshot file open reads at a time to verify its checksum.
const verifyChunk = 1 << 20

// open opens and verifies one snapshot file.
func (s *Store) open(path string, e entry) (_ *Reader, err error) {
	corrupt := func(off int64, format string, args ...any) error {
		return fmt.Errorf("%w: %s at offset %d: %s", ErrCorrupt, path, off, fmt.Sprintf(format, args...))
	}
	f, err := s.fs.Open(path)
	if err != nil {
		return nil, fmt.Errorf("snap: open %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	size, err := f.Size()
	if err != nil {
		return nil, fmt.Errorf("snap: size of %s: %w", path, err)
	}
	if size < headerBytes+crcBytes {
		return nil, corrupt(0, "file is %d bytes, shorter than header and checksum", size)
	}
	hdr := make([]byte, headerBytes)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return nil, fmt.Errorf("snap: read %s header: %w", path, err)
	}
	if [8]byte(hdr[:8]) != magic {
		return nil, corrupt(0, "bad magic %q", hdr[:8])
	}
	if hdr[8] != formatVersion {
		return nil, corrupt(8, "unsupported format version %d (want %d)", hdr[8], formatVersion)
	}
	metaLen := int64(binary.LittleEndian.Uint32(hdr[9:]))
	dataLen := binary.LittleEndian.Uint64(hdr[13:])
	if metaLen > MaxMetaBytes {
		return nil, corrupt(9, "meta length %d exceeds MaxMetaBytes %d", metaLen, MaxMetaBytes)
	}
	if dataLen > uint64(s.opts.MaxSnapshotBytes) {
		return nil, corrupt(13, "data length %d exceeds MaxSnapshotBytes %d", dataLen, s.opts.MaxSnapshotBytes)
	}
	if want := headerBytes + metaLen + int64(dataLen) + crcBytes; size != want {
		return nil, corrupt(0, "file is %d bytes, header says %d", size, want)
	}
	// Verify the checksum by streaming: a snapshot may be far larger than memory allows.
	crc := crc32.Update(0, castagnoli, hdr)
	buf := make([]byte, min(verifyChunk, size))
	for off := int64(headerBytes); off < size-crcBytes; {
		n := min(int64(len(buf)), size-crcBytes-off)
		if _, err := f.ReadAt(buf[:n], off); err != nil {
			return nil, fmt.Errorf("snap: read %s at offset %d: %w", path, off, err)
		}
		crc = crc32.Update(crc, castagnoli, buf[:n])
		off += n
	}
	tail := make([]byte, crcBytes)
	if _, err := f.ReadAt(tail, size-crcBytes); err != nil {
		return nil, fmt.Errorf("snap: read %s checksum: %w", path, err)
	}
	if stored := binary.LittleEndian.Uint32(tail); crc != stored {
		return nil, corrupt(size-crcBytes, "crc32c mismatch: stored %#08x, computed %#08x", stored, crc)
	}
	metaBytes := make([]byte, metaLen)
	if _, err := f.ReadAt(metaBytes, headerBytes); err != nil {
		return nil, fmt.Errorf("snap: read %s meta: %w", path, err)
	}
	meta, n, err := wire.DecodeSnapshotMeta(metaBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s at offset %d: meta: %w", ErrCorrupt, path, headerBytes, err)
	}
	if int64(n) != metaLen {
		return nil, corrupt(headerBytes, "meta has %d trailing bytes", metaLen-int64(n))
	}
	if meta.Index != e.index || meta.Term != e.term {
		return nil, corrupt(headerBytes, "meta says index %d term %d, file name index %d term %d", meta.Index, meta.Term, e.index, e.term)
	}
	return &Reader{Meta: meta, Size: dataLen, path: path, f: f, data: io.NewSectionReader(f, headerBytes+metaLen, int64(dataLen))}, nil
}
