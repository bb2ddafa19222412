package mvcc

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caucus/caucus/internal/logpb"
	bolt "go.etcd.io/bbolt"
)

// testdata/schema3.db is a store file written by the schema 3 release (commit 02823c1) from
// upgradeWorkload, applied in batches of 1 to 4 commands; testdata/schema3.golden is what that
// release read from it (dumpStore).

// applyWorkload applies cmds to h in the batches the fixture was written with.
func applyWorkload(h *harness, cmds []*logpb.Command) {
	for i := 0; i < len(cmds); {
		n := min(1+i%4, len(cmds)-i)
		h.batch(cmds[i : i+n]...)
		i += n
	}
}

// copyFixture copies testdata/name into a new directory and returns its path.
func copyFixture(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kv.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func schemaOf(t testing.TB, s *Store) uint64 {
	t.Helper()
	var v uint64
	if err := s.view(func(tx *bolt.Tx) error {
		v = u64(tx.Bucket(bucketMeta).Get(metaSchema))
		if tx.Bucket(legacyBucketKV) != nil || tx.Bucket(legacyBucketRev) != nil {
			t.Errorf("schema %d store still has the schema 3 buckets", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// afterUpgrade is more history written on top of the migrated store: writes over old keys
// (versions continue), a new compaction that removes migrated history, and a lease revocation.
func afterUpgrade() []*logpb.Command {
	var out []*logpb.Command
	for i, k := range []string{"a", "a\x00b", "z", "new", "d", "lease/1"} {
		out = append(out, putCmd(k, fmt.Sprint("after-", i)))
	}
	out = append(out, cmdOf(&logpb.DeleteRangeRequest{Key: []byte("b"), RangeEnd: []byte("d")}),
		cmdOf(&logpb.CompactionRequest{Revision: 250}),
		cmdOf(&logpb.PutRequest{Key: []byte("leased"), Lease: 100}),
		cmdOf(&logpb.LeaseRevokeRequest{Id: 100}),
		putCmd("a", "last"))
	for _, c := range out {
		c.TimeUnixNano = baseTime.UnixNano() + int64(1e12)
	}
	return out
}

// A member's schema 3 kv.db opens as schema 4: every read answers as the old release did, and
// writes, compaction and leases go on exactly as on a store that ran schema 4 all along.
func TestOpenMigratesSchema3(t *testing.T) {
	golden, err := os.ReadFile("testdata/schema3.golden")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, now: baseTime}
	if h.s, err = Open(copyFixture(t, "schema3.db"), Options{NoSync: true}); err != nil {
		t.Fatalf("open a schema 3 store: %v", err)
	}
	t.Cleanup(func() { h.s.Close() })
	if v := schemaOf(t, h.s); v != schemaVersion {
		t.Fatalf("schema after migration = %d, want %d", v, schemaVersion)
	}
	checkInvariants(t, h.s)
	if got := dumpStore(t, h.s); got != string(golden) {
		t.Fatalf("migrated store reads differ from the schema 3 release's:\n%s", lineDiff(got, string(golden)))
	}

	// The same commands on a store that never was schema 3.
	fresh := newHarness(t, Options{})
	applyWorkload(fresh, upgradeWorkload())
	if got, want := dump(t, h.s), dump(t, fresh.s); got != want {
		t.Fatalf("migrated store differs from a fresh one:\n%s", lineDiff(got, want))
	}
	h.index = h.s.AppliedIndex()
	for _, c := range afterUpgrade() {
		r1, r2 := h.cmd(c), fresh.cmd(c)
		if fmt.Sprint(r1.Resp, r1.Err) != fmt.Sprint(r2.Resp, r2.Err) {
			t.Fatalf("%v after migration = %v %v, on a fresh store %v %v", c, r1.Resp, r1.Err, r2.Resp, r2.Err)
		}
	}
	if kv, _ := h.get("a", 0); string(kv.Value) != "last" || kv.Version < 2 {
		t.Fatalf("a after migration = %v", kv)
	}
	if got, want := dumpStore(t, h.s), dumpStore(t, fresh.s); got != want {
		t.Fatalf("writes after migration differ from a fresh store:\n%s", lineDiff(got, want))
	}
	checkInvariants(t, h.s)
	// And the migrated file reopens as it is.
	path := h.s.path
	h.s.Close()
	if h.s, err = Open(path, Options{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	if got, want := dumpStore(t, h.s), dumpStore(t, fresh.s); got != want {
		t.Fatalf("reopened migrated store differs:\n%s", lineDiff(got, want))
	}
}

// A snapshot sent by a leader of the schema 3 release is the leader's file: Restore takes it and
// the store migrates it as it reopens.
func TestRestoreSchema3Snapshot(t *testing.T) {
	golden, err := os.ReadFile("testdata/schema3.golden")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := os.ReadFile("testdata/schema3.db")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Options{})
	h.put("to be replaced", "x")
	if err := h.s.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatalf("restore a schema 3 snapshot: %v", err)
	}
	if v := schemaOf(t, h.s); v != schemaVersion {
		t.Fatalf("schema after restore = %d, want %d", v, schemaVersion)
	}
	checkInvariants(t, h.s)
	if got := dumpStore(t, h.s); got != string(golden) {
		t.Fatalf("restored store reads differ from the schema 3 release's:\n%s", lineDiff(got, string(golden)))
	}
	h.index = h.s.AppliedIndex()
	h.put("after", "restore")
	checkInvariants(t, h.s)
}

// A file of a newer schema is refused, naming both versions, by Open and by Restore, and is
// left as it was.
func TestOpenRefusesNewerSchema(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("k", "v")
	if err := h.s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(metaSchema, putU64(schemaVersion+1))
	}); err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if _, err := h.s.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	path := h.s.path
	h.s.Close()
	_, err := Open(path, Options{NoSync: true})
	want := fmt.Sprintf("schema version %d is newer than this release's %d", schemaVersion+1, schemaVersion)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Open of a schema %d file: %v, want an error containing %q", schemaVersion+1, err, want)
	}
	other := newHarness(t, Options{})
	other.put("kept", "1")
	if err := other.s.Restore(io.Reader(&snap)); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Restore of a schema %d snapshot: %v, want an error containing %q", schemaVersion+1, err, want)
	}
	if kv, ok := other.get("kept", 0); !ok || string(kv.Value) != "1" {
		t.Fatalf("store after a refused restore: %v", kv)
	}
}

// A large schema 3 store (written by turning a schema 4 one back, with the schema 2 markers
// too) migrates in one open and answers every read as before.
func TestOpenMigratesLargeSchema2And3(t *testing.T) {
	for _, from := range []uint64{2, 3} {
		t.Run(fmt.Sprint("schema", from), func(t *testing.T) {
			h := newHarness(t, Options{})
			for i := 0; i < 12000; i += 100 {
				cmds := make([]*logpb.Command, 100)
				for j := range cmds {
					cmds[j] = putCmd(fmt.Sprintf("k%05d", (i+j)%8000), fmt.Sprintf("v%d", i+j))
				}
				h.batch(cmds...)
			}
			h.cmd(cmdOf(&logpb.DeleteRangeRequest{Key: []byte("k00007")}))
			h.ok(cmdOf(&logpb.CompactionRequest{Revision: 6000}))
			want := sampleDump(t, h.s)
			if err := h.s.db.Update(func(tx *bolt.Tx) error { return downgrade(tx, from) }); err != nil {
				t.Fatal(err)
			}
			path := h.s.path
			h.s.Close()
			s, err := Open(path, Options{NoSync: true})
			if err != nil {
				t.Fatalf("open a schema %d store: %v", from, err)
			}
			h.s = s
			t.Cleanup(func() { s.Close() })
			if v := schemaOf(t, s); v != schemaVersion {
				t.Fatalf("schema after migration = %d", v)
			}
			checkInvariants(t, s)
			if got := sampleDump(t, s); got != want {
				t.Fatalf("reads after migration differ:\n%s", lineDiff(got, want))
			}
			h.cmd(putCmd("k00001", "after"))
			if kv, _ := h.get("k00001", 0); string(kv.Value) != "after" || kv.Version != 3 {
				t.Fatalf("write after migration: %v", kv)
			}
		})
	}
}

// sampleDump is dump for a store too large to read at every revision: all keys at a few
// revisions, and the change feed after the compacted revision.
func sampleDump(t testing.TB, s *Store) string {
	t.Helper()
	var sb strings.Builder
	fmt.Fprintf(&sb, "rev=%d compact=%d applied=%d\n", s.Rev(), s.CompactRev(), s.AppliedIndex())
	for _, rev := range []int64{s.CompactRev(), (s.CompactRev() + s.Rev()) / 2, s.Rev() - 1, 0} {
		r, err := s.Range(&logpb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev})
		if err != nil {
			t.Fatalf("range at %d: %v", rev, err)
		}
		fmt.Fprintf(&sb, "@%d count %d:", rev, r.Count)
		for _, kv := range r.Kvs {
			fmt.Fprintf(&sb, " %s=%s/%d/%d/%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version)
		}
		sb.WriteString("\n")
	}
	evs, _, err := s.Changes(s.CompactRev()+1, 1<<30, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		fmt.Fprintf(&sb, "event %d %s %d %v\n", ev.Type, ev.Kv.Key, ev.Kv.ModRevision, ev.PrevKv)
	}
	return sb.String()
}

// downgrade rewrites a schema 4 store as schema from (2 or 3): the kv bucket keyed by key, newest
// first, the rev bucket, and for schema 2 a live marker beside each live key's versions.
func downgrade(tx *bolt.Tx, from uint64) error {
	kv, err := tx.CreateBucket(legacyBucketKV)
	if err != nil {
		return err
	}
	rev, err := tx.CreateBucket(legacyBucketRev)
	if err != nil {
		return err
	}
	live := map[string]bool{}
	if err := tx.Bucket(bucketHistory).ForEach(func(k, v []byte) error {
		r, s, _ := splitHistKey(k)
		rec, err := decodeRecord(v)
		if err != nil {
			return err
		}
		live[string(rec.key)] = !rec.tombstone
		flag := byte(0)
		if rec.tombstone {
			flag = flagTombstone
		}
		if err := rev.Put(histKey(r, s), append([]byte{flag}, rec.key...)); err != nil {
			return err
		}
		return kv.Put(legacyKVKey(nil, rec.key, r, s), legacyRecord(&rec))
	}); err != nil {
		return err
	}
	if from == 2 {
		for key, ok := range live {
			if ok {
				if err := kv.Put(append(legacyEscape(nil, []byte(key)), 0, 0), []byte("schema 2 marker")); err != nil {
					return err
				}
			}
		}
	}
	if err := tx.DeleteBucket(bucketHistory); err != nil {
		return err
	}
	return tx.Bucket(bucketMeta).Put(metaSchema, putU64(from))
}

// lineDiff shows the first lines where got and want differ.
func lineDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	var sb strings.Builder
	for i := 0; i < max(len(g), len(w)) && sb.Len() < 4000; i++ {
		var a, b string
		if i < len(g) {
			a = g[i]
		}
		if i < len(w) {
			b = w[i]
		}
		if a != b {
			fmt.Fprintf(&sb, "line %d:\n got %s\nwant %s\n", i+1, a, b)
		}
	}
	return sb.String()
}
