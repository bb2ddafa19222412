package crdt

import (
	"bytes"
	"fmt"
	"math/rand/v2"
)

// lattice describes a CRDT type to the generic checkers. States are pointers; merge joins src
// into dst in place.
type lattice[T any] struct {
	clone  func(T) T
	merge  func(dst, src T)
	encode func(T) []byte
	// decode is the type's Unmarshal; the simulations ship every payload encoded, as replication
	// will, so every state and delta they make must decode to itself.
	decode func([]byte) (T, error)
	// leq is the type's partial order, computed without merge, so that a merge that is a
	// semilattice but the wrong one (a meet, say) is still caught: a join must not lose
	// anything either side had.
	leq func(a, b T) bool
}

func (l lattice[T]) joined(a, b T) T {
	c := l.clone(a)
	l.merge(c, b)
	return c
}

// checkLaws checks on random pairs and triples drawn from states that merge is idempotent,
// commutative, associative and inflationary (both inputs are below the result), and that it does
// not modify its source. Equality is equality of encodings, which are canonical. It returns the
// first violation.
func checkLaws[T any](l lattice[T], r *rand.Rand, states []T, rounds int) error {
	pick := func() T { return states[r.IntN(len(states))] }
	for i := range rounds {
		a, b, c := pick(), pick(), pick()
		ea, eb := l.encode(a), l.encode(b)
		if got := l.encode(l.joined(a, a)); !bytes.Equal(got, ea) {
			return fmt.Errorf("round %d: not idempotent: a⊔a = %x, a = %x", i, got, ea)
		}
		ab, ba := l.joined(a, b), l.joined(b, a)
		if !bytes.Equal(l.encode(ab), l.encode(ba)) {
			return fmt.Errorf("round %d: not commutative: a⊔b = %x, b⊔a = %x", i, l.encode(ab), l.encode(ba))
		}
		if !bytes.Equal(l.encode(b), eb) || !bytes.Equal(l.encode(a), ea) {
			return fmt.Errorf("round %d: merge modified its source", i)
		}
		if !l.leq(a, ab) || !l.leq(b, ab) {
			return fmt.Errorf("round %d: not inflationary: a = %x, b = %x, a⊔b = %x", i, ea, eb, l.encode(ab))
		}
		left, right := l.joined(ab, c), l.joined(a, l.joined(b, c))
		if !bytes.Equal(l.encode(left), l.encode(right)) {
			return fmt.Errorf("round %d: not associative: (a⊔b)⊔c = %x, a⊔(b⊔c) = %x", i, l.encode(left), l.encode(right))
		}
	}
	return nil
}

// replicaSim drives replicas of one CRDT type through random operations and random delivery.
type replicaSim[T any] struct {
	lattice[T]
	empty func() T
	// op applies a random operation at replica i to its state s and returns the delta to ship.
	op func(r *rand.Rand, i int, s T) T
	// received, if set, is told of every payload merged at replica i (to advance its clock).
	received func(i int, payload T)
}

type simMsg[T any] struct {
	to      int
	payload T
}

// run performs steps random actions on n replicas: operations whose deltas go to random
// replicas, alone or joined into delta groups; full states sent to random replicas; messages
// delivered in random order, some of them twice or more, some dropped. Then every replica's
// state is merged into replica 0 and replica 0's into every other, and run checks that all
// replicas encode alike. It returns the final states, and every state and delta it saw (for
// checkLaws).
func (s replicaSim[T]) run(r *rand.Rand, n, steps int) (final []T, seen []T, err error) {
	states := make([]T, n)
	groups := make([]T, n) // each replica's deltas not yet shipped as a group
	for i := range states {
		states[i], groups[i] = s.empty(), s.empty()
	}
	var queue []simMsg[T]
	var wireErr error
	ship := func(to int, x T) simMsg[T] {
		b := s.encode(x)
		y, err := s.decode(b)
		if err != nil && wireErr == nil {
			wireErr = fmt.Errorf("decoding a shipped payload %x: %w", b, err)
		}
		if err != nil {
			y = s.empty()
		}
		return simMsg[T]{to: to, payload: y}
	}
	deliver := func(m simMsg[T]) {
		if s.received != nil {
			s.received(m.to, m.payload)
		}
		s.merge(states[m.to], m.payload)
	}
	for range steps {
		switch k := r.IntN(100); {
		case k < 40:
			i := r.IntN(n)
			d := s.op(r, i, states[i])
			seen = append(seen, s.clone(d))
			s.merge(groups[i], d)
			if r.IntN(2) == 0 {
				queue = append(queue, ship(r.IntN(n), d))
			}
		case k < 50:
			i := r.IntN(n)
			seen = append(seen, s.clone(groups[i]))
			for j := range n {
				if j != i && r.IntN(2) == 0 {
					queue = append(queue, ship(j, groups[i]))
				}
			}
			groups[i] = s.empty()
		case k < 55:
			i := r.IntN(n)
			seen = append(seen, s.clone(states[i]))
			queue = append(queue, ship(r.IntN(n), states[i]))
		case k < 90 && len(queue) > 0:
			q := r.IntN(len(queue))
			deliver(queue[q])
			if r.IntN(5) != 0 { // else it stays queued: delivered again later
				queue[q] = queue[len(queue)-1]
				queue = queue[:len(queue)-1]
			}
		case len(queue) > 0: // drop
			q := r.IntN(len(queue))
			queue[q] = queue[len(queue)-1]
			queue = queue[:len(queue)-1]
		}
	}
	for i := 1; i < n; i++ {
		deliver(ship(0, states[i]))
	}
	for i := 1; i < n; i++ {
		deliver(ship(i, states[0]))
	}
	if wireErr != nil {
		return states, seen, wireErr
	}
	want := s.encode(states[0])
	for i := 1; i < n; i++ {
		if got := s.encode(states[i]); !bytes.Equal(got, want) {
			return states, seen, fmt.Errorf("replica %d did not converge: %x, replica 0 has %x", i, got, want)
		}
	}
	return states, append(seen, states...), nil
}
