package check

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/caucus/caucus/internal/check/history"
	"github.com/caucus/caucus/internal/check/nemesis"
)

func TestPrefixEnd(t *testing.T) {
	for in, want := range map[string]string{"a/": "a0", "ab": "ac", "a\xff": "b", "\xff\xff": "\x00"} {
		if got := string(prefixEnd([]byte(in))); got != want {
			t.Errorf("prefixEnd(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPhases(t *testing.T) {
	ops := []history.Op{
		{Call: 1, Status: history.OK},
		{Call: 12, Status: history.Unknown},
		{Call: 15, Status: history.OK},
		{Call: 25, Status: history.Fail},
		{Call: 40, Status: history.OK},
	}
	faults := []nemesis.Event{
		{Kind: nemesis.Kill, Target: nemesis.Leader, Start: 10, End: 20},
		{Kind: nemesis.Pause, Target: nemesis.Follower, Start: 18, End: 30},
	}
	got := map[string]Phase{}
	for _, p := range phases(ops, faults) {
		got[p.Name] = p
	}
	if p := got["healthy"]; p.Ops != 2 || p.OK != 2 || p.Availability != 1 {
		t.Errorf("healthy %+v", p)
	}
	if p := got["kill leader"]; p.Ops != 2 || p.OK != 1 || p.Unknown != 1 {
		t.Errorf("kill %+v", p)
	}
	if p := got["pause follower"]; p.Ops != 1 || p.Fail != 1 || p.Availability != 0 {
		t.Errorf("pause %+v", p)
	}
	if len(got) != 3 {
		t.Errorf("phases %v", got)
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{}, // no cluster
		{"--endpoints", "http://127.0.0.1:1", "--nemesis", "kill"}, // faults with no backend
		{"--local", "3", "--workload", "queue"},
		{"--local", "3", "--nemesis", "meteor"},
		{"--endpoints", "a,b", "--docker", "--containers", "x"},
	} {
		var out, errb bytes.Buffer
		if err := Run(context.Background(), append(args, "--results", t.TempDir()), &out, &errb); err == nil {
			t.Errorf("Run(%q) succeeded", args)
		}
	}
	var out, errb bytes.Buffer
	err := Run(context.Background(), []string{"-h"}, &out, &errb)
	if err == nil || !strings.Contains(errb.String(), "-workload") {
		t.Errorf("help: %v %q", err, errb.String())
	}
}

func TestNewWorkload(t *testing.T) {
	for _, name := range []string{"register", "set", "bank", "consumer", "watch"} {
		o := Options{Workload: name, Keys: 5, Accounts: 5, Clients: 6}
		wl, err := newWorkload(o)
		if err != nil || wl.name() != name {
			t.Errorf("newWorkload(%q) = %v, %v", name, wl, err)
		}
	}
	if _, err := newWorkload(Options{Workload: "watch", Keys: 5, Clients: 1}); err == nil {
		t.Error("a watch run with one client (no writer) accepted")
	}
	if wl, _ := newWorkload(Options{Workload: "watch", Keys: 5, Clients: 3}); wl.(*watchWorkload).watchers != 1 {
		t.Error("a watch run with three clients should have one watcher and two writers")
	}
}
