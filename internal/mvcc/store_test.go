package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/logpb"
	"google.golang.org/protobuf/proto"
)

func TestIdempotentReapply(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kv.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := s.Begin()
	for i := uint64(1); i <= 5; i++ {
		if r := b.Apply(i, putCmd(fmt.Sprintf("k%d", i), "v")); r.Err != nil || r.Skipped {
			t.Fatalf("apply %d: %+v", i, r)
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopen, as after a crash, and replay indexes 3..7 from the WAL.
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.AppliedIndex() != 5 || s.Rev() != 6 {
		t.Fatalf("after reopen applied %d rev %d, want 5 and 6", s.AppliedIndex(), s.Rev())
	}
	b = s.Begin()
	for i := uint64(3); i <= 7; i++ {
		r := b.Apply(i, putCmd(fmt.Sprintf("k%d", i), "replayed"))
		if skipped := i <= 5; r.Skipped != skipped {
			t.Fatalf("index %d skipped=%v", i, r.Skipped)
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	r, _ := s.Range(&logpb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	for _, kv := range r.Kvs {
		want := "v"
		if kv.Key[1] > '5' {
			want = "replayed"
		}
		if string(kv.Value) != want || kv.Version != 1 {
			t.Fatalf("%s = %q version %d, want %q version 1", kv.Key, kv.Value, kv.Version, want)
		}
	}
	if s.AppliedIndex() != 7 || s.Rev() != 8 {
		t.Fatalf("applied %d rev %d, want 7 and 8", s.AppliedIndex(), s.Rev())
	}
	// A batch of only old entries does not write.
	b = s.Begin()
	b.Noop(2)
	b.ApplyMember(3, &logpb.MemberContext{Id: 1}, false)
	if err := b.Commit(); err != nil || len(s.Members()) != 0 {
		t.Fatalf("old member change applied: %v %v", err, s.Members())
	}
}

// buildState applies a varied history to h.
func buildState(h *harness) {
	h.ok(cmdOf(&logpb.LeaseGrantRequest{Ttl: 30, Id: 11}))
	for i := range 20 {
		h.put(fmt.Sprintf("key/%02d", i%7), fmt.Sprint(i))
	}
	h.ok(cmdOf(&logpb.PutRequest{Key: []byte("leased"), Value: []byte("l"), Lease: 11}))
	h.ok(cmdOf(&logpb.DeleteRangeRequest{Key: []byte("key/03"), RangeEnd: []byte("key/05")}))
	h.ok(sessPut(5, 1, "sess", "s"))
	h.ok(cmdOf(&logpb.CompactionRequest{Revision: 10}))
	b := h.s.Begin()
	h.index++
	b.ApplyMember(h.index, &logpb.MemberContext{Id: 2, Name: "n2", PeerUrls: []string{"http://p2"}, ClientUrls: []string{"http://c2"}}, true)
	if err := b.Commit(); err != nil {
		h.t.Fatal(err)
	}
}

// dump is a byte-level description of a store's observable state.
func dump(t testing.TB, s *Store) string {
	t.Helper()
	var sb strings.Builder
	fmt.Fprintf(&sb, "rev=%d compact=%d applied=%d\n", s.Rev(), s.CompactRev(), s.AppliedIndex())
	for rev := s.CompactRev(); rev <= s.Rev(); rev++ {
		r, err := s.Range(&logpb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev})
		if err != nil {
			t.Fatalf("range at %d: %v", rev, err)
		}
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		fmt.Fprintf(&sb, "%d:%x\n", rev, b)
	}
	ls, _, _ := s.Leases()
	for _, id := range ls {
		ttl, _ := s.LeaseTimeToLive(id, true, baseTime)
		fmt.Fprintf(&sb, "lease %d ttl=%d keys=%q\n", id, ttl.TTL, ttl.Keys)
	}
	fmt.Fprintf(&sb, "members=%+v\n", s.Members())
	return sb.String()
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	src := newHarness(t, Options{})
	buildState(src)
	var buf bytes.Buffer
	applied, err := src.s.WriteSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if applied != src.s.AppliedIndex() {
		t.Fatalf("snapshot applied index %d, want %d", applied, src.s.AppliedIndex())
	}
	dst := newHarness(t, Options{})
	dst.put("stale", "data")
	if err := dst.s.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, dst.s)
	if a, b := dump(t, src.s), dump(t, dst.s); a != b {
		t.Fatalf("restored state differs:\n%s\nvs\n%s", a, b)
	}
	if m := dst.s.Members(); len(m) != 1 || m[0].Name != "n2" || !m[0].IsLearner {
		t.Fatalf("members = %+v", m)
	}
	// Sessions came with the snapshot: a retry is deduplicated on the restored store.
	dst.index = applied
	rev := dst.s.Rev()
	dst.ok(sessPut(5, 1, "sess", "s"))
	if dst.s.Rev() != rev {
		t.Fatal("session lost by the snapshot")
	}
	// Bad snapshots are rejected and the store keeps its state.
	if err := dst.s.Restore(strings.NewReader("not a database")); err == nil {
		t.Fatal("restore of garbage succeeded")
	}
	// A truncated image keeps a valid meta page that points past its end: it must be refused
	// with an error, not read (bbolt would fault on the missing pages).
	if err := dst.s.Restore(bytes.NewReader(buf.Bytes()[:buf.Len()/2])); err == nil {
		t.Fatal("restore of a truncated snapshot succeeded")
	}
	if dst.s.Rev() != rev {
		t.Fatal("failed restore changed the state")
	}
}

func TestLimits(t *testing.T) {
	l := Limits{MaxKeyBytes: 8, MaxValueBytes: 16, MaxTxnOps: 2, MaxRequestBytes: 200}
	h := newHarness(t, Options{Limits: l})
	big := strings.Repeat("x", 300)
	cases := []struct {
		cmd  *logpb.Command
		want error
	}{
		{putCmd("123456789", "v"), ErrKeyTooLarge},
		{putCmd("", "v"), ErrEmptyKey},
		{putCmd("k", strings.Repeat("v", 17)), ErrValueTooLarge},
		{putCmd("k", big), ErrRequestTooLarge},
		{cmdOf(&logpb.TxnRequest{Success: []*logpb.RequestOp{opPut("a", ""), opPut("b", ""), opPut("c", "")}}), ErrTooManyOps},
		{cmdOf(&logpb.TxnRequest{Success: []*logpb.RequestOp{opPut("123456789", "")}}), ErrKeyTooLarge},
		{&logpb.Command{Keyspace: "events", Op: putCmd("k", "v").Op}, ErrUnknownKeyspace},
		{&logpb.Command{}, ErrInvalidArgument},
		{cmdOf(&logpb.LeaseGrantRequest{Ttl: DefaultMaxLeaseTTL + 1}), ErrInvalidArgument},
	}
	for i, c := range cases {
		wantErr(t, l.Validate(c.cmd), c.want)
		if r := h.cmd(c.cmd); !errors.Is(r.Err, c.want) {
			t.Fatalf("case %d applied: %v, want %v", i, r.Err, c.want)
		}
	}
	if h.s.Rev() != 1 {
		t.Fatalf("rejected commands wrote: rev %d", h.s.Rev())
	}
	// A command applied from its encoding is measured by the encoding's size: a small command
	// said to come from an entry past the limit is refused, one within it is not.
	b := h.s.Begin()
	small := putCmd("k", "v")
	if r := b.ApplyEncodedOp(h.index+1, small, 201, func(b *Batch) (proto.Message, error) { return b.Put(small.GetPut()) }); !errors.Is(r.Err, ErrRequestTooLarge) {
		t.Fatalf("a 201-byte entry applied: %v, want %v", r.Err, ErrRequestTooLarge)
	}
	if r := b.ApplyEncodedOp(h.index+2, small, 200, func(b *Batch) (proto.Message, error) { return b.Put(small.GetPut()) }); r.Err != nil {
		t.Fatalf("a 200-byte entry: %v", r.Err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	h.index += 2
	wantErr(t, l.ValidateRange(&logpb.RangeRequest{Key: []byte("k"), Limit: -1}), ErrInvalidArgument)
	wantErr(t, l.ValidateRange(&logpb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("123456789")}), ErrKeyTooLarge)
	if _, err := Open(filepath.Join(t.TempDir(), "x.db"), Options{Limits: Limits{MaxKeyBytes: 1 << 20}}); err == nil {
		t.Fatal("Open accepted a key limit beyond bbolt's")
	}
}

// randomCommands generates a reproducible mixed workload.
func randomCommands(seed uint64, n int) []*logpb.Command {
	rng := rand.New(rand.NewPCG(seed, seed))
	key := func() string { return fmt.Sprintf("k%02d", rng.IntN(30)) }
	var out []*logpb.Command
	t := baseTime.UnixNano()
	for i := range n {
		t += int64(rng.IntN(2000)) * 1e6
		var c *logpb.Command
		switch p := rng.IntN(100); {
		case p < 50:
			var lease int64
			if rng.IntN(4) == 0 {
				lease = int64(1 + rng.IntN(3))
			}
			c = cmdOf(&logpb.PutRequest{Key: []byte(key()), Value: []byte(fmt.Sprint(i)), Lease: lease, PrevKv: true})
		case p < 60:
			a, b := key(), key()
			c = cmdOf(&logpb.DeleteRangeRequest{Key: []byte(min(a, b)), RangeEnd: []byte(max(a, b)), PrevKv: true})
		case p < 75:
			c = cmdOf(&logpb.TxnRequest{
				Compare: []*logpb.Compare{{Result: logpb.Compare_Result(rng.IntN(4)), Target: logpb.Compare_VERSION, Key: []byte(key()), TargetUnion: &logpb.Compare_Version{Version: int64(rng.IntN(3))}}},
				Success: []*logpb.RequestOp{opPut(key(), "s"), opRange("k", "l", 0)},
				Failure: []*logpb.RequestOp{opDel(key(), "")},
			})
		case p < 80:
			c = cmdOf(&logpb.LeaseGrantRequest{Id: int64(rng.IntN(4)), Ttl: int64(1 + rng.IntN(5))})
		case p < 84:
			c = cmdOf(&logpb.LeaseKeepAliveRequest{Id: int64(1 + rng.IntN(3))})
		case p < 88:
			c = cmdOf(&logpb.LeaseExpire{Ids: []int64{1, 2, 3}})
		case p < 92:
			c = cmdOf(&logpb.LeaseRevokeRequest{Id: int64(1 + rng.IntN(3))})
		case p < 95:
			c = cmdOf(&logpb.CompactionRequest{Revision: int64(i / 4)})
		default:
			c = sessPut(uint64(1+rng.IntN(3)), uint64(rng.IntN(4)), key(), "sess")
		}
		c.TimeUnixNano = t
		out = append(out, c)
	}
	return out
}

func TestDeterminism(t *testing.T) {
	cmds := randomCommands(42, 600)
	run := func(batchSize int) (*harness, []string) {
		h := newHarness(t, Options{Limits: Limits{MaxSessions: 2, SessionTTL: 30 * time.Second}})
		var results []string
		for i := 0; i < len(cmds); i += batchSize {
			batch := cmds[i:min(i+batchSize, len(cmds))]
			for _, r := range h.batch(cloneCmds(batch)...) {
				b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(r.Resp)
				results = append(results, fmt.Sprintf("%x|%v", b, r.Err))
			}
		}
		return h, results
	}
	h1, r1 := run(1)
	h2, r2 := run(64)
	if !slices.Equal(r1, r2) {
		for i := range r1 {
			if r1[i] != r2[i] {
				t.Fatalf("result %d differs: %s vs %s", i, r1[i], r2[i])
			}
		}
	}
	checkInvariants(t, h1.s)
	checkInvariants(t, h2.s)
	if a, b := dump(t, h1.s), dump(t, h2.s); a != b {
		t.Fatalf("states differ:\n%s\nvs\n%s", a, b)
	}
	if h1.s.Rev() < 200 {
		t.Fatalf("workload too weak: only %d revisions", h1.s.Rev())
	}
}

func cloneCmds(cmds []*logpb.Command) []*logpb.Command {
	out := make([]*logpb.Command, len(cmds))
	for i, c := range cmds {
		out[i] = proto.Clone(c).(*logpb.Command)
	}
	return out
}

// Readers run concurrently with the writer and always see a committed prefix: the value of
// every key equals the revision count written so far in the same batch.
func TestConcurrentReads(t *testing.T) {
	h := newHarness(t, Options{})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := h.s.Range(&logpb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("c")})
				if err != nil {
					t.Error(err)
					return
				}
				// a and b are always written in the same batch.
				if len(r.Kvs) == 2 && !bytes.Equal(r.Kvs[0].Value, r.Kvs[1].Value) {
					t.Errorf("torn read: %v", r.Kvs)
					return
				}
			}
		}()
	}
	for i := range 200 {
		v := fmt.Sprint(i)
		h.batch(putCmd("a", v), putCmd("b", v))
	}
	close(stop)
	wg.Wait()
}

func TestDeterminismWorkloadCoverage(t *testing.T) {
	// Guard against a vacuous determinism test: the workload must hit errors, dedup, expiry.
	h := newHarness(t, Options{Limits: Limits{MaxSessions: 2, SessionTTL: 30 * time.Second}})
	codes := map[string]int{}
	for _, r := range h.batch(randomCommands(42, 600)...) {
		switch e := r.Err.(type) {
		case nil:
			codes[fmt.Sprintf("%T", r.Resp)]++
		case *Error:
			codes[e.Code]++
		default:
			t.Fatalf("non-deterministic error %v", r.Err)
		}
	}
	for _, want := range []string{"*logpb.PutResponse", "*logpb.TxnResponse", "*logpb.DeleteRangeResponse",
		"*logpb.LeaseRevokeResponse", "lease_not_found", "stale_sequence", "compacted"} {
		if codes[want] == 0 {
			t.Errorf("workload never produced %s: %v", want, codes)
		}
	}
}

func TestMembers(t *testing.T) {
	h := newHarness(t, Options{})
	b := h.s.Begin()
	b.ApplyMembers(1, []*logpb.MemberContext{
		{Id: 2, Name: "b", PeerUrls: []string{"http://b:1"}, ClientUrls: []string{"http://b:2"}},
		{Id: 1, Name: "a", PeerUrls: []string{"http://a:1"}},
	}, false)
	b.ApplyMember(2, &logpb.MemberContext{Id: 3, Name: "c", PeerUrls: []string{"http://c:1"}}, true)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	want := []Member{
		{ID: 1, Name: "a", PeerURLs: []string{"http://a:1"}},
		{ID: 2, Name: "b", PeerURLs: []string{"http://b:1"}, ClientURLs: []string{"http://b:2"}},
		{ID: 3, Name: "c", PeerURLs: []string{"http://c:1"}, IsLearner: true},
	}
	if got := h.s.Members(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("members = %+v, want %+v", got, want)
	}
	// Promotion with an id-only context keeps the name and URLs; removal forgets the member.
	b = h.s.Begin()
	b.ApplyMember(3, &logpb.MemberContext{Id: 3}, false)
	b.RemoveMember(4, 2)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	want = []Member{want[0], {ID: 3, Name: "c", PeerURLs: []string{"http://c:1"}}}
	if got := h.s.Members(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("members = %+v, want %+v", got, want)
	}
	if h.s.AppliedIndex() != 4 || h.s.Rev() != 1 {
		t.Fatalf("applied %d rev %d: member changes advance the index, not the revision", h.s.AppliedIndex(), h.s.Rev())
	}
}

// Restore swaps the database under concurrent readers: they block briefly and then read the
// restored state, never a closed database.
func TestRestoreUnderReads(t *testing.T) {
	src := newHarness(t, Options{})
	src.put("k", "snap")
	var snap bytes.Buffer
	if _, err := src.s.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Options{})
	h.put("k", "before")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := h.s.Range(&logpb.RangeRequest{Key: []byte("k")})
			if err != nil || len(r.Kvs) != 1 {
				t.Errorf("range during restore: %v %v", r, err)
				return
			}
		}
	}()
	for range 5 {
		if err := h.s.Restore(bytes.NewReader(snap.Bytes())); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if kv, _ := h.get("k", 0); string(kv.Value) != "snap" {
		t.Fatalf("after restore k = %v", kv)
	}
}

// TestOpenReportsCorruptFile: a damaged file is reported as ErrCorrupt, not as a bbolt panic
// (bbolt asserts on a page that does not match its id) or an unclassified error.
func TestOpenReportsCorruptFile(t *testing.T) {
	build := func(t *testing.T) string {
		path := filepath.Join(t.TempDir(), "kv.db")
		s, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		b := s.Begin()
		for i := range 500 {
			c := cmdOf(&logpb.PutRequest{Key: fmt.Appendf(nil, "key-%04d", i), Value: make([]byte, 100)})
			c.TimeUnixNano = baseTime.UnixNano()
			if r := b.Apply(uint64(i+1), c); r.Err != nil {
				t.Fatal(r.Err)
			}
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for name, damage := range map[string]func(path string) error{
		"cut short":         func(path string) error { return os.Truncate(path, 5*4096+100) },
		"meta pages zeroed": func(path string) error { return overwrite(path, 0, make([]byte, 2*4096)) },
		"not a database":    func(path string) error { return os.WriteFile(path, []byte("torn pages, never synced"), 0o600) },
	} {
		t.Run(name, func(t *testing.T) {
			path := build(t)
			if err := damage(path); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{})
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open of a damaged file: %v; want ErrCorrupt naming %s", err, path)
			}
		})
	}
}

func overwrite(path string, off int64, b []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteAt(b, off)
	return err
}

// An unsynced store grows its file without truncate+fsync (NoGrowSync), so the file is only as
// long as the pages written. What a process crash leaves (the file as the page cache holds it,
// here a copy taken without Close) must open as a valid store holding every committed write:
// the size check against the meta page's high-water mark must not take it for a cut file.
func TestUnsyncedGrowthSurvivesProcessCrash(t *testing.T) {
	h := newHarness(t, Options{})
	const batches, perBatch = 40, 200
	val := strings.Repeat("v", 700)
	for b := range batches {
		cmds := make([]*logpb.Command, perBatch)
		for i := range cmds {
			cmds[i] = putCmd(fmt.Sprintf("key-%06d", (b*perBatch+i)*7919%(batches*perBatch)), val)
		}
		for _, r := range h.batch(cmds...) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
	data, err := os.ReadFile(h.s.path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < batches*perBatch*len(val) {
		t.Fatalf("store file is %d bytes; the test means to grow it past %d", len(data), batches*perBatch*len(val))
	}
	crashed := filepath.Join(t.TempDir(), "kv.db")
	if err := os.WriteFile(crashed, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(crashed, Options{NoSync: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("open the store as a process crash left it: %v", err)
	}
	defer s.Close()
	if got, want := s.AppliedIndex(), h.s.AppliedIndex(); got != want {
		t.Fatalf("applied index after the crash %d, want %d", got, want)
	}
	r, err := s.Range(&logpb.RangeRequest{Key: []byte("key-"), RangeEnd: []byte("key."), CountOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.Count != batches*perBatch {
		t.Fatalf("%d keys after the crash, want %d", r.Count, batches*perBatch)
	}
	checkInvariants(t, s)
}
