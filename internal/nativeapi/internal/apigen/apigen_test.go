package apigen

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// fileWith builds a file descriptor of package caucus.v1 with messages Req and Resp and the
// given services: name -> methods, each "Name", "Name:server", "Name:client" or "Name:bidi".
func fileWith(t *testing.T, services map[string][]string) protoreflect.FileDescriptor {
	t.Helper()
	fdp := &descriptorpb.FileDescriptorProto{
		Name:        proto.String("t.proto"),
		Package:     proto.String("caucus.v1"),
		Syntax:      proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{Name: proto.String("Req")}, {Name: proto.String("Resp")}},
	}
	for _, name := range []string{"KV", "Lease", "Events", "Big"} {
		methods, ok := services[name]
		if !ok {
			continue
		}
		sd := &descriptorpb.ServiceDescriptorProto{Name: proto.String(name)}
		for _, m := range methods {
			mname, kind, _ := strings.Cut(m, ":")
			sd.Method = append(sd.Method, &descriptorpb.MethodDescriptorProto{
				Name: proto.String(mname), InputType: proto.String(".caucus.v1.Req"), OutputType: proto.String(".caucus.v1.Resp"),
				ClientStreaming: proto.Bool(kind == "client" || kind == "bidi"),
				ServerStreaming: proto.Bool(kind == "server" || kind == "bidi"),
			})
		}
		fdp.Service = append(fdp.Service, sd)
	}
	fd, err := protodesc.NewFile(fdp, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

const baseRegistry = `# header kept verbatim

block caucus.v1.KV 0
block caucus.v1.Lease 16

method 1 /caucus.v1.KV/Range
method 2 /caucus.v1.KV/Put
method 3 /caucus.v1.KV/Gone
method 16 /caucus.v1.Lease/LeaseGrant
`

func parse(t *testing.T, s string) *Registry {
	t.Helper()
	r, err := ParseRegistry(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestNumbersAreKeptAndNewOnesAppended(t *testing.T) {
	reg := parse(t, baseRegistry)
	fd := fileWith(t, map[string][]string{
		// Put before Range: declaration order must not matter. Gone was removed.
		"KV":     {"Put", "Range", "Watch:bidi"},
		"Lease":  {"LeaseGrant", "LeaseKeepAlive:server"},
		"Events": {"Publish", "Consume:client"},
	})
	files, err := Generate(fd, reg)
	if err != nil {
		t.Fatal(err)
	}
	for proc, want := range map[string]uint16{
		"/caucus.v1.KV/Range": 1, "/caucus.v1.KV/Put": 2, "/caucus.v1.Lease/LeaseGrant": 16,
		"/caucus.v1.KV/Gone":  3, // retired, never reused
		"/caucus.v1.KV/Watch": 4, "/caucus.v1.Lease/LeaseKeepAlive": 17,
		"/caucus.v1.Events/Publish": 32, "/caucus.v1.Events/Consume": 33, // a new block
	} {
		if got, ok := reg.Method(proc); !ok || got != want {
			t.Errorf("%s = %d (%v), want %d", proc, got, ok, want)
		}
	}
	out := reg.Format()
	if !bytes.HasPrefix(out, []byte("# header kept verbatim\n\nblock caucus.v1.KV 0\n")) {
		t.Errorf("registry lost its header:\n%s", out)
	}
	// Generating again from the written registry changes nothing.
	again, err := Generate(fd, parse(t, string(out)))
	if err != nil {
		t.Fatal(err)
	}
	for name, src := range files {
		if !bytes.Equal(src, again[name]) {
			t.Errorf("%s differs when generated from the written registry", name)
		}
	}
	// Compare with runs of blanks collapsed: gofmt aligns the constants.
	squash := func(b []byte) string { return strings.Join(strings.Fields(string(b)), " ") }
	methods, stubs := squash(files[MethodsFile]), squash(files[StubsFile])
	for _, want := range []string{
		"MethodKVWatch Method = 4 // /caucus.v1.KV/Watch (bidirectional)",
		"MethodLeaseGrant Method = 16",
		"MethodEventsConsume Method = 33",
		"connect.NewBidiStreamHandler(caucusv1connect.KVWatchProcedure, h.KV.Watch, opts...)",
		"connect.NewServerStreamHandler(caucusv1connect.LeaseLeaseKeepAliveProcedure, h.Lease.LeaseKeepAlive, opts...)",
		"connect.NewClientStreamHandler(caucusv1connect.EventsConsumeProcedure, h.Events.Consume, opts...)",
		"Events caucusv1connect.EventsHandler",
	} {
		if !strings.Contains(methods, want) {
			t.Errorf("%s lacks %q", MethodsFile, want)
		}
	}
	for _, want := range []string{
		"func (x KVClient) Watch(ctx context.Context) *connect.BidiStreamForClient[caucusv1.Req, caucusv1.Resp]",
		"func (x EventsClient) Consume(ctx context.Context) *connect.ClientStreamForClient[caucusv1.Req, caucusv1.Resp]",
		"func (x LeaseClient) LeaseKeepAlive(ctx context.Context, req *connect.Request[caucusv1.Req]) (*connect.ServerStreamForClient[caucusv1.Resp], error)",
		"return invoke[caucusv1.Resp](ctx, x.C, MethodEventsPublish, req.Msg)",
	} {
		if !strings.Contains(stubs, want) {
			t.Errorf("%s lacks %q", StubsFile, want)
		}
	}
	if strings.Contains(methods+stubs, "Gone") {
		t.Error("a retired RPC got code")
	}
}

func TestFullBlockGetsAnotherBlock(t *testing.T) {
	reg := parse(t, baseRegistry)
	var methods []string
	for i := range 20 {
		methods = append(methods, fmt.Sprintf("M%d", i))
	}
	if _, err := Generate(fileWith(t, map[string][]string{"Big": methods}), reg); err != nil {
		t.Fatal(err)
	}
	// Big takes block 32 (0 and 16 are taken): M0..M15 fill it, M16.. go to block 48.
	for i, want := range map[int]uint16{0: 32, 15: 47, 16: 48, 19: 51} {
		if got, _ := reg.Method(fmt.Sprintf("/caucus.v1.Big/M%d", i)); got != want {
			t.Errorf("M%d = %d, want %d", i, got, want)
		}
	}
	if !strings.Contains(string(reg.Format()), "block caucus.v1.Big 32\nblock caucus.v1.Big 48\n") {
		t.Errorf("registry does not record both blocks:\n%s", reg.Format())
	}
}

func TestRegistryRejectsBrokenFiles(t *testing.T) {
	for name, text := range map[string]string{
		"duplicate number":      "block caucus.v1.KV 0\nmethod 1 /caucus.v1.KV/A\nmethod 1 /caucus.v1.KV/B\n",
		"duplicate procedure":   "block caucus.v1.KV 0\nmethod 1 /caucus.v1.KV/A\nmethod 2 /caucus.v1.KV/A\n",
		"number outside blocks": "block caucus.v1.KV 0\nmethod 17 /caucus.v1.KV/A\n",
		"other service's block": "block caucus.v1.KV 0\nblock caucus.v1.Lease 16\nmethod 17 /caucus.v1.KV/A\n",
		"block taken twice":     "block caucus.v1.KV 0\nblock caucus.v1.Lease 0\n",
		"misaligned block":      "block caucus.v1.KV 8\n",
		"method zero":           "block caucus.v1.KV 0\nmethod 0 /caucus.v1.KV/A\n",
		"frame type range":      "block caucus.v1.KV 65280\n",
		"bad procedure":         "block caucus.v1.KV 0\nmethod 1 caucus.v1.KV.A\n",
		"unknown directive":     "service caucus.v1.KV 0\n",
	} {
		if _, err := ParseRegistry(strings.NewReader(text)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
