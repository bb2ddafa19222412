package fsm

import (
	"testing"
	"time"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/raft"
)

// TestChoresDue: what a member proposes on its own. Every member publishes its attributes
// (client URLs, the log format it applies) until the table shows them; only the leader proposes
// the initial settings, and only once every member applies log format version 2 (an older
// member would stop at the entry), and never once the log holds settings.
func TestChoresDue(t *testing.T) {
	f, err := Open(Options{ID: 1, DataDir: t.TempDir(), Store: mvcc.Options{NoSync: true}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	index := uint64(0)
	apply := func(c *logpb.Command) {
		t.Helper()
		index++
		c.TimeUnixNano = time.Now().UnixNano()
		if _, err := f.Apply([]raft.Entry{entryOf(t, index, c)}); err != nil {
			t.Fatal(err)
		}
		if err := f.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	b := f.store.Begin()
	index++
	b.ApplyMembers(index, []*logpb.MemberContext{{Id: 1, Name: "n1"}, {Id: 2, Name: "n2"}}, false)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	c := NewChores(nil, f.Store(), ChoreConfig{ClientURLs: []string{"http://a"}, InitialSettings: &logpb.Settings{MaxTxnOps: 9}, Logger: quiet()})
	leader := raft.Status{ID: 1, SoftState: raft.SoftState{Lead: 1, State: raft.StateLeader}}
	follower := raft.Status{ID: 1, SoftState: raft.SoftState{Lead: 2, State: raft.StateFollower}}
	ops := func(cmds []*logpb.Command) (attrs, settings int) {
		for _, cmd := range cmds {
			switch cmd.Op.(type) {
			case *logpb.Command_MemberAttributes:
				attrs++
			case *logpb.Command_Settings:
				settings++
			}
		}
		return
	}
	if a, s := ops(c.Due(time.Now(), raft.Status{ID: 1})); a+s != 0 {
		t.Fatalf("without a known leader: %d attributes, %d settings proposed", a, s)
	}
	cmds := c.Due(time.Now(), leader)
	if a, s := ops(cmds); a != 1 || s != 0 {
		t.Fatalf("before the members published log version 2: %d attributes, %d settings; want 1, 0", a, s)
	}
	apply(cmds[0]) // member 1 publishes; member 2 runs a release that publishes nothing
	if a, s := ops(c.Due(time.Now(), leader)); a != 0 || s != 0 {
		t.Fatalf("with member 2 on an older release: %d attributes, %d settings; want none", a, s)
	}
	apply(&logpb.Command{Op: &logpb.Command_MemberAttributes{MemberAttributes: &logpb.MemberAttributes{Id: 2, LogVersion: logpb.MaxVersion}}})
	if a, s := ops(c.Due(time.Now(), follower)); a != 0 || s != 0 {
		t.Fatalf("a follower proposed %d attributes, %d settings; want none", a, s)
	}
	cmds = c.Due(time.Now(), leader)
	if a, s := ops(cmds); a != 0 || s != 1 {
		t.Fatalf("every member on version 2: %d attributes, %d settings; want 0, 1", a, s)
	}
	u := cmds[0].GetSettings()
	if !u.GetInitial() || u.GetSet().GetMaxTxnOps() != 9 {
		t.Fatalf("initial settings proposal %v", u)
	}
	apply(cmds[0])
	if !f.Store().HasSettings() || f.Store().Limits().MaxTxnOps != 9 {
		t.Fatalf("after the initial settings: has=%v limits=%+v", f.Store().HasSettings(), f.Store().Limits())
	}
	if _, s := ops(c.Due(time.Now(), leader)); s != 0 {
		t.Fatal("initial settings proposed again once the log holds settings")
	}
}

// TestChoresPublishGossipAddr: the gossip address (log format version 4) is published only once
// every member applies version 4; before that, the attributes carry none, so a member of an
// older release never meets the field.
func TestChoresPublishGossipAddr(t *testing.T) {
	f, err := Open(Options{ID: 1, DataDir: t.TempDir(), Store: mvcc.Options{NoSync: true}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	index := uint64(0)
	apply := func(c *logpb.Command) {
		t.Helper()
		index++
		c.TimeUnixNano = time.Now().UnixNano()
		c.Version = logpb.Needs(c)
		if _, err := f.Apply([]raft.Entry{entryOf(t, index, c)}); err != nil {
			t.Fatal(err)
		}
		if err := f.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	b := f.store.Begin()
	index++
	b.ApplyMembers(index, []*logpb.MemberContext{{Id: 1, Name: "n1"}, {Id: 2, Name: "n2"}}, false)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	c := NewChores(nil, f.Store(), ChoreConfig{ClientURLs: []string{"http://a"}, GossipAddr: "10.0.0.1:7946", Logger: quiet()})
	leader := raft.Status{ID: 1, SoftState: raft.SoftState{Lead: 1, State: raft.StateLeader}}
	attrs := func() *logpb.MemberAttributes {
		for _, cmd := range c.Due(time.Now(), leader) {
			if a := cmd.GetMemberAttributes(); a != nil {
				return a
			}
		}
		return nil
	}
	a := attrs()
	if a == nil || a.GetGossipAddr() != "" {
		t.Fatalf("with member 2 on version 0: attributes %v, want some without a gossip address", a)
	}
	apply(&logpb.Command{Op: &logpb.Command_MemberAttributes{MemberAttributes: a}})
	apply(&logpb.Command{Op: &logpb.Command_MemberAttributes{MemberAttributes: &logpb.MemberAttributes{Id: 2, LogVersion: logpb.Version3}}})
	if a := attrs(); a != nil {
		t.Fatalf("with member 2 on version 3: attributes %v proposed again", a)
	}
	apply(&logpb.Command{Op: &logpb.Command_MemberAttributes{MemberAttributes: &logpb.MemberAttributes{Id: 2, LogVersion: logpb.Version4}}})
	a = attrs()
	if a.GetGossipAddr() != "10.0.0.1:7946" {
		t.Fatalf("every member on version 4: attributes %v, want the gossip address", a)
	}
	cmd := &logpb.Command{Op: &logpb.Command_MemberAttributes{MemberAttributes: a}}
	if v := logpb.Needs(cmd); v != logpb.Version4 {
		t.Fatalf("attributes with a gossip address need version %d, want 4", v)
	}
	apply(cmd)
	var got string
	for _, m := range f.Store().Members() {
		if m.ID == 1 {
			got = m.GossipAddr
		}
	}
	if got != "10.0.0.1:7946" || attrs() != nil {
		t.Fatalf("member table gossip address %q (want 10.0.0.1:7946), attributes still due: %v", got, attrs())
	}
}
