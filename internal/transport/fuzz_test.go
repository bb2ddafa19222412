package transport

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/caucus/caucus/internal/wire"
	"github.com/caucus/caucus/raft"
)

// FuzzReadFrames feeds arbitrary bytes to the frame reader: it must never panic, never deliver
// a message addressed to another node, stop at the first violation, and deliver every frame of
// a valid stream.
func FuzzReadFrames(f *testing.F) {
	valid := frame(encode(appMsg(1, 2, 5, 20)))
	f.Add(valid)
	f.Add(append(append([]byte(nil), valid...), valid...))
	f.Add(frame(encode(raft.Message{Type: raft.MsgSnap, To: 2, From: 1,
		Snapshot: &raft.SnapshotMeta{Index: 9, Term: 2, ConfState: raft.ConfState{Voters: []raft.NodeID{1, 2, 3}}},
		Chunk:    &raft.SnapshotChunk{Offset: 0, Total: 3, Data: []byte("abc"), Last: true}})))
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 0, 1})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})

	ln := listen(f)
	defer ln.Close()
	var delivered []raft.Message
	tr, err := New(Config{ID: 2, ClusterID: 1, Listener: ln, MaxMessageBytes: 1 << 16,
		Handler: func(m raft.Message) { delivered = append(delivered, m) }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		delivered = delivered[:0]
		err := tr.readFrames(bytes.NewReader(data), 1, new(recvStat))
		if err == nil {
			t.Fatal("readFrames returned nil at end of input")
		}
		for _, m := range delivered {
			if m.To != 2 {
				t.Fatalf("delivered a message addressed to %d", m.To)
			}
		}
		// A direct reference parse of the input says how many leading frames are valid; the
		// reader must deliver exactly those, in order, and nothing else.
		want := referenceFrames(data, 2, 1<<16)
		if len(delivered) != len(want) {
			t.Fatalf("delivered %d messages, reference parse finds %d valid leading frames", len(delivered), len(want))
		}
		for i := range want {
			if !bytes.Equal(encode(delivered[i]), encode(want[i])) {
				t.Fatalf("message %d differs from the reference parse", i)
			}
		}
	})
}

// referenceFrames parses data as consecutive frames without buffering tricks, stopping at the
// first incomplete or invalid one.
func referenceFrames(data []byte, self raft.NodeID, maxBytes int) []raft.Message {
	var out []raft.Message
	for len(data) >= frameHeaderBytes {
		n := int(binary.BigEndian.Uint32(data[0:4]))
		if n == 0 || n > maxBytes || len(data) < frameHeaderBytes+n {
			break
		}
		payload := data[frameHeaderBytes : frameHeaderBytes+n]
		if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(data[4:8]) {
			break
		}
		m, used, err := wire.DecodeMessage(payload)
		if err != nil || used != n || m.To != self {
			break
		}
		out = append(out, m)
		data = data[frameHeaderBytes+n:]
	}
	return out
}
