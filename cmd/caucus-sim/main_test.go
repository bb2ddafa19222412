package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCleanSweep(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"-seeds", "10", "-nodes", "3"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"seeds run:          10", "violations:         0", "reads checked:", "faults injected:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(errb.String(), "\r[") || !strings.Contains(errb.String(), "10/10 seeds") {
		t.Errorf("no progress bar on stderr: %q", errb.String())
	}
}

// TestPlantedBugExits1 checks that a violation sets the exit status and prints the lowest
// failing seed with its replay command, whatever the number of workers.
func TestPlantedBugExits1(t *testing.T) {
	var first string
	for _, workers := range []string{"1", "2"} {
		var out, errb bytes.Buffer
		code := run([]string{"-seeds", "20", "-nodes", "3", "-bug", "VoteForShorterLog", "-workers", workers}, &out, &errb)
		if code != 1 {
			t.Fatalf("workers=%s: exit %d, want 1\n%s", workers, code, out.String())
		}
		i := strings.Index(out.String(), "VIOLATION")
		if i < 0 || !strings.Contains(out.String()[i:], "replay: go run ./cmd/caucus-sim -seed ") {
			t.Fatalf("workers=%s: no violation report with a replay command:\n%s", workers, out.String())
		}
		if first == "" {
			first = out.String()[i:]
		} else if out.String()[i:] != first {
			t.Fatalf("the reported violation depends on the number of workers:\n%s\nvs\n%s", first, out.String()[i:])
		}
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-bug", "Nope"}, {"-nodes", "0"}, {"-profile", "x"}, {"-store", "x"}, {"-defer-leader-sync", "maybe"}, {"-v"},
		{"-driver", "x"}, {"-node-bug", "Nope", "-driver", "node"}, {"-node-bug", "NeverSyncLog"},
		{"-sm", "fsm"}, {"-sm", "x", "-driver", "node"}, {"-fsm-bug", "ReplayDropsEvents", "-driver", "node"},
		{"-fsm-bug", "Nope", "-driver", "node", "-sm", "fsm"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// TestNodeDriver runs real internal/node members, and reports a planted node bug with a replay
// command that plants it again.
func TestNodeDriver(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"-seeds", "4", "-driver", "node", "-store", "wal"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run([]string{"-seeds", "4", "-driver", "node", "-node-bug", "AckBeforePersist"}, &out, &errb); code != 1 {
		t.Fatalf("planted AckBeforePersist: exit %d, want 1\n%s", code, out.String())
	}
	if want := "-driver node -node-bug AckBeforePersist -v"; !strings.Contains(out.String(), want) {
		t.Fatalf("the replay command lacks %q:\n%s", want, out.String())
	}
}

// TestFSM runs members with the real internal/fsm and the event stream checks, and reports a
// planted outbox bug with a replay command that plants it again.
func TestFSM(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"-seeds", "3", "-driver", "node", "-sm", "fsm"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "events (fsm):") {
		t.Errorf("summary lacks the event counts:\n%s", out.String())
	}
	out.Reset()
	if code := run([]string{"-seeds", "3", "-driver", "node", "-sm", "fsm", "-fsm-bug", "ReplayDropsEvents"}, &out, &errb); code != 1 {
		t.Fatalf("planted ReplayDropsEvents: exit %d, want 1\n%s", code, out.String())
	}
	if want := "-driver node -sm fsm -fsm-bug ReplayDropsEvents -v"; !strings.Contains(out.String(), want) {
		t.Fatalf("the replay command lacks %q:\n%s", want, out.String())
	}
}
