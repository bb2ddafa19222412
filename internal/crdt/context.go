package crdt

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Dot identifies one add event of an OR-set: the member that added and that member's count of
// its own adds. A member never issues the same dot twice.
type Dot struct {
	Member, Counter uint64
}

func compareDots(a, b Dot) int {
	if c := cmp.Compare(a.Member, b.Member); c != 0 {
		return c
	}
	return cmp.Compare(a.Counter, b.Counter)
}

// causalContext is the set of dots a replica has seen: a version vector for each member's
// contiguous prefix 1..vv[m], and a dot cloud for seen dots beyond a gap. Deltas travel with
// small contexts that are all cloud; merged into a state, the cloud is compacted into the vector
// as soon as the gaps fill, so a state's context stays about one number per member.
//
// Canonical form (kept after every change): no vv entry is 0, and every cloud dot's counter is
// above vv[member]+1 (a dot at or below vv[member] is already covered; one at vv[member]+1
// extends the prefix).
type causalContext struct {
	vv    map[uint64]uint64
	cloud map[Dot]struct{}
}

func (c *causalContext) contains(d Dot) bool {
	if d.Counter <= c.vv[d.Member] {
		return true
	}
	_, ok := c.cloud[d]
	return ok
}

// next returns member's next unused dot, or an error when its counter is exhausted.
func (c *causalContext) next(member uint64) (Dot, error) {
	n := c.vv[member]
	for d := range c.cloud {
		if d.Member == member {
			n = max(n, d.Counter)
		}
	}
	if n == math.MaxUint64 {
		return Dot{}, fmt.Errorf("%w: member %d has used every dot counter", ErrOverflow, member)
	}
	return Dot{Member: member, Counter: n + 1}, nil
}

// insert adds d without restoring canonical form (normalize does).
func (c *causalContext) insert(d Dot) {
	if d.Counter <= c.vv[d.Member] {
		return
	}
	if c.cloud == nil {
		c.cloud = make(map[Dot]struct{})
	}
	c.cloud[d] = struct{}{}
}

// add inserts d and restores canonical form.
func (c *causalContext) add(d Dot) {
	c.insert(d)
	c.normalize()
}

// merge unions o into c and reports whether c gained a dot.
func (c *causalContext) merge(o *causalContext) bool {
	changed := false
	for m, n := range o.vv {
		if n > c.vv[m] {
			if c.vv == nil {
				c.vv = make(map[uint64]uint64, len(o.vv))
			}
			c.vv[m] = n
			changed = true
		}
	}
	for d := range o.cloud {
		if !c.contains(d) {
			c.insert(d)
			changed = true
		}
	}
	if changed {
		c.normalize()
	}
	return changed
}

// normalize moves cloud dots that extend a member's prefix into the vector and drops covered
// ones. Walking the cloud in dot order extends each prefix through a whole run in one pass.
func (c *causalContext) normalize() {
	if len(c.cloud) == 0 {
		return
	}
	dots := c.sortedCloud()
	for _, d := range dots {
		n := c.vv[d.Member]
		switch {
		case d.Counter <= n:
			delete(c.cloud, d)
		case d.Counter == n+1:
			if c.vv == nil {
				c.vv = make(map[uint64]uint64)
			}
			c.vv[d.Member] = n + 1
			delete(c.cloud, d)
		}
	}
}

func (c *causalContext) sortedCloud() []Dot {
	dots := make([]Dot, 0, len(c.cloud))
	for d := range c.cloud {
		dots = append(dots, d)
	}
	slices.SortFunc(dots, compareDots)
	return dots
}

func (c *causalContext) clone() causalContext {
	var o causalContext
	if len(c.vv) > 0 {
		o.vv = make(map[uint64]uint64, len(c.vv))
		for m, n := range c.vv {
			o.vv[m] = n
		}
	}
	if len(c.cloud) > 0 {
		o.cloud = make(map[Dot]struct{}, len(c.cloud))
		for d := range c.cloud {
			o.cloud[d] = struct{}{}
		}
	}
	return o
}
