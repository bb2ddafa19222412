package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"math"

	"github.com/caucus/caucus/internal/logpb"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
)

// Result is the outcome of applying one command.
type Result struct {
	// Resp is the response: *logpb.PutResponse, *logpb.DeleteRangeResponse,
	// *logpb.TxnResponse, *logpb.CompactionResponse, *logpb.LeaseGrantResponse,
	// *logpb.LeaseRevokeResponse (for revoke and expire) or *logpb.LeaseKeepAliveResponse.
	// Its header carries the store revision after the command.
	Resp proto.Message
	// Err is a deterministic application error (an *Error), or, if the batch failed, the batch's
	// I/O error (which Commit returns too).
	Err error
	// Skipped is set when the index was already applied: nothing happened and Resp is nil.
	Skipped bool
}

// Batch applies committed entries in one bbolt read-write transaction. Entries must be given in
// log order; entries at or below the persisted applied index are skipped. A Batch is not safe for
// concurrent use.
type Batch struct {
	s      *Store
	tx     *bolt.Tx
	locked bool
	done   bool
	err    error // fatal (I/O or corruption); the batch can only be rolled back
	dirty  bool  // some index was applied

	st state
	rd reader
	// undo lists the batch's changes to the key index, reverted if it does not commit.
	undo []undo

	// limits apply to this batch; a Settings command changes them (settingsChanged), and Commit
	// publishes them to the store.
	limits          Limits
	settingsChanged bool
	membersChanged  bool // the membership table was written (Store.MembersGen)

	hist, lease, leaseExp, leaseKey, sess, sessLRU, member, events, topics *bolt.Bucket
	idem, idemExp                                                          *bolt.Bucket
	// cons holds the consumer buckets (consumer.go); consChanged is set when a command changed
	// a consumer, so that Commit wakes the fetches waiting on one.
	cons        consumerBuckets
	consChanged bool

	// Per command.
	index   uint64
	now     int64 // the command's time_unix_nano
	pendRev int64 // the revision the command's writes take
	sub     int64 // the next sub-revision
	wrote   bool  // the command wrote a key version or an event: it takes pendRev
	cmdSize int   // the command's encoded size, when known (ApplyEncodedOp), or -1

	// The keys written and topics published by the batch, for PromptReaders (notify.go);
	// tracked only when the store has a PromptFunc. ask* is how much of them was asked about.
	track                  bool
	touchedKeys            [][]byte
	touchedTopics          []string
	askedKeys, askedTopics int
	evIndex                int32 // the index of the command's next event
	// evBefore is (st.evBytes, st.evCount) before the command's first event.
	evBefore [2]int64
}

// Begin starts a batch. It blocks while another batch is open. Errors surface in Apply results
// and in Commit.
func (s *Store) Begin() *Batch {
	b := &Batch{s: s}
	s.mu.RLock()
	if s.db == nil {
		s.mu.RUnlock()
		b.err, b.done = ErrClosed, true
		return b
	}
	tx, err := s.db.Begin(true)
	if err != nil {
		s.mu.RUnlock()
		b.err, b.done = fmt.Errorf("mvcc: begin batch: %w", err), true
		return b
	}
	b.tx, b.locked = tx, true
	b.hist = tx.Bucket(bucketHistory)
	// Every version is written at a new revision, after all stored ones: full pages.
	b.hist.FillPercent = 1
	b.lease = tx.Bucket(bucketLease)
	b.leaseExp = tx.Bucket(bucketLeaseExp)
	b.leaseKey = tx.Bucket(bucketLeaseKey)
	b.sess = tx.Bucket(bucketSession)
	b.sessLRU = tx.Bucket(bucketSessLRU)
	b.member = tx.Bucket(bucketMember)
	b.idem, b.idemExp = tx.Bucket(bucketIdemKey), tx.Bucket(bucketIdemExp)
	b.track = s.prompt.f.Load() != nil
	b.events = tx.Bucket(bucketEvents)
	b.events.FillPercent = 1
	b.topics = tx.Bucket(bucketTopics)
	b.cons = openConsumerBuckets(tx)
	b.rd = reader{hist: b.hist, idx: s.idx}
	b.st = loadState(tx)
	b.limits = *s.limits.Load()
	return b
}

// fail records a fatal error: the batch cannot be committed.
func (b *Batch) fail(err error) {
	if b.err == nil {
		b.err = fmt.Errorf("mvcc: apply index %d: %w", b.index, err)
	}
}

// Rev returns the revision including the commands applied so far in this batch.
func (b *Batch) Rev() int64 { return b.st.rev }

// advance reports whether index must be applied, recording it as applied.
func (b *Batch) advance(index uint64) bool {
	if b.err != nil || b.done || index <= b.st.applied {
		return false
	}
	b.st.applied, b.index, b.dirty = index, index, true
	return true
}

// Noop records an entry without a command (a new leader's empty entry).
func (b *Batch) Noop(index uint64) { b.advance(index) }

// MemberChange is one membership change of a configuration-change entry.
type MemberChange struct {
	// Member names the member; for a promotion or removal only its id needs to be set.
	Member  *logpb.MemberContext
	Learner bool
	Remove  bool
}

// ApplyMember records a member added or updated (e.g. promoted) by the configuration change at
// index. A context without a name and peer URLs (a promotion carrying only the id) keeps the
// recorded name and URLs and updates only the learner flag.
func (b *Batch) ApplyMember(index uint64, m *logpb.MemberContext, learner bool) {
	b.ApplyMembership(index, []MemberChange{{Member: m, Learner: learner}})
}

// ApplyMembers records several members added by one entry: the bootstrap configuration change
// (logpb.BootstrapMembers) names every initial member at index 1.
func (b *Batch) ApplyMembers(index uint64, ms []*logpb.MemberContext, learner bool) {
	chs := make([]MemberChange, 0, len(ms))
	for _, m := range ms {
		chs = append(chs, MemberChange{Member: m, Learner: learner})
	}
	b.ApplyMembership(index, chs)
}

// RemoveMember records a member removed by the configuration change at index.
func (b *Batch) RemoveMember(index uint64, id uint64) {
	b.ApplyMembership(index, []MemberChange{{Member: &logpb.MemberContext{Id: id}, Remove: true}})
}

// ApplyMembership records every change of the configuration-change entry at index. One entry may
// carry several changes (bootstrap, joint consensus); they must come in one call, because an
// index is applied at most once.
func (b *Batch) ApplyMembership(index uint64, chs []MemberChange) {
	if !b.advance(index) {
		return
	}
	for _, ch := range chs {
		m := ch.Member
		if ch.Remove {
			b.membersChanged = true
			if err := b.member.Delete(putU64(m.GetId())); err != nil {
				b.fail(fmt.Errorf("remove member %d: %w", m.GetId(), err))
				return
			}
			continue
		}
		rec := &logpb.Member{Id: m.GetId(), Name: m.GetName(), PeerUrls: m.GetPeerUrls(), ClientUrls: m.GetClientUrls(), IsLearner: ch.Learner}
		if old := b.member.Get(putU64(m.GetId())); old != nil && m.GetName() == "" && len(m.GetPeerUrls()) == 0 {
			prev := &logpb.Member{}
			if err := proto.Unmarshal(old, prev); err != nil {
				b.fail(fmt.Errorf("decode member %d: %w", m.GetId(), err))
				return
			}
			rec.Name, rec.PeerUrls, rec.ClientUrls, rec.LogVersion, rec.GossipAddr = prev.Name, prev.PeerUrls, prev.ClientUrls, prev.LogVersion, prev.GossipAddr
		}
		v, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
		if err != nil {
			b.fail(fmt.Errorf("encode member %d: %w", m.GetId(), err))
			return
		}
		b.membersChanged = true
		if err := b.member.Put(putU64(m.GetId()), v); err != nil {
			b.fail(fmt.Errorf("store member %d: %w", m.GetId(), err))
			return
		}
	}
}

// memberAttributes records a member's published client URLs. It does not take a revision: the
// membership table is not part of the key-value history.
func (b *Batch) memberAttributes(a *logpb.MemberAttributes) {
	old := b.member.Get(putU64(a.GetId()))
	if old == nil {
		return
	}
	rec := &logpb.Member{}
	if err := proto.Unmarshal(old, rec); err != nil {
		b.fail(fmt.Errorf("decode member %d: %w", a.GetId(), err))
		return
	}
	rec.ClientUrls = a.GetClientUrls()
	rec.LogVersion = a.GetLogVersion()
	rec.GossipAddr = a.GetGossipAddr()
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
	if err != nil {
		b.fail(fmt.Errorf("encode member %d: %w", a.GetId(), err))
		return
	}
	b.membersChanged = true
	if err := b.member.Put(putU64(a.GetId()), v); err != nil {
		b.fail(fmt.Errorf("store member %d: %w", a.GetId(), err))
	}
}

// setRevision fills the header revision of a response and of a transaction's nested responses.
func setRevision(m proto.Message, rev int64) {
	h := &logpb.ResponseHeader{Revision: rev}
	switch r := m.(type) {
	case *logpb.PutResponse:
		r.Header = h
	case *logpb.DeleteRangeResponse:
		r.Header = h
	case *logpb.RangeResponse:
		r.Header = h
	case *logpb.TxnResponse:
		r.Header = h
		for _, op := range r.Responses {
			switch n := op.GetResponse().(type) {
			case *logpb.ResponseOp_ResponseRange:
				setRevision(n.ResponseRange, rev)
			case *logpb.ResponseOp_ResponsePut:
				setRevision(n.ResponsePut, rev)
			case *logpb.ResponseOp_ResponseDeleteRange:
				setRevision(n.ResponseDeleteRange, rev)
			case *logpb.ResponseOp_ResponsePublish:
				setRevision(n.ResponsePublish, rev)
			case *logpb.ResponseOp_ResponseAck:
				setRevision(n.ResponseAck, rev)
			}
		}
	case *logpb.CompactionResponse:
		r.Header = h
	case *logpb.LeaseGrantResponse:
		r.Header = h
	case *logpb.LeaseRevokeResponse:
		r.Header = h
	case *logpb.LeaseKeepAliveResponse:
		r.Header = h
	case *logpb.PublishResponse:
		r.Header = h
	case *logpb.AckResponse:
		r.Header = h
	case *logpb.FetchResponse:
		r.Header = h
	case *logpb.ConsumerCreateResponse:
		r.Header = h
	case *logpb.ConsumerDeleteResponse:
		r.Header = h
	}
}

// writeVersion writes a new version of key at the command's revision: a record appended to the
// history bucket and a revision appended to the key's index entry. bbolt requires the key and
// value slices to stay valid for the transaction, so both are freshly allocated.
func (b *Batch) writeVersion(key []byte, rec *record) {
	sub := b.sub
	b.sub++
	b.wrote = true
	if b.track {
		b.touchedKeys = append(b.touchedKeys, key)
	}
	if sub > math.MaxInt32 {
		b.fail(fmt.Errorf("write key %q: more than %d writes at revision %d", key, math.MaxInt32, b.pendRev))
		return
	}
	if err := b.hist.Put(histKey(b.pendRev, sub), rec.encode(nil, key)); err != nil {
		b.fail(fmt.Errorf("write version %d.%d of key %q: %w", b.pendRev, sub, key, err))
		return
	}
	ki := b.rd.last
	if ki == nil || !bytes.Equal(b.rd.lastKey, key) {
		ki = b.s.idx.get(key)
	}
	b.undo = append(b.undo, b.s.idx.add(ki, key, revision{main: b.pendRev, sub: int32(sub), tomb: rec.tombstone}, rec))
	b.rd.last, b.rd.lastKey = nil, nil
}

// put checks a put; doPut applies it.
func (b *Batch) put(p *logpb.PutRequest) (*logpb.PutResponse, error) {
	if err := b.checkPut(p); err != nil {
		return nil, err
	}
	if err := b.checkTopics(p.GetEvents()); err != nil {
		return nil, err
	}
	return b.doPut(p), nil
}

func (b *Batch) checkPut(p *logpb.PutRequest) error {
	if id := p.GetLease(); id != 0 && b.lease.Get(putU64(uint64(id))) == nil {
		return errorf(ErrLeaseNotFound, "lease %d for key %q", id, p.GetKey())
	}
	return nil
}

func (b *Batch) doPut(p *logpb.PutRequest) *logpb.PutResponse {
	key := bytes.Clone(p.GetKey())
	resp := &logpb.PutResponse{}
	prev, prevRev, prevSub, ok, err := b.rd.latest(key)
	if err != nil {
		b.fail(err)
		return nil
	}
	rec := record{create: b.pendRev, version: 1, lease: p.GetLease(), value: bytes.Clone(p.GetValue())}
	if ok {
		rec.create, rec.version = prev.create, prev.version+1
		if p.GetPrevKv() {
			// Copy the previous value out of bbolt memory before writing.
			if err := b.rd.loadValue(prevRev, prevSub, &prev); err != nil {
				b.fail(err)
				return nil
			}
			resp.PrevKv = toKV(bytes.Clone(key), prevRev, &prev, false)
		}
		if prev.lease != 0 && prev.lease != rec.lease {
			b.detach(prev.lease, key)
		}
	}
	if rec.lease != 0 && (!ok || prev.lease != rec.lease) {
		b.attach(rec.lease, key)
	}
	b.writeVersion(key, &rec)
	resp.EventIds = b.publish(p.GetEvents())
	return resp
}

// liveKey is a key selected for deletion, copied out of bbolt memory.
type liveKey struct {
	key   []byte
	rev   int64
	lease int64
	prev  *logpb.KeyValue
}

func (b *Batch) deleteRange(d *logpb.DeleteRangeRequest) *logpb.DeleteRangeResponse {
	var keys []liveKey
	err := b.rd.scan(d.GetKey(), d.GetRangeEnd(), 0, func(k string, rev, sub int64, rec *record) (bool, error) {
		lk := liveKey{key: []byte(k), rev: rev, lease: rec.lease}
		if d.GetPrevKv() {
			if err := b.rd.loadValue(rev, sub, rec); err != nil {
				return false, err
			}
			lk.prev = toKV(bytes.Clone(lk.key), rev, rec, false)
		}
		keys = append(keys, lk)
		return true, nil
	})
	if err != nil {
		b.fail(err)
		return nil
	}
	resp := &logpb.DeleteRangeResponse{Deleted: int64(len(keys))}
	for _, k := range keys {
		b.deleteKey(k.key, k.lease)
		if k.prev != nil {
			resp.PrevKvs = append(resp.PrevKvs, k.prev)
		}
	}
	resp.EventIds = b.publish(d.GetEvents())
	return resp
}

// deleteKey writes a tombstone for a live key and detaches it from its lease.
func (b *Batch) deleteKey(key []byte, lease int64) {
	if lease != 0 {
		b.detach(lease, key)
	}
	b.writeVersion(key, &record{tombstone: true})
}

func (b *Batch) txn(t *logpb.TxnRequest) (*logpb.TxnResponse, error) {
	ok := true
	for _, c := range t.GetCompare() {
		holds, err := b.compare(c)
		if err != nil {
			b.fail(err)
			return nil, nil
		}
		if !holds {
			ok = false
			break
		}
	}
	ops := t.GetSuccess()
	if !ok {
		ops = t.GetFailure()
	}
	// Check every op of the branch before the first write: a transaction applies entirely or
	// not at all.
	for _, op := range ops {
		switch r := op.GetRequest().(type) {
		case *logpb.RequestOp_RequestRange:
			if err := b.checkRangeRev(r.RequestRange.GetRevision()); err != nil {
				return nil, err
			}
		case *logpb.RequestOp_RequestPut:
			if err := b.checkPut(r.RequestPut); err != nil {
				return nil, err
			}
		case *logpb.RequestOp_RequestAck:
			if _, err := b.checkAck(r.RequestAck); err != nil {
				return nil, err
			}
		}
	}
	if err := b.checkTopics(branchEvents(ops)); err != nil {
		return nil, err
	}
	resp := &logpb.TxnResponse{Succeeded: ok, Responses: make([]*logpb.ResponseOp, 0, len(ops))}
	for _, op := range ops {
		var out *logpb.ResponseOp
		switch r := op.GetRequest().(type) {
		case *logpb.RequestOp_RequestRange:
			rr, err := b.rd.rangeAt(r.RequestRange, b.st.rev, b.st.compactRev, b.limits.MaxRangeResults)
			if err != nil {
				// Only corruption can fail here: the request and its revision were checked.
				b.fail(err)
				return nil, nil
			}
			out = &logpb.ResponseOp{Response: &logpb.ResponseOp_ResponseRange{ResponseRange: rr}}
		case *logpb.RequestOp_RequestPut:
			out = &logpb.ResponseOp{Response: &logpb.ResponseOp_ResponsePut{ResponsePut: b.doPut(r.RequestPut)}}
		case *logpb.RequestOp_RequestDeleteRange:
			out = &logpb.ResponseOp{Response: &logpb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: b.deleteRange(r.RequestDeleteRange)}}
		case *logpb.RequestOp_RequestPublish:
			out = &logpb.ResponseOp{Response: &logpb.ResponseOp_ResponsePublish{ResponsePublish: &logpb.PublishResponse{
				EventIds: b.publish(r.RequestPublish.GetEvents())}}}
		case *logpb.RequestOp_RequestAck:
			out = &logpb.ResponseOp{Response: &logpb.ResponseOp_ResponseAck{ResponseAck: b.doAck(r.RequestAck)}}
		}
		if b.err != nil {
			return nil, nil
		}
		resp.Responses = append(resp.Responses, out)
	}
	return resp, nil
}

func (b *Batch) checkRangeRev(rev int64) error {
	switch {
	case rev > b.st.rev:
		return errorf(ErrFutureRev, "revision %d, current %d", rev, b.st.rev)
	case rev > 0 && rev < b.st.compactRev:
		return errorf(ErrCompacted, "revision %d, compacted at %d", rev, b.st.compactRev)
	}
	return nil
}

// compare evaluates one compare against the newest versions. With a range, every key in it must
// satisfy the compare; an absent key (or empty range) has version, revisions and lease 0, and
// fails every value compare, as in etcd.
func (b *Batch) compare(c *logpb.Compare) (bool, error) {
	n, holds := 0, true
	err := b.rd.scan(c.GetKey(), c.GetRangeEnd(), 0, func(_ string, rev, sub int64, rec *record) (bool, error) {
		n++
		if c.GetTarget() == logpb.Compare_VALUE {
			if err := b.rd.loadValue(rev, sub, rec); err != nil {
				return false, err
			}
		}
		holds = compareOne(c, rev, rec)
		return holds, nil
	})
	if err != nil {
		return false, err
	}
	if n == 0 {
		if c.GetTarget() == logpb.Compare_VALUE {
			return false, nil
		}
		return compareOne(c, 0, &record{}), nil
	}
	return holds, nil
}

func compareOne(c *logpb.Compare, modRev int64, rec *record) bool {
	var r int
	cmp := func(a, b int64) int {
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
		return 0
	}
	switch c.GetTarget() {
	case logpb.Compare_VERSION:
		r = cmp(rec.version, c.GetVersion())
	case logpb.Compare_CREATE:
		r = cmp(rec.create, c.GetCreateRevision())
	case logpb.Compare_MOD:
		r = cmp(modRev, c.GetModRevision())
	case logpb.Compare_LEASE:
		r = cmp(rec.lease, c.GetLease())
	case logpb.Compare_VALUE:
		r = bytes.Compare(rec.value, c.GetValue())
	}
	switch c.GetResult() {
	case logpb.Compare_EQUAL:
		return r == 0
	case logpb.Compare_GREATER:
		return r > 0
	case logpb.Compare_LESS:
		return r < 0
	case logpb.Compare_NOT_EQUAL:
		return r != 0
	}
	return false
}

// Commit persists the batch's writes and applied index atomically. A non-nil error means the
// state on disk is the one before the batch (an I/O failure, or an earlier fatal error of the
// batch); the node must stop.
func (b *Batch) Commit() error {
	if b.done {
		if b.err != nil {
			return b.err
		}
		return errors.New("mvcc: commit of a finished batch")
	}
	b.done = true
	defer b.unlock()
	if b.err != nil {
		b.abort()
		return b.err
	}
	if !b.dirty {
		// Every entry was skipped: nothing to write, no fsync.
		b.abort()
		return nil
	}
	var cuts []cut
	if b.st.compactNextRev <= b.st.compactRev {
		var err error
		if cuts, err = b.compactStep(b.s.compactBudget); err != nil {
			b.abort()
			return fmt.Errorf("mvcc: compaction step at revision %d: %w", b.st.compactNextRev, err)
		}
	}
	// Events below the events floor go the same way, a bounded share per batch.
	if _, err := b.compactEvents(b.st.evFloor, b.s.compactBudget); err != nil {
		b.abort()
		return fmt.Errorf("mvcc: compact events below revision %d: %w", b.st.evFloor, err)
	}
	if err := b.st.save(b.tx); err != nil {
		b.abort()
		return err
	}
	if err := b.tx.Commit(); err != nil {
		b.s.idx.revert(b.undo)
		return fmt.Errorf("mvcc: commit batch up to index %d: %w", b.st.applied, err)
	}
	b.undo = nil
	// Only now may the index forget what the step deleted: readers of older transactions
	// still see those versions in the file until they notice the index moved on.
	if len(cuts) > 0 {
		b.s.idx.compact(cuts, b.st.compactRev)
	}
	changed := b.s.rev.Load() != b.st.rev || b.s.compactRev.Load() != b.st.compactRev
	b.s.rev.Store(b.st.rev)
	b.s.compactRev.Store(b.st.compactRev)
	b.s.applied.Store(b.st.applied)
	if changed {
		b.s.revs.notify()
	}
	if b.consChanged {
		b.s.cons.notify()
	}
	if b.membersChanged {
		b.s.membersGen.Add(1)
	}
	if b.settingsChanged {
		l := b.limits
		b.s.limits.Store(&l)
		b.s.hasSettings.Store(true)
	}
	return nil
}

// Rollback discards the batch. It is a no-op after Commit.
func (b *Batch) Rollback() {
	if b.done {
		return
	}
	b.done = true
	b.abort()
	b.unlock()
}

// abort rolls back the bbolt transaction and the batch's changes to the key index.
func (b *Batch) abort() {
	_ = b.tx.Rollback()
	b.s.idx.revert(b.undo)
	b.undo = nil
}

func (b *Batch) unlock() {
	if b.locked {
		b.locked = false
		b.s.mu.RUnlock()
	}
}
