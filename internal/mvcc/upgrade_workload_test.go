package mvcc

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/caucus/caucus/internal/logpb"
)

// upgradeWorkload is the command sequence that produced testdata/schema3.db: puts with several
// versions per key (keys holding 0x00 among them), deletes, range deletes, transactions, leases
// attached, revoked and expired, sessioned writes, and a compaction in the middle, so that the
// file holds every kind of record, compacted history and live history above it. It must never
// change: the migration test replays it on a new store and compares the two.
func upgradeWorkload() []*logpb.Command {
	rng := rand.New(rand.NewPCG(3, 4))
	keys := []string{"a", "a\x00", "a\x00b", "ab", "b", "c", "c\x00\x00", "d", "lease/1", "lease/2", "z"}
	var out []*logpb.Command
	add := func(c *logpb.Command) {
		c.TimeUnixNano = baseTime.UnixNano() + int64(len(out))*int64(10*time.Millisecond)
		out = append(out, c)
	}
	add(cmdOf(&logpb.LeaseGrantRequest{Id: 100, Ttl: 3600}))
	add(cmdOf(&logpb.LeaseGrantRequest{Id: 200, Ttl: 1}))
	for i := range 300 {
		k := keys[rng.IntN(len(keys))]
		switch n := rng.IntN(20); {
		case i == 150:
			add(cmdOf(&logpb.CompactionRequest{Revision: 120}))
		case n < 12:
			p := &logpb.PutRequest{Key: []byte(k), Value: fmt.Appendf(nil, "v%d", i)}
			if k == "lease/1" {
				p.Lease = 100
			} else if k == "lease/2" && i < 200 {
				p.Lease = 200
			}
			add(cmdOf(p))
		case n < 14:
			add(cmdOf(&logpb.DeleteRangeRequest{Key: []byte(k)}))
		case n < 15:
			add(cmdOf(&logpb.DeleteRangeRequest{Key: []byte("c"), RangeEnd: []byte("d")}))
		case n < 17:
			add(cmdOf(&logpb.TxnRequest{
				Compare: []*logpb.Compare{{Key: []byte(k), Target: logpb.Compare_VERSION,
					Result: logpb.Compare_GREATER, TargetUnion: &logpb.Compare_Version{Version: 1}}},
				Success: []*logpb.RequestOp{opPut(k, fmt.Sprintf("t%d", i)), opPut("txn", fmt.Sprint(i))},
				Failure: []*logpb.RequestOp{opDel("a", "b"), opPut("txn-failed", fmt.Sprint(i))},
			}))
		case n < 19:
			add(cmdOf(&logpb.PutRequest{Key: []byte(k), Value: fmt.Appendf(nil, "s%d", i),
				Session: &logpb.Session{ClientId: 9, Sequence: uint64(i + 1)}}))
		default:
			add(cmdOf(&logpb.LeaseExpire{Ids: []int64{200}}))
		}
	}
	return out
}
