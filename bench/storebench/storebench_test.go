package storebench

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dump renders an engine's tables as text, for comparing engines.
func dump(t *testing.T, e Engine) string {
	t.Helper()
	var b strings.Builder
	if err := e.Dump(func(tb Table, k, v []byte) error {
		fmt.Fprintf(&b, "%c %x %x\n", tb, k, v)
		return nil
	}); err != nil {
		t.Fatalf("dump %T: %v", e, err)
	}
	return b.String()
}

// count returns the number of entries of each table.
func count(t *testing.T, e Engine) map[Table]int {
	t.Helper()
	c := map[Table]int{}
	if err := e.Dump(func(tb Table, _, _ []byte) error { c[tb]++; return nil }); err != nil {
		t.Fatalf("count %T: %v", e, err)
	}
	return c
}

func openAll(t *testing.T) []Engine {
	t.Helper()
	var out []Engine
	for _, k := range Kinds {
		e, err := k.Open(filepath.Join(t.TempDir(), k.Name), Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		out = append(out, e)
	}
	return out
}

// TestEnginesAgree applies the same batches to both engines, with keys repeated inside a batch,
// and checks that they hold identical tables, read the newest values, and survive snapshot,
// restore, history compaction and reclaim with identical contents.
func TestEnginesAgree(t *testing.T) {
	const seed = 7
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	engines := openAll(t)
	model := map[string][]byte{}
	versions := map[string]int{}
	var index uint64
	for range 40 {
		n := 1 + rng.IntN(20)
		puts := make([]Put, n)
		for i := range puts {
			// A key space of 32 makes repeats within a batch common; 0x00 bytes exercise escaping.
			k := binary.BigEndian.AppendUint64(nil, uint64(rng.IntN(32)))
			v := fmt.Appendf(nil, "v%d-%d", index, i)
			puts[i] = Put{Key: k, Value: v}
			model[string(k)] = v
			versions[string(k)]++
		}
		index++
		for _, e := range engines {
			if err := e.Apply(index, puts); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := dump(t, engines[0])
	check := func(stage string, es []Engine) {
		t.Helper()
		for _, e := range es {
			if got := dump(t, e); got != want {
				t.Fatalf("%s: %T differs from bbolt:\n%s\nwant\n%s", stage, e, got, want)
			}
			for k, v := range model {
				got, ok, err := e.Get([]byte(k), nil)
				if err != nil || !ok || !bytes.Equal(got, v) {
					t.Fatalf("%s: %T Get(%x) = %q %v %v, want %q", stage, e, k, got, ok, err, v)
				}
			}
			if _, ok, err := e.Get([]byte("absent"), nil); ok || err != nil {
				t.Fatalf("%s: %T Get(absent) = %v %v", stage, e, ok, err)
			}
			keys, n, err := e.Range(binary.BigEndian.AppendUint64(nil, 10), 5)
			if err != nil || keys != 5 || n == 0 {
				t.Fatalf("%s: %T Range = %d keys %d bytes %v, want 5 keys", stage, e, keys, n, err)
			}
			if e.Applied() != index {
				t.Fatalf("%s: %T applied %d, want %d", stage, e, e.Applied(), index)
			}
		}
	}
	check("after apply", engines)
	if c := count(t, engines[0]); c[TableLive] != len(model) || c[TableKV] != c[TableRev] {
		t.Fatalf("after apply: table sizes %v, want %d live keys and one rev entry per version", c, len(model))
	}

	// Snapshot and restore each engine.
	var restored []Engine
	for i, k := range Kinds {
		var buf bytes.Buffer
		if _, err := engines[i].WriteSnapshot(&buf); err != nil {
			t.Fatal(err)
		}
		r, err := k.Restore(filepath.Join(t.TempDir(), k.Name+"-restored"), Config{}, &buf)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		restored = append(restored, r)
	}
	check("restored", restored)

	// Compaction keeps exactly the newest version of each key.
	old := 0
	for _, n := range versions {
		old += n - 1
	}
	for _, e := range engines {
		removed, err := e.CompactHistory(3) // a tiny budget crosses many commit boundaries
		if err != nil {
			t.Fatal(err)
		}
		if removed != old {
			t.Fatalf("%T removed %d versions, want %d", e, removed, old)
		}
	}
	want = dump(t, engines[0])
	if c := count(t, engines[0]); c[TableKV] != len(model) || c[TableRev] != len(model) || c[TableLive] != len(model) {
		t.Fatalf("after compaction: table sizes %v, want one version of each of %d keys", c, len(model))
	}
	check("compacted", engines)
	for _, e := range engines {
		if err := e.Reclaim(); err != nil {
			t.Fatal(err)
		}
	}
	check("reclaimed", engines)
}

// TestPebbleSnapshotChecksum checks that a damaged Pebble snapshot stream is refused before
// anything is ingested.
func TestPebbleSnapshotChecksum(t *testing.T) {
	e := openAll(t)[1]
	if err := e.Apply(1, []Put{{Key: []byte("a"), Value: []byte("1")}, {Key: []byte("b"), Value: []byte("2")}}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := e.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	b[len(b)-1] ^= 1
	dir := filepath.Join(t.TempDir(), "restored")
	if r, err := RestorePebble(dir, Config{}, bytes.NewReader(b)); err == nil {
		r.Close()
		t.Fatal("restore of a corrupted stream succeeded")
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "restore-*.sst"))
	if len(matches) != 0 {
		t.Fatalf("leftover tables after failed restore: %v", matches)
	}
}

// TestRunTiny runs the whole benchmark on both engines with a tiny configuration and checks
// that it reports the same metrics for both, with plausible values.
func TestRunTiny(t *testing.T) {
	p := Params{N: 3000, LoadBatch: 256, KeySpace: 500, ValueSize: 256, BatchSizes: []int{1, 16},
		Writes: 400, Readers: []int{1, 4}, ReadWrites: 320, IdleReads: 200, IdleRanges: 5, ReadWriteRate: 20000, ReadBatch: 16,
		RangeLen: 100, Budget: 512, Seed: 1}
	t.Logf("seed %d", p.Seed)
	var (
		names   [][]string
		deleted []float64
	)
	for _, k := range Kinds {
		dir := t.TempDir()
		ms, err := Run(k, dir, Config{}, p)
		if err != nil {
			t.Fatalf("%s: %v", k.Name, err)
		}
		var ns []string
		got := map[string]float64{}
		for _, m := range ms {
			ns = append(ns, m.Name)
			got[m.Name] = m.Value
			if m.Higher && m.Value <= 0 {
				t.Errorf("%s: %s = %v, want > 0", k.Name, m.Name, m.Value)
			}
		}
		names = append(names, ns)
		deleted = append(deleted, got["old versions deleted"])
		if got["disk after 3000 puts"] <= 0 || got["snapshot size"] <= 0 {
			t.Errorf("%s: sizes not measured: %v", k.Name, got)
		}
		if _, err := os.Stat(filepath.Join(dir, "restored")); !os.IsNotExist(err) {
			t.Errorf("%s: restored copy not removed: %v", k.Name, err)
		}
	}
	// 3000 + 2*400 + 3*320 puts over at most 500 keys, the same puts on both engines.
	if deleted[0] != deleted[1] || deleted[0] < 4760-500 {
		t.Errorf("old versions deleted: %v, want equal and at least %d", deleted, 4760-500)
	}
	if strings.Join(names[0], "|") != strings.Join(names[1], "|") {
		t.Fatalf("engines report different metrics:\n%v\n%v", names[0], names[1])
	}
}
