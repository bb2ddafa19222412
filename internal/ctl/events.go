package ctl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/caucus/caucus/client"
)

// eventFlag collects repeated --event TOPIC=PAYLOAD options.
type eventFlag []string

func (f *eventFlag) String() string { return strings.Join(*f, ",") }

func (f *eventFlag) Set(v string) error {
	if _, _, ok := strings.Cut(v, "="); !ok {
		return fmt.Errorf("want TOPIC=PAYLOAD, got %q", v)
	}
	*f = append(*f, v)
	return nil
}

// registerEvents adds --event to a write command.
func (f *eventFlag) register(fs *flag.FlagSet) {
	fs.Var(f, "event", "publish an event `TOPIC=PAYLOAD` in the same log entry as the write, keyed by KEY (repeatable)")
}

// events builds the events of the flag, ordered by key.
func (f eventFlag) events(key string) []*client.Event {
	var out []*client.Event
	for _, v := range f {
		topic, payload, _ := strings.Cut(v, "=")
		out = append(out, client.NewEvent(topic, key, []byte(payload)))
	}
	return out
}

// printEventIDs prints the ids of published events, one per line after the command's output.
func printEventIDs(w io.Writer, ids []string) {
	for _, id := range ids {
		fmt.Fprintln(w, "event", id)
	}
}

func publishCommand() *command {
	var key string
	return &command{
		name: "publish", args: "TOPIC PAYLOAD",
		summary: "Publishes an event without changing a key. Prints the event's id.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&key, "key", "", "the event's ordering key: a durable consumer delivers one key's events in order")
		},
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 2, 2, "TOPIC PAYLOAD"); err != nil {
				return err
			}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				resp, err := cli.Publish(ctx, client.NewEvent(args[0], key, []byte(args[1])))
				if err != nil {
					return err
				}
				return e.output(resp, func(w io.Writer) { printEventIDs(w, resp.GetEventIds()) })
			})
		},
	}
}
