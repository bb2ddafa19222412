package raft

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Transcript tests: each testdata/*.txt file opens with a paragraph describing the scenario,
// followed by blocks of the form
//
//	# optional comment lines
//	> command args
//	expected output
//	(blank line)
//
// Run with -rewrite to regenerate the expected output after an intended behaviour change, then
// review the diff.
var rewrite = flag.Bool("rewrite", false, "rewrite testdata transcripts with the actual output")

type transcriptBlock struct {
	comments []string
	cmd      string
	want     string
}

func parseTranscript(data string) (string, []transcriptBlock, error) {
	lines := strings.Split(strings.ReplaceAll(data, "\r\n", "\n"), "\n")
	i := 0
	var desc []string
	for ; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
		if strings.HasPrefix(lines[i], "> ") {
			return "", nil, fmt.Errorf("line %d: a transcript must open with a paragraph describing the scenario", i+1)
		}
		desc = append(desc, lines[i])
	}
	if len(desc) == 0 {
		return "", nil, fmt.Errorf("a transcript must open with a paragraph describing the scenario")
	}
	var blocks []transcriptBlock
	var comments []string
	for i < len(lines) {
		l := lines[i]
		switch {
		case strings.TrimSpace(l) == "":
			i++
		case strings.HasPrefix(l, "#"):
			comments = append(comments, l)
			i++
		case strings.HasPrefix(l, "> "):
			b := transcriptBlock{comments: comments, cmd: strings.TrimSpace(l[2:])}
			comments = nil
			i++
			var out []string
			for ; i < len(lines) && strings.TrimSpace(lines[i]) != "" && !strings.HasPrefix(lines[i], "> "); i++ {
				out = append(out, lines[i])
			}
			b.want = strings.Join(out, "\n")
			blocks = append(blocks, b)
		default:
			return "", nil, fmt.Errorf("line %d: expected a command (> ...), a comment (#) or a blank line, got %q", i+1, l)
		}
	}
	return strings.Join(desc, "\n"), blocks, nil
}

func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no transcripts in testdata/")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			desc, blocks, err := parseTranscript(string(data))
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			ts := &transcript{t: t}
			var out strings.Builder
			out.WriteString(desc + "\n")
			for _, b := range blocks {
				got := strings.TrimRight(ts.run(b.cmd), "\n")
				if !*rewrite && got != b.want {
					t.Errorf("%s: > %s\n--- want\n%s\n--- got\n%s", f, b.cmd, b.want, got)
				}
				out.WriteString("\n")
				for _, c := range b.comments {
					out.WriteString(c + "\n")
				}
				out.WriteString("> " + b.cmd + "\n")
				if got != "" {
					out.WriteString(got + "\n")
				}
			}
			if *rewrite {
				if err := os.WriteFile(f, []byte(out.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// transcript interprets the commands of a transcript against a test network.
type transcript struct {
	t     *testing.T
	nw    *network
	out   *strings.Builder
	quiet bool
}

func (ts *transcript) run(line string) string {
	var out strings.Builder
	ts.out = &out
	f := strings.Fields(line)
	if err := ts.exec(f[0], f[1:]); err != nil {
		fmt.Fprintf(&out, "error: %v\n", err)
	}
	return out.String()
}

func parseID(s string) (NodeID, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad node ID %q", s)
	}
	return NodeID(v), nil
}

// repeat parses an optional trailing "xN".
func repeat(args []string) ([]string, int, error) {
	if len(args) > 0 && strings.HasPrefix(args[len(args)-1], "x") {
		n, err := strconv.Atoi(args[len(args)-1][1:])
		if err != nil {
			return nil, 0, fmt.Errorf("bad repeat %q", args[len(args)-1])
		}
		return args[:len(args)-1], n, nil
	}
	return args, 1, nil
}

func (ts *transcript) exec(cmd string, args []string) error {
	if cmd != "cluster" && ts.nw == nil {
		return fmt.Errorf("no cluster: start with 'cluster'")
	}
	ids := func() ([]NodeID, error) {
		var out []NodeID
		for _, a := range args {
			if a == "all" {
				return slices.Clone(ts.nw.ids), nil
			}
			id, err := parseID(a)
			if err != nil {
				return nil, err
			}
			out = append(out, id)
		}
		return out, nil
	}
	one := func() (NodeID, error) {
		if len(args) < 1 {
			return 0, fmt.Errorf("%s: missing node ID", cmd)
		}
		return parseID(args[0])
	}
	switch cmd {
	case "cluster":
		return ts.cluster(args)
	case "trace":
		ts.quiet = len(args) == 1 && args[0] == "off"
	case "campaign":
		id, err := one()
		if err != nil {
			return err
		}
		if err := ts.nw.node(id).Campaign(); err != nil {
			return err
		}
		ts.nw.stabilize()
	case "propose":
		id, err := one()
		if err != nil {
			return err
		}
		if len(args) != 2 {
			return fmt.Errorf("propose: want <id> <data>")
		}
		if err := ts.nw.node(id).Propose([]byte(args[1])); err != nil {
			return err
		}
		ts.nw.stabilize()
	case "tick":
		rest, n, err := repeat(args)
		if err != nil {
			return err
		}
		args = rest
		targets, err := ids()
		if err != nil {
			return err
		}
		for range n {
			for _, id := range targets {
				if !ts.nw.down[id] {
					ts.nw.node(id).Tick()
				}
			}
			ts.nw.stabilize()
		}
	case "stabilize":
		ts.nw.stabilize()
	case "partition":
		targets, err := ids()
		if err != nil {
			return err
		}
		for _, id := range targets {
			ts.nw.isolate(id)
		}
	case "heal":
		ts.nw.heal()
	case "down", "up":
		targets, err := ids()
		if err != nil {
			return err
		}
		for _, id := range targets {
			ts.nw.down[id] = cmd == "down"
		}
	case "restart":
		id, err := one()
		if err != nil {
			return err
		}
		ts.nw.restart(id)
	case "compact":
		id, err := one()
		if err != nil {
			return err
		}
		size := 64
		if len(args) > 1 {
			if size, err = strconv.Atoi(args[1]); err != nil {
				return fmt.Errorf("compact: bad size %q", args[1])
			}
		}
		s := ts.nw.compact(id, size)
		fmt.Fprintf(ts.out, "compacted %d to %d/%d (%d bytes)\n", id, s.Meta.Index, s.Meta.Term, len(s.Data))
	case "transfer":
		if len(args) != 2 {
			return fmt.Errorf("transfer: want <on> <to>")
		}
		on, err := parseID(args[0])
		if err != nil {
			return err
		}
		to, err := parseID(args[1])
		if err != nil {
			return err
		}
		if err := ts.nw.node(on).TransferLeadership(to); err != nil {
			return err
		}
		ts.nw.stabilize()
	case "readindex":
		id, err := one()
		if err != nil {
			return err
		}
		if len(args) != 2 {
			return fmt.Errorf("readindex: want <id> <ctx>")
		}
		if err := ts.nw.node(id).ReadIndex([]byte(args[1])); err != nil {
			return err
		}
		ts.nw.stabilize()
	case "readstates":
		id, err := one()
		if err != nil {
			return err
		}
		for _, rs := range ts.nw.readStates[id] {
			fmt.Fprintf(ts.out, "%d: read %q at %d\n", id, rs.RequestCtx, rs.Index)
		}
	case "status":
		targets, err := ids()
		if err != nil {
			return err
		}
		for _, id := range targets {
			ts.status(id)
		}
	case "log":
		id, err := one()
		if err != nil {
			return err
		}
		st := ts.nw.storage[id]
		if st.snap != nil {
			fmt.Fprintf(ts.out, "snapshot %d/%d\n", st.snap.Meta.Index, st.snap.Meta.Term)
		}
		var ents []string
		for _, e := range st.ents {
			ents = append(ents, fmtEntry(e))
		}
		fmt.Fprintf(ts.out, "%d: [%s]\n", id, strings.Join(ents, " "))
	case "applied":
		id, err := one()
		if err != nil {
			return err
		}
		fmt.Fprintf(ts.out, "%d: %v\n", id, ts.nw.appliedData(id))
	case "check":
		ts.nw.checkApplied()
		fmt.Fprintln(ts.out, "ok")
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
	return nil
}

// cluster <n> [prevote] [checkquorum] [lease] [chunk=N] [maxmsg=N]
func (ts *transcript) cluster(args []string) error {
	if len(args) < 1 {
		return fmt.Errorf("cluster: want <n> [options]")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return fmt.Errorf("cluster: bad size %q", args[0])
	}
	var opts []cfgOpt
	for _, a := range args[1:] {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "prevote":
			opts = append(opts, withPreVote)
		case "checkquorum":
			opts = append(opts, withCheckQuorum)
		case "lease":
			opts = append(opts, func(c *Config) { c.ReadOnlyOption = ReadOnlyLeaseBased })
		case "chunk", "maxmsg":
			x, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return fmt.Errorf("cluster: bad %s %q", k, v)
			}
			if k == "chunk" {
				opts = append(opts, func(c *Config) { c.MaxSnapshotChunkBytes = x })
			} else {
				opts = append(opts, func(c *Config) { c.MaxMsgBytes = x })
			}
		default:
			return fmt.Errorf("cluster: unknown option %q", a)
		}
	}
	ts.nw = newNetwork(ts.t, n, opts...)
	ts.nw.trace = func(m Message) {
		if !ts.quiet {
			fmt.Fprintln(ts.out, fmtMsg(m))
		}
	}
	ts.nw.stabilize()
	return nil
}

func (ts *transcript) status(id NodeID) {
	st := ts.nw.status(id)
	down := ""
	if ts.nw.down[id] {
		down = " (down)"
	}
	cs := st.ConfState
	fmt.Fprintf(ts.out, "%d: %s term=%d vote=%d lead=%d commit=%d applied=%d log=[%d,%d] voters=%v",
		id, st.SoftState.State, st.HardState.Term, st.HardState.Vote, st.SoftState.Lead, st.HardState.Commit,
		st.Applied, st.FirstIndex, st.LastIndex, cs.Voters)
	if len(cs.VotersOutgoing) > 0 {
		fmt.Fprintf(ts.out, "&&%v", cs.VotersOutgoing)
	}
	if len(cs.Learners) > 0 {
		fmt.Fprintf(ts.out, " learners=%v", cs.Learners)
	}
	if st.LeadTransferee != None {
		fmt.Fprintf(ts.out, " transferee=%d", st.LeadTransferee)
	}
	fmt.Fprintf(ts.out, "%s\n", down)
	if st.Progress != nil {
		var pids []NodeID
		for pid := range st.Progress {
			pids = append(pids, pid)
		}
		slices.Sort(pids)
		for _, pid := range pids {
			pr := st.Progress[pid]
			fmt.Fprintf(ts.out, "  %d: %s match=%d next=%d inflight=%d\n", pid, pr.State, pr.Match, pr.Next, pr.Inflight)
		}
	}
}

func fmtEntry(e Entry) string {
	s := fmt.Sprintf("%d/%d", e.Index, e.Term)
	switch {
	case e.Type == EntryConfChange:
		s += ":conf"
	case len(e.Data) > 16:
		s += ":" + string(e.Data[:16]) + "…"
	case len(e.Data) > 0:
		s += ":" + string(e.Data)
	}
	return s
}

func fmtMsg(m Message) string {
	s := fmt.Sprintf("%d->%d %s term=%d", m.From, m.To, m.Type, m.Term)
	switch m.Type {
	case MsgApp, MsgProp:
		if m.Type == MsgApp {
			s += fmt.Sprintf(" prev=%d/%d commit=%d", m.Index, m.LogTerm, m.Commit)
		}
		var ents []string
		for _, e := range m.Entries {
			ents = append(ents, fmtEntry(e))
		}
		s += " [" + strings.Join(ents, " ") + "]"
	case MsgAppResp:
		s += fmt.Sprintf(" index=%d", m.Index)
		if m.Reject {
			s += fmt.Sprintf(" reject hint=%d/%d", m.RejectHint, m.LogTerm)
		}
	case MsgVote, MsgPreVote:
		s += fmt.Sprintf(" last=%d/%d", m.Index, m.LogTerm)
		if len(m.Context) > 0 {
			s += " transfer"
		}
	case MsgVoteResp, MsgPreVoteResp:
		if m.Reject {
			s += " reject"
		}
	case MsgHeartbeat:
		s += fmt.Sprintf(" commit=%d", m.Commit)
		if len(m.Context) > 0 {
			s += fmt.Sprintf(" ctx=%q", m.Context)
		}
	case MsgHeartbeatResp, MsgReadIndex:
		if len(m.Context) > 0 {
			s += fmt.Sprintf(" ctx=%q", m.Context)
		}
	case MsgReadIndexResp:
		s += fmt.Sprintf(" index=%d ctx=%q", m.Index, m.Context)
		if m.Reject {
			s += " reject"
		}
	case MsgSnap:
		s += fmt.Sprintf(" snap=%d/%d offset=%d len=%d total=%d", m.Snapshot.Index, m.Snapshot.Term, m.Chunk.Offset, len(m.Chunk.Data), m.Chunk.Total)
		if m.Chunk.Last {
			s += " last"
		}
	case MsgSnapResp:
		s += fmt.Sprintf(" snap=%d", m.Index)
		if m.Chunk != nil {
			s += fmt.Sprintf(" offset=%d", m.Chunk.Offset)
		}
		if m.Reject {
			s += " reject"
		}
	}
	return s
}
