package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caucus/caucus/client"
	"github.com/caucus/caucus/internal/testutil"
)

// TestDevClusterServesAndStopsCleanly runs the README's first command: `caucus dev` starts three
// members, prints endpoints that serve writes and reads, logs no transport warning on the way up
// or down (every listener is open before any member dials its peers), and on cancellation (Ctrl-C)
// stops and removes its temporary data directory.
func TestDevClusterServesAndStopsCleanly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	var stderr testutil.LockedBuffer
	errc := make(chan error, 1)
	go func() {
		err := runDev(ctx, []string{"--base-port", "0"}, outW, &stderr)
		outW.Close()
		errc <- err
	}()
	var stdout testutil.LockedBuffer
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			stdout.Write(append(sc.Bytes(), '\n'))
			lines <- sc.Text()
		}
		close(lines)
	}()
	var endpoints []string
	var dataDir string
	dataRe := regexp.MustCompile(`data in (\S+)\)`)
	timeout := time.After(30 * time.Second)
	for endpoints == nil {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("caucus dev exited before printing endpoints: %v\nstdout:\n%s\nstderr:\n%s", <-errc, stdout.String(), stderr.String())
			}
			if m := dataRe.FindStringSubmatch(l); m != nil {
				dataDir = m[1]
			}
			if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "endpoints: "); ok {
				endpoints = strings.Split(rest, ",")
			}
		case <-timeout:
			t.Fatalf("no endpoints printed within 30s\nstderr:\n%s", stderr.String())
		}
	}
	if len(endpoints) != 3 || dataDir == "" {
		t.Fatalf("endpoints %v, data dir %q", endpoints, dataDir)
	}

	cli, err := client.New(client.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
	defer ccancel()
	if _, err := cli.Put(cctx, "greeting", "hello"); err != nil {
		t.Fatalf("put: %v", err)
	}
	resp, err := cli.Get(cctx, "greeting")
	if err != nil || len(resp.GetKvs()) != 1 || string(resp.GetKvs()[0].GetValue()) != "hello" {
		t.Fatalf("get after put: %v, %v", resp, err)
	}
	members, err := cli.MemberList(cctx)
	if err != nil || len(members.GetMembers()) != 3 {
		t.Fatalf("member list: %v, %v", members, err)
	}
	// The members gossip with each other: member list shows each one alive.
	for alive := 0; alive != 3; {
		members, err := cli.MemberList(cctx)
		if err != nil {
			t.Fatalf("member list: %v (gossip states so far: %v)", err, members)
		}
		alive = 0
		for _, m := range members.GetMembers() {
			if m.GetGossipState() == "alive" {
				alive++
			}
		}
		if alive != 3 {
			time.Sleep(20 * time.Millisecond) // polling a running cluster
		}
	}

	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("caucus dev returned %v after Ctrl-C", err)
	}
	for range lines {
	}
	if !strings.Contains(stdout.String(), "caucus dev: stopping") {
		t.Fatalf("no stop message:\n%s", stdout.String())
	}
	// Peers that cannot reach each other at start, or lose each other at stop, are what the
	// up-front listeners and the quiet stop prevent; a Raft warning that a slow, loaded machine
	// can cause (a leader stepping down after a stall) is not this test's business.
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, "level=ERROR") || (strings.Contains(line, "level=WARN") && strings.Contains(line, "component=transport")) {
			t.Fatalf("caucus dev logged a transport warning or an error on a clean start and stop:\n%s", stderr.String())
		}
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Fatalf("temporary data directory %s still there after stop (%v)", dataDir, err)
	}
}
