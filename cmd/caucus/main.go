// Command caucus is the single caucus binary: a server (`caucus server`), a local development
// cluster (`caucus dev`), an etcdctl-style client (`caucus put|get|del|txn|lease|member|status|
// snapshot|compaction|move-leader`) and a consistency checker (`caucus check`).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/caucus/caucus/internal/check"
	"github.com/caucus/caucus/internal/ctl"
)

const usage = `caucus: a distributed key-value and event store

Usage:
  caucus dev [flags]        run a local 3-member cluster (Ctrl-C stops it)
  caucus server [flags]     run one member (see caucus server -h)
  caucus check [flags]      run a workload with faults and check the history
  caucus put|get|del|txn|lease|member|status|snapshot|compaction|move-leader ...
                            client commands in the style of etcdctl (see caucus help-ctl)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "caucus:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	case "server":
		return runServer(ctx, args[1:], stdout, stderr)
	case "dev":
		return runDev(ctx, args[1:], stdout, stderr)
	case "check":
		return check.Run(ctx, args[1:], stdout, stderr)
	case "help-ctl":
		return ctl.Run(ctx, []string{"--help"}, stdout, stderr)
	default:
		return ctl.Run(ctx, args, stdout, stderr)
	}
}
