package avail

import (
	"bytes"
	"context"
	"fmt"
)

// DefaultDescentStep is how many tree levels a session descends per message: a differing node
// is answered with the hashes of its 2^step descendants that many levels down, so a tree of
// LeafBits = 10 levels is walked in three rounds (0 -> 4 -> 8 -> 10).
const DefaultDescentStep = 4

// stateReadBatch is how many states a session reads from its replica at a time.
const stateReadBatch = 64

// SessionConfig configures a Session. Both sides should use the same values.
type SessionConfig struct {
	// MaxMessageBytes bounds every message sent and received (0: DefaultMaxMessageBytes);
	// within [MinMessageBytes, MaxMessageBytes].
	MaxMessageBytes int
	// DescentStep is the levels descended per round (0: DefaultDescentStep); 1..LeafBits.
	DescentStep int
}

// SessionStats counts one side's work in a session.
type SessionStats struct {
	MessagesSent, MessagesReceived int
	BytesSent, BytesReceived       int
	HashesSent                     int // tree node hashes
	KeysListed                     int // keys sent in leaf key lists
	WantsSent                      int // keys whose states this side asked for
	StatesSent                     int
	StatesMerged                   int // received states that changed the local state
	StatesRefused                  int // received states the replica refused (e.g. clock skew)
	StatesOversize                 int // local states too large for a message, not sent
}

// Session is one side of an anti-entropy exchange for one keyspace: a deterministic state
// machine that does no I/O of its own (its replica does the storage work, the caller moves the
// messages). The sides take turns: the initiator's Start makes the first message, and each
// Step consumes the peer's message and returns the answer, until one side returns done.
//
// The exchange: the initiator sends its root; a side that finds a node different answers with
// its hashes of the node's descendants DescentStep levels down, so only differing subtrees are
// walked; a side that finds a leaf different lists that leaf's keys with their state digests
// (paginated by key order); the other side compares the list with its own keys in the same
// range and sends the states of keys it has and the peer lacks or holds different, and asks for
// the states of keys the peer has and it lacks or holds different. Received states are merged
// through the replica. Both sides end with the join of both states for every key they
// compared, so one session converges two replicas that did not change meanwhile.
//
// Every message carries whether its sender still has work queued (flagMore). A side that
// receives a message without it and has nothing queued after handling it knows both sides are
// idle and ends the exchange with a done message. Between equal replicas the exchange is the
// initiator's root and the responder's done.
type Session struct {
	r         Replica
	keyspace  string
	maxBytes  int
	step      int
	initiator bool
	started   bool
	done      bool

	hashes []nodeHash // node hashes to send
	lists  []section  // leaf key lists to send: leaf and cursor
	wants  [][]byte   // keys whose states to ask for
	sends  [][]byte   // keys whose states to send

	stats SessionStats

	// skip, when set, drops the descendant hashes it matches: a planted bug for tests.
	skip func(depth, index int) bool
}

// NewSession returns one side of a session over keyspace. The initiator calls Start; the
// responder waits for the initiator's first message.
func NewSession(r Replica, keyspace string, initiator bool, cfg SessionConfig) (*Session, error) {
	s := &Session{r: r, keyspace: keyspace, initiator: initiator, maxBytes: cfg.MaxMessageBytes, step: cfg.DescentStep}
	if s.maxBytes == 0 {
		s.maxBytes = DefaultMaxMessageBytes
	}
	if s.step == 0 {
		s.step = DefaultDescentStep
	}
	if s.maxBytes < MinMessageBytes || s.maxBytes > MaxMessageBytes {
		return nil, fmt.Errorf("%w: session MaxMessageBytes %d, want %d..%d", ErrInvalid, s.maxBytes, MinMessageBytes, MaxMessageBytes)
	}
	if s.step < 1 || s.step > LeafBits {
		return nil, fmt.Errorf("%w: session DescentStep %d, want 1..%d", ErrInvalid, s.step, LeafBits)
	}
	if keyspace == "" || len(keyspace) > MaxKeyspaceNameBytes {
		return nil, fmt.Errorf("%w: session keyspace name of %d bytes", ErrInvalid, len(keyspace))
	}
	return s, nil
}

// Stats returns this side's counters.
func (s *Session) Stats() SessionStats { return s.stats }

// Done reports whether the exchange is over for this side.
func (s *Session) Done() bool { return s.done }

// Start returns the initiator's first message: the keyspace, the tree's shape and its root.
func (s *Session) Start() ([]byte, error) {
	if !s.initiator || s.started {
		return nil, fmt.Errorf("%w: Start on a responder or twice", ErrInvalid)
	}
	s.started = true
	root, err := s.r.Nodes(s.keyspace, 0, 0, 1)
	if err != nil {
		return nil, fmt.Errorf("avail: session %q: %w", s.keyspace, err)
	}
	m := &message{flags: flagHello, keyspace: s.keyspace, leafBits: LeafBits, hashes: []nodeHash{{hash: root[0]}}}
	return s.send(m), nil
}

func (s *Session) send(m *message) []byte {
	b := m.marshal()
	s.stats.MessagesSent++
	s.stats.BytesSent += len(b)
	s.stats.HashesSent += len(m.hashes)
	for _, sec := range m.sections {
		s.stats.KeysListed += len(sec.keys)
	}
	s.stats.WantsSent += len(m.wants)
	s.stats.StatesSent += len(m.states)
	return b
}

func (s *Session) idle() bool {
	return len(s.hashes) == 0 && len(s.lists) == 0 && len(s.wants) == 0 && len(s.sends) == 0
}

// Step handles the peer's message and returns the answer to send. done reports that the
// exchange is over: out is then a final message to deliver (nil if there is none to send).
// An error ends the session; the replica keeps every state merged before it.
func (s *Session) Step(ctx context.Context, in []byte) (out []byte, done bool, err error) {
	if s.done {
		return nil, true, fmt.Errorf("%w: session %q is over", ErrMessage, s.keyspace)
	}
	if s.initiator && !s.started {
		return nil, false, fmt.Errorf("%w: Step before Start", ErrInvalid)
	}
	out, done, err = s.step1(ctx, in)
	if err != nil {
		s.done = true
		return nil, true, fmt.Errorf("avail: session %q: %w", s.keyspace, err)
	}
	return out, done, nil
}

func (s *Session) step1(ctx context.Context, in []byte) ([]byte, bool, error) {
	m, err := unmarshalMessage(in, s.maxBytes)
	if err != nil {
		return nil, true, err
	}
	s.stats.MessagesReceived++
	s.stats.BytesReceived += len(in)
	hello := m.flags&flagHello != 0
	switch {
	case !s.initiator && !s.started:
		if !hello {
			return nil, true, fmt.Errorf("%w: first message is not a hello", ErrMessage)
		}
		if m.keyspace != s.keyspace || m.leafBits != LeafBits {
			return nil, true, fmt.Errorf("%w: peer compares keyspace %q with %d leaf bits, this side %q with %d",
				ErrMessage, m.keyspace, m.leafBits, s.keyspace, LeafBits)
		}
		s.started = true
	case hello:
		return nil, true, fmt.Errorf("%w: unexpected hello", ErrMessage)
	}
	if m.flags&flagDone != 0 {
		s.done = true
		return nil, true, nil
	}
	if err := s.handleHashes(m.hashes); err != nil {
		return nil, true, err
	}
	for i := range m.sections {
		if err := s.handleSection(&m.sections[i]); err != nil {
			return nil, true, err
		}
	}
	s.sends = append(s.sends, m.wants...)
	if len(m.states) > 0 {
		res, err := s.r.Merge(ctx, s.keyspace, m.states)
		if err != nil {
			return nil, true, fmt.Errorf("merge %d states: %w", len(m.states), err)
		}
		for _, r := range res {
			switch {
			case r.Err != nil:
				s.stats.StatesRefused++
			case r.Changed:
				s.stats.StatesMerged++
			}
		}
	}
	if s.idle() && m.flags&flagMore == 0 {
		s.done = true
		return s.send(&message{flags: flagDone}), true, nil
	}
	out, err := s.fill()
	return out, false, err
}

// handleHashes compares the peer's node hashes with this side's and queues, for each that
// differs, the descendants' hashes or (for a leaf) the leaf's key list.
func (s *Session) handleHashes(hs []nodeHash) error {
	for _, h := range hs {
		local, err := s.r.Nodes(s.keyspace, h.depth, h.index, 1)
		if err != nil {
			return err
		}
		if local[0] == h.hash {
			continue
		}
		if h.depth == LeafBits {
			s.lists = append(s.lists, section{leaf: h.index})
			continue
		}
		nd := min(h.depth+s.step, LeafBits)
		span := 1 << (nd - h.depth)
		first := h.index * span
		kids, err := s.r.Nodes(s.keyspace, nd, first, span)
		if err != nil {
			return err
		}
		for j, k := range kids {
			if s.skip != nil && s.skip(nd, first+j) {
				continue
			}
			s.hashes = append(s.hashes, nodeHash{depth: nd, index: first + j, hash: k})
		}
	}
	return nil
}

// handleSection compares the peer's keys of one leaf range with this side's and queues the
// states to send and to ask for.
func (s *Session) handleSection(sec *section) error {
	var prev []byte
	if sec.hasAfter {
		prev = indexKey(sec.after)
		if leafOfPrefix(prev) != sec.leaf {
			return fmt.Errorf("%w: leaf %d: cursor key %q belongs to leaf %d", ErrMessage, sec.leaf, sec.after, leafOfPrefix(prev))
		}
	}
	remote := make([][]byte, len(sec.keys))
	for i, k := range sec.keys {
		ik := indexKey(k.Key)
		if leafOfPrefix(ik) != sec.leaf {
			return fmt.Errorf("%w: leaf %d lists key %q of leaf %d", ErrMessage, sec.leaf, k.Key, leafOfPrefix(ik))
		}
		if prev != nil && bytes.Compare(ik, prev) <= 0 {
			return fmt.Errorf("%w: leaf %d: key %q out of order", ErrMessage, sec.leaf, k.Key)
		}
		remote[i], prev = ik, ik
	}
	var after, through []byte
	if sec.hasAfter {
		after = sec.after
	}
	if !sec.final {
		through = sec.keys[len(sec.keys)-1].Key
	}
	local, _, err := s.r.LeafKeys(s.keyspace, sec.leaf, after, through, 0)
	if err != nil {
		return err
	}
	i, j := 0, 0
	for i < len(local) || j < len(sec.keys) {
		var c int
		switch {
		case i == len(local):
			c = 1
		case j == len(sec.keys):
			c = -1
		default:
			c = bytes.Compare(indexKey(local[i].Key), remote[j])
		}
		switch {
		case c < 0: // only here
			s.sends = append(s.sends, local[i].Key)
			i++
		case c > 0: // only there
			s.wants = append(s.wants, sec.keys[j].Key)
			j++
		default:
			if local[i].Digest != sec.keys[j].Digest {
				s.sends = append(s.sends, local[i].Key)
				s.wants = append(s.wants, sec.keys[j].Key)
			}
			i++
			j++
		}
	}
	return nil
}

// fill builds the next message from the queues, up to maxBytes: states first (they finish
// work), then wants, key lists, hashes.
func (s *Session) fill() ([]byte, error) {
	m := &message{}
	budget := s.maxBytes - headerLen(m)
	room := budget
	// States.
	for len(s.sends) > 0 && room > 0 {
		n := min(len(s.sends), stateReadBatch)
		states, err := s.r.States(s.keyspace, s.sends[:n])
		if err != nil {
			return nil, err
		}
		taken := 0
		for i, st := range states {
			r := Remote{Key: s.sends[i], State: st}
			size := stateLen(r)
			if st != nil && size > budget {
				s.stats.StatesOversize++
			}
			if st == nil || size > budget { // gone meanwhile, or never fits
				taken++
				continue
			}
			if size > room {
				break
			}
			m.states = append(m.states, r)
			room -= size
			taken++
		}
		s.sends = s.sends[taken:]
		if taken < n {
			break
		}
	}
	// Wants.
	for len(s.wants) > 0 {
		size := bytesLen(s.wants[0])
		if size > room {
			break
		}
		m.wants = append(m.wants, s.wants[0])
		s.wants = s.wants[1:]
		room -= size
	}
	// Key lists, paginated.
	for len(s.lists) > 0 {
		req := &s.lists[0]
		sec := section{leaf: req.leaf, after: req.after, hasAfter: req.hasAfter}
		used := sectionHeaderLen(&sec)
		if used >= room {
			break
		}
		limit := (room-used)/(1+1+len(KeyDigest{}.Digest)) + 1
		keys, more, err := s.r.LeafKeys(s.keyspace, req.leaf, req.after, nil, limit)
		if err != nil {
			return nil, err
		}
		cut := false
		for _, k := range keys {
			size := keyDigestLen(k)
			if used+size > room {
				cut = true
				break
			}
			sec.keys = append(sec.keys, k)
			used += size
		}
		sec.final = !cut && !more
		if !sec.final && len(sec.keys) == 0 {
			break // no room for one key: next message
		}
		m.sections = append(m.sections, sec)
		room -= used
		if sec.final {
			s.lists = s.lists[1:]
		} else {
			req.after, req.hasAfter = sec.keys[len(sec.keys)-1].Key, true
		}
	}
	// Hashes.
	for len(s.hashes) > 0 {
		size := hashLen(s.hashes[0])
		if size > room {
			break
		}
		m.hashes = append(m.hashes, s.hashes[0])
		s.hashes = s.hashes[1:]
		room -= size
	}
	if !s.idle() {
		m.flags |= flagMore
	}
	return s.send(m), nil
}
