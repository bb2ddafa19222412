package crdt

import (
	"fmt"
	"maps"
	"slices"
)

// Limits of an OR-set. Add enforces MaxSetElements, but concurrent adds at members that cannot
// see each other's can together pass it, and Merge cannot refuse them; decoding therefore
// accepts up to MaxSetElementsDecoded (16 times more), the bound on memory a peer can make a
// member allocate, while MaxSetElementBytes is exact everywhere (no merge makes an element
// longer).
const (
	MaxSetElements        = 1 << 16
	MaxSetElementsDecoded = 1 << 20
	MaxSetElementBytes    = 4096
	// MaxSetMembers bounds the members in a set's version vector when decoding.
	MaxSetMembers = 1 << 16
	// MaxSetCloudDots bounds the dots outside the version vector when decoding (gaps that
	// missing deltas leave, until anti-entropy fills them).
	MaxSetCloudDots = 1 << 20
)

// Set is an add-wins observed-remove set (AWORSet) in delta-state form: each add tags its
// element with a new dot, a remove deletes the dots of the element it has seen, and the causal
// context remembers every dot seen, so that a merge can tell a dot removed here (in the context,
// gone from the store) from a dot not yet seen (absent from the context). A remove therefore
// deletes only the adds it observed: an add concurrent with it survives the merge (add wins).
//
// Elements are arbitrary byte strings (Go strings). The zero Set is empty.
type Set struct {
	// entries maps each present element to its dots, sorted and non-empty.
	entries map[string][]Dot
	cc      causalContext
}

// Add adds elem as member and returns the delta: the element with its new dot, and a context
// holding that dot and the element's previous dots, which the new one supersedes.
func (s *Set) Add(member uint64, elem string) (*Set, error) {
	if len(elem) > MaxSetElementBytes {
		return nil, fmt.Errorf("%w: set element of %d bytes, limit %d", ErrLimit, len(elem), MaxSetElementBytes)
	}
	old, present := s.entries[elem]
	if !present && len(s.entries) >= MaxSetElements {
		return nil, fmt.Errorf("%w: set already has %d elements", ErrLimit, MaxSetElements)
	}
	d, err := s.cc.next(member)
	if err != nil {
		return nil, err
	}
	delta := &Set{entries: map[string][]Dot{elem: {d}}}
	for _, o := range old {
		delta.cc.insert(o)
	}
	delta.cc.add(d)
	if s.entries == nil {
		s.entries = make(map[string][]Dot)
	}
	s.entries[elem] = []Dot{d}
	s.cc.add(d)
	return delta, nil
}

// Remove removes elem and returns the delta: no elements, and a context holding the dots of elem
// this replica has seen. Merged elsewhere it removes those dots only. Removing an absent element
// returns an empty delta.
func (s *Set) Remove(elem string) *Set {
	delta := &Set{}
	for _, d := range s.entries[elem] {
		delta.cc.insert(d)
	}
	delta.cc.normalize()
	delete(s.entries, elem)
	return delta
}

// Contains reports whether elem is in the set.
func (s *Set) Contains(elem string) bool {
	_, ok := s.entries[elem]
	return ok
}

// Len returns the number of elements.
func (s *Set) Len() int { return len(s.entries) }

// Members returns the elements in increasing byte order.
func (s *Set) Members() []string {
	return slices.Sorted(maps.Keys(s.entries))
}

// Clone returns a deep copy.
func (s *Set) Clone() *Set {
	c := &Set{cc: s.cc.clone()}
	if len(s.entries) > 0 {
		c.entries = make(map[string][]Dot, len(s.entries))
		for e, ds := range s.entries {
			c.entries[e] = slices.Clone(ds)
		}
	}
	return c
}

// Merge joins o (a state or a delta) into s and reports whether s changed. A dot survives if
// both sides have it, or if one side has it and the other has not seen it; a dot one side has
// and the other has seen but no longer has was removed there, and goes. The contexts are
// united. o is not modified and s shares no memory with it.
//
// The cost is linear in the elements of both sides: a delta merged into a large set still walks
// the set, for the dots of the set's elements that the delta's context removes.
func (s *Set) Merge(o *Set) bool {
	changed := false
	for e, ds := range s.entries {
		ods := o.entries[e]
		if len(ods) == 0 && !anySeen(ds, &o.cc) {
			continue // the common case for a delta: o says nothing about e
		}
		if slices.Equal(ds, ods) {
			continue // the common case for a full state: both sides have the same dots
		}
		keep := joinDots(ds, ods, &s.cc, &o.cc)
		if slices.Equal(keep, ds) {
			continue
		}
		changed = true
		if len(keep) == 0 {
			delete(s.entries, e)
		} else {
			s.entries[e] = keep
		}
	}
	for e, ods := range o.entries {
		if _, ok := s.entries[e]; ok {
			continue
		}
		if keep := joinDots(nil, ods, &s.cc, &o.cc); len(keep) > 0 {
			if s.entries == nil {
				s.entries = make(map[string][]Dot)
			}
			s.entries[e] = keep
			changed = true
		}
	}
	if s.cc.merge(&o.cc) {
		changed = true
	}
	return changed
}

func anySeen(ds []Dot, c *causalContext) bool {
	for _, d := range ds {
		if c.contains(d) {
			return true
		}
	}
	return false
}

// joinDots joins one element's sorted dots a (with context ca) and b (with context cb): the
// dots in both, those of a that cb has not seen, and those of b that ca has not seen. The result
// is a new slice, sorted; nil when empty.
func joinDots(a, b []Dot, ca, cb *causalContext) []Dot {
	var out []Dot
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && compareDots(a[i], b[j]) < 0):
			if !cb.contains(a[i]) {
				out = append(out, a[i])
			}
			i++
		case i == len(a) || compareDots(b[j], a[i]) < 0:
			if !ca.contains(b[j]) {
				out = append(out, b[j])
			}
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}
