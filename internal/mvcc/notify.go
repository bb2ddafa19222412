package mvcc

import "sync"

// revNotifier wakes the readers that wait for the store's revision to change (watchers, consumer
// fetches that wait for events): a channel closed, and replaced, at each commit that publishes a
// new revision, and at a restore. Waiters re-read the store after waking; a wake-up without
// anything new for them is harmless.
type revNotifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func (n *revNotifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *revNotifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// RevChanged returns a channel that is closed once the committed revision may have changed
// after the call: a commit published a newer revision, or a snapshot replaced the state (whose
// revision and compacted revision may be anything). Read Rev and CompactRev after it closes.
func (s *Store) RevChanged() <-chan struct{} { return s.revs.wait() }
