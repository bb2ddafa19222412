package server

import (
	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/logpb"
)

// Translation between the public API (caucus.v1) and the log format (internal/logpb): requests
// go into the log as logpb messages, and what the state machine returns (responses, stored
// session results) comes back as logpb messages. The two are separate types so that either can
// change without the other; today their messages mirror each other field for field, and
// translate_test.go checks that every field of every translated message is carried, so a field
// added to one side and forgotten here fails a test.
//
// Every function copies field by field; byte slices are shared, not copied (requests are not
// used after they are proposed, and responses are not changed after they are returned).

func sessionToLog(s *caucusv1.Session) *logpb.Session {
	if s == nil {
		return nil
	}
	return &logpb.Session{ClientId: s.ClientId, Sequence: s.Sequence, IdempotencyKey: s.IdempotencyKey}
}

func rangeToLog(r *caucusv1.RangeRequest) *logpb.RangeRequest {
	if r == nil {
		return nil
	}
	return &logpb.RangeRequest{
		Key: r.Key, RangeEnd: r.RangeEnd, Limit: r.Limit, Revision: r.Revision,
		Consistency: logpb.Consistency(r.Consistency), KeysOnly: r.KeysOnly, CountOnly: r.CountOnly,
	}
}

func putToLog(p *caucusv1.PutRequest) *logpb.PutRequest {
	if p == nil {
		return nil
	}
	return &logpb.PutRequest{Key: p.Key, Value: p.Value, Lease: p.Lease, PrevKv: p.PrevKv, Session: sessionToLog(p.Session),
		Events: eventsToLog(p.Events)}
}

func eventToLog(e *caucusv1.Event) *logpb.Event {
	if e == nil {
		return nil
	}
	return &logpb.Event{Topic: e.Topic, Key: e.Key, Payload: e.Payload, Headers: e.Headers, Id: e.Id,
		Revision: e.Revision, Index: e.Index, TimeUnixNano: e.TimeUnixNano}
}

func eventsToLog(evs []*caucusv1.Event) []*logpb.Event {
	if evs == nil {
		return nil
	}
	out := make([]*logpb.Event, len(evs))
	for i, e := range evs {
		out[i] = eventToLog(e)
	}
	return out
}

func publishToLog(p *caucusv1.PublishRequest) *logpb.PublishRequest {
	if p == nil {
		return nil
	}
	return &logpb.PublishRequest{Events: eventsToLog(p.Events), Session: sessionToLog(p.Session)}
}

func deleteToLog(d *caucusv1.DeleteRangeRequest) *logpb.DeleteRangeRequest {
	if d == nil {
		return nil
	}
	return &logpb.DeleteRangeRequest{Key: d.Key, RangeEnd: d.RangeEnd, PrevKv: d.PrevKv, Session: sessionToLog(d.Session),
		Events: eventsToLog(d.Events)}
}

func compareToLog(c *caucusv1.Compare) *logpb.Compare {
	if c == nil {
		return nil
	}
	out := &logpb.Compare{
		Result: logpb.Compare_Result(c.Result), Target: logpb.Compare_Target(c.Target),
		Key: c.Key, RangeEnd: c.RangeEnd,
	}
	switch t := c.TargetUnion.(type) {
	case *caucusv1.Compare_Version:
		out.TargetUnion = &logpb.Compare_Version{Version: t.Version}
	case *caucusv1.Compare_CreateRevision:
		out.TargetUnion = &logpb.Compare_CreateRevision{CreateRevision: t.CreateRevision}
	case *caucusv1.Compare_ModRevision:
		out.TargetUnion = &logpb.Compare_ModRevision{ModRevision: t.ModRevision}
	case *caucusv1.Compare_Value:
		out.TargetUnion = &logpb.Compare_Value{Value: t.Value}
	case *caucusv1.Compare_Lease:
		out.TargetUnion = &logpb.Compare_Lease{Lease: t.Lease}
	}
	return out
}

func requestOpsToLog(ops []*caucusv1.RequestOp) []*logpb.RequestOp {
	if ops == nil {
		return nil
	}
	out := make([]*logpb.RequestOp, len(ops))
	for i, op := range ops {
		o := &logpb.RequestOp{}
		switch r := op.GetRequest().(type) {
		case *caucusv1.RequestOp_RequestRange:
			o.Request = &logpb.RequestOp_RequestRange{RequestRange: rangeToLog(r.RequestRange)}
		case *caucusv1.RequestOp_RequestPut:
			o.Request = &logpb.RequestOp_RequestPut{RequestPut: putToLog(r.RequestPut)}
		case *caucusv1.RequestOp_RequestDeleteRange:
			o.Request = &logpb.RequestOp_RequestDeleteRange{RequestDeleteRange: deleteToLog(r.RequestDeleteRange)}
		case *caucusv1.RequestOp_RequestPublish:
			o.Request = &logpb.RequestOp_RequestPublish{RequestPublish: publishToLog(r.RequestPublish)}
		case *caucusv1.RequestOp_RequestAck:
			o.Request = &logpb.RequestOp_RequestAck{RequestAck: ackToLog(r.RequestAck)}
		}
		out[i] = o
	}
	return out
}

func txnToLog(t *caucusv1.TxnRequest) *logpb.TxnRequest {
	if t == nil {
		return nil
	}
	out := &logpb.TxnRequest{
		Success: requestOpsToLog(t.Success), Failure: requestOpsToLog(t.Failure), Session: sessionToLog(t.Session),
	}
	if t.Compare != nil {
		out.Compare = make([]*logpb.Compare, len(t.Compare))
		for i, c := range t.Compare {
			out.Compare[i] = compareToLog(c)
		}
	}
	return out
}

func compactionToLog(c *caucusv1.CompactionRequest) *logpb.CompactionRequest {
	if c == nil {
		return nil
	}
	return &logpb.CompactionRequest{Revision: c.Revision}
}

func leaseGrantToLog(g *caucusv1.LeaseGrantRequest) *logpb.LeaseGrantRequest {
	if g == nil {
		return nil
	}
	return &logpb.LeaseGrantRequest{Ttl: g.Ttl, Id: g.Id}
}

func leaseRevokeToLog(r *caucusv1.LeaseRevokeRequest) *logpb.LeaseRevokeRequest {
	if r == nil {
		return nil
	}
	return &logpb.LeaseRevokeRequest{Id: r.Id}
}

func leaseKeepAliveToLog(k *caucusv1.LeaseKeepAliveRequest) *logpb.LeaseKeepAliveRequest {
	if k == nil {
		return nil
	}
	return &logpb.LeaseKeepAliveRequest{Id: k.Id}
}

// From the log format back to the API. A nil header argument keeps the state machine's header
// as it is; the outermost response of a request gets this member's header instead (see
// Server.header).

func headerFromLog(h *logpb.ResponseHeader) *caucusv1.ResponseHeader {
	if h == nil {
		return nil
	}
	return &caucusv1.ResponseHeader{
		ClusterId: h.ClusterId, MemberId: h.MemberId, Revision: h.Revision,
		RaftTerm: h.RaftTerm, RaftAppliedIndex: h.RaftAppliedIndex,
	}
}

func pickHeader(logged *logpb.ResponseHeader, h *caucusv1.ResponseHeader) *caucusv1.ResponseHeader {
	if h != nil {
		return h
	}
	return headerFromLog(logged)
}

func kvFromLog(kv *logpb.KeyValue) *caucusv1.KeyValue {
	if kv == nil {
		return nil
	}
	return &caucusv1.KeyValue{
		Key: kv.Key, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision,
		Version: kv.Version, Value: kv.Value, Lease: kv.Lease,
	}
}

// kvsFromLog translates a list of versions with one allocation for all of them.
func kvsFromLog(kvs []*logpb.KeyValue) []*caucusv1.KeyValue {
	if kvs == nil {
		return nil
	}
	out := make([]*caucusv1.KeyValue, len(kvs))
	vals := make([]caucusv1.KeyValue, len(kvs))
	for i, kv := range kvs {
		if kv == nil {
			continue
		}
		v := &vals[i]
		v.Key, v.CreateRevision, v.ModRevision, v.Version, v.Value, v.Lease =
			kv.Key, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Value, kv.Lease
		out[i] = v
	}
	return out
}

func rangeFromLog(r *logpb.RangeResponse, h *caucusv1.ResponseHeader) *caucusv1.RangeResponse {
	if r == nil {
		return nil
	}
	return &caucusv1.RangeResponse{Header: pickHeader(r.Header, h), Kvs: kvsFromLog(r.Kvs), More: r.More, Count: r.Count}
}

func putFromLog(r *logpb.PutResponse, h *caucusv1.ResponseHeader) *caucusv1.PutResponse {
	if r == nil {
		return nil
	}
	return &caucusv1.PutResponse{Header: pickHeader(r.Header, h), PrevKv: kvFromLog(r.PrevKv), EventIds: r.EventIds}
}

// EventFromLog translates a stored event to the API.
func EventFromLog(e *logpb.Event) *caucusv1.Event {
	if e == nil {
		return nil
	}
	return &caucusv1.Event{Topic: e.Topic, Key: e.Key, Payload: e.Payload, Headers: e.Headers, Id: e.Id,
		Revision: e.Revision, Index: e.Index, TimeUnixNano: e.TimeUnixNano}
}

func publishFromLog(r *logpb.PublishResponse, h *caucusv1.ResponseHeader) *caucusv1.PublishResponse {
	if r == nil {
		return nil
	}
	return &caucusv1.PublishResponse{Header: pickHeader(r.Header, h), EventIds: r.EventIds}
}

func deleteFromLog(r *logpb.DeleteRangeResponse, h *caucusv1.ResponseHeader) *caucusv1.DeleteRangeResponse {
	if r == nil {
		return nil
	}
	return &caucusv1.DeleteRangeResponse{Header: pickHeader(r.Header, h), Deleted: r.Deleted, PrevKvs: kvsFromLog(r.PrevKvs), EventIds: r.EventIds}
}

func txnFromLog(r *logpb.TxnResponse, h *caucusv1.ResponseHeader) *caucusv1.TxnResponse {
	if r == nil {
		return nil
	}
	out := &caucusv1.TxnResponse{Header: pickHeader(r.Header, h), Succeeded: r.Succeeded}
	if r.Responses != nil {
		out.Responses = make([]*caucusv1.ResponseOp, len(r.Responses))
		for i, op := range r.Responses {
			o := &caucusv1.ResponseOp{}
			switch x := op.GetResponse().(type) {
			case *logpb.ResponseOp_ResponseRange:
				o.Response = &caucusv1.ResponseOp_ResponseRange{ResponseRange: rangeFromLog(x.ResponseRange, nil)}
			case *logpb.ResponseOp_ResponsePut:
				o.Response = &caucusv1.ResponseOp_ResponsePut{ResponsePut: putFromLog(x.ResponsePut, nil)}
			case *logpb.ResponseOp_ResponseDeleteRange:
				o.Response = &caucusv1.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: deleteFromLog(x.ResponseDeleteRange, nil)}
			case *logpb.ResponseOp_ResponsePublish:
				o.Response = &caucusv1.ResponseOp_ResponsePublish{ResponsePublish: publishFromLog(x.ResponsePublish, nil)}
			case *logpb.ResponseOp_ResponseAck:
				o.Response = &caucusv1.ResponseOp_ResponseAck{ResponseAck: ackFromLog(x.ResponseAck, nil)}
			}
			out.Responses[i] = o
		}
	}
	return out
}

func compactionFromLog(r *logpb.CompactionResponse, h *caucusv1.ResponseHeader) *caucusv1.CompactionResponse {
	if r == nil {
		return nil
	}
	return &caucusv1.CompactionResponse{Header: pickHeader(r.Header, h)}
}

func leaseGrantFromLog(r *logpb.LeaseGrantResponse, h *caucusv1.ResponseHeader) *caucusv1.LeaseGrantResponse {
	if r == nil {
		return nil
	}
	return &caucusv1.LeaseGrantResponse{Header: pickHeader(r.Header, h), Id: r.Id, Ttl: r.Ttl}
}

func leaseRevokeFromLog(r *logpb.LeaseRevokeResponse, h *caucusv1.ResponseHeader) *caucusv1.LeaseRevokeResponse {
	if r == nil {
		return nil
	}
	return &caucusv1.LeaseRevokeResponse{Header: pickHeader(r.Header, h)}
}

func leaseKeepAliveFromLog(r *logpb.LeaseKeepAliveResponse, h *caucusv1.ResponseHeader) *caucusv1.LeaseKeepAliveResponse {
	if r == nil {
		return nil
	}
	return &caucusv1.LeaseKeepAliveResponse{Header: pickHeader(r.Header, h), Id: r.Id, Ttl: r.Ttl}
}
