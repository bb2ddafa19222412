package mvcc

import (
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/logpb"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
)

// baseTime is the command clock of the tests: fixed, so tests are deterministic.
var baseTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// harness applies commands to a store one batch per call, at consecutive indexes, with a
// controllable command clock.
type harness struct {
	t     testing.TB
	s     *Store
	index uint64
	now   time.Time
}

func newHarness(t testing.TB, opts Options) *harness {
	t.Helper()
	opts.NoSync = true
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := Open(filepath.Join(t.TempDir(), "kv.db"), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return &harness{t: t, s: s, now: baseTime}
}

func (h *harness) cmd(c *logpb.Command) Result {
	h.t.Helper()
	return h.batch(c)[0]
}

func (h *harness) batch(cmds ...*logpb.Command) []Result {
	h.t.Helper()
	b := h.s.Begin()
	var out []Result
	for _, c := range cmds {
		h.index++
		if c.TimeUnixNano == 0 {
			c.TimeUnixNano = h.now.UnixNano()
		}
		out = append(out, b.Apply(h.index, c))
	}
	if err := b.Commit(); err != nil {
		h.t.Fatalf("Commit: %v", err)
	}
	return out
}

// ok applies c and fails the test on an application error.
func (h *harness) ok(c *logpb.Command) proto.Message {
	h.t.Helper()
	r := h.cmd(c)
	if r.Err != nil {
		h.t.Fatalf("apply %v: %v", c, r.Err)
	}
	return r.Resp
}

func (h *harness) put(key, val string) *logpb.PutResponse {
	h.t.Helper()
	return h.ok(putCmd(key, val)).(*logpb.PutResponse)
}

func (h *harness) rng(req *logpb.RangeRequest) *logpb.RangeResponse {
	h.t.Helper()
	r, err := h.s.Range(req)
	if err != nil {
		h.t.Fatalf("Range(%v): %v", req, err)
	}
	return r
}

// get returns the key's value at rev (0 = latest) and whether it exists.
func (h *harness) get(key string, rev int64) (*logpb.KeyValue, bool) {
	h.t.Helper()
	r := h.rng(&logpb.RangeRequest{Key: []byte(key), Revision: rev})
	if len(r.Kvs) == 0 {
		return nil, false
	}
	return r.Kvs[0], true
}

func putCmd(key, val string) *logpb.Command {
	return &logpb.Command{Op: &logpb.Command_Put{Put: &logpb.PutRequest{Key: []byte(key), Value: []byte(val)}}}
}

func putReq(key, val string) *logpb.PutRequest {
	return &logpb.PutRequest{Key: []byte(key), Value: []byte(val)}
}

func cmdOf(op any) *logpb.Command {
	c := &logpb.Command{}
	switch o := op.(type) {
	case *logpb.PutRequest:
		c.Op = &logpb.Command_Put{Put: o}
	case *logpb.DeleteRangeRequest:
		c.Op = &logpb.Command_DeleteRange{DeleteRange: o}
	case *logpb.TxnRequest:
		c.Op = &logpb.Command_Txn{Txn: o}
	case *logpb.CompactionRequest:
		c.Op = &logpb.Command_Compaction{Compaction: o}
	case *logpb.LeaseGrantRequest:
		c.Op = &logpb.Command_LeaseGrant{LeaseGrant: o}
	case *logpb.LeaseRevokeRequest:
		c.Op = &logpb.Command_LeaseRevoke{LeaseRevoke: o}
	case *logpb.LeaseKeepAliveRequest:
		c.Op = &logpb.Command_LeaseKeepAlive{LeaseKeepAlive: o}
	case *logpb.LeaseExpire:
		c.Op = &logpb.Command_LeaseExpire{LeaseExpire: o}
	case *logpb.PublishRequest:
		c.Op = &logpb.Command_Publish{Publish: o}
	default:
		panic("unknown op")
	}
	return c
}

func opPut(key, val string) *logpb.RequestOp {
	return &logpb.RequestOp{Request: &logpb.RequestOp_RequestPut{RequestPut: putReq(key, val)}}
}

func opDel(key, end string) *logpb.RequestOp {
	return &logpb.RequestOp{Request: &logpb.RequestOp_RequestDeleteRange{
		RequestDeleteRange: &logpb.DeleteRangeRequest{Key: []byte(key), RangeEnd: []byte(end)}}}
}

func opRange(key, end string, rev int64) *logpb.RequestOp {
	return &logpb.RequestOp{Request: &logpb.RequestOp_RequestRange{
		RequestRange: &logpb.RangeRequest{Key: []byte(key), RangeEnd: []byte(end), Revision: rev}}}
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want %v", err, target)
	}
}

func keysOf(kvs []*logpb.KeyValue) []string {
	var out []string
	for _, kv := range kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

// checkInvariants verifies the redundant structures agree: the key index lists exactly the
// versions of the history bucket, with the newest version's fields, and the lease attachments
// match the live keys' leases.
func checkInvariants(t testing.TB, s *Store) {
	t.Helper()
	err := s.view(func(tx *bolt.Tx) error {
		hist, lk := tx.Bucket(bucketHistory), tx.Bucket(bucketLeaseKey)
		stored := map[string][]revision{}
		newest := map[string]record{}
		if err := hist.ForEach(func(k, v []byte) error {
			r, sub, ok := splitHistKey(k)
			if !ok {
				t.Errorf("history key %x", k)
				return nil
			}
			rec, err := decodeRecord(v)
			if err != nil {
				return err
			}
			key := string(rec.key)
			stored[key] = append(stored[key], revision{main: r, sub: int32(sub), tomb: rec.tombstone})
			newest[key] = rec
			return nil
		}); err != nil {
			return err
		}
		indexed := 0
		s.idx.tree.Ascend(func(ki *keyIndex) bool {
			indexed++
			if !slices.Equal(ki.revs(), stored[ki.key]) {
				t.Errorf("key %q: index holds %v, history %v", ki.key, ki.revs(), stored[ki.key])
			}
			rec := newest[ki.key]
			if rec.tombstone {
				rec = record{}
			}
			if ki.create != rec.create || ki.ver != rec.version || ki.lease != rec.lease {
				t.Errorf("key %q: index says create %d version %d lease %d, newest record %+v", ki.key, ki.create, ki.ver, ki.lease, rec)
			}
			return true
		})
		if indexed != len(stored) {
			t.Errorf("index holds %d keys, history %d", indexed, len(stored))
		}
		attached := 0
		for key, rec := range newest {
			if !rec.tombstone && rec.lease != 0 {
				attached++
				if lk.Get(leaseKeyKey(rec.lease, []byte(key))) == nil {
					t.Errorf("live key %q has lease %d but is not attached", key, rec.lease)
				}
			}
		}
		if n := lk.Stats().KeyN; n != attached {
			t.Errorf("lease attachments %d, leased live keys %d", n, attached)
		}
		st := loadState(tx)
		if n := tx.Bucket(bucketLease).Stats().KeyN; int64(n) != st.leases || n != tx.Bucket(bucketLeaseExp).Stats().KeyN {
			t.Errorf("leases: %d stored, %d counted, %d indexed", n, st.leases, tx.Bucket(bucketLeaseExp).Stats().KeyN)
		}
		if n := tx.Bucket(bucketSession).Stats().KeyN; int64(n) != st.sessions || n != tx.Bucket(bucketSessLRU).Stats().KeyN {
			t.Errorf("sessions: %d stored, %d counted, %d indexed", n, st.sessions, tx.Bucket(bucketSessLRU).Stats().KeyN)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
