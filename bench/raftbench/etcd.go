package raftbench

import (
	"fmt"
	"io"
	"log"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// etcdNode is one go.etcd.io/raft/v3 member with its MemoryStorage, driven synchronously
// (AsyncStorageWrites off), the way etcd's server drives it.
type etcdNode struct {
	rn       *raft.RawNode
	storage  *raft.MemoryStorage
	lead     uint64
	applied  uint64
	snapshot uint64 // applied index at the last compaction
}

type etcdCluster struct {
	opts  Options
	nodes [numNodes]*etcdNode
	conf  *pb.ConfState
	// buf and wal are reused encode buffers for Wire mode (message and WAL record).
	buf, wal []byte
	marshal  proto.MarshalOptions
}

func newEtcdCluster(opts Options) (*etcdCluster, error) {
	c := &etcdCluster{opts: opts, conf: &pb.ConfState{Voters: []uint64{1, 2, 3}}}
	logger := &raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)}
	for i := range c.nodes {
		st := raft.NewMemoryStorage()
		// Bootstrap as etcd's server does on a new cluster's restart path: a snapshot at index 1,
		// term 1 that already contains the three voters (caucus writes the same membership as its
		// entry 1, term 1).
		snap := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{
			Index: proto.Uint64(1), Term: proto.Uint64(1), ConfState: c.conf,
		}}
		if err := st.ApplySnapshot(snap); err != nil {
			return nil, err
		}
		rn, err := raft.NewRawNode(&raft.Config{
			ID:                        uint64(i + 1),
			ElectionTick:              electionTick,
			HeartbeatTick:             heartbeatTick,
			Storage:                   st,
			MaxSizePerMsg:             maxMsgBytes,
			MaxInflightMsgs:           maxInflightMsgs,
			MaxInflightBytes:          maxInflightBytes,
			MaxUncommittedEntriesSize: maxUncommitted,
			CheckQuorum:               true,
			PreVote:                   true,
			ReadOnlyOption:            raft.ReadOnlySafe,
			Logger:                    logger,
		})
		if err != nil {
			return nil, err
		}
		c.nodes[i] = &etcdNode{rn: rn, storage: st, applied: 1, snapshot: 1}
	}
	return c, nil
}

func (c *etcdCluster) campaign(i int) error { return c.nodes[i].rn.Campaign() }

func (c *etcdCluster) leader() int {
	for i, n := range c.nodes {
		if n.lead == uint64(i+1) {
			return i
		}
	}
	return -1
}

func (c *etcdCluster) propose(i int, data []byte) error { return c.nodes[i].rn.Propose(data) }

func (c *etcdCluster) appliedIndexes() []uint64 {
	out := make([]uint64, numNodes)
	for i, n := range c.nodes {
		out[i] = n.applied
	}
	return out
}

func (c *etcdCluster) round(counted int) (applied int, busy bool, err error) {
	for i, n := range c.nodes {
		if !n.rn.HasReady() {
			continue
		}
		busy = true
		a, err := c.handle(n, i == counted)
		if err != nil {
			return applied, busy, fmt.Errorf("node %d: %w", i+1, err)
		}
		applied += a
	}
	return applied, busy, nil
}

// handle processes one Ready in the order etcd's contract requires without async storage writes:
// persist, then send, then apply, then Advance.
func (c *etcdCluster) handle(n *etcdNode, count bool) (int, error) {
	rd := n.rn.Ready()
	if rd.SoftState != nil {
		n.lead = rd.SoftState.Lead
	}
	if c.opts.Wire {
		c.wal = c.wal[:0]
		if !raft.IsEmptyHardState(rd.HardState) {
			c.wal, _ = c.marshal.MarshalAppend(c.wal, rd.HardState)
		}
		for _, e := range rd.Entries {
			var err error
			if c.wal, err = c.marshal.MarshalAppend(c.wal, e); err != nil {
				return 0, err
			}
		}
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		if err := n.storage.SetHardState(rd.HardState); err != nil {
			return 0, err
		}
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		if err := n.storage.ApplySnapshot(rd.Snapshot); err != nil {
			return 0, err
		}
	}
	if err := n.storage.Append(rd.Entries); err != nil {
		return 0, err
	}
	for _, m := range rd.Messages {
		if err := c.send(m); err != nil {
			return 0, err
		}
	}
	applied := 0
	for _, e := range rd.CommittedEntries {
		n.applied = e.GetIndex()
		if e.GetType() == pb.EntryNormal && len(e.GetData()) > 0 {
			applied++
		}
	}
	n.rn.Advance(rd)
	if err := c.maybeCompact(n); err != nil {
		return 0, err
	}
	if !count {
		applied = 0
	}
	return applied, nil
}

// maybeCompact does what etcd's server does every SnapshotCount applied entries: record a
// snapshot (empty data: there is no state machine) and drop the log before applied-KeepEntries.
func (c *etcdCluster) maybeCompact(n *etcdNode) error {
	if n.applied-n.snapshot < c.opts.CompactEvery {
		return nil
	}
	if _, err := n.storage.CreateSnapshot(n.applied, c.conf, nil); err != nil {
		return err
	}
	n.snapshot = n.applied
	return n.storage.Compact(n.applied - c.opts.KeepEntries)
}

func (c *etcdCluster) send(m *pb.Message) error {
	if c.opts.Wire {
		var err error
		if c.buf, err = c.marshal.MarshalAppend(c.buf[:0], m); err != nil {
			return err
		}
		m = new(pb.Message)
		if err := proto.Unmarshal(c.buf, m); err != nil {
			return err
		}
	}
	to := m.GetTo()
	if to < 1 || to > numNodes {
		return fmt.Errorf("message %v to unknown node %d", m.GetType(), to)
	}
	return c.nodes[to-1].rn.Step(m)
}
