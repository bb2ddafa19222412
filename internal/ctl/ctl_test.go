package ctl

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caucus/caucus/client/clienttest"
)

// result is the outcome of one Run.
type result struct {
	stdout, stderr string
	err            error
}

// runCtl runs a command line against the fake cluster, with stdin as standard input.
func runCtl(t *testing.T, fc *clienttest.Cluster, stdin string, args ...string) result {
	t.Helper()
	full := append([]string{"--endpoints", strings.Join(fc.Endpoints(), ","), "--command-timeout", "3s"}, args...)
	var out, errb bytes.Buffer
	err := RunIO(context.Background(), full, strings.NewReader(stdin), &out, &errb)
	return result{stdout: out.String(), stderr: errb.String(), err: err}
}

// mustRun runs a command line that must succeed and returns its standard output.
func mustRun(t *testing.T, fc *clienttest.Cluster, stdin string, args ...string) string {
	t.Helper()
	r := runCtl(t, fc, stdin, args...)
	if r.err != nil {
		t.Fatalf("%v: %v (stderr %q)", args, r.err, r.stderr)
	}
	if r.stderr != "" {
		t.Errorf("%v wrote to stderr: %q", args, r.stderr)
	}
	return r.stdout
}

func TestPutGetDelSimple(t *testing.T) {
	fc := clienttest.NewCluster(t, 1)
	for _, tc := range []struct {
		args  []string
		stdin string
		want  string
	}{
		{args: []string{"put", "a/1", "one"}, want: "OK\n"},
		{args: []string{"put", "a/2", "two"}, want: "OK\n"},
		{args: []string{"put", "b", "bee"}, want: "OK\n"},
		{args: []string{"put", "a/1", "uno", "--prev-kv"}, want: "OK\na/1\none\n"},
		{args: []string{"put", "stdin"}, stdin: "from\nstdin", want: "OK\n"},
		{args: []string{"get", "a/1"}, want: "a/1\nuno\n"},
		{args: []string{"get", "a/", "--prefix"}, want: "a/1\nuno\na/2\ntwo\n"},
		{args: []string{"get", "--prefix", "a/", "--keys-only"}, want: "a/1\na/2\n"},
		{args: []string{"get", "a/", "--prefix", "--print-value-only", "--limit", "1"}, want: "uno\n"},
		{args: []string{"get", "a/", "b"}, want: "a/1\nuno\na/2\ntwo\n"},
		{args: []string{"get", "a", "--from-key", "--count-only"}, want: "4\n"},
		{args: []string{"get", "a/1", "--rev", "2", "--consistency", "s"}, want: "a/1\none\n"},
		{args: []string{"get", "stdin"}, want: "stdin\nfrom\nstdin\n"},
		{args: []string{"get", "missing"}, want: ""},
		{args: []string{"del", "a/", "--prefix", "--prev-kv"}, want: "2\na/1\nuno\na/2\ntwo\n"},
		{args: []string{"del", "a/1"}, want: "0\n"},
		{args: []string{"get", "a/", "--prefix"}, want: ""},
		{args: []string{"compaction", "3"}, want: "compacted revision 3\n"},
	} {
		if got := mustRun(t, fc, tc.stdin, tc.args...); got != tc.want {
			t.Errorf("%v printed %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestDoubleDashEndsOptions(t *testing.T) {
	fc := clienttest.NewCluster(t, 1)
	mustRun(t, fc, "", "put", "k", "--", "--prev-kv")
	if got := mustRun(t, fc, "", "get", "k", "--print-value-only"); got != "--prev-kv\n" {
		t.Errorf("value after -- = %q, want the literal --prev-kv", got)
	}
}

func TestJSONOutput(t *testing.T) {
	fc := clienttest.NewCluster(t, 1)
	var put struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	out := mustRun(t, fc, "", "put", "k", "v", "-w", "json")
	if err := json.Unmarshal([]byte(out), &put); err != nil {
		t.Fatalf("put -w json printed %q: %v", out, err)
	}
	if put.Header.Revision != "2" {
		t.Errorf("put -w json revision = %q, want \"2\" (protojson int64)", put.Header.Revision)
	}
	if strings.Count(out, "\n") != 1 {
		t.Errorf("JSON output %q is not a single line", out)
	}

	var get struct {
		Kvs []struct {
			Key, Value string
		} `json:"kvs"`
		Count string `json:"count"`
	}
	out = mustRun(t, fc, "", "--write-out=json", "get", "k")
	if err := json.Unmarshal([]byte(out), &get); err != nil {
		t.Fatalf("get -w json printed %q: %v", out, err)
	}
	b64 := base64.StdEncoding.EncodeToString
	if len(get.Kvs) != 1 || get.Kvs[0].Key != b64([]byte("k")) || get.Kvs[0].Value != b64([]byte("v")) || get.Count != "1" {
		t.Errorf("get -w json = %+v, want one kv with base64 key and value", get)
	}

	var del struct {
		Deleted string `json:"deleted"`
	}
	out = mustRun(t, fc, "", "del", "k", "-o", "json")
	if err := json.Unmarshal([]byte(out), &del); err != nil || del.Deleted != "1" {
		t.Errorf("del -o json printed %q (%v), want deleted 1", out, err)
	}
}

func TestTxn(t *testing.T) {
	fc := clienttest.NewCluster(t, 1)
	mustRun(t, fc, "", "put", "k", "v")

	input := `value("k") = "v"
mod("k") > 1
version("k") != "0"

put k "v 2" --prev-kv
get k

del k
`
	want := "SUCCESS\n\nOK\nk\nv\n\nk\nv 2\n"
	if got := mustRun(t, fc, input, "txn"); got != want {
		t.Errorf("txn success branch printed %q, want %q", got, want)
	}
	// The same compares now fail: the value is "v 2".
	want = "FAILURE\n\n1\n"
	if got := mustRun(t, fc, input, "txn"); got != want {
		t.Errorf("txn failure branch printed %q, want %q", got, want)
	}
	if got := mustRun(t, fc, "", "get", "k"); got != "" {
		t.Errorf("the failure branch should have deleted k, get printed %q", got)
	}

	// No compares: the success branch always runs. Interactive mode prompts for each section.
	got := mustRun(t, fc, "\nput a 1\nput b 2\n\n", "txn", "-i")
	want = "compares:\n\nsuccess requests (get, put, del):\n\nfailure requests (get, put, del):\nSUCCESS\n\nOK\n\nOK\n"
	if got != want {
		t.Errorf("interactive txn printed %q, want %q", got, want)
	}
	got = mustRun(t, fc, "create(\"a\") = 0\n\n\nget a --prefix --keys-only\nget b --count-only\n", "txn")
	if want := "FAILURE\n\na\n\n1\n"; got != want {
		t.Errorf("txn printed %q, want %q", got, want)
	}
}

func TestTxnParseErrors(t *testing.T) {
	fc := clienttest.NewCluster(t, 1)
	for _, tc := range []struct {
		input, want string
	}{
		{"value(\"k\") = \"v\"\nvalue(k) = v\n", "line 2: malformed compare"},
		{"size(\"k\") = 1\n", "line 1: unknown compare target \"size\""},
		{"mod(\"k\") > x\n", "line 1: mod compare needs an integer"},
		{"\nput k\n", "line 2: put needs KEY VALUE"},
		{"\nput k v\nfrob k\n", "line 3: unknown request \"frob\""},
		{"\n\nget k --limit x\n", "line 3: get: invalid value \"x\" for flag -limit"},
		{"\nput k \"v\n", "line 2: unterminated quoted string at column 7"},
		{"\nput k v\n\nget k\n\nget k\n", "line 6: unexpected input after the failure requests"},
		{"\nget k --prefix --from-key\n", "line 2: END, --prefix and --from-key exclude each other"},
	} {
		r := runCtl(t, fc, tc.input, "txn")
		if !errors.Is(r.err, ErrUsage) || !strings.Contains(r.err.Error(), tc.want) {
			t.Errorf("txn of %q: err = %v, want a usage error containing %q", tc.input, r.err, tc.want)
		}
		if r.stdout != "" {
			t.Errorf("txn of %q printed %q", tc.input, r.stdout)
		}
	}
	if fc.Revision() != 1 {
		t.Errorf("a malformed txn changed the store (revision %d)", fc.Revision())
	}
}

func TestMemberCommands(t *testing.T) {
	fc := clienttest.NewCluster(t, 2)
	m0, m1 := fc.Members[0], fc.Members[1]

	want := fmt.Sprintf("%x, started, m0, http://127.0.0.1:12380, %s, false, unknown\n%x, started, m1, http://127.0.0.1:12381, %s, false, unknown\n",
		m0.ID, m0.URL, m1.ID, m1.URL)
	if got := mustRun(t, fc, "", "member", "list"); got != want {
		t.Errorf("member list printed %q, want %q", got, want)
	}

	out := mustRun(t, fc, "", "member", "add", "m2", "--peer-urls", "http://10.0.0.3:2380", "--learner")
	m := regexp.MustCompile(`^Learner member ([0-9a-f]+) added to cluster ([0-9a-f]+)\n`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("member add printed %q", out)
	}
	if m[2] != fmt.Sprintf("%x", clienttest.ClusterID) {
		t.Errorf("member add names cluster %s, want %x", m[2], clienttest.ClusterID)
	}
	if !strings.Contains(out, `CAUCUS_INITIAL_CLUSTER="m0=http://127.0.0.1:12380,m1=http://127.0.0.1:12381,m2=http://10.0.0.3:2380"`) {
		t.Errorf("member add printed no initial cluster for the new member: %q", out)
	}
	newID := m[1]

	table := mustRun(t, fc, "", "member", "list", "-w", "table")
	lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
	if len(lines) != 7 || !strings.Contains(lines[1], "| ID ") || !strings.Contains(lines[1], "IS LEARNER") || !strings.Contains(lines[1], "GOSSIP") {
		t.Fatalf("member list -w table printed:\n%s", table)
	}
	if !strings.Contains(lines[5], newID) || !strings.Contains(lines[5], "| unstarted ") || !strings.Contains(lines[5], "| true ") {
		t.Errorf("table row of the new learner = %q", lines[5])
	}

	if got := mustRun(t, fc, "", "member", "promote", newID); got != fmt.Sprintf("Member %s promoted in cluster %x\n", newID, clienttest.ClusterID) {
		t.Errorf("member promote printed %q", got)
	}
	if got := mustRun(t, fc, "", "member", "remove", "0x"+newID); got != fmt.Sprintf("Member %s removed from cluster %x\n", newID, clienttest.ClusterID) {
		t.Errorf("member remove printed %q", got)
	}
	r := runCtl(t, fc, "", "member", "remove", newID)
	if r.err == nil || !strings.Contains(r.err.Error(), "not found") {
		t.Errorf("removing a removed member: err %v; want a not-found error", r.err)
	}

	var list struct {
		Members []struct {
			ID string `json:"id"`
		} `json:"members"`
	}
	out = mustRun(t, fc, "", "member", "list", "-w", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Members) != 2 || list.Members[0].ID != fmt.Sprint(m0.ID) {
		t.Errorf("member list -w json printed %q (%v)", out, err)
	}

	want = fmt.Sprintf("Leadership transferred from %x to %x\n", m0.ID, m1.ID)
	if got := mustRun(t, fc, "", "move-leader", fmt.Sprintf("%x", m1.ID)); got != want {
		t.Errorf("move-leader printed %q, want %q", got, want)
	}
}

func TestLeaseCommands(t *testing.T) {
	fc := clienttest.NewCluster(t, 1)
	out := mustRun(t, fc, "", "lease", "grant", "30")
	m := regexp.MustCompile(`^lease ([0-9a-f]{16}) granted with TTL\(30s\)\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("lease grant printed %q", out)
	}
	id := m[1]
	mustRun(t, fc, "", "put", "--lease", id, "eph", "v")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"lease", "timetolive", id}, "lease " + id + " granted with TTL(30s), remaining(30s)\n"},
		{[]string{"lease", "timetolive", "--keys", id}, "lease " + id + " granted with TTL(30s), remaining(30s), attached keys([eph])\n"},
		{[]string{"lease", "list"}, "found 1 leases\n" + id + "\n"},
		{[]string{"lease", "keep-alive", "--once", id}, "lease " + id + " keepalived with TTL(30)\n"},
		{[]string{"lease", "revoke", id}, "lease " + id + " revoked\n"},
		{[]string{"lease", "timetolive", id}, "lease " + id + " already expired\n"},
		{[]string{"get", "eph"}, ""},
	} {
		if got := mustRun(t, fc, "", tc.args...); got != tc.want {
			t.Errorf("%v printed %q, want %q", tc.args, got, tc.want)
		}
	}
	r := runCtl(t, fc, "", "lease", "keep-alive", id)
	if r.err == nil || !strings.Contains(r.err.Error(), "lease not found") {
		t.Errorf("keep-alive of a revoked lease: err %v, want lease not found", r.err)
	}
}

// cancelOnWrite cancels a context at the first write, to stop a command that runs until
// interrupted.
type cancelOnWrite struct {
	buf    bytes.Buffer
	cancel context.CancelFunc
}

func (w *cancelOnWrite) Write(p []byte) (int, error) {
	defer w.cancel()
	return w.buf.Write(p)
}

func TestLeaseKeepAliveUntilInterrupted(t *testing.T) {
	fc := clienttest.NewCluster(t, 1)
	out := mustRun(t, fc, "", "lease", "grant", "5")
	id := strings.Fields(out)[1]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &cancelOnWrite{cancel: cancel}
	var errb bytes.Buffer
	err := RunIO(ctx, []string{"--endpoints", fc.Endpoints()[0], "lease", "keep-alive", id}, nil, w, &errb)
	if err != nil {
		t.Fatalf("interrupted keep-alive returned %v (stderr %q), want nil", err, errb.String())
	}
	if got, want := w.buf.String(), "lease "+id+" keepalived with TTL(5)\n"; got != want {
		t.Errorf("keep-alive printed %q, want %q", got, want)
	}
}

func TestStatusAndSnapshot(t *testing.T) {
	fc := clienttest.NewCluster(t, 3)
	mustRun(t, fc, "", "put", "k", "v")
	m0, m1 := fc.Members[0], fc.Members[1]

	out := mustRun(t, fc, "", "status")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("status printed %q, want 3 lines", out)
	}
	if want := fmt.Sprintf("%s, %x, clienttest, 64 B, true, false, 2, 2, 2, ", m0.URL, m0.ID); lines[0] != want {
		t.Errorf("status of the leader = %q, want %q", lines[0], want)
	}
	if !strings.HasPrefix(lines[1], fmt.Sprintf("%s, %x, clienttest, 64 B, false,", m1.URL, m1.ID)) {
		t.Errorf("status of a follower = %q", lines[1])
	}

	var js []struct {
		Endpoint string
		Status   struct {
			Leader string `json:"leader"`
		}
	}
	out = mustRun(t, fc, "", "status", "-w", "json")
	if err := json.Unmarshal([]byte(out), &js); err != nil || len(js) != 3 || js[2].Status.Leader != fmt.Sprint(m0.ID) {
		t.Errorf("status -w json printed %q (%v)", out, err)
	}

	fc.Members[2].Stop()
	r := runCtl(t, fc, "", "status", "-w", "table")
	if r.err == nil || !strings.Contains(r.err.Error(), fc.Members[2].URL) {
		t.Errorf("status with a stopped member: err %v; want an error naming it", r.err)
	}
	if strings.Count(r.stdout, "\n") != 6 || !strings.Contains(r.stdout, "RAFT APPLIED INDEX") {
		t.Errorf("status -w table printed:\n%s\nwant a header and the 2 live members", r.stdout)
	}

	path := filepath.Join(t.TempDir(), "snap.db")
	out = mustRun(t, fc, "", "snapshot", "save", path)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := fc.Snapshot(); !bytes.Equal(got, want) {
		t.Errorf("snapshot file has %d bytes, want the %d bytes the member streamed", len(got), len(want))
	}
	if want := fmt.Sprintf("Snapshot saved at %s (%s)\n", path, humanBytes(int64(len(got)))); out != want {
		t.Errorf("snapshot save printed %q, want %q", out, want)
	}
	if _, err := os.Stat(path + ".part"); !os.IsNotExist(err) {
		t.Errorf("temporary snapshot file left behind: %v", err)
	}
}

func TestBadUsage(t *testing.T) {
	fc := clienttest.NewCluster(t, 1)
	for _, tc := range []struct {
		args      []string
		wantErr   string
		wantUsage string // in stderr
	}{
		{nil, "no command given", "Usage: caucus [global options] COMMAND"},
		{[]string{"frob"}, `unknown command "frob"`, "Commands:"},
		{[]string{"put"}, "expected KEY [VALUE], got 0", "Usage: caucus put [options] KEY [VALUE]"},
		{[]string{"put", "a", "b", "c"}, "expected KEY [VALUE], got 3", "--prev-kv"},
		{[]string{"get", "k", "--limit", "x"}, `invalid value "x" for flag -limit`, "Usage: caucus get"},
		{[]string{"get", "k", "--bogus"}, "flag provided but not defined: -bogus", "Usage: caucus get"},
		{[]string{"get", "k", "--consistency", "x"}, `--consistency "x" is not l or s`, "Usage: caucus get"},
		{[]string{"get", "k", "z", "--prefix"}, "END, --prefix and --from-key exclude each other", "Usage: caucus get"},
		{[]string{"-w", "yaml", "get", "k"}, `--write-out "yaml" is not simple, json or table`, ""},
		{[]string{"lease"}, "caucus lease needs a subcommand", "Subcommands:"},
		{[]string{"lease", "frob"}, `unknown command "lease frob"`, "keep-alive ID"},
		{[]string{"lease", "grant", "0"}, `TTL "0" is not a positive number of seconds`, "Usage: caucus lease grant [options] TTL"},
		{[]string{"lease", "revoke", "xyz"}, `lease ID "xyz" is not a non-zero hexadecimal id`, ""},
		{[]string{"member", "add", "n"}, "--peer-urls is required", "Usage: caucus member add"},
		{[]string{"member", "add", "n", "--peer-urls", "10.0.0.1:2380"}, "is not an http(s)://host:port URL", ""},
		{[]string{"member", "remove", "-1"}, "flag provided but not defined: -1", ""},
		{[]string{"compaction", "x"}, `REV "x" is not a positive revision`, "Usage: caucus compaction REV"},
		{[]string{"--endpoints", "", "get", "k"}, "--endpoints is empty", ""},
	} {
		var out, errb bytes.Buffer
		args := tc.args
		if len(args) == 0 || args[0] != "--endpoints" {
			args = append([]string{"--endpoints", fc.Endpoints()[0]}, args...)
		}
		err := RunIO(context.Background(), args, strings.NewReader(""), &out, &errb)
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%v: err = %v, want a usage error containing %q", tc.args, err, tc.wantErr)
			continue
		}
		if !strings.Contains(errb.String(), tc.wantUsage) {
			t.Errorf("%v: stderr = %q, want usage containing %q", tc.args, errb.String(), tc.wantUsage)
		}
		if out.Len() != 0 {
			t.Errorf("%v: printed %q to stdout", tc.args, out.String())
		}
	}
	if fc.Revision() != 1 {
		t.Errorf("bad command lines changed the store (revision %d)", fc.Revision())
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"put", "--help"}, {"lease", "--help"}, {"txn", "-h"}} {
		var out, errb bytes.Buffer
		if err := RunIO(context.Background(), args, nil, &out, &errb); err != nil {
			t.Errorf("%v: %v", args, err)
		}
		if !strings.HasPrefix(out.String(), "Usage: caucus") || errb.Len() != 0 {
			t.Errorf("%v: stdout %q, stderr %q; want usage on stdout", args, out.String(), errb.String())
		}
	}
}

func TestServerErrorsReachStderr(t *testing.T) {
	fc := clienttest.NewCluster(t, 1)
	mustRun(t, fc, "", "put", "k", "v")
	mustRun(t, fc, "", "compaction", "2")
	r := runCtl(t, fc, "", "get", "k", "--rev", "1")
	if r.err == nil || errors.Is(r.err, ErrUsage) || !strings.Contains(r.err.Error(), "compacted") {
		t.Errorf("read below the compaction: err %v; want the server's compacted error", r.err)
	}
	if r.stderr != "" {
		t.Errorf("a server error printed %q to stderr", r.stderr)
	}
}
