package gossip

import "testing"

// FuzzDecode checks that the decoder never panics, and that what it accepts re-encodes to the
// same bytes (the encoding is canonical for well-formed input).
func FuzzDecode(f *testing.F) {
	f.Add(appendMsg(appendHeader(nil, ""), &msg{typ: msgPing, seq: 1, name: "a", from: "b", fromAddr: "b:1"}))
	f.Add(appendMsg(appendHeader(nil, "x"), &msg{typ: msgPushPull, from: "s", fromAddr: "s:1",
		members: []Member{{Name: "a", Addr: "a:1", Incarnation: 2, State: StateDead, Meta: []byte{1, 2}}}}))
	f.Add(appendMsg(appendMsg(appendHeader(nil, ""), &msg{typ: msgAck, seq: 9}), &msg{typ: msgAlive, name: "m", addr: "m:1", inc: 1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		label, body, err := decodeHeader(data)
		if err != nil {
			return
		}
		parts, err := decodeParts(body)
		if err != nil {
			return
		}
		b := appendHeader(nil, label)
		for i := range parts {
			b = appendMsg(b, &parts[i])
		}
		// Varints may be non-minimal in the input; compare by decoding again.
		_, body2, err := decodeHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		parts2, err := decodeParts(body2)
		if err != nil || len(parts2) != len(parts) {
			t.Fatalf("re-encoded message does not decode the same: %v", err)
		}
		// A node must survive any input.
		cfg := DefaultLANConfig("n", "n:1")
		cfg.Label = label
		n, _ := New(cfg)
		_ = n.Step(Packet{Addr: "x", Data: data})
		_ = n.Step(Packet{Addr: "x", Stream: true, Data: data})
		n.Tick()
	})
}
