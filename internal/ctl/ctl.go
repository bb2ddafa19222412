// Package ctl implements caucus's command-line client commands in the style of etcdctl: put,
// get, del, txn, compaction, publish, watch, consumer and consume, lease, member, cluster
// settings, status, defrag, snapshot and move-leader, spoken to a cluster through package client.
//
// Conventions (shared with etcdctl so that operators' habits carry over):
//   - Global options (--endpoints, --dial-timeout, --command-timeout, -w/--write-out) may appear
//     before or after the command; command options may appear between positional arguments;
//     "--" ends the options (for values that start with "-").
//   - Output is human-readable by default ("simple"), protojson with -w json for scripts (byte
//     fields such as keys and values are base64 there, like etcdctl's), and a table for the
//     commands with tabular data (member list, status, defrag) with -w table; other commands print
//     their simple output for -w table.
//   - Lease ids and member ids are hexadecimal, in output and in arguments.
//   - Run returns errors without printing them: the caller prints the error to stderr and maps
//     it to exit status 1 (cmd/caucus does). For usage errors Run has already printed the
//     relevant usage text to stderr.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/caucus/caucus/client"
)

// ErrUsage is wrapped by the errors of malformed command lines (unknown command or option,
// wrong number of arguments, unparsable value).
var ErrUsage = errors.New("usage error")

// EndpointsEnv names the environment variable holding the default --endpoints.
const EndpointsEnv = "CAUCUS_ENDPOINTS"

const defaultEndpoint = "http://127.0.0.1:2379"

// Run runs the command line args (without the program name), reading standard input from
// os.Stdin (for txn). See RunIO.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return RunIO(ctx, args, os.Stdin, stdout, stderr)
}

// RunIO runs the command line args (without the program name) with the given standard streams.
// The caller prints a returned error. ctx cancellation (e.g. on SIGINT) stops long-running
// commands such as lease keep-alive, which then return nil.
func RunIO(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr}
	defer e.close()
	return e.run(args)
}

// env is the state of one Run: streams, global options and the lazily created client.
type env struct {
	ctx            context.Context
	stdin          io.Reader
	stdout, stderr io.Writer

	endpoints      string
	dialTimeout    time.Duration
	commandTimeout time.Duration
	writeOut       string

	cli *client.Client
}

// command is one (sub)command.
type command struct {
	name    string
	args    string // positional arguments, for the usage line
	summary string
	// flags registers the command's own options; nil when it has none.
	flags func(fs *flag.FlagSet)
	// run runs the command with its positional arguments, after options were parsed.
	run func(e *env, args []string) error
	// sub lists subcommands; a command with subcommands has no run.
	sub []*command
}

// commands returns the command tree. Options are bound to variables local to each call, so a
// tree serves exactly one parse.
func commands() []*command {
	return []*command{
		putCommand(),
		getCommand(),
		delCommand(),
		txnCommand(),
		compactionCommand(),
		publishCommand(),
		watchCommand(),
		{name: "consumer", summary: "Durable consumer commands", sub: []*command{
			consumerCreateCommand(), consumerListCommand(), consumerInfoCommand(), consumerRemoveCommand(),
		}},
		consumeCommand(),
		{name: "relay", summary: "Forward a durable consumer's events to other systems", sub: []*command{
			relayNATSCommand(), relayWebhookCommand(),
		}},
		{name: "lease", summary: "Lease commands", sub: []*command{
			leaseGrantCommand(), leaseRevokeCommand(), leaseTimeToLiveCommand(), leaseListCommand(), leaseKeepAliveCommand(),
		}},
		{name: "member", summary: "Membership commands", sub: []*command{
			memberListCommand(), memberAddCommand(), memberPromoteCommand(), memberRemoveCommand(),
		}},
		{name: "cluster", summary: "Cluster-wide commands", sub: []*command{clusterSettingsCommand()}},
		statusCommand(),
		defragCommand(),
		{name: "snapshot", summary: "Snapshot commands", sub: []*command{snapshotSaveCommand()}},
		moveLeaderCommand(),
	}
}

// registerGlobals registers the global options on fs, bound to e.
func (e *env) registerGlobals(fs *flag.FlagSet) {
	defEndpoints := os.Getenv(EndpointsEnv)
	if defEndpoints == "" {
		defEndpoints = defaultEndpoint
	}
	fs.StringVar(&e.endpoints, "endpoints", defEndpoints, "comma-separated client URLs of members; $"+EndpointsEnv+" sets the default")
	fs.DurationVar(&e.dialTimeout, "dial-timeout", client.DefaultDialTimeout, "timeout for connecting to one endpoint")
	fs.DurationVar(&e.commandTimeout, "command-timeout", client.DefaultRequestTimeout, "timeout of a command, retries included (not of keep-alive or snapshot)")
	fs.StringVar(&e.writeOut, "write-out", "simple", "output format: simple, json or table")
	fs.StringVar(&e.writeOut, "w", "simple", "shorthand for --write-out")
	fs.StringVar(&e.writeOut, "o", "simple", "shorthand for --write-out")
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by Run, usage printed on our terms
	return fs
}

func (e *env) run(args []string) error {
	top := newFlagSet("caucus")
	e.registerGlobals(top)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			e.printTopUsage(e.stdout)
			return nil
		}
		e.printTopUsage(e.stderr)
		return usagef("%v", err)
	}
	rest := top.Args()
	if len(rest) == 0 {
		e.printTopUsage(e.stderr)
		return usagef("no command given")
	}
	if rest[0] == "help" {
		e.printTopUsage(e.stdout)
		return nil
	}
	cmds := commands()
	path := "caucus"
	for {
		cmd := findCommand(cmds, rest[0])
		if cmd == nil {
			if path == "caucus" {
				e.printTopUsage(e.stderr)
			} else {
				e.printGroupUsage(e.stderr, path, cmds)
			}
			return usagef("unknown command %q", strings.TrimPrefix(path+" "+rest[0], "caucus "))
		}
		path += " " + cmd.name
		rest = rest[1:]
		if cmd.sub == nil {
			return e.runCommand(path, cmd, rest)
		}
		if len(rest) == 0 || rest[0] == "-h" || rest[0] == "--help" || rest[0] == "help" {
			if len(rest) == 0 {
				e.printGroupUsage(e.stderr, path, cmd.sub)
				return usagef("%s needs a subcommand", path)
			}
			e.printGroupUsage(e.stdout, path, cmd.sub)
			return nil
		}
		cmds = cmd.sub
	}
}

func findCommand(cmds []*command, name string) *command {
	for _, c := range cmds {
		if c.name == name {
			return c
		}
	}
	return nil
}

// runCommand parses the command's options (its own and the global ones, anywhere among the
// positional arguments) and runs it.
func (e *env) runCommand(path string, cmd *command, args []string) error {
	own := newFlagSet(path)
	if cmd.flags != nil {
		cmd.flags(own)
	}
	fs := newFlagSet(path)
	own.VisitAll(func(f *flag.Flag) { fs.Var(f.Value, f.Name, f.Usage) })
	// Registering a flag stores its default into the variable; keep the global options given
	// before the command.
	endpoints, dial, timeout, out := e.endpoints, e.dialTimeout, e.commandTimeout, e.writeOut
	e.registerGlobals(fs)
	e.endpoints, e.dialTimeout, e.commandTimeout, e.writeOut = endpoints, dial, timeout, out
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandUsage(e.stdout, path, cmd, own)
			return nil
		}
		printCommandUsage(e.stderr, path, cmd, own)
		return usagef("%s: %v", path, err)
	}
	switch e.writeOut {
	case "simple", "json", "table":
	default:
		return usagef("--write-out %q is not simple, json or table", e.writeOut)
	}
	if err := cmd.run(e, pos); err != nil {
		if errors.Is(err, ErrUsage) {
			printCommandUsage(e.stderr, path, cmd, own)
		}
		return err
	}
	return nil
}

// parseInterleaved parses options anywhere among positional arguments (the flag package stops
// at the first positional one) and returns the positional arguments. Everything after "--" is
// positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (e *env) printTopUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: caucus [global options] COMMAND [options] [arguments]\n\nCommands:\n")
	printCommandList(w, commands())
	fmt.Fprintf(w, "\nGlobal options (also accepted after the command):\n")
	fs := newFlagSet("caucus")
	e2 := &env{}
	e2.registerGlobals(fs)
	printFlags(w, fs)
	fmt.Fprintf(w, "\nRun 'caucus COMMAND --help' for a command's options.\n")
}

func (e *env) printGroupUsage(w io.Writer, path string, cmds []*command) {
	fmt.Fprintf(w, "Usage: %s SUBCOMMAND [options] [arguments]\n\nSubcommands:\n", path)
	printCommandList(w, cmds)
}

func printCommandList(w io.Writer, cmds []*command) {
	sorted := append([]*command(nil), cmds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	for _, c := range sorted {
		line := c.name
		if c.args != "" {
			line += " " + c.args
		}
		short, _, _ := strings.Cut(c.summary, "\n")
		fmt.Fprintf(w, "  %-24s %s\n", line, short)
	}
}

func printCommandUsage(w io.Writer, path string, cmd *command, own *flag.FlagSet) {
	line := path
	hasFlags := false
	own.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		line += " [options]"
	}
	if cmd.args != "" {
		line += " " + cmd.args
	}
	fmt.Fprintf(w, "Usage: %s\n\n%s\n", line, cmd.summary)
	if hasFlags {
		fmt.Fprintf(w, "\nOptions:\n")
		printFlags(w, own)
	}
	fmt.Fprintf(w, "\nGlobal options: see 'caucus --help'.\n")
}

// client returns the client, creating it on first use from the global options.
func (e *env) client() (*client.Client, error) {
	if e.cli != nil {
		return e.cli, nil
	}
	var eps []string
	for _, ep := range strings.Split(e.endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			eps = append(eps, ep)
		}
	}
	if len(eps) == 0 {
		return nil, usagef("--endpoints is empty")
	}
	cli, err := client.New(client.Config{
		Endpoints:      eps,
		DialTimeout:    e.dialTimeout,
		RequestTimeout: e.commandTimeout,
	})
	if err != nil {
		return nil, usagef("%v", err)
	}
	e.cli = cli
	return cli, nil
}

func (e *env) close() {
	if e.cli != nil {
		e.cli.Close()
	}
}

// commandCtx bounds a command by --command-timeout.
// withClient runs one command's requests with the client and the command's deadline.
func (e *env) withClient(fn func(ctx context.Context, cli *client.Client) error) error {
	cli, err := e.client()
	if err != nil {
		return err
	}
	ctx, cancel := e.commandCtx()
	defer cancel()
	return fn(ctx, cli)
}

func (e *env) commandCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.ctx, e.commandTimeout)
}

// usageError is a malformed command line. Its message is only the problem (usage errors nest,
// e.g. a txn line's bad option, and a repeated "usage error:" prefix would only be noise), and
// it matches ErrUsage.
type usageError struct{ msg string }

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == ErrUsage }

// usagef returns a usage error.
func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// printFlags lists fs's options like flag.PrintDefaults, but spelled with "--" as users type
// them (one dash for one-letter shorthands).
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		typ, usage := flag.UnquoteUsage(f)
		line := "  " + dash + f.Name
		if typ != "" {
			line += " " + typ
		}
		switch {
		case f.DefValue == "" || f.DefValue == "false" || f.DefValue == "0":
		case typ == "string":
			usage += fmt.Sprintf(" (default %q)", f.DefValue)
		default:
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "%s\n    \t%s\n", line, usage)
	})
}

// wantArgs checks the number of positional arguments.
func wantArgs(args []string, lo, hi int, what string) error {
	if len(args) < lo || len(args) > hi {
		return usagef("expected %s, got %d argument(s)", what, len(args))
	}
	return nil
}
