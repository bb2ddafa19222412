package avail

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
	"sync"

	"github.com/caucus/caucus/internal/crdt"
)

// LeafBits is the depth of every keyspace's Merkle tree: the first LeafBits bits of
// SHA-256(key) select one of 2^LeafBits leaves. Members compare trees node by node, so every
// member must use the same value (it is part of the session's hello and checked).
const LeafBits = 10

// Leaves is the number of leaves of a tree.
const Leaves = 1 << LeafBits

// leafPrefixLen is the number of bytes of SHA-256(key) that prefix a key in the index bucket:
// it orders the index by leaf, so a leaf's keys are one contiguous range.
const leafPrefixLen = 4

// Hash is a tree node's hash.
type Hash [32]byte

// leafPrefix returns the first leafPrefixLen bytes of SHA-256(key).
func leafPrefix(key []byte) [leafPrefixLen]byte {
	h := sha256.Sum256(key)
	return [leafPrefixLen]byte(h[:leafPrefixLen])
}

// indexKey returns the key's index-bucket key: its leaf prefix, then the key.
func indexKey(key []byte) []byte {
	p := leafPrefix(key)
	return append(p[:], key...)
}

func leafOfPrefix(p []byte) int { return int(binary.BigEndian.Uint32(p) >> (32 - LeafBits)) }

// LeafOf returns the leaf of key.
func LeafOf(key []byte) int {
	p := leafPrefix(key)
	return leafOfPrefix(p[:])
}

// sum256 is a number mod 2^256 in four little-endian limbs.
type sum256 [4]uint64

func (s *sum256) add(h sum256) {
	var c uint64
	s[0], c = bits.Add64(s[0], h[0], 0)
	s[1], c = bits.Add64(s[1], h[1], c)
	s[2], c = bits.Add64(s[2], h[2], c)
	s[3], _ = bits.Add64(s[3], h[3], c)
}

func (s *sum256) sub(h sum256) {
	var b uint64
	s[0], b = bits.Sub64(s[0], h[0], 0)
	s[1], b = bits.Sub64(s[1], h[1], b)
	s[2], b = bits.Sub64(s[2], h[2], b)
	s[3], _ = bits.Sub64(s[3], h[3], b)
}

func (s *sum256) bytes() Hash {
	var h Hash
	for i := range 4 {
		binary.BigEndian.PutUint64(h[24-8*i:], s[i])
	}
	return h
}

// keyHash is a key's contribution to its leaf: SHA-256 of the key (length-prefixed, so that
// key and digest cannot trade bytes) and its state's digest, read as a 256-bit number.
func keyHash(key []byte, d crdt.Digest) sum256 {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(key)))])
	h.Write(key)
	h.Write(d[:])
	var out [32]byte
	h.Sum(out[:0])
	var s sum256
	for i := range 4 {
		s[i] = binary.BigEndian.Uint64(out[24-8*i:])
	}
	return s
}

// Tree is a keyspace's Merkle tree over the fixed hash space of its keys. A leaf is the sum mod
// 2^256 of the keyHash of each key in it, so a write updates its leaf in O(1) (subtract the
// old contribution, add the new) whatever the leaf holds, and the same keys give the same leaf
// in any order. An inner node is SHA-256 of a domain byte and its two children; inner nodes are
// recomputed lazily, when read, along the paths that writes marked dirty.
//
// Why a sum and not XOR: both are order-independent and O(1) to update, and for honest inputs
// both make two different leaves collide with probability 2^-256 per comparison. XOR is linear
// over GF(2), so someone who chooses keys can find a set of them whose hashes XOR to any target
// by Gaussian elimination on ~256 candidates; the sum mod 2^256 has no such shortcut (the known
// attacks on k-sum problems, Wagner 2002, still cost about 2^(256/(1+log2 k))), and digests
// cover states stamped by members, not chosen by clients. A collision would only delay
// convergence of the keys involved until one of them is written again.
//
// Memory: (2^LeafBits sums + 2^(LeafBits+1) node hashes + dirty flags) ~ 100 KiB per keyspace.
// Safe for concurrent use.
type Tree struct {
	mu    sync.Mutex
	sums  [Leaves]sum256
	nodes [2 * Leaves]Hash // heap order: 1 is the root, Leaves+i is leaf i
	dirty [2 * Leaves]bool
	keys  int
}

// NewTree returns the tree of an empty keyspace.
func NewTree() *Tree {
	t := &Tree{}
	for i := 1; i < 2*Leaves; i++ {
		t.dirty[i] = true
	}
	return t
}

func (t *Tree) markLocked(leaf int) {
	for i := Leaves + leaf; i >= 1 && !t.dirty[i]; i >>= 1 {
		t.dirty[i] = true
	}
}

// add adds a key's contribution to leaf.
func (t *Tree) add(leaf int, h sum256) {
	t.mu.Lock()
	t.sums[leaf].add(h)
	t.keys++
	t.markLocked(leaf)
	t.mu.Unlock()
}

// remove subtracts a key's contribution from leaf.
func (t *Tree) remove(leaf int, h sum256) {
	t.mu.Lock()
	t.sums[leaf].sub(h)
	t.keys--
	t.markLocked(leaf)
	t.mu.Unlock()
}

// replace swaps a key's contribution to leaf.
func (t *Tree) replace(leaf int, old, new sum256) {
	t.mu.Lock()
	t.sums[leaf].sub(old)
	t.sums[leaf].add(new)
	t.markLocked(leaf)
	t.mu.Unlock()
}

// Keys returns the number of keys in the tree.
func (t *Tree) Keys() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.keys
}

func (t *Tree) nodeLocked(i int) Hash {
	if !t.dirty[i] {
		return t.nodes[i]
	}
	if i >= Leaves {
		t.nodes[i] = t.sums[i-Leaves].bytes()
	} else {
		l, r := t.nodeLocked(2*i), t.nodeLocked(2*i+1)
		h := sha256.New()
		h.Write([]byte{1})
		h.Write(l[:])
		h.Write(r[:])
		h.Sum(t.nodes[i][:0])
	}
	t.dirty[i] = false
	return t.nodes[i]
}

// Node returns the hash of node index (0 <= index < 2^depth) at depth (0 is the root, LeafBits
// the leaves).
func (t *Tree) Node(depth, index int) Hash {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nodeLocked(1<<depth + index)
}

// Nodes returns the hashes of n consecutive nodes at depth from index first.
func (t *Tree) Nodes(depth, first, n int) []Hash {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Hash, n)
	for j := range out {
		out[j] = t.nodeLocked(1<<depth + first + j)
	}
	return out
}
