package mvcc

import (
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/cmdpb"
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

func (h *harness) cmd(c *cmdpb.Command) Result {
	h.t.Helper()
	return h.batch(c)[0]
}

func (h *harness) batch(cmds ...*cmdpb.Command) []Result {
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
func (h *harness) ok(c *cmdpb.Command) proto.Message {
	h.t.Helper()
	r := h.cmd(c)
	if r.Err != nil {
		h.t.Fatalf("apply %v: %v", c, r.Err)
	}
	return r.Resp
}

func (h *harness) put(key, val string) *caucusv1.PutResponse {
	h.t.Helper()
	return h.ok(putCmd(key, val)).(*caucusv1.PutResponse)
}

func (h *harness) rng(req *caucusv1.RangeRequest) *caucusv1.RangeResponse {
	h.t.Helper()
	r, err := h.s.Range(req)
	if err != nil {
		h.t.Fatalf("Range(%v): %v", req, err)
	}
	return r
}

// get returns the key's value at rev (0 = latest) and whether it exists.
func (h *harness) get(key string, rev int64) (*caucusv1.KeyValue, bool) {
	h.t.Helper()
	r := h.rng(&caucusv1.RangeRequest{Key: []byte(key), Revision: rev})
	if len(r.Kvs) == 0 {
		return nil, false
	}
	return r.Kvs[0], true
}

func putCmd(key, val string) *cmdpb.Command {
	return &cmdpb.Command{Op: &cmdpb.Command_Put{Put: &caucusv1.PutRequest{Key: []byte(key), Value: []byte(val)}}}
}

func putReq(key, val string) *caucusv1.PutRequest {
	return &caucusv1.PutRequest{Key: []byte(key), Value: []byte(val)}
}

func cmdOf(op any) *cmdpb.Command {
	c := &cmdpb.Command{}
	switch o := op.(type) {
	case *caucusv1.PutRequest:
		c.Op = &cmdpb.Command_Put{Put: o}
	case *caucusv1.DeleteRangeRequest:
		c.Op = &cmdpb.Command_DeleteRange{DeleteRange: o}
	case *caucusv1.TxnRequest:
		c.Op = &cmdpb.Command_Txn{Txn: o}
	case *caucusv1.CompactionRequest:
		c.Op = &cmdpb.Command_Compaction{Compaction: o}
	case *caucusv1.LeaseGrantRequest:
		c.Op = &cmdpb.Command_LeaseGrant{LeaseGrant: o}
	case *caucusv1.LeaseRevokeRequest:
		c.Op = &cmdpb.Command_LeaseRevoke{LeaseRevoke: o}
	case *caucusv1.LeaseKeepAliveRequest:
		c.Op = &cmdpb.Command_LeaseKeepAlive{LeaseKeepAlive: o}
	case *cmdpb.LeaseExpire:
		c.Op = &cmdpb.Command_LeaseExpire{LeaseExpire: o}
	default:
		panic("unknown op")
	}
	return c
}

func opPut(key, val string) *caucusv1.RequestOp {
	return &caucusv1.RequestOp{Request: &caucusv1.RequestOp_RequestPut{RequestPut: putReq(key, val)}}
}

func opDel(key, end string) *caucusv1.RequestOp {
	return &caucusv1.RequestOp{Request: &caucusv1.RequestOp_RequestDeleteRange{
		RequestDeleteRange: &caucusv1.DeleteRangeRequest{Key: []byte(key), RangeEnd: []byte(end)}}}
}

func opRange(key, end string, rev int64) *caucusv1.RequestOp {
	return &caucusv1.RequestOp{Request: &caucusv1.RequestOp_RequestRange{
		RequestRange: &caucusv1.RangeRequest{Key: []byte(key), RangeEnd: []byte(end), Revision: rev}}}
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want %v", err, target)
	}
}

func keysOf(kvs []*caucusv1.KeyValue) []string {
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
			if !slices.Equal(ki.revs, stored[ki.key]) {
				t.Errorf("key %q: index holds %v, history %v", ki.key, ki.revs, stored[ki.key])
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
