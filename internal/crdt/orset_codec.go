package crdt

import (
	"slices"
	"strings"
)

// minDotBytes is the smallest encoding of a dot (two one-byte uvarints); minElementBytes that of
// an element (empty bytes, one dot count, one dot).
const (
	minDotBytes     = 2
	minElementBytes = 1 + 1 + minDotBytes
)

// Marshal returns the canonical encoding:
//
//	'S' version
//	count (member counter)*          version vector: members increasing, counters > 0
//	count (member counter)*          dot cloud: dots increasing, each above vv[member]+1
//	count (len bytes count (member counter)*)*
//	                                 elements: increasing bytewise, each with its dots
//	                                 increasing, at least one, all in the context, none shared
//
// every number a uvarint.
func (s *Set) Marshal() []byte {
	return s.AppendBinary(make([]byte, 0, 8+8*len(s.cc.vv)+8*len(s.cc.cloud)+16*len(s.entries)))
}

// AppendBinary appends the canonical encoding to b.
func (s *Set) AppendBinary(b []byte) []byte {
	b = appendHeader(b, kindSet)
	members := make([]uint64, 0, len(s.cc.vv))
	for m := range s.cc.vv {
		members = append(members, m)
	}
	slices.Sort(members)
	b = appendUvarint(b, uint64(len(members)))
	for _, m := range members {
		b = appendUvarint(b, m)
		b = appendUvarint(b, s.cc.vv[m])
	}
	cloud := s.cc.sortedCloud()
	b = appendUvarint(b, uint64(len(cloud)))
	for _, d := range cloud {
		b = appendUvarint(b, d.Member)
		b = appendUvarint(b, d.Counter)
	}
	b = appendUvarint(b, uint64(len(s.entries)))
	for _, e := range s.Members() {
		b = appendUvarint(b, uint64(len(e)))
		b = append(b, e...)
		ds := s.entries[e]
		b = appendUvarint(b, uint64(len(ds)))
		for _, d := range ds {
			b = appendUvarint(b, d.Member)
			b = appendUvarint(b, d.Counter)
		}
	}
	return b
}

// Digest returns the SHA-256 of the canonical encoding.
func (s *Set) Digest() Digest { return digestOf(s.Marshal()) }

// Unmarshal decodes a canonical encoding into s, refusing anything Marshal would not produce
// (see Marshal) and counts past the named limits. On error s is unchanged.
func (s *Set) Unmarshal(b []byte) error {
	d := decoder{b: b, what: "set"}
	d.header(kindSet)
	var v Set
	n := d.count("version vector", MaxSetMembers, minDotBytes)
	if n > 0 {
		v.cc.vv = make(map[uint64]uint64, n)
	}
	var prev uint64
	for k := 0; k < n && d.err == nil; k++ {
		m, c := d.uvarint("vv member"), d.uvarint("vv counter")
		switch {
		case d.err != nil:
		case k > 0 && m <= prev:
			d.fail("vv member %d after %d: not strictly increasing", m, prev)
		case c == 0:
			d.fail("vv member %d has counter 0", m)
		}
		v.cc.vv[m], prev = c, m
	}
	n = d.count("dot cloud", MaxSetCloudDots, minDotBytes)
	if n > 0 {
		v.cc.cloud = make(map[Dot]struct{}, n)
	}
	var prevDot Dot
	for k := 0; k < n && d.err == nil; k++ {
		dot := Dot{Member: d.uvarint("cloud member"), Counter: d.uvarint("cloud counter")}
		switch {
		case d.err != nil:
		case k > 0 && compareDots(dot, prevDot) <= 0:
			d.fail("cloud dot %v after %v: not strictly increasing", dot, prevDot)
		case dot.Counter <= v.cc.vv[dot.Member] || dot.Counter-1 == v.cc.vv[dot.Member]:
			// Counter 0 fails the first test, so Counter-1 does not wrap.
			d.fail("cloud dot %v is not above the member's prefix %d plus one", dot, v.cc.vv[dot.Member])
		}
		v.cc.cloud[dot], prevDot = struct{}{}, dot
	}
	n = d.count("elements", MaxSetElementsDecoded, minElementBytes)
	if n > 0 {
		v.entries = make(map[string][]Dot, n)
	}
	seen := make(map[Dot]struct{})
	var prevElem string
	for k := 0; k < n && d.err == nil; k++ {
		elem := string(d.bytes("element", MaxSetElementBytes))
		if d.err == nil && k > 0 && strings.Compare(elem, prevElem) <= 0 {
			d.fail("element %q after %q: not strictly increasing", elem, prevElem)
		}
		nd := d.count("element dots", MaxSetElementsDecoded, minDotBytes)
		if d.err == nil && nd == 0 {
			d.fail("element %q has no dots", elem)
		}
		dots := make([]Dot, 0, nd)
		for j := 0; j < nd && d.err == nil; j++ {
			dot := Dot{Member: d.uvarint("dot member"), Counter: d.uvarint("dot counter")}
			_, dup := seen[dot]
			switch {
			case d.err != nil:
			case j > 0 && compareDots(dot, dots[j-1]) <= 0:
				d.fail("element %q: dot %v after %v: not strictly increasing", elem, dot, dots[j-1])
			case dot.Counter == 0 || !v.cc.contains(dot):
				d.fail("element %q: dot %v is not in the causal context", elem, dot)
			case dup:
				d.fail("element %q: dot %v also tags another element", elem, dot)
			}
			seen[dot] = struct{}{}
			dots = append(dots, dot)
		}
		v.entries[elem], prevElem = dots, elem
	}
	if err := d.finish(); err != nil {
		return err
	}
	*s = v
	return nil
}
