package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/caucus/caucus/internal/logpb"
	bolt "go.etcd.io/bbolt"
)

// rawDump lists every bucket's keys and values, byte for byte: a defragmented file must hold
// exactly the same data, including tables no read API exposes in full (sessions, the revision
// log, lease indexes, the physical compaction position).
func rawDump(t testing.TB, s *Store) string {
	t.Helper()
	var sb bytes.Buffer
	err := s.view(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			fmt.Fprintf(&sb, "bucket %s seq=%d\n", name, b.Sequence())
			return b.ForEach(func(k, v []byte) error {
				fmt.Fprintf(&sb, "  %x=%x\n", k, v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatalf("dump buckets: %v", err)
	}
	return sb.String()
}

func TestDefragmentPreservesState(t *testing.T) {
	h := newHarness(t, Options{})
	buildState(h)
	wantAPI, wantRaw := dump(t, h.s), rawDump(t, h.s)
	rev, applied := h.s.Rev(), h.s.AppliedIndex()

	before, after, err := h.s.Defragment()
	if err != nil {
		t.Fatalf("Defragment: %v", err)
	}
	if before <= 0 || after <= 0 {
		t.Fatalf("sizes before %d after %d, want both positive", before, after)
	}
	if got := dump(t, h.s); got != wantAPI {
		t.Fatalf("reads differ after defragment:\n%s\nwant\n%s", got, wantAPI)
	}
	if got := rawDump(t, h.s); got != wantRaw {
		t.Fatalf("buckets differ after defragment:\n%s\nwant\n%s", got, wantRaw)
	}
	checkInvariants(t, h.s)
	if _, err := os.Stat(h.s.path + ".defrag.tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file left behind: %v", err)
	}

	// The session table came along: a retry is still deduplicated, and the store keeps applying
	// from the same index and revision.
	if h.ok(sessPut(5, 1, "sess", "retry")); h.s.Rev() != rev {
		t.Fatalf("session retry applied again after defragment: revision %d -> %d", rev, h.s.Rev())
	}
	if r := h.put("new", "v"); r.Header.Revision != rev+1 || h.s.AppliedIndex() != applied+2 {
		t.Fatalf("after defragment: put at revision %d (want %d), applied %d (want %d)",
			r.Header.Revision, rev+1, h.s.AppliedIndex(), applied+2)
	}

	// What the store reads after a reopen is what it wrote: the rename was durable and complete.
	path := h.s.path
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path, Options{NoSync: true, Logger: h.s.log})
	if err != nil {
		t.Fatalf("reopen after defragment: %v", err)
	}
	defer s2.Close()
	if s2.Rev() != rev+1 || s2.AppliedIndex() != applied+2 {
		t.Fatalf("reopened at revision %d applied %d, want %d and %d", s2.Rev(), s2.AppliedIndex(), rev+1, applied+2)
	}
	checkInvariants(t, s2)
}

// fillAndCompact writes n keys of valueBytes each, deletes all but every keepEvery-th key,
// compacts at the head revision and lets physical compaction finish.
func fillAndCompact(h *harness, n, valueBytes, keepEvery int) {
	h.t.Helper()
	val := string(bytes.Repeat([]byte("x"), valueBytes))
	const perBatch = 500
	for i := 0; i < n; i += perBatch {
		var cmds []*logpb.Command
		for j := i; j < min(i+perBatch, n); j++ {
			cmds = append(cmds, putCmd(fmt.Sprintf("k/%06d", j), val))
		}
		h.batch(cmds...)
	}
	var dels []*logpb.Command
	for i := 0; i < n; i++ {
		if i%keepEvery != 0 {
			dels = append(dels, cmdOf(&logpb.DeleteRangeRequest{Key: []byte(fmt.Sprintf("k/%06d", i))}))
		}
		if len(dels) == perBatch || i == n-1 {
			h.batch(dels...)
			dels = nil
		}
	}
	h.ok(cmdOf(&logpb.CompactionRequest{Revision: h.s.Rev()}))
	// Each batch compacts a bounded share; empty batches finish the work.
	for range 1000 {
		var st state
		if err := h.s.view(func(tx *bolt.Tx) error { st = loadState(tx); return nil }); err != nil {
			h.t.Fatal(err)
		}
		if st.compactNextRev > st.compactRev {
			return
		}
		b := h.s.Begin()
		h.index++
		b.Noop(h.index)
		if err := b.Commit(); err != nil {
			h.t.Fatal(err)
		}
	}
	h.t.Fatal("physical compaction did not finish")
}

func TestDefragmentShrinksFile(t *testing.T) {
	h := newHarness(t, Options{})
	fillAndCompact(h, 8000, 1024, 50)
	want := dump(t, h.s)
	before, after, err := h.s.Defragment()
	if err != nil {
		t.Fatalf("Defragment: %v", err)
	}
	t.Logf("file %d -> %d bytes", before, after)
	if before < 8<<20 {
		t.Fatalf("file before defragment is %d bytes; the test expects the peak (8000 x 1 KiB) to be kept", before)
	}
	if after*4 > before {
		t.Fatalf("file %d -> %d bytes: want it at least 4x smaller after deleting 98%% of the data", before, after)
	}
	if got := h.s.Size(); got != after {
		t.Errorf("Size() = %d after defragment, which reported %d", got, after)
	}
	if fi, err := os.Stat(h.s.path); err != nil || fi.Size() != after {
		t.Fatalf("reported size %d, file %v %v", after, fi, err)
	}
	if got := dump(t, h.s); got != want {
		t.Fatal("reads differ after defragment")
	}
	r := h.rng(&logpb.RangeRequest{Key: []byte("k/"), RangeEnd: []byte("k0"), CountOnly: true})
	if r.Count != 160 {
		t.Fatalf("%d keys after defragment, want 160", r.Count)
	}
}

// An error anywhere before the rename leaves the store on its current file, working, and
// removes the temporary file.
func TestDefragmentFailureKeepsStore(t *testing.T) {
	cases := []struct {
		name    string
		prepare func(t *testing.T, h *harness)
		wantErr error
	}{
		{
			// A non-empty directory where the copy goes: it can neither be removed nor opened.
			name: "temporary path unusable",
			prepare: func(t *testing.T, h *harness) {
				dir := h.s.path + ".defrag.tmp"
				if err := os.MkdirAll(filepath.Join(dir, "x"), 0o700); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.RemoveAll(dir) })
			},
		},
		{
			name: "failure after the check",
			prepare: func(t *testing.T, h *harness) {
				injected := errors.New("injected")
				setDefragHook(t, func(string) error { return injected })
			},
		},
		{
			// A batch committing during the copy (a caller breaking the contract) is detected.
			name: "batch committed during the copy",
			prepare: func(t *testing.T, h *harness) {
				setDefragHook(t, func(string) error { h.put("racer", "x"); return nil })
			},
			wantErr: ErrDefragRace,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Options{})
			buildState(h)
			tc.prepare(t, h)
			want := dump(t, h.s)
			fi, err := os.Stat(h.s.path)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = h.s.Defragment()
			if err == nil {
				t.Fatal("Defragment succeeded, want an error")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("Defragment: %v, want %v", err, tc.wantErr)
			}
			t.Logf("Defragment: %v", err)
			if tc.wantErr == nil {
				if got := dump(t, h.s); got != want {
					t.Fatalf("state changed by a failed defragment:\n%s\nwant\n%s", got, want)
				}
			}
			if fi2, err := os.Stat(h.s.path); err != nil || !os.SameFile(fi, fi2) {
				t.Fatalf("database file replaced by a failed defragment (%v)", err)
			}
			if fi, err := os.Stat(h.s.path + ".defrag.tmp"); err == nil && !fi.IsDir() {
				t.Fatal("temporary file left behind")
			}
			setDefragHook(t, nil)
			h.put("after", "failure")
			if kv, ok := h.get("after", 0); !ok || string(kv.Value) != "failure" {
				t.Fatalf("store not working after a failed defragment: %v", kv)
			}
			checkInvariants(t, h.s)
		})
	}
}

// The check refuses a copy that is not a complete store at the expected applied index.
func TestCheckDefragFile(t *testing.T) {
	h := newHarness(t, Options{})
	buildState(h)
	var snap bytes.Buffer
	if _, err := h.s.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "copy")
	if err := os.WriteFile(path, snap.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkDefragFile(path, h.s.AppliedIndex()); err != nil {
		t.Fatalf("check of a good copy: %v", err)
	}
	if err := checkDefragFile(path, h.s.AppliedIndex()+1); err == nil {
		t.Fatal("check accepted a copy at another applied index")
	}
	if err := os.WriteFile(path, snap.Bytes()[:snap.Len()/3], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkDefragFile(path, h.s.AppliedIndex()); err == nil {
		t.Fatal("check accepted a truncated copy")
	}
}

func setDefragHook(t *testing.T, f func(tmp string) error) {
	old := defragBeforeSwap
	defragBeforeSwap = f
	t.Cleanup(func() { defragBeforeSwap = old })
}

// Readers running during defragmentations see the right data or a clean error, never a crash
// or a torn result (run with -race).
func TestDefragmentUnderReads(t *testing.T) {
	h := newHarness(t, Options{})
	fillAndCompact(h, 2000, 256, 10)
	const readers = 4
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var mu sync.Mutex
	reads := 0
	for g := range readers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("k/%06d", (g*7919+i*10)%2000/10*10) // a kept key
				r, err := h.s.Range(&logpb.RangeRequest{Key: []byte(k)})
				if err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Errorf("range %s during defragment: %v", k, err)
						return
					}
					continue
				}
				if len(r.Kvs) != 1 || string(r.Kvs[0].Key) != k || len(r.Kvs[0].Value) != 256 {
					t.Errorf("range %s during defragment = %v", k, r.Kvs)
					return
				}
				mu.Lock()
				reads++
				mu.Unlock()
			}
		})
	}
	for range 5 {
		if _, _, err := h.s.Defragment(); err != nil {
			t.Errorf("Defragment: %v", err)
			break
		}
	}
	close(stop)
	wg.Wait()
	checkInvariants(t, h.s)
	t.Logf("%d reads during 5 defragmentations", reads)
}
