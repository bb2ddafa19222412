package snap

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/caucus/caucus/internal/vfs"
	"github.com/caucus/caucus/raft"
)

const dir = "/data/snap"

func meta(index, term uint64) raft.SnapshotMeta {
	return raft.SnapshotMeta{Index: index, Term: term, ConfState: raft.ConfState{
		Voters: []raft.NodeID{1, 2, 3}, Learners: []raft.NodeID{4}, AutoLeave: index%2 == 0}}
}

func payload(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func newStore(t *testing.T, fsys vfs.FS, logs io.Writer) *Store {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	s, err := New(fsys, dir, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func names(t *testing.T, fsys vfs.FS) []string {
	t.Helper()
	ns, err := fsys.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func TestSaveLoadRoundTrip(t *testing.T) {
	fsys := vfs.NewSim(1)
	s := newStore(t, fsys, nil)
	if _, err := s.Load(); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("Load on empty store: %v", err)
	}
	want := raft.Snapshot{Meta: meta(10, 2), Data: payload(1, 5000)}
	if err := s.Save(want.Meta, want.Data); err != nil {
		t.Fatal(err)
	}
	// A fresh store over the same files, after a crash: Save's result must be durable.
	fsys.Crash()
	got, err := newStore(t, fsys, nil).Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got meta %+v (%d bytes), want %+v (%d bytes)", got.Meta, len(got.Data), want.Meta, len(want.Data))
	}
	// Empty data round-trips as nil.
	if err := s.Save(meta(11, 2), nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Load(); err != nil || got.Meta.Index != 11 || got.Data != nil {
		t.Fatalf("empty snapshot: %+v %v", got, err)
	}
	if err := s.Save(raft.SnapshotMeta{}, nil); err == nil {
		t.Fatal("snapshot at index 0 accepted")
	}
}

func TestRetainNewest(t *testing.T) {
	fsys := vfs.NewSim(1)
	s, err := New(fsys, dir, Options{Retain: 3, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 6; i++ {
		if err := s.Save(meta(i*10, 1), payload(i, 100)); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{fileName(40, 1), fileName(50, 1), fileName(60, 1)}
	if got := names(t, fsys); !reflect.DeepEqual(got, want) {
		t.Fatalf("kept %v, want %v", got, want)
	}
	got, err := s.Load()
	if err != nil || got.Meta.Index != 60 || !bytes.Equal(got.Data, payload(6, 100)) {
		t.Fatalf("Load: %+v %v", got.Meta, err)
	}
	if _, err := New(fsys, dir, Options{Retain: MaxRetain + 1}); err == nil {
		t.Fatal("Retain above MaxRetain accepted")
	}
}

func damage(t *testing.T, fsys vfs.FS, name string, off int64) {
	t.Helper()
	f, err := fsys.OpenFile(filepath.Join(dir, name), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestCorruptNewestFallsBack(t *testing.T) {
	for _, c := range []struct {
		name string
		off  int64
	}{{"data", 500}, {"header length", 13}, {"magic", 0}, {"checksum", -1}} {
		t.Run(c.name, func(t *testing.T) {
			fsys := vfs.NewSim(1)
			var logs bytes.Buffer
			s := newStore(t, fsys, &logs)
			if err := s.Save(meta(10, 1), payload(1, 1000)); err != nil {
				t.Fatal(err)
			}
			if err := s.Save(meta(20, 2), payload(2, 1000)); err != nil {
				t.Fatal(err)
			}
			off := c.off
			if off < 0 {
				fi, _ := fsys.Stat(filepath.Join(dir, fileName(20, 2)))
				off += fi.Size()
			}
			damage(t, fsys, fileName(20, 2), off)
			got, err := s.Load()
			if err != nil {
				t.Fatal(err)
			}
			if got.Meta.Index != 10 || !bytes.Equal(got.Data, payload(1, 1000)) {
				t.Fatalf("fell back to %+v", got.Meta)
			}
			broken := filepath.Join(dir, fileName(20, 2))
			if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, broken) {
				t.Fatalf("no warning naming %s: %q", broken, l)
			}
			if got := names(t, fsys); !reflect.DeepEqual(got, []string{fileName(10, 1), fileName(20, 2) + brokenSuffix}) {
				t.Fatalf("files after fallback: %v", got)
			}
			// With the only remaining snapshot damaged too, Load reports corruption.
			damage(t, fsys, fileName(10, 1), 600)
			if _, err := s.Load(); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Load with every snapshot damaged: %v", err)
			}
		})
	}
}

func TestTruncatedAndMismatchedFiles(t *testing.T) {
	fsys := vfs.NewSim(1)
	s := newStore(t, fsys, nil)
	if err := s.Save(meta(10, 1), payload(1, 100)); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, fileName(10, 1))
	good, err := vfs.ReadFile(fsys, src)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		fileName(30, 1): good[:len(good)-10],                     // truncated
		fileName(40, 1): append(append([]byte(nil), good...), 0), // trailing byte
		fileName(50, 1): good,                                    // valid bytes under the wrong name
		fileName(60, 1): good[:5],
	}
	for name, b := range cases {
		if err := vfs.WriteFileDurable(fsys, filepath.Join(dir, name), b); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Load()
	if err != nil || got.Meta.Index != 10 {
		t.Fatalf("Load: %+v %v", got.Meta, err)
	}
	if n := len(names(t, fsys)); n != 5 {
		t.Fatalf("%d files, want the good one and 4 .broken", n)
	}
}

func TestSizeLimits(t *testing.T) {
	fsys := vfs.NewSim(1)
	s, err := New(fsys, dir, Options{MaxSnapshotBytes: 1000, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(meta(10, 1), make([]byte, 1001)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized Save: %v", err)
	}
	// A file written with a larger limit is refused on Load rather than allocated.
	big, _ := New(fsys, dir, Options{})
	if err := big.Save(meta(20, 1), make([]byte, 2000)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "MaxSnapshotBytes") {
		t.Fatalf("Load of an over-limit file: %v", err)
	}
}

// TestCrashDuringSave crashes before every mutating step of Save (with torn writes, several
// seeds): the previous snapshot must stay loadable, and Load must return either it or the new
// one, intact.
func TestCrashDuringSave(t *testing.T) {
	old := raft.Snapshot{Meta: meta(10, 1), Data: payload(1, 3000)}
	nw := raft.Snapshot{Meta: meta(20, 2), Data: payload(2, 4000)}
	sawOld, sawNew := false, false
	for seed := uint64(0); seed < 30; seed++ {
		for k := 0; ; k++ {
			fsys := vfs.NewSim(seed)
			fsys.SetTornWrites(true)
			s := newStore(t, fsys, nil)
			if err := s.Save(old.Meta, old.Data); err != nil {
				t.Fatal(err)
			}
			fsys.CrashAfter(k)
			err := s.Save(nw.Meta, nw.Data)
			if !fsys.Down() {
				if err != nil {
					t.Fatal(err)
				}
				break
			}
			fsys.Restart()
			got, err := newStore(t, fsys, nil).Load()
			if err != nil {
				t.Fatalf("seed %d, crash before step %d: Load: %v", seed, k, err)
			}
			switch {
			case reflect.DeepEqual(got, old):
				sawOld = true
			case reflect.DeepEqual(got, nw):
				sawNew = true
			default:
				t.Fatalf("seed %d step %d: loaded %+v (%d bytes), neither old nor new", seed, k, got.Meta, len(got.Data))
			}
			for _, n := range names(t, fsys) {
				if strings.HasSuffix(n, tmpSuffix) {
					t.Fatalf("seed %d step %d: leftover %s after New", seed, k, n)
				}
			}
		}
	}
	if !sawOld || !sawNew {
		t.Fatalf("outcomes not exercised: old=%v new=%v", sawOld, sawNew)
	}
}

func TestOS(t *testing.T) {
	d := t.TempDir()
	s, err := New(vfs.NewOS(), d, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 3; i++ {
		if err := s.Save(meta(i, 1), payload(i, 1<<16)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Load()
	if err != nil || got.Meta.Index != 3 || !bytes.Equal(got.Data, payload(3, 1<<16)) {
		t.Fatalf("Load: %+v %v", got.Meta, err)
	}
	ents, _ := os.ReadDir(d)
	if len(ents) != DefaultRetain {
		t.Fatalf("%d files, want %d", len(ents), DefaultRetain)
	}
}

func BenchmarkSave1MiB(b *testing.B) {
	s, err := New(vfs.NewOS(), b.TempDir(), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	data := payload(1, 1<<20)
	b.SetBytes(int64(len(data)))
	var i uint64
	for b.Loop() {
		i++
		if err := s.Save(meta(i, 1), data); err != nil {
			b.Fatal(err)
		}
	}
}

// SaveStream writes data it never holds whole, and refuses a producer that writes more or less
// than it announced, leaving no file behind. Open and OpenAt verify a snapshot without reading its
// data into memory and read any range of it.
func TestStreamSaveAndOpen(t *testing.T) {
	fsys := vfs.NewSim(1)
	s := newStore(t, fsys, nil)
	data := payload(7, 3<<20+17) // more than one verification chunk
	produce := func(w io.Writer) error {
		for off := 0; off < len(data); off += 4096 {
			if _, err := w.Write(data[off:min(off+4096, len(data))]); err != nil {
				return err
			}
		}
		return nil
	}
	if err := s.SaveStream(meta(5, 2), uint64(len(data))+1, produce); err == nil {
		t.Fatal("a producer writing fewer bytes than announced was accepted")
	}
	if err := s.SaveStream(meta(5, 2), uint64(len(data))-1, produce); err == nil {
		t.Fatal("a producer writing more bytes than announced was accepted")
	}
	if ns := names(t, fsys); len(ns) != 0 {
		t.Fatalf("failed saves left files: %v", ns)
	}
	if err := s.SaveStream(meta(5, 2), uint64(len(data)), produce); err != nil {
		t.Fatal(err)
	}
	for _, open := range []func() (*Reader, error){s.Open, func() (*Reader, error) { return s.OpenAt(5, 2) }} {
		r, err := open()
		if err != nil {
			t.Fatal(err)
		}
		if r.Meta.Index != 5 || r.Meta.Term != 2 || r.Size != uint64(len(data)) {
			t.Fatalf("opened meta %+v size %d", r.Meta, r.Size)
		}
		got := make([]byte, 1000)
		if _, err := r.ReadAt(got, 2<<20); err != nil || !bytes.Equal(got, data[2<<20:2<<20+1000]) {
			t.Fatalf("ReadAt in the middle: %v", err)
		}
		r.Close()
	}
	if _, err := s.OpenAt(6, 2); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("OpenAt of a missing snapshot: %v, want ErrNoSnapshot", err)
	}
	// A flipped byte deep in the data is caught by the streamed checksum.
	damage(t, fsys, fileName(5, 2), headerBytes+3<<20)
	if _, err := s.OpenAt(5, 2); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("OpenAt of a damaged snapshot: %v, want ErrCorrupt", err)
	}
}
