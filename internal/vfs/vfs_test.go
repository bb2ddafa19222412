package vfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
)

// conformance runs the same volatile-layer behaviour checks over both implementations, so the
// simulator cannot drift from what the real filesystem does.
func conformance(t *testing.T, fsys FS, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(fsys.MkdirAll(filepath.Join(dir, "a", "b"), 0o755))
	name := filepath.Join(dir, "a", "f")
	f, err := fsys.Create(name)
	must(err)
	if _, err := f.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(" world")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("J"), 6); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 11)
	if n, err := f.ReadAt(buf, 0); n != 11 || err != nil || string(buf) != "hello Jorld" {
		t.Fatalf("ReadAt = %d %v %q", n, err, buf)
	}
	if n, err := f.ReadAt(buf, 5); n != 6 || err != io.EOF {
		t.Fatalf("short ReadAt = %d %v, want 6 io.EOF", n, err)
	}
	must(f.Preallocate(64))
	if sz, _ := f.Size(); sz != 64 {
		t.Fatalf("size after Preallocate(64) = %d", sz)
	}
	must(f.Preallocate(32)) // never shrinks
	if sz, _ := f.Size(); sz != 64 {
		t.Fatalf("Preallocate shrank the file to %d", sz)
	}
	tail := make([]byte, 53)
	if n, err := f.ReadAt(tail, 11); n != 53 || err != nil || !bytes.Equal(tail, make([]byte, 53)) {
		t.Fatalf("preallocated tail: %d %v %x", n, err, tail)
	}
	must(f.Truncate(3))
	must(f.Truncate(8)) // the regrown bytes must read as zeros, not as the old "lo J"
	b8 := make([]byte, 8)
	if _, err := f.ReadAt(b8, 0); err != nil || string(b8) != "hel\x00\x00\x00\x00\x00" {
		t.Fatalf("after truncate/grow: %q %v", b8, err)
	}
	must(f.Sync())
	must(f.Close())
	if err := f.Close(); err == nil {
		t.Fatal("double Close succeeded")
	}

	if _, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("O_EXCL on existing file: %v", err)
	}
	if _, err := fsys.Open(filepath.Join(dir, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open missing: %v", err)
	}
	af, err := fsys.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	must(err)
	if _, err := af.Write([]byte("!")); err != nil {
		t.Fatal(err)
	}
	must(af.Close())
	fi, err := fsys.Stat(name)
	must(err)
	if fi.Size() != 9 || fi.IsDir() || fi.Name() != "f" {
		t.Fatalf("Stat = %s %d dir=%v", fi.Name(), fi.Size(), fi.IsDir())
	}
	ro, err := fsys.Open(name)
	must(err)
	if _, err := ro.Write([]byte("x")); err == nil {
		t.Fatal("write to read-only file succeeded")
	}
	must(ro.Close())

	must(fsys.Rename(name, filepath.Join(dir, "a", "g")))
	names, err := fsys.ReadDir(filepath.Join(dir, "a"))
	must(err)
	if !slices.Equal(names, []string{"b", "g"}) {
		t.Fatalf("ReadDir = %v", names)
	}
	if err := fsys.Remove(filepath.Join(dir, "a")); err == nil {
		t.Fatal("removed a non-empty directory")
	}
	must(fsys.Remove(filepath.Join(dir, "a", "g")))
	must(fsys.SyncDir(filepath.Join(dir, "a")))
	must(MkdirAllDurable(fsys, filepath.Join(dir, "c", "d"), 0o755))
	must(WriteFileDurable(fsys, filepath.Join(dir, "c", "d", "x"), []byte("data")))
	got, err := ReadFile(fsys, filepath.Join(dir, "c", "d", "x"))
	must(err)
	if string(got) != "data" {
		t.Fatalf("ReadFile = %q", got)
	}
}

func TestConformanceOS(t *testing.T)  { conformance(t, NewOS(), t.TempDir()) }
func TestConformanceSim(t *testing.T) { conformance(t, NewSim(1), "/data") }

// setup creates /d/f durably (entry and empty content), returns the sim and an open handle.
func setup(t *testing.T, seed uint64) (*Sim, File) {
	t.Helper()
	s := NewSim(seed)
	if err := MkdirAllDurable(s, "/d", 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := s.Create("/d/f")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SyncDir("/d"); err != nil {
		t.Fatal(err)
	}
	return s, f
}

func read(t *testing.T, s *Sim, name string) []byte {
	t.Helper()
	b, err := ReadFile(s, name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func write(t *testing.T, f File, p string) {
	t.Helper()
	if _, err := f.Write([]byte(p)); err != nil {
		t.Fatal(err)
	}
}

func TestSimUnsyncedDataLostSyncedKept(t *testing.T) {
	s, f := setup(t, 1)
	write(t, f, "durable")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	write(t, f, "-volatile")
	if got := read(t, s, "/d/f"); string(got) != "durable-volatile" {
		t.Fatalf("before crash: %q", got)
	}
	s.Crash()
	if got := read(t, s, "/d/f"); string(got) != "durable" {
		t.Fatalf("after crash: %q, want %q", got, "durable")
	}
}

func TestSimCreateNeedsDirSync(t *testing.T) {
	s, _ := setup(t, 1)
	g, err := s.Create("/d/g")
	if err != nil {
		t.Fatal(err)
	}
	write(t, g, "synced data")
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	s.Crash()
	if _, err := s.Stat("/d/g"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file whose entry was never synced survived: %v", err)
	}
	if _, err := s.Stat("/d/f"); err != nil {
		t.Fatalf("durable file lost: %v", err)
	}
}

func TestSimMkdirNeedsParentSync(t *testing.T) {
	s := NewSim(1)
	if err := s.MkdirAll("/x/y", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncDir("/x/y"); err != nil {
		t.Fatal(err)
	}
	s.Crash()
	if _, err := s.Stat("/x"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("directory survived without its parent being synced: %v", err)
	}
	if err := MkdirAllDurable(s, "/x/y", 0o755); err != nil {
		t.Fatal(err)
	}
	s.Crash()
	if fi, err := s.Stat("/x/y"); err != nil || !fi.IsDir() {
		t.Fatalf("MkdirAllDurable directory lost: %v", err)
	}
}

func TestSimRenameNeedsDirSync(t *testing.T) {
	for _, syncDir := range []bool{false, true} {
		t.Run(fmt.Sprint("syncdir=", syncDir), func(t *testing.T) {
			s, f := setup(t, 1)
			write(t, f, "old")
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			g, _ := s.Create("/d/tmp")
			write(t, g, "new")
			if err := g.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := s.Rename("/d/tmp", "/d/f"); err != nil {
				t.Fatal(err)
			}
			if syncDir {
				if err := s.SyncDir("/d"); err != nil {
					t.Fatal(err)
				}
			}
			s.Crash()
			want := map[bool]string{false: "old", true: "new"}[syncDir]
			if got := read(t, s, "/d/f"); string(got) != want {
				t.Fatalf("got %q want %q", got, want)
			}
			names, _ := s.ReadDir("/d")
			if !slices.Equal(names, []string{"f"}) {
				t.Fatalf("ReadDir after crash = %v", names)
			}
		})
	}
}

func TestSimRemoveNeedsDirSync(t *testing.T) {
	s, f := setup(t, 1)
	write(t, f, "x")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("/d/f"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat("/d/f"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("removed file still visible before crash")
	}
	s.Crash()
	if got := read(t, s, "/d/f"); string(got) != "x" {
		t.Fatalf("unsynced remove: file should reappear with its data, got %q", got)
	}
	if err := s.Remove("/d/f"); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncDir("/d"); err != nil {
		t.Fatal(err)
	}
	s.Crash()
	if _, err := s.Stat("/d/f"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("synced remove undone by crash: %v", err)
	}
}

func TestSimHandlesDeadAfterCrash(t *testing.T) {
	s, f := setup(t, 1)
	s.Crash()
	if _, err := f.Write([]byte("x")); !errors.Is(err, ErrCrashed) {
		t.Fatalf("write on pre-crash handle: %v", err)
	}
	if err := f.Sync(); !errors.Is(err, ErrCrashed) {
		t.Fatalf("sync on pre-crash handle: %v", err)
	}
	if got := read(t, s, "/d/f"); len(got) != 0 {
		t.Fatalf("pre-crash handle changed the file: %q", got)
	}
}

// TestSimTornWrites checks the torn-write model over many seeds: what survives is always the
// synced bytes plus a prefix of the unsynced ones (never a hole, never reordered data), and every
// outcome from "nothing unsynced" to "everything" to "half a write" occurs.
func TestSimTornWrites(t *testing.T) {
	const synced = "SYNCED|"
	unsynced := []string{"aaaa", "bbbbbbbb", "cccc"}
	full := synced + "aaaabbbbbbbbcccc"
	var sawNone, sawAll, sawTorn bool
	for seed := uint64(0); seed < 500; seed++ {
		s, f := setup(t, seed)
		s.SetTornWrites(true)
		write(t, f, synced)
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		for _, u := range unsynced {
			write(t, f, u)
		}
		s.Crash()
		got := string(read(t, s, "/d/f"))
		if len(got) < len(synced) || got != full[:len(got)] {
			t.Fatalf("seed %d: survivor %q is not synced data plus a prefix of %q", seed, got, full)
		}
		switch len(got) {
		case len(synced):
			sawNone = true
		case len(full):
			sawAll = true
		case len(synced) + 4, len(synced) + 12:
		default:
			sawTorn = true
		}
	}
	if !sawNone || !sawAll || !sawTorn {
		t.Fatalf("outcomes not all exercised: none=%v all=%v torn=%v", sawNone, sawAll, sawTorn)
	}
}

// TestSimReorderedWriteback: with SetReorderedWriteback, a crash keeps synced data and any
// subset of the unsynced pages, each page whole or not at all: a later page of one write can
// survive while an earlier one is lost, which a prefix model never produces.
func TestSimReorderedWriteback(t *testing.T) {
	const page = WritebackPage
	synced := bytes.Repeat([]byte{'s'}, page)
	unsynced := bytes.Repeat([]byte{'u'}, 3*page) // one write over pages 1-3
	var sawHole, sawAll, sawNone bool
	for seed := uint64(0); seed < 200; seed++ {
		s, f := setup(t, seed)
		s.SetTornWrites(true)
		s.SetReorderedWriteback(true)
		write(t, f, string(synced))
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		write(t, f, string(unsynced))
		s.Crash()
		got := read(t, s, "/d/f")
		if len(got) < page || !bytes.Equal(got[:page], synced) {
			t.Fatalf("seed %d: synced page lost", seed)
		}
		var kept []bool
		for p := 1; p <= 3; p++ {
			var pg []byte
			if len(got) > p*page {
				pg = got[p*page : min(len(got), (p+1)*page)]
			}
			whole, gone := bytes.Equal(pg, unsynced[:page]), len(pg) == 0 || bytes.Count(pg, []byte{0}) == len(pg)
			if !whole && !gone {
				t.Fatalf("seed %d: page %d is neither whole nor absent", seed, p)
			}
			kept = append(kept, whole)
		}
		switch {
		case kept[0] && kept[1] && kept[2]:
			sawAll = true
		case !kept[0] && !kept[1] && !kept[2]:
			sawNone = true
		case !kept[0] && (kept[1] || kept[2]):
			sawHole = true
		}
	}
	if !sawHole || !sawAll || !sawNone {
		t.Fatalf("outcomes not all exercised: hole=%v all=%v none=%v", sawHole, sawAll, sawNone)
	}
}

func TestSimDeterministic(t *testing.T) {
	run := func(seed uint64) []byte {
		s, f := setup(t, seed)
		s.SetTornWrites(true)
		for i := 0; i < 20; i++ {
			write(t, f, fmt.Sprintf("record-%02d;", i))
		}
		s.Crash()
		return read(t, s, "/d/f")
	}
	for seed := uint64(0); seed < 20; seed++ {
		if a, b := run(seed), run(seed); !bytes.Equal(a, b) {
			t.Fatalf("seed %d: %q vs %q", seed, a, b)
		}
	}
}

func TestSimFull(t *testing.T) {
	s, f := setup(t, 1)
	if err := f.Preallocate(16); err != nil {
		t.Fatal(err)
	}
	s.SetFull(true)
	if _, err := f.WriteAt([]byte("inside"), 4); err != nil {
		t.Fatalf("write inside preallocated space failed on a full disk: %v", err)
	}
	if _, err := f.WriteAt([]byte("beyond"), 14); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("growing write on full disk: %v, want ENOSPC", err)
	}
	if err := f.Preallocate(32); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("preallocate on full disk: %v, want ENOSPC", err)
	}
	if sz, _ := f.Size(); sz != 16 {
		t.Fatalf("failed write changed the size to %d", sz)
	}
	s.SetFull(false)
	if _, err := f.WriteAt([]byte("beyond"), 14); err != nil {
		t.Fatal(err)
	}
}

func TestSimFailedSyncLosesData(t *testing.T) {
	s, f := setup(t, 1)
	write(t, f, "A")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	write(t, f, "B")
	s.FailSyncs(1)
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("injected sync error: %v", err)
	}
	// The retry "succeeds" but B is gone: the fsyncgate behaviour callers must not rely on.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, s, "/d/f"); string(got) != "AB" {
		t.Fatalf("before crash: %q", got)
	}
	s.Crash()
	if got := read(t, s, "/d/f"); string(got) != "A" {
		t.Fatalf("after crash: %q, want %q", got, "A")
	}
	s.FailSyncs(1)
	if err := s.SyncDir("/d"); !errors.Is(err, syscall.EIO) {
		t.Fatalf("injected dir sync error: %v", err)
	}
}

// TestSimWriteFileDurableCrash crashes (with tearing) after every prefix of the operations
// WriteFileDurable performs, by failing it part way, and checks the file is old or new.
func TestSimWriteFileDurableCrash(t *testing.T) {
	for seed := uint64(0); seed < 200; seed++ {
		s := NewSim(seed)
		s.SetTornWrites(true)
		if err := MkdirAllDurable(s, "/d", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := WriteFileDurable(s, "/d/f", []byte("old contents")); err != nil {
			t.Fatal(err)
		}
		if seed%2 == 0 {
			s.FailSyncs(int(seed/2%3) + 1) // fail the file sync, or the dir sync too
		}
		_ = WriteFileDurable(s, "/d/f", []byte("new contents!"))
		s.Crash()
		got := string(read(t, s, "/d/f"))
		if got != "old contents" && got != "new contents!" {
			t.Fatalf("seed %d: torn atomic write: %q", seed, got)
		}
	}
}

func TestSimConcurrent(t *testing.T) {
	s := NewSim(1)
	if err := MkdirAllDurable(s, "/d", 0o755); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("/d/f%d", g)
			f, err := s.Create(name)
			if err != nil {
				t.Error(err)
				return
			}
			for i := 0; i < 100; i++ {
				if _, err := f.Write([]byte{byte(i)}); err != nil {
					t.Error(err)
					return
				}
				if err := f.Sync(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := s.SyncDir("/d"); err != nil {
		t.Fatal(err)
	}
	s.Crash()
	for g := 0; g < 4; g++ {
		if got := read(t, s, fmt.Sprintf("/d/f%d", g)); len(got) != 100 || got[99] != 99 {
			t.Fatalf("file %d: %d bytes", g, len(got))
		}
	}
	if st := s.Stats(); st.FileSyncs != 400 || st.Crashes != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSimCrashAfterEveryStep crashes WriteFileDurable before each of its mutating steps in turn,
// with torn writes, and checks the file always reads as the old or the new contents.
func TestSimCrashAfterEveryStep(t *testing.T) {
	sawNew, sawOld := false, false
	for seed := uint64(0); seed < 20; seed++ {
		for k := 0; ; k++ {
			s := NewSim(seed)
			s.SetTornWrites(true)
			if err := MkdirAllDurable(s, "/d", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := WriteFileDurable(s, "/d/f", []byte("old contents")); err != nil {
				t.Fatal(err)
			}
			s.CrashAfter(k)
			err := WriteFileDurable(s, "/d/f", []byte("new contents!"))
			if !s.Down() {
				if err != nil {
					t.Fatal(err)
				}
				break // k is past the last step
			}
			if !errors.Is(err, ErrCrashed) {
				t.Fatalf("seed %d step %d: error %v, want ErrCrashed", seed, k, err)
			}
			if _, err := s.Stat("/d/f"); !errors.Is(err, ErrCrashed) {
				t.Fatalf("operation while down: %v", err)
			}
			s.Restart()
			switch got := string(read(t, s, "/d/f")); got {
			case "old contents":
				sawOld = true
			case "new contents!":
				sawNew = true
			default:
				t.Fatalf("seed %d, crash before step %d: %q", seed, k, got)
			}
		}
	}
	if !sawOld || !sawNew {
		t.Fatalf("outcomes not exercised: old=%v new=%v", sawOld, sawNew)
	}
}
