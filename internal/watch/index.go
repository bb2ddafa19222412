package watch

import "slices"

// index finds the live watchers an item may concern: single-key watchers by key, topic
// watchers by exact topic; range watchers and topic patterns are tried one by one.
type index struct {
	keys     map[string][]*Watcher
	ranges   []*Watcher
	topics   map[string][]*Watcher
	patterns []*Watcher
}

func newIndex() index {
	return index{keys: map[string][]*Watcher{}, topics: map[string][]*Watcher{}}
}

func (x *index) add(w *Watcher) {
	if w.keys {
		if w.end == nil {
			x.keys[string(w.key)] = append(x.keys[string(w.key)], w)
		} else {
			x.ranges = append(x.ranges, w)
		}
	}
	for _, t := range w.exact {
		x.topics[t] = append(x.topics[t], w)
	}
	if w.patterns {
		x.patterns = append(x.patterns, w)
	}
}

func (x *index) remove(w *Watcher) {
	if w.keys {
		if w.end == nil {
			removeFrom(x.keys, string(w.key), w)
		} else {
			x.ranges = without(x.ranges, w)
		}
	}
	for _, t := range w.exact {
		removeFrom(x.topics, t, w)
	}
	if w.patterns {
		x.patterns = without(x.patterns, w)
	}
}

func removeFrom(m map[string][]*Watcher, k string, w *Watcher) {
	if l := without(m[k], w); len(l) > 0 {
		m[k] = l
	} else {
		delete(m, k)
	}
}

// without removes w from l, moving the last element into its place (order does not matter:
// each watcher's items keep the batch's order).
func without(l []*Watcher, w *Watcher) []*Watcher {
	i := slices.Index(l, w)
	if i < 0 {
		return l
	}
	last := len(l) - 1
	l[i] = l[last]
	l[last] = nil
	return l[:last]
}
