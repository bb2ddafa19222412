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

// promptReaders says whether readers wait for a commit of what was just applied (watchers whose
// filters select a written key or a published topic, waiting consumer fetches): set by the
// server with SetPromptReaders, asked by the application through Batch.PromptReaders to have
// the node commit promptly (fsm.FSM.PromptCommit).
type promptReaders struct{ f atomic.Pointer[PromptFunc] }

// PromptFunc reports whether readers wait for a commit of writes to keys or events of topics.
type PromptFunc func(keys [][]byte, topics []string) bool

// SetPromptReaders registers f.
func (s *Store) SetPromptReaders(f PromptFunc) { s.prompt.f.Store(&f) }

// PromptReaders reports whether readers registered with SetPromptReaders wait for writes to
// keys or events of topics.
func (s *Store) PromptReaders(keys [][]byte, topics []string) bool {
	f := s.prompt.f.Load()
	return f != nil && (*f)(keys, topics)
}

// PromptReaders reports whether readers wait for what the batch applied since the last time it
// was asked (nothing is tracked unless the store has a PromptFunc).
func (b *Batch) PromptReaders() bool {
	keys, topics := b.touchedKeys[b.askedKeys:], b.touchedTopics[b.askedTopics:]
	b.askedKeys, b.askedTopics = len(b.touchedKeys), len(b.touchedTopics)
	if len(keys) == 0 && len(topics) == 0 {
		return false
	}
	return b.s.PromptReaders(keys, topics)
}
