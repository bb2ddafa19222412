package avail

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/caucus/caucus/internal/crdt"
	"github.com/caucus/caucus/internal/hlc"
)

// Replica is what an anti-entropy Session needs of its side: the keyspace's tree, its keys
// per leaf, its states, and a way to merge the peer's states. LocalReplica serves it from a
// Store; tests may serve it from anything.
type Replica interface {
	// Nodes returns the hashes of n consecutive tree nodes at depth from index first.
	Nodes(keyspace string, depth, first, n int) ([]Hash, error)
	// LeafKeys returns the keys of leaf with their state digests in index order (see
	// indexKey), after the key after (exclusive; nil: from the leaf's start) through the key
	// through (inclusive; nil: to the leaf's end), at most limit of them (0: no limit); more
	// reports whether the range holds keys beyond those returned.
	LeafKeys(keyspace string, leaf int, after, through []byte, limit int) (keys []KeyDigest, more bool, err error)
	// States returns the encoded states of keys, nil for a key it does not hold.
	States(keyspace string, keys [][]byte) ([][]byte, error)
	// Merge merges the peer's states (see Store.MergeRemoteBatch).
	Merge(ctx context.Context, keyspace string, items []Remote) ([]MergeResult, error)
}

// LocalReplica is a Store seen by a Session, merging as Member with Clock at the physical time
// Now returns.
type LocalReplica struct {
	Store  *Store
	Member uint64
	Clock  *hlc.Clock
	Now    func() int64
}

var _ Replica = (*LocalReplica)(nil)

// Nodes implements Replica.
func (l *LocalReplica) Nodes(name string, depth, first, n int) ([]Hash, error) {
	ks, err := l.Store.keyspace(name)
	if err != nil {
		return nil, err
	}
	if depth < 0 || depth > LeafBits || first < 0 || n < 0 || first+n > 1<<depth {
		return nil, fmt.Errorf("%w: nodes %d..%d at depth %d", ErrInvalid, first, first+n, depth)
	}
	return ks.tree.Nodes(depth, first, n), nil
}

// LeafKeys implements Replica.
func (l *LocalReplica) LeafKeys(name string, leaf int, after, through []byte, limit int) ([]KeyDigest, bool, error) {
	return l.Store.LeafKeys(name, leaf, after, through, limit)
}

// States implements Replica.
func (l *LocalReplica) States(name string, keys [][]byte) ([][]byte, error) {
	return l.Store.States(name, keys)
}

// Merge implements Replica.
func (l *LocalReplica) Merge(ctx context.Context, name string, items []Remote) ([]MergeResult, error) {
	return l.Store.MergeRemoteBatch(ctx, Origin{Member: l.Member, Clock: l.Clock, Physical: l.Now()}, name, items)
}

// LeafKeys returns keys of a leaf of a keyspace's tree from its index; see Replica.LeafKeys.
func (s *Store) LeafKeys(name string, leaf int, after, through []byte, limit int) ([]KeyDigest, bool, error) {
	if _, err := s.keyspace(name); err != nil {
		return nil, false, err
	}
	if leaf < 0 || leaf >= Leaves {
		return nil, false, fmt.Errorf("%w: leaf %d", ErrInvalid, leaf)
	}
	var start, end []byte
	if after != nil {
		start = indexKey(after)
	} else {
		start = binary.BigEndian.AppendUint32(nil, uint32(leaf)<<(32-LeafBits))
	}
	if through != nil {
		end = indexKey(through)
	}
	var out []KeyDigest
	more := false
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(indexBucket(name)).Cursor()
		for k, v := c.Seek(start); k != nil; k, v = c.Next() {
			if after != nil && bytes.Equal(k, start) {
				continue
			}
			if leafOfPrefix(k) != leaf || (end != nil && bytes.Compare(k, end) > 0) {
				break
			}
			if limit > 0 && len(out) == limit {
				more = true
				break
			}
			out = append(out, KeyDigest{Key: bytes.Clone(k[leafPrefixLen:]), Digest: crdt.Digest(v)})
		}
		return nil
	})
	return out, more, err
}
