package sim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/caucus/caucus/raft"
)

// kv is a node's replicated state machine: a map of registers written by unique values. Besides
// the values it keeps, per key, the log index of the write that produced the value, so that a read
// can be related to the writes it must observe, and a running digest over every applied entry, so
// that two images at the same applied index can be compared in O(1).
type kv struct {
	applied     uint64
	appliedTerm uint64
	digest      uint64
	vals        map[string]string
	idx         map[string]uint64
}

func newKV() *kv { return &kv{vals: map[string]string{}, idx: map[string]uint64{}} }

// Write commands are "w" key "=" value (the liveness probe is a write to probeKey); an empty normal
// entry is the leader's no-op.
func encodeWrite(key, val string) []byte { return []byte("w" + key + "=" + val) }

func decodeWrite(data []byte) (key, val string, ok bool) {
	if len(data) < 2 || data[0] != 'w' {
		return "", "", false
	}
	for k := 1; k < len(data); k++ {
		if data[k] == '=' {
			return string(data[1:k]), string(data[k+1:]), true
		}
	}
	return "", "", false
}

// entryHash identifies an entry's content (not its position) for the checkers.
func entryHash(e raft.Entry) uint64 {
	h := uint64(14695981039346656037)
	h = (h ^ uint64(e.Type)) * 1099511628211
	for _, b := range e.Data {
		h = (h ^ uint64(b)) * 1099511628211
	}
	return h
}

// chain folds one applied entry into a digest. It covers index, term and content, so equal
// digests at equal applied indexes mean equal histories (up to hash collisions).
func chain(d uint64, e raft.Entry) uint64 {
	d = mix64(d ^ e.Index)
	d = mix64(d ^ e.Term)
	return mix64(d ^ entryHash(e))
}

func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// apply applies e, which must be the next index. It returns the write's value, if e was a write.
func (s *kv) apply(e raft.Entry) (key, val string, isWrite bool) {
	s.applied, s.appliedTerm = e.Index, e.Term
	s.digest = chain(s.digest, e)
	if e.Type != raft.EntryNormal {
		return "", "", false
	}
	key, val, isWrite = decodeWrite(e.Data)
	if isWrite {
		s.vals[key] = val
		s.idx[key] = e.Index
	}
	return key, val, isWrite
}

// encode serialises the image deterministically (keys sorted).
func (s *kv) encode() []byte {
	keys := make([]string, 0, len(s.vals))
	for k := range s.vals {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b := binary.AppendUvarint(nil, s.applied)
	b = binary.AppendUvarint(b, s.appliedTerm)
	b = binary.AppendUvarint(b, s.digest)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendString(b, k)
		b = appendString(b, s.vals[k])
		b = binary.AppendUvarint(b, s.idx[k])
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errImage = errors.New("sim: bad state machine image")

func decodeKV(b []byte) (*kv, error) {
	s := newKV()
	var err error
	next := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			err = errImage
			return 0
		}
		b = b[n:]
		return v
	}
	str := func() string {
		l := next()
		if err != nil || l > uint64(len(b)) {
			err = errImage
			return ""
		}
		v := string(b[:l])
		b = b[l:]
		return v
	}
	s.applied, s.appliedTerm, s.digest = next(), next(), next()
	n := next()
	for k := uint64(0); k < n && err == nil; k++ {
		key, val, idx := str(), str(), next()
		s.vals[key], s.idx[key] = val, idx
	}
	if err == nil && len(b) != 0 {
		err = fmt.Errorf("%w: %d trailing bytes", errImage, len(b))
	}
	return s, err
}
