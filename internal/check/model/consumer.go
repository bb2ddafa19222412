package model

import (
	"sort"

	"github.com/caucus/caucus/internal/check/history"
)

// The consumer workload: workers publish events with unique ids (some with a key, a few keys
// shared by all) and consume them through one durable consumer in the exactly-once mode: each
// delivery is processed by one transaction that writes an effect key and acknowledges the
// delivery (a stale attempt or an already acknowledged event refuses it whole). After the faults
// heal the consumer is drained and every effect is read.
//
// The specification:
//
//   - an event whose publish was acknowledged has exactly one effect; one whose outcome is
//     unknown at most one; one whose publish definitely failed none; no effect names an event
//     never published;
//   - an effect agrees with its publish: the same key, and the position the publish was given
//     (its revision);
//   - a processing transaction that was acknowledged left its effect; one that definitely
//     failed left none;
//   - every delivery is of an event that was published (not a failed publish), with its key; no
//     delivery (event, attempt) is handed out by two fetches;
//   - per key: the stream orders acknowledged publishes as real time does (one acknowledged
//     before another was invoked has the lower position), and the effects of a key were written
//     in the order of their events' positions (the consumer hands out the next event of a key
//     only after the previous one is acknowledged).

// ConsumerPublish is the input of a publish of one event, by Events.Publish or by a put that
// carries it (Via "put").
type ConsumerPublish struct {
	ID  string `json:"id"`
	Key string `json:"key,omitempty"`
	Via string `json:"via"`
}

// ConsumerPublishResult is the output of an acknowledged publish.
type ConsumerPublishResult struct {
	// Revision is the revision of the write that published the event: its position's revision.
	Revision int64 `json:"revision"`
	// EventIDs is set only when the answer named other ids than the event's own.
	EventIDs []string `json:"event_ids,omitempty"`
}

// ConsumerFetch is the input of a fetch from the consumer.
type ConsumerFetch struct {
	Max int `json:"max"`
}

// ConsumerDelivery is one delivery of a fetch, or the one a processing transaction answers.
type ConsumerDelivery struct {
	ID       string `json:"id"`
	Key      string `json:"key,omitempty"`
	Revision int64  `json:"revision"`
	Index    int32  `json:"index"`
	Attempt  int32  `json:"attempt"`
}

// ConsumerFetchResult is the output of an acknowledged fetch.
type ConsumerFetchResult struct {
	Deliveries []ConsumerDelivery `json:"deliveries"`
}

// ConsumerProcess is the input of the transaction that writes a delivery's effect and
// acknowledges it.
type ConsumerProcess struct {
	ConsumerDelivery
}

// ConsumerProcessResult is the output of an acknowledged processing transaction.
type ConsumerProcessResult struct {
	// Revision is the transaction's revision: the effect's mod revision.
	Revision int64 `json:"revision"`
}

// ConsumerInfoRead is the input of a read of the consumer's state (the drain polls it).
type ConsumerInfoRead struct{}

// ConsumerInfoResult is the output of a ConsumerInfoRead.
type ConsumerInfoResult struct {
	Lag          int64 `json:"lag"`
	Pending      int64 `json:"pending"`
	Redelivered  int64 `json:"redelivered"`
	DeadLettered int64 `json:"dead_lettered"`
	Stalled      bool  `json:"stalled,omitempty"`
}

// ConsumerEffectsRead is the input of a read of every effect key.
type ConsumerEffectsRead struct {
	// Final marks the read after the drain; the checks of lost events use it.
	Final bool `json:"final,omitempty"`
}

// ConsumerEffect is one effect key: the delivery that wrote it, and the revision it was written at.
type ConsumerEffect struct {
	ConsumerDelivery
	ModRevision int64 `json:"mod_revision"`
}

// ConsumerEffectsResult is the output of a ConsumerEffectsRead.
type ConsumerEffectsResult struct {
	Effects []ConsumerEffect `json:"effects"`
}

type attemptKey struct {
	id      string
	attempt int32
}

// CheckConsumer checks a consumer history. Without a successful final read of the effects
// nothing can be said about lost events: that is reported as a violation.
func CheckConsumer(ops []history.Op) Result {
	res := Result{Valid: true, Stats: map[string]int{}}
	pubs := map[string]history.Op{}
	processes := map[attemptKey][]history.Op{}
	var fetches []history.Op
	var final *history.Op
	var lastInfo *ConsumerInfoResult
	for i := range ops {
		op := ops[i]
		switch in := op.Input.(type) {
		case ConsumerPublish:
			pubs[in.ID] = op
			res.Stats["publish-"+string(op.Status)]++
			if op.Status == history.OK && op.Output.(ConsumerPublishResult).EventIDs != nil {
				res.add("mismatch", []int{op.ID}, "publish of event %q answered with ids %q", in.ID, op.Output.(ConsumerPublishResult).EventIDs)
			}
		case ConsumerFetch:
			if op.Status == history.OK {
				fetches = append(fetches, op)
			}
		case ConsumerProcess:
			k := attemptKey{in.ID, in.Attempt}
			processes[k] = append(processes[k], op)
			res.Stats["process-"+string(op.Status)]++
		case ConsumerInfoRead:
			if op.Status == history.OK {
				out := op.Output.(ConsumerInfoResult)
				lastInfo = &out
			}
		case ConsumerEffectsRead:
			if in.Final && op.Status == history.OK {
				final = &ops[i]
			}
		}
	}

	// Deliveries: of published events, with their keys, each (event, attempt) handed out once.
	handed := map[attemptKey]int{}
	for _, f := range fetches {
		for _, d := range f.Output.(ConsumerFetchResult).Deliveries {
			res.Stats["deliveries"]++
			if d.Attempt > 1 {
				res.Stats["redeliveries"]++
			}
			p, ok := pubs[d.ID]
			switch {
			case !ok:
				res.add("phantom-delivery", []int{f.ID}, "fetch delivered event %q (at %d.%d) that was never published", d.ID, d.Revision, d.Index)
				continue
			case p.Status == history.Fail:
				res.add("phantom-delivery", []int{f.ID, p.ID}, "fetch delivered event %q whose publish definitely failed", d.ID)
			case p.Input.(ConsumerPublish).Key != d.Key:
				res.add("mismatch", []int{f.ID, p.ID}, "event %q delivered with key %q, published with key %q", d.ID, d.Key, p.Input.(ConsumerPublish).Key)
			}
			k := attemptKey{d.ID, d.Attempt}
			if prev, ok := handed[k]; ok {
				res.add("double-delivery", []int{prev, f.ID}, "attempt %d of event %q handed out by two fetches", d.Attempt, d.ID)
			}
			handed[k] = f.ID
			if len(processes[k]) == 0 {
				res.Stats["deliveries-dropped"]++
			}
		}
	}

	checkPublishOrder(&res, pubs)

	if final == nil {
		res.add("no-final-read", nil, "no final read of the effects succeeded; lost events cannot be ruled out")
		return res
	}
	if lastInfo != nil {
		res.Stats["final-lag"] = int(lastInfo.Lag)
		res.Stats["final-pending"] = int(lastInfo.Pending)
		res.Stats["dead-lettered"] = int(lastInfo.DeadLettered)
	}

	effects := final.Output.(ConsumerEffectsResult).Effects
	res.Stats["effects"] = len(effects)
	byID := map[string][]ConsumerEffect{}
	present := map[attemptKey]bool{}
	for _, ef := range effects {
		byID[ef.ID] = append(byID[ef.ID], ef)
		k := attemptKey{ef.ID, ef.Attempt}
		present[k] = true
		if _, ok := pubs[ef.ID]; ok && len(processes[k]) == 0 {
			res.add("phantom-effect", []int{final.ID}, "effect of attempt %d of event %q, which no processing transaction wrote", ef.Attempt, ef.ID)
		}
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		efs := byID[id]
		p, ok := pubs[id]
		if !ok {
			res.add("phantom-effect", []int{final.ID}, "effect of event %q, which was never published", id)
			continue
		}
		if p.Status == history.Fail {
			res.add("unexpected", []int{final.ID, p.ID}, "effect of event %q, whose publish definitely failed", id)
		}
		if len(efs) > 1 {
			ids := []int{final.ID, p.ID}
			var attempts []int32
			for _, ef := range efs {
				attempts = append(attempts, ef.Attempt)
				for _, pr := range processes[attemptKey{id, ef.Attempt}] {
					ids = append(ids, pr.ID)
				}
			}
			res.add("duplicate", ids, "event %q was processed %d times (attempts %v)", id, len(efs), attempts)
		}
		in := p.Input.(ConsumerPublish)
		for _, ef := range efs {
			if ef.Key != in.Key {
				res.add("mismatch", []int{final.ID, p.ID}, "effect of event %q has key %q, published with key %q", id, ef.Key, in.Key)
			}
			if p.Status == history.OK {
				if rev := p.Output.(ConsumerPublishResult).Revision; ef.Revision != rev {
					res.add("mismatch", []int{final.ID, p.ID}, "effect of event %q names position %d.%d, its publish was at revision %d", id, ef.Revision, ef.Index, rev)
				}
			}
		}
	}
	lost := 0
	var pubIDs []string
	for id := range pubs {
		pubIDs = append(pubIDs, id)
	}
	sort.Strings(pubIDs)
	for _, id := range pubIDs {
		if p := pubs[id]; p.Status == history.OK && len(byID[id]) == 0 {
			lost++
			if lost <= 20 {
				res.add("lost", []int{p.ID, final.ID}, "event %q was published (acknowledged at revision %d) and never processed", id, p.Output.(ConsumerPublishResult).Revision)
			}
		}
	}
	if lost > 20 {
		res.add("lost", []int{final.ID}, "%d more acknowledged events were never processed", lost-20)
	}

	// Processing transactions: an acknowledged one left its effect, a failed one none.
	var keys []attemptKey
	for k := range processes {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].id < keys[j].id || keys[i].id == keys[j].id && keys[i].attempt < keys[j].attempt
	})
	for _, k := range keys {
		failed := true
		var ids []int
		for _, pr := range processes[k] {
			ids = append(ids, pr.ID)
			if pr.Status != history.Fail {
				failed = false
			}
			if pr.Status == history.OK && !present[k] {
				res.add("lost-effect", []int{pr.ID, final.ID}, "the transaction processing attempt %d of event %q was acknowledged at revision %d; its effect is missing", k.attempt, k.id, pr.Output.(ConsumerProcessResult).Revision)
			}
		}
		if failed && present[k] {
			res.add("unexpected", append(ids, final.ID), "every transaction processing attempt %d of event %q definitely failed; its effect is present", k.attempt, k.id)
		}
	}

	checkEffectOrder(&res, effects, final.ID)
	return res
}

// checkPublishOrder checks that acknowledged publishes of one key were given positions in real
// time order: a publish acknowledged before another was invoked has the lower revision.
func checkPublishOrder(res *Result, pubs map[string]history.Op) {
	byKey := map[string][]history.Op{}
	for _, p := range pubs {
		if k := p.Input.(ConsumerPublish).Key; k != "" && p.Status == history.OK {
			byKey[k] = append(byKey[k], p)
		}
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		byCall := byKey[k]
		sort.Slice(byCall, func(i, j int) bool { return byCall[i].Call < byCall[j].Call })
		byReturn := append([]history.Op(nil), byCall...)
		sort.Slice(byReturn, func(i, j int) bool { return byReturn[i].Return < byReturn[j].Return })
		ri, maxRev, maxOp := 0, int64(0), -1
		for _, p := range byCall {
			for ; ri < len(byReturn) && byReturn[ri].Return < p.Call; ri++ {
				if rev := byReturn[ri].Output.(ConsumerPublishResult).Revision; rev > maxRev {
					maxRev, maxOp = rev, byReturn[ri].ID
				}
			}
			if rev := p.Output.(ConsumerPublishResult).Revision; maxOp >= 0 && rev <= maxRev {
				res.add("order", []int{maxOp, p.ID}, "key %q: publish at revision %d was invoked after a publish at revision %d was acknowledged", k, rev, maxRev)
			}
		}
	}
}

// checkEffectOrder checks that the effects of each key were written in the order of their
// events' positions. Of an event processed more than once (reported as a duplicate) only the
// first effect counts.
func checkEffectOrder(res *Result, effects []ConsumerEffect, finalID int) {
	first := map[string]ConsumerEffect{}
	for _, ef := range effects {
		if f, ok := first[ef.ID]; ef.Key != "" && (!ok || ef.ModRevision < f.ModRevision) {
			first[ef.ID] = ef
		}
	}
	byKey := map[string][]ConsumerEffect{}
	for _, ef := range first {
		byKey[ef.Key] = append(byKey[ef.Key], ef)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		efs := byKey[k]
		sort.Slice(efs, func(i, j int) bool { return efs[i].ModRevision < efs[j].ModRevision })
		for i := 1; i < len(efs); i++ {
			a, b := efs[i-1], efs[i]
			if b.Revision < a.Revision || b.Revision == a.Revision && b.Index <= a.Index {
				res.add("order", []int{finalID}, "key %q: the effect of event %q (at %d.%d) was written at revision %d, after the effect of the later event %q (at %d.%d) at revision %d",
					k, b.ID, b.Revision, b.Index, b.ModRevision, a.ID, a.Revision, a.Index, a.ModRevision)
			}
		}
	}
}
