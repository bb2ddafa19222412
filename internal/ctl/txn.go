package ctl

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/client"
)

// txnSpec is a parsed transaction.
type txnSpec struct {
	cmps    []client.Cmp
	success []txnOp
	failure []txnOp
}

// txnOp is one request line, with what its output needs.
type txnOp struct {
	op    client.Op
	print kvPrint
	count bool // get --count-only
}

// maxTxnLine bounds one line of txn input; values may be large, keys are small.
const maxTxnLine = 4 << 20

// parseTxn parses the etcdctl txn format: compares, a blank line, success requests, a blank
// line, failure requests. Errors name the 1-based input line.
func parseTxn(r io.Reader, prompt io.Writer) (*txnSpec, error) {
	spec := &txnSpec{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxTxnLine)
	prompts := []string{"compares:", "success requests (get, put, del):", "failure requests (get, put, del):"}
	section, lineNo := 0, 0
	if prompt != nil {
		fmt.Fprintln(prompt, prompts[0])
	}
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			if section < len(prompts) {
				section++
				if prompt != nil && section < len(prompts) {
					fmt.Fprintf(prompt, "\n%s\n", prompts[section])
				}
			}
			continue
		}
		switch section {
		case 0:
			cmp, err := parseCompare(line)
			if err != nil {
				return nil, usagef("txn: line %d: %v", lineNo, err)
			}
			spec.cmps = append(spec.cmps, cmp)
		case 1, 2:
			op, err := parseTxnOp(line)
			if err != nil {
				return nil, usagef("txn: line %d: %v", lineNo, err)
			}
			if section == 1 {
				spec.success = append(spec.success, op)
			} else {
				spec.failure = append(spec.failure, op)
			}
		default:
			return nil, usagef("txn: line %d: unexpected input after the failure requests", lineNo)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("txn: reading line %d: %w", lineNo+1, err)
	}
	return spec, nil
}

// compareRE matches TARGET("KEY") OP VALUE; the key is a Go double-quoted string.
var compareRE = regexp.MustCompile(`^(\w+)\s*\(\s*("(?:[^"\\]|\\.)*")\s*\)\s*(==|=|!=|>|<)\s*(.+)$`)

// parseCompare parses one compare line, e.g. value("k") = "v", mod("k") > 3, version("k") = "0",
// create("k") < 10, lease("k") = 694d7a4e4c2c5a0b (hexadecimal, like lease ids).
func parseCompare(line string) (client.Cmp, error) {
	m := compareRE.FindStringSubmatch(line)
	if m == nil {
		return client.Cmp{}, fmt.Errorf(`malformed compare %q (want TARGET("KEY") OP VALUE, e.g. mod("k") > 3)`, line)
	}
	key, err := strconv.Unquote(m[2])
	if err != nil {
		return client.Cmp{}, fmt.Errorf("key %s: %w", m[2], err)
	}
	op := m[3]
	raw := strings.TrimSpace(m[4])
	val := raw
	if strings.HasPrefix(raw, `"`) {
		if val, err = strconv.Unquote(raw); err != nil {
			return client.Cmp{}, fmt.Errorf("value %s is not a valid quoted string: %w", raw, err)
		}
	}
	var cmp client.Cmp
	base := 10
	switch m[1] {
	case "value", "val":
		return client.Compare(client.Value(key), op, val), nil
	case "version", "ver":
		cmp = client.Version(key)
	case "create", "c":
		cmp = client.CreateRevision(key)
	case "mod", "m":
		cmp = client.ModRevision(key)
	case "lease":
		cmp, base = client.LeaseValue(key), 16
	default:
		return client.Cmp{}, fmt.Errorf("unknown compare target %q (want value, version, create, mod or lease)", m[1])
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(val, "0x"), base, 64)
	if err != nil {
		return client.Cmp{}, fmt.Errorf("%s compare needs an integer, got %s", m[1], raw)
	}
	return client.Compare(cmp, op, n), nil
}

// parseTxnOp parses a request line: put KEY VALUE [options], get KEY [END] [options],
// del KEY [END] [options], with the options of the put, get and del commands.
func parseTxnOp(line string) (txnOp, error) {
	words, err := splitWords(line)
	if err != nil {
		return txnOp{}, err
	}
	fs := newFlagSet(words[0])
	var register func(*flag.FlagSet)
	var build func(args []string) (txnOp, error)
	switch words[0] {
	case "put":
		var f putFlags
		register = f.register
		build = func(args []string) (txnOp, error) {
			if len(args) != 2 {
				return txnOp{}, fmt.Errorf("put needs KEY VALUE, got %d argument(s)", len(args))
			}
			opts, err := f.opts()
			if err != nil {
				return txnOp{}, err
			}
			return txnOp{op: client.OpPut(args[0], args[1], opts...)}, nil
		}
	case "get":
		var f getFlags
		register = f.register
		build = func(args []string) (txnOp, error) {
			if len(args) < 1 || len(args) > 2 {
				return txnOp{}, fmt.Errorf("get needs KEY [END], got %d argument(s)", len(args))
			}
			opts, err := f.opts(len(args))
			if err != nil {
				return txnOp{}, err
			}
			if len(args) == 2 {
				opts = append(opts, client.WithRange(args[1]))
			}
			return txnOp{op: client.OpGet(args[0], opts...), print: kvPrint{keysOnly: f.keysOnly, valueOnly: f.valueOnly}, count: f.countOnly}, nil
		}
	case "del", "delete":
		var f delFlags
		register = f.register
		build = func(args []string) (txnOp, error) {
			if len(args) < 1 || len(args) > 2 {
				return txnOp{}, fmt.Errorf("del needs KEY [END], got %d argument(s)", len(args))
			}
			opts, err := f.opts(len(args))
			if err != nil {
				return txnOp{}, err
			}
			if len(args) == 2 {
				opts = append(opts, client.WithRange(args[1]))
			}
			return txnOp{op: client.OpDelete(args[0], opts...)}, nil
		}
	default:
		return txnOp{}, fmt.Errorf("unknown request %q (want put, get or del)", words[0])
	}
	register(fs)
	args, err := parseInterleaved(fs, words[1:])
	if err != nil {
		return txnOp{}, fmt.Errorf("%s: %w", words[0], err)
	}
	return build(args)
}

// splitWords splits a request line into words: separated by blanks, with Go double-quoted
// strings ("a b\n") and single-quoted raw strings ('a b') as single words.
func splitWords(line string) ([]string, error) {
	var words []string
	for i := 0; i < len(line); {
		switch c := line[i]; {
		case c == ' ' || c == '\t':
			i++
		case c == '"':
			j := i + 1
			for ; j < len(line) && line[j] != '"'; j++ {
				if line[j] == '\\' {
					j++
				}
			}
			if j >= len(line) {
				return nil, fmt.Errorf("unterminated quoted string at column %d", i+1)
			}
			w, err := strconv.Unquote(line[i : j+1])
			if err != nil {
				return nil, fmt.Errorf("quoted string at column %d: %w", i+1, err)
			}
			words = append(words, w)
			i = j + 1
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated quoted string at column %d", i+1)
			}
			words = append(words, line[i+1:i+1+j])
			i += j + 2
		default:
			j := i
			for j < len(line) && line[j] != ' ' && line[j] != '\t' {
				j++
			}
			words = append(words, line[i:j])
			i = j
		}
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("empty request")
	}
	return words, nil
}

func txnCommand() *command {
	var interactive bool
	return &command{
		name: "txn",
		summary: "Runs a transaction read from standard input: compares, a blank line, the requests run\n" +
			"when every compare holds, a blank line, the requests run otherwise. For example:\n\n" +
			"    mod(\"k\") > 3\n    value(\"k\") = \"v\"\n\n    put k v2\n    get k\n\n    del k\n\n" +
			"Compare targets: value, version, create, mod, lease; operators: = != > <.\n" +
			"Requests: put KEY VALUE, get KEY [END], del KEY [END], with their commands' options.\n" +
			"Prints SUCCESS or FAILURE, then each request's output after a blank line.",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&interactive, "interactive", false, "prompt for each section")
			fs.BoolVar(&interactive, "i", false, "shorthand for --interactive")
		},
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			if e.stdin == nil {
				return usagef("txn reads standard input, and there is none")
			}
			var prompt io.Writer
			if interactive {
				prompt = e.stdout
			}
			spec, err := parseTxn(e.stdin, prompt)
			if err != nil {
				return err
			}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				txn := cli.Txn(ctx).If(spec.cmps...)
				for _, op := range spec.success {
					txn.Then(op.op)
				}
				for _, op := range spec.failure {
					txn.Else(op.op)
				}
				resp, err := txn.Commit()
				if err != nil {
					return err
				}
				return e.output(resp, func(w io.Writer) {
					ops := spec.failure
					if resp.GetSucceeded() {
						fmt.Fprintln(w, "SUCCESS")
						ops = spec.success
					} else {
						fmt.Fprintln(w, "FAILURE")
					}
					for i, r := range resp.GetResponses() {
						var op txnOp // a response without a request (a server bug) prints plainly
						if i < len(ops) {
							op = ops[i]
						}
						fmt.Fprintln(w)
						printOpResponse(w, r, op)
					}
				})
			})
		},
	}
}

// printOpResponse prints one transaction response like the matching command would.
func printOpResponse(w io.Writer, r *caucusv1.ResponseOp, op txnOp) {
	switch x := r.GetResponse().(type) {
	case *caucusv1.ResponseOp_ResponsePut:
		fmt.Fprintln(w, "OK")
		if pkv := x.ResponsePut.GetPrevKv(); pkv != nil {
			printKV(w, pkv, kvPrint{})
		}
	case *caucusv1.ResponseOp_ResponseRange:
		if op.count {
			fmt.Fprintln(w, x.ResponseRange.GetCount())
			return
		}
		for _, kv := range x.ResponseRange.GetKvs() {
			printKV(w, kv, op.print)
		}
	case *caucusv1.ResponseOp_ResponseDeleteRange:
		fmt.Fprintln(w, x.ResponseDeleteRange.GetDeleted())
		for _, kv := range x.ResponseDeleteRange.GetPrevKvs() {
			printKV(w, kv, kvPrint{})
		}
	}
}
