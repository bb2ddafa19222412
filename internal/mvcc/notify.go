package mvcc

import (
	"sync"
	"sync/atomic"
)

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

// promptReaders reports whether readers wait for the next commit (watchers, waiting consumer
// fetches): set by the server with SetPromptReaders, read by the application to ask the node for
// prompt commits (fsm.FSM.PromptCommit).
type promptReaders struct{ f atomic.Pointer[func() bool] }

// SetPromptReaders registers f, which reports whether readers are waiting for new revisions.
func (s *Store) SetPromptReaders(f func() bool) { s.prompt.f.Store(&f) }

// PromptReaders reports whether readers registered with SetPromptReaders are waiting.
func (s *Store) PromptReaders() bool {
	f := s.prompt.f.Load()
	return f != nil && (*f)()
}
