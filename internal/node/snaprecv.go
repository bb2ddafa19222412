package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/caucus/caucus/internal/vfs"
	"github.com/caucus/caucus/raft"
)

// Receiving a snapshot without holding it in memory (raft.Config.SnapshotReceiveOutside): each
// MsgSnap chunk's data is written at its offset into a file in the snapshot directory before the
// chunk is stepped with only its length, and the finished snapshot is installed from that file.
// The file is keyed by sender, index and term: a leader's snapshot file never changes, so
// rewriting a resent or reordered chunk writes the same bytes. Its name ends in .tmp, which the
// snapshot store removes at start, so a transfer cut by a crash leaves nothing behind.

// receiveIdleTimeout is how long a receive file may go without a chunk before it is discarded:
// its transfer was abandoned (the leader moved on to a newer snapshot, or lost leadership).
const receiveIdleTimeout = 30 * time.Second

// snapReceive is the transfer being received.
type snapReceive struct {
	from        raft.NodeID
	index, term uint64
	path        string
	f           vfs.File
	last        time.Time // when the last chunk was stored
}

func (r *snapReceive) matches(from raft.NodeID, index, term uint64) bool {
	return r != nil && r.from == from && r.index == index && r.term == term
}

// storeSnapshotChunk writes m's chunk to the receive file and returns m as the Raft core must
// see it (Data nil, Length set). A failure to store it is a persistence error (a full disk,
// typically): like any other, it stops the member (see the package invariants).
func (n *Node) storeSnapshotChunk(m raft.Message) (raft.Message, error) {
	ch := *m.Chunk
	from, index, term := m.From, m.Snapshot.Index, m.Snapshot.Term
	// A transfer of what this member already has (a resent start after the install) is
	// answered by the core without the data: do not open a file for it. Nor for a chunk of a
	// term the core has left (a deposed leader's, delayed): the core drops it, and discarding
	// the current transfer's file for it would leave that transfer without its data.
	if hs := n.rn.Status().HardState; ch.Offset == 0 && !n.recv.matches(from, index, term) && index > hs.Commit && m.Term >= hs.Term {
		n.discardReceive()
		path := filepath.Join(n.snapDir, fmt.Sprintf("receive-%016x-%016x-%016x.tmp", uint64(from), index, term))
		f, err := n.fs.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
		if err != nil {
			return m, fmt.Errorf("node: receive snapshot %d from %x: %w", index, uint64(from), err)
		}
		n.recv = &snapReceive{from: from, index: index, term: term, path: path, f: f, last: n.clock.Now()}
	}
	if n.recv.matches(from, index, term) && len(ch.Data) > 0 {
		if _, err := n.recv.f.WriteAt(ch.Data, int64(ch.Offset)); err != nil {
			return m, fmt.Errorf("node: store chunk at offset %d of snapshot %d: %w", ch.Offset, index, err)
		}
		n.recv.last = n.clock.Now()
	}
	// A chunk of another transfer is stepped without being stored: the core, which is not
	// receiving it either, answers by asking for the transfer from its start.
	ch.Length, ch.Data = uint64(len(ch.Data)), nil
	m.Chunk = &ch
	return m, nil
}

// expireReceive discards a receive file whose transfer went quiet.
func (n *Node) expireReceive(now time.Time) {
	if n.recv != nil && now.Sub(n.recv.last) > receiveIdleTimeout {
		n.log.Info("discarding an abandoned snapshot transfer", "index", n.recv.index, "from", n.recv.from)
		n.discardReceive()
	}
}

// discardReceive closes and removes the receive file, if any.
func (n *Node) discardReceive() {
	if n.recv == nil {
		return
	}
	n.recv.f.Close()
	if err := n.fs.Remove(n.recv.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		n.log.Warn("removing snapshot receive file", "file", n.recv.path, "err", err)
	}
	n.recv = nil
}

// receivedSnapshot returns a reader of a completely received snapshot's data: the receive file
// when the core handed the snapshot over without data, else the data itself.
func (n *Node) receivedSnapshot(s *raft.Snapshot) (io.ReaderAt, error) {
	if s.Data != nil || s.Size == 0 {
		return bytes.NewReader(s.Data), nil
	}
	if n.recv == nil || n.recv.index != s.Meta.Index || n.recv.term != s.Meta.Term {
		return nil, fmt.Errorf("node: snapshot %d (term %d) was received but its file is not open", s.Meta.Index, s.Meta.Term)
	}
	return n.recv.f, nil
}
