package cluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestModuleRoot(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, err := ModuleRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root + "/cmd/caucus"); err != nil {
		t.Fatalf("root %s has no cmd/caucus: %v", root, err)
	}
	if _, err := ModuleRoot(os.TempDir()); err == nil {
		t.Fatal("found a caucus module above the temp dir")
	}
}

// TestLauncherFaults checks the launcher's faults have the effect the nemesis relies on, against
// real members: isolating the leader through the proxies makes the others elect a new one and
// the old one step down; a killed member restarts on its data; a paused one resumes.
func TestLauncherFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("builds caucus and runs a 3-process cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wd, _ := os.Getwd()
	root, err := ModuleRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := Build(ctx, root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c, err := Start(ctx, Config{Binary: bin, Size: 3, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rest []*Node
	var restURLs []string
	for _, n := range c.Nodes {
		if n != leader {
			rest = append(rest, n)
			restURLs = append(restURLs, n.ClientURL)
		}
	}

	c.Partition([]*Node{leader}, rest)
	// The majority side elects a leader of its own; polling Status is the only way to observe it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ep, err := LeaderOf(ctx, c.httpc, restURLs)
		if err == nil && ep != leader.ClientURL {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("majority side elected no leader while %s was isolated", leader.Name)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The isolated member must stop claiming leadership (check quorum): if it did not, the
	// proxies did not cut it off.
	for {
		s, err := Status(ctx, c.httpc, leader.ClientURL)
		if err == nil && s.Leader != s.GetHeader().GetMemberId() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("isolated %s still leads: partition not effective", leader.Name)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := c.Unidentified(); n != 0 {
		t.Errorf("%d peer connections were not attributed to a member", n)
	}
	c.HealNetwork()

	victim := rest[0]
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	if victim.Running() {
		t.Fatal("killed member still running")
	}
	if err := victim.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := victim.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := victim.Resume(); err != nil {
		t.Fatal(err)
	}
	// Every member, including the restarted and resumed one, answers and agrees on a leader.
	for {
		ok := true
		var lead uint64
		for _, n := range c.Nodes {
			s, err := Status(ctx, c.httpc, n.ClientURL)
			if err != nil || s.Leader == 0 || (lead != 0 && s.Leader != lead) {
				ok = false
				break
			}
			lead = s.Leader
		}
		if ok {
			break
		}
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatal("cluster did not converge after heal, restart and resume")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestWaitExitReportsStatus checks WaitExit against processes that end on their own, with
// stand-in binaries that ignore the server flags: it returns the exit status of the current
// process, and a member still running makes it return when its context ends instead.
func TestWaitExitReportsStatus(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, err := Start(ctx, Config{Binary: script("fails", "exit 3"), Size: 1, Dir: filepath.Join(dir, "a")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	st, err := c.Nodes[0].WaitExit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ExitCode() != 3 {
		t.Fatalf("exit code %d, want 3 (%v)", st.ExitCode(), st)
	}

	// A stand-in that never exits by itself: it runs until killed.
	c2, err := Start(ctx, Config{Binary: script("blocks", "exec sleep 3600"), Size: 1, Dir: filepath.Join(dir, "b")})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Stop()
	n := c2.Nodes[0]
	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	if _, err := n.WaitExit(short); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitExit on a running member: %v, want context.Canceled", err)
	}
	if err := n.Kill(); err != nil {
		t.Fatal(err)
	}
	st, err = n.WaitExit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Success() || st.ExitCode() != -1 {
		t.Fatalf("killed member reports %v, want death by signal", st)
	}
}
