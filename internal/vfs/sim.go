package vfs

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrCrashed is returned by every operation on a File opened before the last Sim.Crash: the
// process that held it is, in the simulation, dead.
var ErrCrashed = errors.New("vfs: file handle invalidated by simulated crash")

// Sim is an in-memory filesystem for deterministic simulation. It keeps two layers:
//
//   - the volatile layer, what a running process sees (the page cache and in-memory directory
//     entries): every read and ReadDir is served from it;
//   - the durable layer, what is on the platter: a file's data reaches it on Sync, a directory's
//     entries reach it on SyncDir of that directory.
//
// Crash throws the volatile layer away and rebuilds it from the durable one, which is what kill -9
// followed by power loss does. With SetTornWrites(true), Crash first lets a seeded random prefix
// of each file's and each directory's unsynced operations reach the disk, the last one of a file
// possibly cut short: a torn write. That models a kernel that wrote back some dirty pages, in
// order, before the power went; SetReorderedWriteback lets any subset of their pages through
// instead. Without it, unsynced operations are all lost.
//
// Faults: SetFull makes writes that need new space fail with ENOSPC (writes inside preallocated
// space still succeed, as on a real filesystem); FailSyncs makes the next syncs fail with EIO and
// drop the unsynced data they were meant to persist (Linux's behaviour on writeback errors);
// CrashAfter crashes in the middle of a multi-step operation, before its n+1-th mutating step,
// and keeps the filesystem down until Restart.
//
// Simplifications: a rename across directories is two independent directory operations (one per
// directory); permissions and timestamps are not modelled. Space is only accounted for by SetFull,
// not by a capacity. Preallocated, never-written regions cost no memory.
//
// Everything is deterministic given the seed and the sequence of calls. A Sim is safe for
// concurrent use.
type Sim struct {
	mu        sync.Mutex
	rng       *rand.Rand
	root      *inode
	inodes    []*inode // every inode that may still be reachable, in creation order
	nextID    uint64
	gen       uint64 // bumped by Crash; handles from an older generation are dead
	full      bool
	failSyncs int
	tear      bool
	reorder   bool
	stats     SimStats
	// CrashAfter state: armed with countdown mutating operations to go; down once it fired.
	armed     bool
	countdown int
	down      bool
}

// SimStats counts operations, so tests can assert how often storage code syncs.
type SimStats struct {
	Writes    int // Write and WriteAt calls that wrote at least one byte
	FileSyncs int // successful File.Sync calls
	DirSyncs  int // successful SyncDir calls
	Crashes   int
}

// NewSim returns an empty simulated filesystem whose random choices (torn writes) derive from
// seed.
func NewSim(seed uint64) *Sim {
	s := &Sim{rng: rand.New(rand.NewPCG(seed, 0x5ca1ab1e))}
	s.root = s.newInode(true)
	return s
}

type inode struct {
	id  uint64
	dir bool

	// Files.
	cur, durable content
	pending      []fileOp // applied to cur, not yet to durable

	// Directories.
	entries    map[string]*inode // volatile
	durEntries map[string]*inode
	dirPending []dirOp
}

// content is a file's bytes: size may exceed len(data), the rest reads as zeros (preallocated or
// sparse space costs no memory).
type content struct {
	size int64
	data []byte
}

type fileOpKind uint8

const (
	opWrite fileOpKind = iota
	opTruncate
	opPreallocate
)

type fileOp struct {
	kind fileOpKind
	off  int64 // write offset
	data []byte
	size int64 // truncate / preallocate size
}

// dirOp deletes del (if set) then binds add (if set) to node. A rename inside one directory is a
// single dirOp, so it is atomic in the durable layer as on a journaling filesystem.
type dirOp struct {
	del  string
	add  string
	node *inode
}

func (s *Sim) newInode(dir bool) *inode {
	s.nextID++
	n := &inode{id: s.nextID, dir: dir}
	if dir {
		n.entries = map[string]*inode{}
		n.durEntries = map[string]*inode{}
	}
	s.inodes = append(s.inodes, n)
	return n
}

func (c *content) clone() content {
	return content{size: c.size, data: bytes.Clone(c.data)}
}

func (c *content) apply(op *fileOp) {
	switch op.kind {
	case opWrite:
		end := op.off + int64(len(op.data))
		c.grow(end)
		copy(c.data[op.off:], op.data)
		if end > c.size {
			c.size = end
		}
	case opTruncate:
		c.size = op.size
		if int64(len(c.data)) > op.size {
			c.data = c.data[:op.size]
		}
	case opPreallocate:
		if op.size > c.size {
			c.size = op.size
		}
	}
}

// grow makes len(c.data) >= end, zeroing any bytes it exposes (they may hold data from before a
// truncation).
func (c *content) grow(end int64) {
	if end <= int64(len(c.data)) {
		return
	}
	old := len(c.data)
	if end <= int64(cap(c.data)) {
		c.data = c.data[:end]
	} else {
		c.data = append(c.data, make([]byte, int(end)-old)...)
	}
	clear(c.data[old:])
}

func (c *content) readAt(p []byte, off int64) int {
	if off >= c.size {
		return 0
	}
	n := min(int64(len(p)), c.size-off)
	p = p[:n]
	copied := 0
	if off < int64(len(c.data)) {
		copied = copy(p, c.data[off:])
	}
	clear(p[copied:])
	return int(n)
}

func (op *dirOp) apply(m map[string]*inode) {
	if op.del != "" {
		delete(m, op.del)
	}
	if op.add != "" {
		m[op.add] = op.node
	}
}

func pathErr(op, name string, err error) error {
	return fmt.Errorf("vfs: %w", &fs.PathError{Op: op, Path: name, Err: err})
}

// split cleans name into its components below the root.
func split(name string) []string {
	p := path.Clean("/" + name)
	if p == "/" {
		return nil
	}
	return strings.Split(p[1:], "/")
}

// lookup walks the volatile layer. It returns the directory holding the last component, the
// component, and the inode (nil if absent).
func (s *Sim) lookup(op, name string) (parent *inode, base string, n *inode, err error) {
	parts := split(name)
	if len(parts) == 0 {
		return nil, "", s.root, nil
	}
	dir := s.root
	for _, p := range parts[:len(parts)-1] {
		next, ok := dir.entries[p]
		if !ok {
			return nil, "", nil, pathErr(op, name, fs.ErrNotExist)
		}
		if !next.dir {
			return nil, "", nil, pathErr(op, name, syscall.ENOTDIR)
		}
		dir = next
	}
	base = parts[len(parts)-1]
	return dir, base, dir.entries[base], nil
}

// bind records a directory operation in the volatile layer and queues it for the durable one.
func (d *inode) bind(op dirOp) {
	op.apply(d.entries)
	d.dirPending = append(d.dirPending, op)
}

// OpenFile implements FS.
func (s *Sim) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.gate("open", name, flag&(os.O_CREATE|os.O_TRUNC) != 0); err != nil {
		return nil, err
	}
	parent, base, n, err := s.lookup("open", name)
	if err != nil {
		return nil, err
	}
	switch {
	case n == nil && flag&os.O_CREATE == 0:
		return nil, pathErr("open", name, fs.ErrNotExist)
	case n == nil:
		if parent == nil {
			return nil, pathErr("open", name, fs.ErrInvalid)
		}
		n = s.newInode(false)
		parent.bind(dirOp{add: base, node: n})
	case flag&(os.O_CREATE|os.O_EXCL) == os.O_CREATE|os.O_EXCL:
		return nil, pathErr("open", name, fs.ErrExist)
	case n.dir:
		return nil, pathErr("open", name, syscall.EISDIR)
	}
	acc := flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
	f := &simFile{s: s, n: n, name: name, gen: s.gen, flag: flag,
		readable: acc != os.O_WRONLY, writable: acc != os.O_RDONLY}
	if flag&os.O_TRUNC != 0 && f.writable {
		s.fileOp(n, fileOp{kind: opTruncate, size: 0})
	}
	return f, nil
}

// Create implements FS.
func (s *Sim) Create(name string) (File, error) {
	return s.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
}

// Open implements FS.
func (s *Sim) Open(name string) (File, error) { return s.OpenFile(name, os.O_RDONLY, 0) }

// Rename implements FS.
func (s *Sim) Rename(oldpath, newpath string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.gate("rename", oldpath, true); err != nil {
		return err
	}
	op, obase, n, err := s.lookup("rename", oldpath)
	if err != nil {
		return err
	}
	if n == nil || op == nil {
		return pathErr("rename", oldpath, fs.ErrNotExist)
	}
	np2, nbase, existing, err := s.lookup("rename", newpath)
	if err != nil {
		return err
	}
	if np2 == nil {
		return pathErr("rename", newpath, fs.ErrInvalid)
	}
	if existing == n {
		return nil
	}
	if existing != nil && (existing.dir || n.dir) {
		// Replacing directories is not needed by caucus; refuse rather than model it loosely.
		return pathErr("rename", newpath, fs.ErrExist)
	}
	if op == np2 {
		op.bind(dirOp{del: obase, add: nbase, node: n})
	} else {
		op.bind(dirOp{del: obase})
		np2.bind(dirOp{add: nbase, node: n})
	}
	return nil
}

// Remove implements FS.
func (s *Sim) Remove(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.gate("remove", name, true); err != nil {
		return err
	}
	parent, base, n, err := s.lookup("remove", name)
	if err != nil {
		return err
	}
	if n == nil || parent == nil {
		return pathErr("remove", name, fs.ErrNotExist)
	}
	if n.dir && len(n.entries) > 0 {
		return pathErr("remove", name, syscall.ENOTEMPTY)
	}
	parent.bind(dirOp{del: base})
	return nil
}

// MkdirAll implements FS.
func (s *Sim) MkdirAll(dir string, perm fs.FileMode) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.gate("mkdir", dir, true); err != nil {
		return err
	}
	cur := s.root
	for _, p := range split(dir) {
		next, ok := cur.entries[p]
		if !ok {
			next = s.newInode(true)
			cur.bind(dirOp{add: p, node: next})
		} else if !next.dir {
			return pathErr("mkdir", dir, syscall.ENOTDIR)
		}
		cur = next
	}
	return nil
}

// ReadDir implements FS.
func (s *Sim) ReadDir(dir string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.gate("readdir", dir, false); err != nil {
		return nil, err
	}
	_, _, n, err := s.lookup("readdir", dir)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return nil, pathErr("readdir", dir, fs.ErrNotExist)
	}
	if !n.dir {
		return nil, pathErr("readdir", dir, syscall.ENOTDIR)
	}
	return slices.Sorted(maps.Keys(n.entries)), nil
}

// Stat implements FS.
func (s *Sim) Stat(name string) (fs.FileInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.gate("stat", name, false); err != nil {
		return nil, err
	}
	_, base, n, err := s.lookup("stat", name)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return nil, pathErr("stat", name, fs.ErrNotExist)
	}
	if base == "" {
		base = "/"
	}
	return simFileInfo{name: base, size: n.cur.size, dir: n.dir}, nil
}

// SyncDir implements FS.
func (s *Sim) SyncDir(dir string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.gate("syncdir", dir, true); err != nil {
		return err
	}
	_, _, n, err := s.lookup("syncdir", dir)
	if err != nil {
		return err
	}
	if n == nil {
		return pathErr("syncdir", dir, fs.ErrNotExist)
	}
	if !n.dir {
		return pathErr("syncdir", dir, syscall.ENOTDIR)
	}
	if s.failSyncs > 0 {
		s.failSyncs--
		n.dirPending = nil // lost: see FailSyncs
		return pathErr("syncdir", dir, syscall.EIO)
	}
	for i := range n.dirPending {
		n.dirPending[i].apply(n.durEntries)
	}
	n.dirPending = nil
	s.stats.DirSyncs++
	return nil
}

// SetFull sets whether the disk is full: while it is, writes and preallocations that would
// grow a file fail with an error wrapping syscall.ENOSPC.
func (s *Sim) SetFull(full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.full = full
}

// FailSyncs makes the next n File.Sync or SyncDir calls fail with an error wrapping syscall.EIO.
// A failed sync also drops the operations it was meant to persist from the durable path: they
// stay visible until the next Crash, then vanish, even if a later sync succeeds.
func (s *Sim) FailSyncs(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failSyncs = n
}

// WritebackPage is the unit in which SetReorderedWriteback lets unsynced writes reach the disk:
// the page cache writes back whole pages, in no particular order.
const WritebackPage = 4096

// SetReorderedWriteback sets whether Crash lets an arbitrary subset of each file's unsynced
// writes reach the disk instead of a prefix: every page-aligned piece of every unsynced write
// (and every unsynced truncation or preallocation) survives or not on its own draw. That is
// what a kernel writing back dirty pages in its own order, then losing power, leaves: a later
// page of a write on disk and an earlier one not, holes of old content between surviving
// records. It applies only with SetTornWrites(true); directories keep the prefix model (a
// journaling filesystem commits directory operations in order).
func (s *Sim) SetReorderedWriteback(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reorder = on
}

// SetTornWrites sets whether Crash lets a random prefix of unsynced operations survive, the
// last surviving write of a file possibly torn. See Sim.
func (s *Sim) SetTornWrites(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tear = on
}

// Stats returns operation counts since NewSim.
func (s *Sim) Stats() SimStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Crash simulates a power loss: every open File becomes unusable (ErrCrashed), and the volatile
// layer is replaced by the durable one, after letting a random prefix of unsynced operations
// through if SetTornWrites(true). Faults set by SetFull and FailSyncs are cleared, as a reboot
// would.
func (s *Sim) Crash() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.crashLocked()
}

// CrashAfter arms a crash: the next n mutating operations (anything that creates, writes,
// truncates, syncs, renames or removes) succeed, and the one after crashes the filesystem instead
// of running, as if the power failed just before it. From then on every operation fails with
// ErrCrashed until Restart, which models the machine coming back up. It lets tests crash at every
// point inside a multi-step operation such as an atomic file replacement.
func (s *Sim) CrashAfter(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed, s.countdown = true, n
}

// Down reports whether a crash armed by CrashAfter has fired and Restart has not been called.
func (s *Sim) Down() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down
}

// Restart brings the filesystem back after a crash fired by CrashAfter, and disarms a pending
// one.
func (s *Sim) Restart() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down, s.armed = false, false
}

// gate runs before every operation: it fails everything while down and fires an armed crash.
func (s *Sim) gate(op, name string, mutating bool) error {
	if s.down {
		return pathErr(op, name, ErrCrashed)
	}
	if mutating && s.armed {
		if s.countdown == 0 {
			s.armed = false
			s.crashLocked()
			s.down = true
			return pathErr(op, name, ErrCrashed)
		}
		s.countdown--
	}
	return nil
}

func (s *Sim) crashLocked() {
	s.armed = false
	s.gen++
	s.stats.Crashes++
	s.full = false
	s.failSyncs = 0
	// s.inodes is in creation order, so the random draws below happen in the same order on
	// every run with the same seed and calls.
	if s.tear {
		for _, n := range s.inodes {
			if n.dir {
				k := s.rng.IntN(len(n.dirPending) + 1)
				for i := range k {
					n.dirPending[i].apply(n.durEntries)
				}
				continue
			}
			if s.reorder {
				s.writeBackSubset(n)
				continue
			}
			k := s.rng.IntN(len(n.pending) + 1)
			for i := range k {
				n.durable.apply(&n.pending[i])
			}
			if k < len(n.pending) && n.pending[k].kind == opWrite && len(n.pending[k].data) > 1 {
				torn := n.pending[k]
				torn.data = torn.data[:s.rng.IntN(len(torn.data))]
				n.durable.apply(&torn)
			}
		}
	}
	// Rebuild the volatile layer from the durable one and forget unreachable inodes.
	var live []*inode
	var walk func(n *inode)
	walk = func(n *inode) {
		live = append(live, n)
		if !n.dir {
			n.cur = n.durable.clone()
			n.pending = nil
			return
		}
		n.entries = maps.Clone(n.durEntries)
		n.dirPending = nil
		for _, name := range slices.Sorted(maps.Keys(n.durEntries)) {
			walk(n.durEntries[name])
		}
	}
	walk(s.root)
	slices.SortFunc(live, func(a, b *inode) int { return cmp.Compare(a.id, b.id) })
	s.inodes = slices.CompactFunc(live, func(a, b *inode) bool { return a == b })
}

// writeBackSubset applies to n's durable content a random subset of its unsynced operations,
// in their original order, each write split at WritebackPage boundaries into pieces that
// survive independently.
func (s *Sim) writeBackSubset(n *inode) {
	for i := range n.pending {
		op := n.pending[i]
		if op.kind != opWrite {
			if s.rng.IntN(2) == 0 {
				n.durable.apply(&op)
			}
			continue
		}
		for start := 0; start < len(op.data); {
			off := op.off + int64(start)
			end := min(len(op.data), start+int(WritebackPage-off%WritebackPage))
			if s.rng.IntN(2) == 0 {
				piece := fileOp{kind: opWrite, off: off, data: op.data[start:end]}
				n.durable.apply(&piece)
			}
			start = end
		}
	}
}

// fileOp applies op to n's volatile content and queues it for the durable one.
func (s *Sim) fileOp(n *inode, op fileOp) {
	n.cur.apply(&op)
	n.pending = append(n.pending, op)
}

type simFile struct {
	s        *Sim
	n        *inode
	name     string
	gen      uint64
	flag     int
	pos      int64
	readable bool
	writable bool
	closed   bool
}

// check validates the handle and passes the crash gate; the caller holds s.mu.
func (f *simFile) check(op string, mutating bool) error {
	switch {
	case f.closed:
		return pathErr(op, f.name, fs.ErrClosed)
	case f.gen != f.s.gen:
		return pathErr(op, f.name, ErrCrashed)
	}
	return f.s.gate(op, f.name, mutating)
}

func (f *simFile) Name() string { return f.name }

func (f *simFile) Write(p []byte) (int, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	off := f.pos
	if f.flag&os.O_APPEND != 0 {
		off = f.n.cur.size
	}
	n, err := f.writeAtLocked("write", p, off)
	f.pos = off + int64(n)
	return n, err
}

func (f *simFile) WriteAt(p []byte, off int64) (int, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if f.flag&os.O_APPEND != 0 {
		return 0, pathErr("writeat", f.name, errors.New("invalid use of WriteAt on file opened with O_APPEND"))
	}
	return f.writeAtLocked("writeat", p, off)
}

func (f *simFile) writeAtLocked(op string, p []byte, off int64) (int, error) {
	if err := f.check(op, len(p) > 0); err != nil {
		return 0, err
	}
	if !f.writable {
		return 0, pathErr(op, f.name, fs.ErrPermission)
	}
	if off < 0 {
		return 0, pathErr(op, f.name, fs.ErrInvalid)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if f.s.full && off+int64(len(p)) > f.n.cur.size {
		return 0, pathErr(op, f.name, syscall.ENOSPC)
	}
	f.s.fileOp(f.n, fileOp{kind: opWrite, off: off, data: bytes.Clone(p)})
	f.s.stats.Writes++
	return len(p), nil
}

func (f *simFile) ReadAt(p []byte, off int64) (int, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.check("read", false); err != nil {
		return 0, err
	}
	if !f.readable {
		return 0, pathErr("read", f.name, fs.ErrPermission)
	}
	if off < 0 {
		return 0, pathErr("read", f.name, fs.ErrInvalid)
	}
	n := f.n.cur.readAt(p, off)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *simFile) Sync() error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.check("sync", true); err != nil {
		return err
	}
	if f.s.failSyncs > 0 {
		f.s.failSyncs--
		f.n.pending = nil // lost: see FailSyncs
		return pathErr("sync", f.name, syscall.EIO)
	}
	for i := range f.n.pending {
		f.n.durable.apply(&f.n.pending[i])
	}
	f.n.pending = nil
	f.s.stats.FileSyncs++
	return nil
}

func (f *simFile) Truncate(size int64) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.check("truncate", true); err != nil {
		return err
	}
	if !f.writable {
		return pathErr("truncate", f.name, fs.ErrPermission)
	}
	if size < 0 {
		return pathErr("truncate", f.name, fs.ErrInvalid)
	}
	f.s.fileOp(f.n, fileOp{kind: opTruncate, size: size})
	return nil
}

func (f *simFile) Preallocate(size int64) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.check("preallocate", true); err != nil {
		return err
	}
	if !f.writable {
		return pathErr("preallocate", f.name, fs.ErrPermission)
	}
	if size <= f.n.cur.size {
		return nil
	}
	if f.s.full {
		return pathErr("preallocate", f.name, syscall.ENOSPC)
	}
	f.s.fileOp(f.n, fileOp{kind: opPreallocate, size: size})
	return nil
}

func (f *simFile) Size() (int64, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.check("stat", false); err != nil {
		return 0, err
	}
	return f.n.cur.size, nil
}

func (f *simFile) Close() error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if f.closed {
		return pathErr("close", f.name, fs.ErrClosed)
	}
	f.closed = true
	return nil
}

type simFileInfo struct {
	name string
	size int64
	dir  bool
}

func (i simFileInfo) Name() string { return i.name }
func (i simFileInfo) Size() int64  { return i.size }
func (i simFileInfo) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o755
	}
	return 0o644
}
func (i simFileInfo) ModTime() time.Time { return time.Time{} }
func (i simFileInfo) IsDir() bool        { return i.dir }
func (i simFileInfo) Sys() any           { return nil }
