package mvcc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/caucus/caucus/internal/logpb"
	bolt "go.etcd.io/bbolt"
)

// Leases. A lease's deadline is the time_unix_nano of the command that granted or last renewed it
// plus its TTL; only the leader's clock (through command times) ever decides expiry. The leader
// polls ExpiredLeases and proposes a LeaseExpire command; applying it revokes only the leases
// whose deadline has passed at the command's time, so a keep-alive ordered before it wins.

// leaseVal is the lease bucket value: ttl seconds, deadline unix nanos.
type leaseVal struct {
	ttl      int64
	deadline int64
}

func (l leaseVal) encode() []byte {
	v := binary.BigEndian.AppendUint64(nil, uint64(l.ttl))
	return binary.BigEndian.AppendUint64(v, uint64(l.deadline))
}

func decodeLease(v []byte) (leaseVal, error) {
	if len(v) != 16 {
		return leaseVal{}, errorCorrupt(fmt.Sprintf("lease record of %d bytes", len(v)))
	}
	return leaseVal{ttl: int64(binary.BigEndian.Uint64(v)), deadline: int64(binary.BigEndian.Uint64(v[8:]))}, nil
}

func leaseExpKey(deadline, id int64) []byte {
	k := binary.BigEndian.AppendUint64(nil, orderedTime(deadline))
	return binary.BigEndian.AppendUint64(k, uint64(id))
}

func leaseKeyKey(id int64, key []byte) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(id)), key...)
}

func (b *Batch) getLease(id int64) (leaseVal, bool) {
	v := b.lease.Get(putU64(uint64(id)))
	if v == nil {
		return leaseVal{}, false
	}
	l, err := decodeLease(v)
	if err != nil {
		b.fail(err)
		return leaseVal{}, false
	}
	return l, true
}

func (b *Batch) setLease(id int64, old *leaseVal, l leaseVal) {
	if old != nil {
		if err := b.leaseExp.Delete(leaseExpKey(old.deadline, id)); err != nil {
			b.fail(fmt.Errorf("unindex lease %d: %w", id, err))
			return
		}
	}
	if err := b.lease.Put(putU64(uint64(id)), l.encode()); err != nil {
		b.fail(fmt.Errorf("store lease %d: %w", id, err))
		return
	}
	if err := b.leaseExp.Put(leaseExpKey(l.deadline, id), []byte{}); err != nil {
		b.fail(fmt.Errorf("index lease %d: %w", id, err))
	}
}

func (b *Batch) attach(id int64, key []byte) {
	if err := b.leaseKey.Put(leaseKeyKey(id, key), []byte{}); err != nil {
		b.fail(fmt.Errorf("attach key %q to lease %d: %w", key, id, err))
	}
}

func (b *Batch) detach(id int64, key []byte) {
	if err := b.leaseKey.Delete(leaseKeyKey(id, key)); err != nil {
		b.fail(fmt.Errorf("detach key %q from lease %d: %w", key, id, err))
	}
}

func (b *Batch) leaseGrant(g *logpb.LeaseGrantRequest) (*logpb.LeaseGrantResponse, error) {
	id := g.GetId()
	if id != 0 {
		if _, taken := b.getLease(id); taken {
			return nil, errorf(ErrLeaseExists, "lease %d", id)
		}
	}
	if b.st.leases >= int64(b.limits.MaxLeases) {
		return nil, errorf(ErrTooManyLeases, "%d leases, limit %d", b.st.leases, b.limits.MaxLeases)
	}
	if id == 0 {
		// Choose from the applying index: unique per entry and identical on every member. Walk
		// up past ids a client chose explicitly.
		id = int64(b.index & math.MaxInt64)
		if id == 0 {
			id = 1
		}
		for {
			if _, taken := b.getLease(id); !taken {
				break
			}
			if id == math.MaxInt64 {
				id = 0
			}
			id++
		}
	}
	l := leaseVal{ttl: g.GetTtl(), deadline: addSat(b.now, g.GetTtl()*int64(time.Second))}
	b.setLease(id, nil, l)
	b.st.leases++
	return &logpb.LeaseGrantResponse{Id: id, Ttl: l.ttl}, nil
}

func (b *Batch) leaseKeepAlive(id int64) (*logpb.LeaseKeepAliveResponse, error) {
	old, ok := b.getLease(id)
	if !ok {
		return nil, errorf(ErrLeaseNotFound, "lease %d", id)
	}
	l := leaseVal{ttl: old.ttl, deadline: addSat(b.now, old.ttl*int64(time.Second))}
	b.setLease(id, &old, l)
	return &logpb.LeaseKeepAliveResponse{Id: id, Ttl: l.ttl}, nil
}

func (b *Batch) leaseRevoke(id int64) (*logpb.LeaseRevokeResponse, error) {
	l, ok := b.getLease(id)
	if !ok {
		return nil, errorf(ErrLeaseNotFound, "lease %d", id)
	}
	b.revoke(id, l)
	return &logpb.LeaseRevokeResponse{}, nil
}

// leaseExpire revokes the listed leases whose deadline is at or before the command's time; a
// lease renewed (or revoked) after the leader decided to propose this command survives.
func (b *Batch) leaseExpire(ids []int64) *logpb.LeaseRevokeResponse {
	for _, id := range ids {
		if id <= 0 {
			continue
		}
		l, ok := b.getLease(id)
		if ok && l.deadline <= b.now {
			b.revoke(id, l)
			b.s.log.Debug("lease expired", "lease", id, "deadline_unix_nano", l.deadline, "index", b.index)
		}
	}
	return &logpb.LeaseRevokeResponse{}
}

// revoke deletes the lease and its keys; the deletions share the command's revision.
func (b *Batch) revoke(id int64, l leaseVal) {
	prefix := putU64(uint64(id))
	var keys [][]byte
	c := b.leaseKey.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, lk := range keys {
		key := lk[8:]
		rec, _, _, ok, err := b.rd.latest(key)
		if err != nil {
			b.fail(err)
			return
		}
		if err := b.leaseKey.Delete(lk); err != nil {
			b.fail(fmt.Errorf("detach key %q from lease %d: %w", key, id, err))
			return
		}
		// The attachment index follows every put and delete, so the key is live and carries
		// this lease; check anyway rather than delete a key the lease does not own.
		if ok && rec.lease == id {
			b.writeVersion(bytes.Clone(key), &record{tombstone: true})
		}
	}
	if err := b.lease.Delete(prefix); err != nil {
		b.fail(fmt.Errorf("delete lease %d: %w", id, err))
		return
	}
	b.st.leases--
	if err := b.leaseExp.Delete(leaseExpKey(l.deadline, id)); err != nil {
		b.fail(fmt.Errorf("unindex lease %d: %w", id, err))
	}
}

// ExpiredLeases returns up to max leases whose deadline is at or before now, earliest deadline
// first, from the committed state. The leader proposes a LeaseExpire command with them, stamped
// with a time at or after now.
func (s *Store) ExpiredLeases(now time.Time, max int) []int64 {
	var ids []int64
	limit := orderedTime(now.UnixNano())
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLeaseExp).Cursor()
		for k, _ := c.First(); k != nil && len(ids) < max; k, _ = c.Next() {
			if binary.BigEndian.Uint64(k) > limit {
				break
			}
			ids = append(ids, int64(binary.BigEndian.Uint64(k[8:])))
		}
		return nil
	})
	if err != nil {
		s.log.Error("find expired leases", "err", err)
	}
	return ids
}

// LeaseInfo describes one lease as of a revision (LeaseTimeToLive).
type LeaseInfo struct {
	ID int64
	// TTL is the remaining time to live in whole seconds, rounded up; -1 if the lease does not
	// exist.
	TTL        int64
	GrantedTTL int64
	Keys       [][]byte
	// Rev is the store revision the answer reflects.
	Rev int64
}

// LeaseTimeToLive reports a lease's remaining TTL in whole seconds (rounded up) at now, and
// optionally its keys. A missing lease has TTL -1, as the API documents. A lease past its
// deadline but not yet expired by a LeaseExpire command reports 0.
func (s *Store) LeaseTimeToLive(id int64, keys bool, now time.Time) (*LeaseInfo, error) {
	resp := &LeaseInfo{ID: id, TTL: -1}
	err := s.view(func(tx *bolt.Tx) error {
		resp.Rev = loadState(tx).rev
		v := tx.Bucket(bucketLease).Get(putU64(uint64(id)))
		if v == nil || id <= 0 {
			return nil
		}
		l, err := decodeLease(v)
		if err != nil {
			return err
		}
		resp.GrantedTTL = l.ttl
		remaining := l.deadline - now.UnixNano()
		if remaining < 0 {
			remaining = 0
		}
		resp.TTL = (remaining + int64(time.Second) - 1) / int64(time.Second)
		if keys {
			prefix := putU64(uint64(id))
			c := tx.Bucket(bucketLeaseKey).Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				resp.Keys = append(resp.Keys, bytes.Clone(k[8:]))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// Leases lists the lease ids in increasing order, and the revision the list reflects.
func (s *Store) Leases() (ids []int64, rev int64, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		rev = loadState(tx).rev
		return tx.Bucket(bucketLease).ForEach(func(k, _ []byte) error {
			ids = append(ids, int64(binary.BigEndian.Uint64(k)))
			return nil
		})
	})
	if err != nil {
		return nil, 0, err
	}
	return ids, rev, nil
}
