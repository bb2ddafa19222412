package ctl

import (
	"flag"
	"fmt"
	"io"
	"strings"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/client"
)

// topicsFlag collects repeated --topic options.
type topicsFlag []string

func (f *topicsFlag) String() string { return strings.Join(*f, ",") }

func (f *topicsFlag) Set(v string) error {
	*f = append(*f, v)
	return nil
}

func watchCommand() *command {
	var (
		prefix, prevKV, progress bool
		topics                   topicsFlag
		rev                      int64
	)
	return &command{
		name: "watch", args: "[KEY [END]]",
		summary: "Watches the changes of KEY (or the range [KEY, END), or a prefix) and the events of\n" +
			"topics, until interrupted. Prints each change as etcdctl does (PUT or DELETE, then the\n" +
			"previous key and value with --prev-kv, then the key and value), each event as\n" +
			"\"EVENT topic id revision.index\" then its key and payload, and progress as\n" +
			"\"PROGRESS revision\"; with -w json one response per line. It resumes on another\n" +
			"member when one fails, missing nothing.",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&prefix, "prefix", false, "watch every key starting with KEY (every key if KEY is empty or absent)")
			fs.Var(&topics, "topic", "watch the events of `TOPIC`: a name, a prefix ending in \"*\", or \"*\" (repeatable)")
			fs.Int64Var(&rev, "rev", 0, "first revision to watch (0: the next one); older retained history is replayed")
			fs.BoolVar(&prevKV, "prev-kv", false, "print each change's previous key-value")
			fs.BoolVar(&progress, "progress", false, "print progress while idle")
		},
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 0, 2, "[KEY [END]]"); err != nil {
				return err
			}
			if len(args) == 0 && !prefix && len(topics) == 0 {
				return usagef("give a KEY, --prefix or a --topic")
			}
			if len(args) == 2 && prefix {
				return usagef("--prefix and END exclude each other")
			}
			if rev < 0 {
				return usagef("--rev %d is negative", rev)
			}
			key := ""
			var opts []client.OpOption
			if len(args) > 0 {
				key = args[0]
			}
			if len(args) == 2 {
				opts = append(opts, client.WithRange(args[1]))
			}
			if prefix {
				opts = append(opts, client.WithPrefix())
			}
			if len(topics) > 0 {
				opts = append(opts, client.WithTopics(topics...))
			}
			if rev > 0 {
				opts = append(opts, client.WithRev(rev))
			}
			if prevKV {
				opts = append(opts, client.WithPrevKV())
			}
			if progress {
				opts = append(opts, client.WithProgressNotify())
			}
			cli, err := e.client()
			if err != nil {
				return err
			}
			for resp := range cli.Watch(e.ctx, key, opts...) {
				if resp.Err != nil {
					return resp.Err
				}
				msg := &caucusv1.WatchResponse{Header: resp.Header, Items: resp.Items, Progress: resp.Progress}
				if err := e.output(msg, func(w io.Writer) { printWatchResponse(w, msg, prevKV) }); err != nil {
					return err
				}
			}
			return nil // interrupted: the normal way to stop
		},
	}
}

// printWatchResponse prints a watch response in the simple format.
func printWatchResponse(w io.Writer, resp *caucusv1.WatchResponse, prevKV bool) {
	if resp.GetProgress() {
		fmt.Fprintf(w, "PROGRESS %d\n", resp.GetHeader().GetRevision())
		return
	}
	for _, it := range resp.GetItems() {
		if ch := it.GetChange(); ch != nil {
			fmt.Fprintln(w, ch.GetType())
			if prevKV && ch.GetPrevKv() != nil {
				printKV(w, ch.GetPrevKv(), kvPrint{})
			}
			if ch.GetType() == caucusv1.WatchChange_DELETE {
				fmt.Fprintf(w, "%s\n", ch.GetKv().GetKey())
			} else {
				printKV(w, ch.GetKv(), kvPrint{})
			}
			continue
		}
		ev := it.GetEvent()
		fmt.Fprintf(w, "EVENT %s %s %d.%d\n%s\n%s\n", ev.GetTopic(), ev.GetId(), ev.GetRevision(), ev.GetIndex(), ev.GetKey(), ev.GetPayload())
	}
}
