package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/ctl"
	"github.com/caucus/caucus/internal/testutil"
)

// tourCommand is one `caucus ...` line of the README's tour, with the standard input its
// here-document gives it.
type tourCommand struct {
	line  string
	args  []string
	stdin string
}

// readTour extracts the CLI commands of the README's tour: the first sh block after the heading
// "## A tour". Lines that are not caucus commands (export, curl) are skipped; comments are cut.
func readTour(t *testing.T) []tourCommand {
	t.Helper()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	at := strings.Index(text, "## A tour")
	if at < 0 {
		t.Fatal("README has no tour")
	}
	text = text[at:]
	start := strings.Index(text, "```sh\n")
	if start < 0 {
		t.Fatal("the tour has no sh block")
	}
	block := text[start+len("```sh\n"):]
	block = block[:strings.Index(block, "```")]
	var out []tourCommand
	sc := bufio.NewScanner(strings.NewReader(block))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "caucus ") {
			continue
		}
		cmdText := line
		if i := strings.Index(cmdText, " #"); i >= 0 {
			cmdText = cmdText[:i]
		}
		cmd := tourCommand{line: line}
		if head, _, ok := strings.Cut(cmdText, "<<'EOF'"); ok {
			cmdText = head
			var doc []string
			for sc.Scan() && sc.Text() != "EOF" {
				doc = append(doc, sc.Text())
			}
			cmd.stdin = strings.Join(doc, "\n") + "\n"
		}
		cmd.args = strings.Fields(strings.TrimPrefix(cmdText, "caucus "))
		out = append(out, cmd)
	}
	if len(out) < 10 {
		t.Fatalf("found %d commands in the tour", len(out))
	}
	return out
}

// TestReadmeTour runs the README's tour, command by command, against `caucus dev`: every
// command succeeds, so the tour cannot drift from the binary.
func TestReadmeTour(t *testing.T) {
	tour := readTour(t)
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
	endpoints := ""
	sc := bufio.NewScanner(outR)
	for endpoints == "" && sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "endpoints: "); ok {
			endpoints = rest
		}
	}
	if endpoints == "" {
		t.Fatalf("caucus dev printed no endpoints: %v\n%s", sc.Err(), stderr.String())
	}
	go io.Copy(io.Discard, outR)
	for _, c := range tour {
		follows := strings.Contains(c.line, "(Ctrl-C stops)")
		timeout := 30 * time.Second
		if follows {
			timeout = 5 * time.Second // a command that runs until interrupted: interrupt it
		}
		cctx, ccancel := context.WithTimeout(ctx, timeout)
		var out, errb bytes.Buffer
		// Members publish the log format they apply just after they start; a command of a
		// newer format is refused until then (FailedPrecondition), as during a rolling upgrade.
		var err error
		for {
			out.Reset()
			errb.Reset()
			err = ctl.RunIO(cctx, append([]string{"--endpoints", endpoints}, c.args...), strings.NewReader(c.stdin), &out, &errb)
			if err == nil || !strings.Contains(err.Error(), "upgrade it first") || cctx.Err() != nil {
				break
			}
			time.Sleep(20 * time.Millisecond) // polling real members, which run on wall-clock time
		}
		ccancel()
		if err != nil {
			t.Fatalf("tour line %q: %v\nstdout:\n%s\nstderr:\n%s", c.line, err, out.String(), errb.String())
		}
		if follows && !strings.Contains(out.String(), "EVENT users") {
			t.Fatalf("tour line %q printed %q, want the users event", c.line, out.String())
		}
		if c.args[0] == "consume" && !strings.Contains(out.String(), "users") {
			t.Fatalf("tour line %q printed %q, want the users event", c.line, out.String())
		}
		if c.args[0] == "lease" && !strings.Contains(out.String(), "lease 0000000000000005 granted") {
			t.Fatalf("tour line %q printed %q", c.line, out.String())
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("caucus dev: %v", err)
	}
}
