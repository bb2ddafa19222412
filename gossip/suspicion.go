package gossip

import "math"

// suspicion is Lifeguard's dynamic suspicion timer for one suspect member. It starts at max and
// shrinks toward min as independent confirmations arrive: after c of the k expected ones the
// timeout is max - (max-min) * log(c+1)/log(k+1), never below min. Confirmations only shorten the
// timer, so a member confirmed by many accusers is declared dead sooner, while a lone accuser
// (perhaps the slow one) has to wait the full max.
type suspicion struct {
	start    uint64
	min, max uint64
	k        int
	accusers map[string]struct{} // names that suspected it, the first accuser included
	n        int                 // confirmations: accusers beyond the first
	deadline uint64
}

func newSuspicion(now, min, max uint64, k int, accuser string) *suspicion {
	s := &suspicion{start: now, min: min, max: max, k: k, accusers: map[string]struct{}{accuser: {}}}
	s.deadline = now + s.timeout()
	return s
}

// confirm records an accusation by from and reports whether it was a new one.
func (s *suspicion) confirm(from string) bool {
	if s.n >= s.k {
		return false
	}
	if _, ok := s.accusers[from]; ok {
		return false
	}
	s.accusers[from] = struct{}{}
	s.n++
	s.deadline = s.start + s.timeout()
	return true
}

func (s *suspicion) timeout() uint64 {
	if s.k < 1 || s.max <= s.min {
		return s.min
	}
	frac := math.Log(float64(s.n)+1) / math.Log(float64(s.k)+1)
	t := float64(s.max) - frac*float64(s.max-s.min)
	if t < float64(s.min) {
		return s.min
	}
	return uint64(math.Floor(t))
}

// suspicionBounds returns min and max suspicion timeouts (ticks) for n live members.
func suspicionBounds(mult, maxMult int, probeInterval uint64, n int) (uint64, uint64) {
	scale := math.Max(1, math.Log10(math.Max(1, float64(n))))
	min := uint64(float64(mult) * scale * float64(probeInterval))
	return min, min * uint64(maxMult)
}
