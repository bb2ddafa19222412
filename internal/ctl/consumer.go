package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/client"
)

// The durable consumer commands: consumer create|ls|info|rm, and consume.

// stringsFlag collects a repeated option.
type stringsFlag []string

func (f *stringsFlag) String() string     { return strings.Join(*f, ",") }
func (f *stringsFlag) Set(v string) error { *f = append(*f, v); return nil }

func consumerCreateCommand() *command {
	var (
		topics                 stringsFlag
		ackWait, maxAge        time.Duration
		maxDeliver, maxPending int
		deadLetter             string
		startRev, maxBytes     int64
	)
	return &command{
		name: "create", args: "NAME",
		summary: "Creates durable consumer NAME of the events of --topic (a name, a prefix ending in \"*\").\n" +
			"Creating it again with the same options changes nothing.",
		flags: func(fs *flag.FlagSet) {
			fs.Var(&topics, "topic", "a `TOPIC` to consume: a name or a prefix ending in \"*\" (repeatable, at least one)")
			fs.DurationVar(&ackWait, "ack-wait", 0, "deliver an event again when unacknowledged for this long (default 30s)")
			fs.IntVar(&maxDeliver, "max-deliver", 0, "dead-letter an event after this many deliveries (default 5)")
			fs.StringVar(&deadLetter, "dead-letter-topic", "", "where events past --max-deliver go (default NAME.dead-letter)")
			fs.Int64Var(&startRev, "start-rev", 0, "the first revision to deliver (default: events published after the consumer is created)")
			fs.IntVar(&maxPending, "max-ack-pending", 0, "bound on deliveries awaiting an ack (default 1000)")
			fs.DurationVar(&maxAge, "max-age", 0, "retention: hold unacknowledged events this long past compaction (default 168h)")
			fs.Int64Var(&maxBytes, "max-bytes", 0, "retention: hold this many bytes of events past compaction (default 1 GiB)")
		},
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 1, 1, "NAME"); err != nil {
				return err
			}
			if len(topics) == 0 {
				return usagef("at least one --topic is needed")
			}
			cfg := &client.ConsumerConfig{Name: args[0], Topics: topics, AckWaitMs: ackWait.Milliseconds(), MaxDeliver: int32(maxDeliver),
				DeadLetterTopic: deadLetter, StartRevision: startRev, MaxAckPending: int32(maxPending),
				MaxAgeSeconds: int64(maxAge / time.Second), MaxBytes: maxBytes}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				st, err := cli.ConsumerCreate(ctx, cfg)
				if err != nil {
					return err
				}
				return e.output(st, func(w io.Writer) { fmt.Fprintf(w, "consumer %s created\n", st.GetConfig().GetName()) })
			})
		},
	}
}

func consumerRemoveCommand() *command {
	return &command{
		name: "rm", args: "NAME",
		summary: "Deletes durable consumer NAME and its pending deliveries.",
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 1, 1, "NAME"); err != nil {
				return err
			}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				if err := cli.ConsumerDelete(ctx, args[0]); err != nil {
					return err
				}
				return e.output(&caucusv1.ConsumerDeleteResponse{}, func(w io.Writer) { fmt.Fprintf(w, "consumer %s deleted\n", args[0]) })
			})
		},
	}
}

// consumerRow is a consumer's line of consumer ls.
func consumerRow(st *client.ConsumerState) []string {
	stalled := "no"
	if st.GetStalled() {
		stalled = "yes"
	}
	return []string{st.GetConfig().GetName(), strings.Join(st.GetConfig().GetTopics(), ","), strconv.FormatInt(st.GetPending(), 10),
		strconv.FormatInt(st.GetLagEvents(), 10), (time.Duration(st.GetLagSeconds()) * time.Second).String(),
		strconv.FormatInt(st.GetAckFloor(), 10), strconv.FormatInt(st.GetDeadLettered(), 10), stalled}
}

var consumerHeader = []string{"NAME", "TOPICS", "PENDING", "LAG EVENTS", "LAG AGE", "ACK FLOOR", "DEAD-LETTERED", "STALLED"}

func consumerListCommand() *command {
	return &command{
		name: "ls",
		summary: "Lists the durable consumers with their lag: the events selected and not yet acknowledged,\n" +
			"and the age of the oldest of them.",
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 0, 0, "no argument"); err != nil {
				return err
			}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				sts, err := cli.ConsumerList(ctx)
				if err != nil {
					return err
				}
				return e.output(&caucusv1.ConsumerListResponse{Consumers: sts}, func(w io.Writer) {
					rows := make([][]string, 0, len(sts))
					for _, st := range sts {
						rows = append(rows, consumerRow(st))
					}
					printTable(w, consumerHeader, rows)
				})
			})
		},
	}
}

func consumerInfoCommand() *command {
	return &command{
		name: "info", args: "NAME",
		summary: "Prints durable consumer NAME's configuration, position and lag.",
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 1, 1, "NAME"); err != nil {
				return err
			}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				st, err := cli.ConsumerInfo(ctx, args[0])
				if err != nil {
					return err
				}
				return e.output(st, func(w io.Writer) { printConsumer(w, st) })
			})
		},
	}
}

func printConsumer(w io.Writer, st *client.ConsumerState) {
	c := st.GetConfig()
	fmt.Fprintf(w, "name: %s\ntopics: %s\nack wait: %v\nmax deliver: %d\ndead-letter topic: %s\nmax ack pending: %d\n",
		c.GetName(), strings.Join(c.GetTopics(), ","), time.Duration(c.GetAckWaitMs())*time.Millisecond, c.GetMaxDeliver(),
		c.GetDeadLetterTopic(), c.GetMaxAckPending())
	fmt.Fprintf(w, "retention: %v, %d bytes\ncreated at revision: %d\nack floor: %d\ndelivered: %d.%d\n",
		time.Duration(c.GetMaxAgeSeconds())*time.Second, c.GetMaxBytes(), st.GetCreatedRevision(), st.GetAckFloor(),
		st.GetDeliveredRevision(), st.GetDeliveredIndex())
	fmt.Fprintf(w, "pending: %d\nredelivered: %d\ndead-lettered: %d\nlag: %d events, %v\nstalled: %v\n",
		st.GetPending(), st.GetRedelivered(), st.GetDeadLettered(), st.GetLagEvents(), time.Duration(st.GetLagSeconds())*time.Second, st.GetStalled())
	if st.GetStalledReason() != "" {
		fmt.Fprintf(w, "stalled reason: %s\n", st.GetStalledReason())
	}
}

func consumeCommand() *command {
	var (
		count int
		wait  time.Duration
		nak   bool
	)
	return &command{
		name: "consume", args: "NAME",
		summary: "Fetches events of durable consumer NAME, prints each (REVISION.INDEX TOPIC KEY PAYLOAD) and\n" +
			"acknowledges it. Runs until --count events are acknowledged, or until interrupted.",
		flags: func(fs *flag.FlagSet) {
			fs.IntVar(&count, "count", 0, "stop after this many events (0: until interrupted)")
			fs.DurationVar(&wait, "wait", 5*time.Second, "how long each fetch waits at the server for events")
			fs.BoolVar(&nak, "nak", false, "nak the events instead of acknowledging them (they are delivered again)")
		},
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 1, 1, "NAME"); err != nil {
				return err
			}
			if count < 0 {
				return usagef("--count %d is negative", count)
			}
			cli, err := e.client()
			if err != nil {
				return err
			}
			// Each request has the command timeout; the command runs until done or interrupted.
			for done := 0; count == 0 || done < count; {
				max := 100
				if count > 0 {
					max = min(max, count-done)
				}
				ctx, cancel := context.WithTimeout(e.ctx, wait+e.commandTimeout)
				ds, err := cli.Fetch(ctx, args[0], max, wait)
				cancel()
				if e.ctx.Err() != nil {
					return nil
				}
				if err != nil {
					return err
				}
				for _, d := range ds {
					if err := e.printDelivery(d); err != nil {
						return err
					}
					ctx, cancel := e.commandCtx()
					if nak {
						err = cli.Nak(ctx, args[0], d)
					} else {
						err = cli.Ack(ctx, args[0], d)
					}
					cancel()
					if err != nil && !errors.Is(e.ctx.Err(), context.Canceled) {
						return fmt.Errorf("acknowledge %d.%d: %w", d.GetEvent().GetRevision(), d.GetEvent().GetIndex(), err)
					}
					done++
				}
			}
			return nil
		},
	}
}

func (e *env) printDelivery(d *client.Delivery) error {
	if e.writeOut == "json" {
		return e.printJSON(d)
	}
	ev := d.GetEvent()
	line := fmt.Sprintf("%d.%d %s %s %s", ev.GetRevision(), ev.GetIndex(), ev.GetTopic(), ev.GetKey(), ev.GetPayload())
	if d.GetAttempt() > 1 {
		line += fmt.Sprintf(" (attempt %d)", d.GetAttempt())
	}
	_, err := fmt.Fprintln(e.stdout, line)
	return err
}
