package server

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/logpb"
)

// The API (caucus.v1) and the log format (internal/logpb) are separate types whose messages
// mirror each other field for field today. These tests keep the translation honest: every field
// of every translated message must be carried, and a field added on one side only fails here.

// mirrorPairs lists the translated message pairs; nested messages are checked recursively.
var mirrorPairs = []struct{ api, log proto.Message }{
	{&caucusv1.PutRequest{}, &logpb.PutRequest{}},
	{&caucusv1.DeleteRangeRequest{}, &logpb.DeleteRangeRequest{}},
	{&caucusv1.TxnRequest{}, &logpb.TxnRequest{}},
	{&caucusv1.RangeRequest{}, &logpb.RangeRequest{}},
	{&caucusv1.CompactionRequest{}, &logpb.CompactionRequest{}},
	{&caucusv1.LeaseGrantRequest{}, &logpb.LeaseGrantRequest{}},
	{&caucusv1.LeaseRevokeRequest{}, &logpb.LeaseRevokeRequest{}},
	{&caucusv1.LeaseKeepAliveRequest{}, &logpb.LeaseKeepAliveRequest{}},
	{&caucusv1.PutResponse{}, &logpb.PutResponse{}},
	{&caucusv1.DeleteRangeResponse{}, &logpb.DeleteRangeResponse{}},
	{&caucusv1.TxnResponse{}, &logpb.TxnResponse{}},
	{&caucusv1.RangeResponse{}, &logpb.RangeResponse{}},
	{&caucusv1.CompactionResponse{}, &logpb.CompactionResponse{}},
	{&caucusv1.LeaseGrantResponse{}, &logpb.LeaseGrantResponse{}},
	{&caucusv1.LeaseRevokeResponse{}, &logpb.LeaseRevokeResponse{}},
	{&caucusv1.LeaseKeepAliveResponse{}, &logpb.LeaseKeepAliveResponse{}},
	{&caucusv1.Member{}, &logpb.Member{}},
	{&caucusv1.ConsumerCreateRequest{}, &logpb.ConsumerCreateRequest{}},
	{&caucusv1.ConsumerCreateResponse{}, &logpb.ConsumerCreateResponse{}},
	{&caucusv1.ConsumerDeleteRequest{}, &logpb.ConsumerDeleteRequest{}},
	{&caucusv1.ConsumerDeleteResponse{}, &logpb.ConsumerDeleteResponse{}},
	{&caucusv1.ConsumerState{}, &logpb.ConsumerState{}},
	{&caucusv1.FetchRequest{}, &logpb.FetchRequest{}},
	{&caucusv1.FetchResponse{}, &logpb.FetchResponse{}},
	{&caucusv1.AckRequest{}, &logpb.AckRequest{}},
	{&caucusv1.AckResponse{}, &logpb.AckResponse{}},
}

// apiOnly are the API fields that no log message carries: the server fills them from the
// answering member's own state (its gossip view), so nothing is translated or stored.
var apiOnly = map[protoreflect.FullName]bool{
	"caucus.v1.Member.gossip_state": true,
}

// TestLogFormatMirrorsTheAPI: for each pair, the log message has every field of the API message
// with the same number, name, kind and cardinality (so the translation can carry it, and bytes
// written when the log embedded caucus.v1 messages still decode). The log side may have more
// (logpb.Member.log_version).
func TestLogFormatMirrorsTheAPI(t *testing.T) {
	seen := map[protoreflect.FullName]bool{}
	var check func(a, l protoreflect.MessageDescriptor)
	check = func(a, l protoreflect.MessageDescriptor) {
		if seen[a.FullName()] {
			return
		}
		seen[a.FullName()] = true
		if a.Name() != l.Name() {
			t.Errorf("%s mirrors %s: names differ", l.FullName(), a.FullName())
		}
		fields := a.Fields()
		for i := 0; i < fields.Len(); i++ {
			af := fields.Get(i)
			if apiOnly[af.FullName()] {
				continue
			}
			lf := l.Fields().ByNumber(af.Number())
			if lf == nil {
				t.Errorf("%s has no field %d (%s of %s)", l.FullName(), af.Number(), af.Name(), a.FullName())
				continue
			}
			if af.Name() != lf.Name() || af.Kind() != lf.Kind() || af.Cardinality() != lf.Cardinality() ||
				(af.ContainingOneof() == nil) != (lf.ContainingOneof() == nil) {
				t.Errorf("field %d of %s: %s %v %v, but %s has %s %v %v", af.Number(), a.FullName(),
					af.Name(), af.Kind(), af.Cardinality(), l.FullName(), lf.Name(), lf.Kind(), lf.Cardinality())
				continue
			}
			if af.Kind() == protoreflect.MessageKind {
				check(af.Message(), lf.Message())
			}
			if af.Kind() == protoreflect.EnumKind {
				av, lv := af.Enum().Values(), lf.Enum().Values()
				for j := 0; j < av.Len(); j++ {
					if v := lv.ByNumber(av.Get(j).Number()); v == nil || v.Name() != av.Get(j).Name() {
						t.Errorf("enum %s value %s has no mirror in %s", af.Enum().FullName(), av.Get(j).Name(), lf.Enum().FullName())
					}
				}
			}
		}
	}
	for _, p := range mirrorPairs {
		check(p.api.ProtoReflect().Descriptor(), p.log.ProtoReflect().Descriptor())
	}
	for name := range apiOnly {
		if d, err := protoregistry.GlobalFiles.FindDescriptorByName(name); err != nil || d == nil {
			t.Errorf("apiOnly names %s, which is not a field: %v", name, err)
		}
	}
}

// populate sets every field of m (one member of each oneof, chosen by rng) to a random non-zero
// value, down to depth levels of nesting.
func populate(m protoreflect.Message, rng *rand.Rand, depth int) {
	fields := m.Descriptor().Fields()
	oneofDone := map[protoreflect.FullName]bool{}
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if od := fd.ContainingOneof(); od != nil {
			if oneofDone[od.FullName()] {
				continue
			}
			oneofDone[od.FullName()] = true
			fd = od.Fields().Get(rng.IntN(od.Fields().Len()))
		}
		if fd.Kind() == protoreflect.MessageKind && depth == 0 {
			continue
		}
		if fd.IsMap() {
			mp := m.Mutable(fd).Map()
			for n := 1 + rng.IntN(2); n > 0; n-- {
				mp.Set(scalar(fd.MapKey(), rng).MapKey(), scalar(fd.MapValue(), rng))
			}
			continue
		}
		if fd.IsList() {
			l := m.Mutable(fd).List()
			for n := 1 + rng.IntN(2); n > 0; n-- {
				if fd.Kind() == protoreflect.MessageKind {
					e := l.NewElement()
					populate(e.Message(), rng, depth-1)
					l.Append(e)
				} else {
					l.Append(scalar(fd, rng))
				}
			}
			continue
		}
		if fd.Kind() == protoreflect.MessageKind {
			populate(m.Mutable(fd).Message(), rng, depth-1)
			continue
		}
		m.Set(fd, scalar(fd, rng))
	}
}

func scalar(fd protoreflect.FieldDescriptor, rng *rand.Rand) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(1 + rng.Int64N(1<<40))
	case protoreflect.Uint64Kind:
		return protoreflect.ValueOfUint64(1 + rng.Uint64N(1<<40))
	case protoreflect.Uint32Kind:
		return protoreflect.ValueOfUint32(1 + rng.Uint32N(1<<20))
	case protoreflect.Int32Kind:
		return protoreflect.ValueOfInt32(1 + rng.Int32N(1<<20))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte(fmt.Sprint(rng.Uint64())))
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(fmt.Sprint(rng.Uint64()))
	case protoreflect.EnumKind:
		vs := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vs.Get(1 + rng.IntN(vs.Len()-1)).Number())
	}
	panic(fmt.Sprintf("populate: unhandled kind %v of %s", fd.Kind(), fd.FullName()))
}

// TestTranslationCarriesEveryField: a fully populated message translated to the other side
// encodes to the same bytes (the field numbers match, so any dropped or mistranslated field
// changes them). Seeds cover every member of every oneof.
func TestTranslationCarriesEveryField(t *testing.T) {
	det := proto.MarshalOptions{Deterministic: true}
	type conv struct {
		name string
		src  func() proto.Message
		do   func(proto.Message) proto.Message
	}
	convs := []conv{
		{"put", func() proto.Message { return &caucusv1.PutRequest{} }, func(m proto.Message) proto.Message { return putToLog(m.(*caucusv1.PutRequest)) }},
		{"delete", func() proto.Message { return &caucusv1.DeleteRangeRequest{} }, func(m proto.Message) proto.Message { return deleteToLog(m.(*caucusv1.DeleteRangeRequest)) }},
		{"txn", func() proto.Message { return &caucusv1.TxnRequest{} }, func(m proto.Message) proto.Message { return txnToLog(m.(*caucusv1.TxnRequest)) }},
		{"range", func() proto.Message { return &caucusv1.RangeRequest{} }, func(m proto.Message) proto.Message { return rangeToLog(m.(*caucusv1.RangeRequest)) }},
		{"compaction", func() proto.Message { return &caucusv1.CompactionRequest{} }, func(m proto.Message) proto.Message { return compactionToLog(m.(*caucusv1.CompactionRequest)) }},
		{"lease grant", func() proto.Message { return &caucusv1.LeaseGrantRequest{} }, func(m proto.Message) proto.Message { return leaseGrantToLog(m.(*caucusv1.LeaseGrantRequest)) }},
		{"lease revoke", func() proto.Message { return &caucusv1.LeaseRevokeRequest{} }, func(m proto.Message) proto.Message { return leaseRevokeToLog(m.(*caucusv1.LeaseRevokeRequest)) }},
		{"lease keepalive", func() proto.Message { return &caucusv1.LeaseKeepAliveRequest{} }, func(m proto.Message) proto.Message {
			return leaseKeepAliveToLog(m.(*caucusv1.LeaseKeepAliveRequest))
		}},
		{"publish", func() proto.Message { return &caucusv1.PublishRequest{} }, func(m proto.Message) proto.Message { return publishToLog(m.(*caucusv1.PublishRequest)) }},
		{"publish response", func() proto.Message { return &logpb.PublishResponse{} }, func(m proto.Message) proto.Message { return publishFromLog(m.(*logpb.PublishResponse), nil) }},
		{"event", func() proto.Message { return &logpb.Event{} }, func(m proto.Message) proto.Message { return EventFromLog(m.(*logpb.Event)) }},
		{"consumer create", func() proto.Message { return &caucusv1.ConsumerCreateRequest{} }, func(m proto.Message) proto.Message {
			return consumerCreateToLog(m.(*caucusv1.ConsumerCreateRequest))
		}},
		{"consumer create response", func() proto.Message { return &logpb.ConsumerCreateResponse{} }, func(m proto.Message) proto.Message {
			return consumerCreateFromLog(m.(*logpb.ConsumerCreateResponse), nil)
		}},
		{"consumer delete", func() proto.Message { return &caucusv1.ConsumerDeleteRequest{} }, func(m proto.Message) proto.Message {
			return consumerDeleteToLog(m.(*caucusv1.ConsumerDeleteRequest))
		}},
		{"consumer delete response", func() proto.Message { return &logpb.ConsumerDeleteResponse{} }, func(m proto.Message) proto.Message {
			return consumerDeleteFromLog(m.(*logpb.ConsumerDeleteResponse), nil)
		}},
		{"consumer state", func() proto.Message { return &logpb.ConsumerState{} }, func(m proto.Message) proto.Message { return consumerStateFromLog(m.(*logpb.ConsumerState)) }},
		{"fetch", func() proto.Message { return &caucusv1.FetchRequest{} }, func(m proto.Message) proto.Message { return fetchToLog(m.(*caucusv1.FetchRequest)) }},
		{"fetch response", func() proto.Message { return &logpb.FetchResponse{} }, func(m proto.Message) proto.Message { return fetchFromLog(m.(*logpb.FetchResponse), nil) }},
		{"ack", func() proto.Message { return &caucusv1.AckRequest{} }, func(m proto.Message) proto.Message { return ackToLog(m.(*caucusv1.AckRequest)) }},
		{"ack response", func() proto.Message { return &logpb.AckResponse{} }, func(m proto.Message) proto.Message { return ackFromLog(m.(*logpb.AckResponse), nil) }},
		{"put response", func() proto.Message { return &logpb.PutResponse{} }, func(m proto.Message) proto.Message { return putFromLog(m.(*logpb.PutResponse), nil) }},
		{"delete response", func() proto.Message { return &logpb.DeleteRangeResponse{} }, func(m proto.Message) proto.Message { return deleteFromLog(m.(*logpb.DeleteRangeResponse), nil) }},
		{"txn response", func() proto.Message { return &logpb.TxnResponse{} }, func(m proto.Message) proto.Message { return txnFromLog(m.(*logpb.TxnResponse), nil) }},
		{"range response", func() proto.Message { return &logpb.RangeResponse{} }, func(m proto.Message) proto.Message { return rangeFromLog(m.(*logpb.RangeResponse), nil) }},
		{"compaction response", func() proto.Message { return &logpb.CompactionResponse{} }, func(m proto.Message) proto.Message { return compactionFromLog(m.(*logpb.CompactionResponse), nil) }},
		{"lease grant response", func() proto.Message { return &logpb.LeaseGrantResponse{} }, func(m proto.Message) proto.Message { return leaseGrantFromLog(m.(*logpb.LeaseGrantResponse), nil) }},
		{"lease revoke response", func() proto.Message { return &logpb.LeaseRevokeResponse{} }, func(m proto.Message) proto.Message { return leaseRevokeFromLog(m.(*logpb.LeaseRevokeResponse), nil) }},
		{"lease keepalive response", func() proto.Message { return &logpb.LeaseKeepAliveResponse{} }, func(m proto.Message) proto.Message {
			return leaseKeepAliveFromLog(m.(*logpb.LeaseKeepAliveResponse), nil)
		}},
	}
	for _, c := range convs {
		for seed := uint64(0); seed < 64; seed++ {
			src := c.src()
			populate(src.ProtoReflect(), rand.New(rand.NewPCG(seed, 1)), 4)
			want, err := det.Marshal(src)
			if err != nil {
				t.Fatal(err)
			}
			got, err := det.Marshal(c.do(src))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("%s (seed %d): the translation lost or changed a field\nsource: %v\ntranslated: %v", c.name, seed, src, c.do(src))
			}
		}
	}
}

// TestTranslationSetsTheMembersHeader: the outermost response takes this member's header; the
// nested responses of a transaction keep the state machine's revision.
func TestTranslationSetsTheMembersHeader(t *testing.T) {
	r := &logpb.TxnResponse{Header: &logpb.ResponseHeader{Revision: 7}, Responses: []*logpb.ResponseOp{
		{Response: &logpb.ResponseOp_ResponsePut{ResponsePut: &logpb.PutResponse{Header: &logpb.ResponseHeader{Revision: 7}}}},
	}}
	h := &caucusv1.ResponseHeader{ClusterId: 1, MemberId: 2, Revision: 7, RaftTerm: 3}
	out := txnFromLog(r, h)
	if out.Header != h || out.Responses[0].GetResponsePut().GetHeader().GetRevision() != 7 || out.Responses[0].GetResponsePut().GetHeader().GetMemberId() != 0 {
		t.Fatalf("headers: %v", out)
	}
}
