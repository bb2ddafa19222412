package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/caucus/caucus/raft"
)

// memSM is the node tests' state machine: a map of keys to values in memory, with the contract
// of StateMachine checked as it is used. It keeps nothing across a restart (AppliedIndex is 0
// when a node opens it), so every restart rebuilds it from the snapshot and the log.
//
// An entry is id (8 bytes) | proposer (8 bytes) | "key=value"; configuration changes only move
// the applied index.
type memSM struct {
	t  testing.TB
	id raft.NodeID

	mu        sync.Mutex // guards what readers see: committed and committedIndex
	committed map[string]string
	index     uint64 // committed applied index

	pending      map[string]string // applied, not committed (nil: nothing pending)
	pendingIndex uint64
	peers        map[raft.NodeID][]string
	// answerThrice returns every result three times, as when a proposal the network duplicated
	// is appended and applied three times.
	answerThrice bool
}

func newMemSM(t testing.TB, id raft.NodeID) *memSM {
	return &memSM{t: t, id: id, committed: map[string]string{}}
}

func encodeEntry(id uint64, proposer raft.NodeID, key, value string) []byte {
	b := binary.BigEndian.AppendUint64(nil, id)
	b = binary.BigEndian.AppendUint64(b, uint64(proposer))
	return append(b, key+"="+value...)
}

func (s *memSM) Apply(ents []raft.Entry) ([]Applied, error) {
	if s.pending == nil {
		s.pending = maps.Clone(s.committed)
		s.pendingIndex = s.index
	}
	var done []Applied
	for _, e := range ents {
		if e.Index != s.pendingIndex+1 {
			s.t.Errorf("memSM: applied index %d after %d", e.Index, s.pendingIndex)
		}
		s.pendingIndex = e.Index
		if e.Type != raft.EntryNormal || len(e.Data) == 0 {
			continue
		}
		if len(e.Data) < 16 {
			return done, fmt.Errorf("memSM: entry %d is %d bytes", e.Index, len(e.Data))
		}
		id, proposer := binary.BigEndian.Uint64(e.Data), raft.NodeID(binary.BigEndian.Uint64(e.Data[8:]))
		k, v, _ := bytes.Cut(e.Data[16:], []byte("="))
		s.pending[string(k)] = string(v)
		if proposer == s.id {
			done = append(done, Applied{ID: id, Result: e.Index})
			if s.answerThrice {
				done = append(done, Applied{ID: id, Result: e.Index}, Applied{ID: id, Result: e.Index})
			}
		}
	}
	return done, nil
}

func (s *memSM) Commit() error {
	if s.pending == nil {
		return nil
	}
	s.mu.Lock()
	s.committed, s.index = s.pending, s.pendingIndex
	s.mu.Unlock()
	s.pending = nil
	return nil
}

func (s *memSM) Abort() { s.pending = nil }

func (s *memSM) AppliedIndex() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.index
}

func (s *memSM) get(key string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.committed[key]
	return v, ok
}

func (s *memSM) Sync() error { return nil }

type memView struct {
	index uint64
	data  []byte
}

func (v memView) Index() uint64 { return v.index }
func (v memView) Size() int64   { return int64(len(v.data)) }
func (v memView) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(v.data)
	return int64(n), err
}
func (v memView) Close() error { return nil }

type memSnapshot struct {
	Index uint64
	KV    map[string]string
}

func (s *memSM) Snapshot() (SnapshotView, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := json.Marshal(memSnapshot{Index: s.index, KV: s.committed})
	return memView{index: s.index, data: b}, err
}

func (s *memSM) Restore(meta raft.SnapshotMeta, size int64, r io.Reader) error {
	if s.pending != nil {
		s.t.Errorf("memSM: restore with applied entries pending")
	}
	var snap memSnapshot
	if err := json.NewDecoder(io.LimitReader(r, size)).Decode(&snap); err != nil {
		return err
	}
	if snap.Index != meta.Index {
		return fmt.Errorf("memSM: snapshot data at %d, meta at %d", snap.Index, meta.Index)
	}
	s.mu.Lock()
	s.committed, s.index = snap.KV, snap.Index
	s.mu.Unlock()
	return nil
}

func (s *memSM) Peers() map[raft.NodeID][]string { return s.peers }
func (s *memSM) Close() error                    { return nil }

// nopTransport is the transport of a single-member cluster: there is nobody to talk to.
type nopTransport struct{}

func (nopTransport) Send([]raft.Message)         {}
func (nopTransport) AddPeer(raft.NodeID, string) {}
func (nopTransport) RemovePeer(raft.NodeID)      {}
func peerAddr(urls []string) string              { return urls[0] }
func quiet() *slog.Logger                        { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
func keyName(i int) string                       { return fmt.Sprintf("k%03d", i) }
func valueOf(i int) string                       { return fmt.Sprintf("v%03d", i) }

// singleConfig is the configuration of a one-member cluster in dir with a memSM (sm) and a
// snapshot every snapEvery entries.
func singleConfig(t testing.TB, dir string, snapEvery uint64, sm *memSM) OpenConfig {
	rc := raft.DefaultConfig(1)
	rc.HeartbeatTick, rc.ElectionTick = 1, 3
	rc.Seed = 1
	rc.Logger = quiet()
	return OpenConfig{
		Config: Config{
			Raft:            rc,
			TickInterval:    5 * time.Millisecond,
			SnapshotEntries: snapEvery,
			PeerAddr:        peerAddr,
			Logger:          quiet(),
		},
		DataDir:          dir,
		NewCluster:       true,
		InitialMembers:   []Member{{ID: 1, Name: "n1", PeerURLs: []string{"http://127.0.0.1:1"}}},
		OpenStateMachine: func() (StateMachine, error) { return sm, nil },
	}
}

func startSingleWith(t *testing.T, cfg OpenConfig) *Node {
	t.Helper()
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.SetTransport(nopTransport{}, nil)
	n.Start()
	// The member runs on wall-clock ticks: poll until it elected itself.
	deadline := time.Now().Add(10 * time.Second)
	for n.Leader() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("single member did not elect itself within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	return n
}

// putAll proposes key i = value i for i in [from, to) and waits for each.
func putAll(t *testing.T, n *Node, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := from; i < to; i++ {
		id := n.NextProposalID()
		if _, err := n.Propose(ctx, id, encodeEntry(id, n.ID(), keyName(i), valueOf(i))); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
}

// checkAll reads keys [0, to) linearizably from sm.
func checkAll(t *testing.T, n *Node, sm *memSM, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.LinearizableRead(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < to; i++ {
		if v, ok := sm.get(keyName(i)); !ok || v != valueOf(i) {
			t.Fatalf("key %s: %q (present %v), want %s", keyName(i), v, ok, valueOf(i))
		}
	}
}

// recordingTransport records the peer set the node gives it.
type recordingTransport struct {
	nopTransport
	peers map[raft.NodeID]string
}

func (r *recordingTransport) AddPeer(id raft.NodeID, addr string) { r.peers[id] = addr }
func (r *recordingTransport) RemovePeer(id raft.NodeID)           { delete(r.peers, id) }
