package ctl

import (
	"bytes"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/caucus/caucus/client"
	"github.com/caucus/caucus/internal/relay"
)

// relayFlags are the options every relay shares.
type relayFlags struct {
	consumer string
	topics   stringsFlag
	parallel int
}

func (f *relayFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.consumer, "consumer", "", "the durable consumer to forward (required)")
	fs.Var(&f.topics, "topic", "create the consumer on topic `PATTERN` if it does not exist (repeatable)")
	fs.IntVar(&f.parallel, "parallel", 16, "events in flight at once (one key at a time, keys in parallel)")
}

// run forwards the consumer's events to sink until interrupted, creating the consumer
// first when --topic is given and it does not exist. It logs to standard error.
func (f *relayFlags) run(e *env, sink relay.Sink) error {
	defer sink.Close()
	if f.consumer == "" {
		return usagef("--consumer is required")
	}
	cli, err := e.client()
	if err != nil {
		return err
	}
	if len(f.topics) > 0 {
		ctx, cancel := e.commandCtx()
		_, err := cli.ConsumerCreate(ctx, &client.ConsumerConfig{Name: f.consumer, Topics: f.topics})
		cancel()
		if err != nil { // an existing consumer with the same configuration is not an error
			return fmt.Errorf("creating consumer %q: %w", f.consumer, err)
		}
	}
	lg := slog.New(slog.NewTextHandler(e.stderr, nil))
	return relay.Run(e.ctx, cli, sink, relay.Config{Consumer: f.consumer, Parallelism: f.parallel, Logger: lg})
}

func relayNATSCommand() *command {
	var f relayFlags
	var url, prefix string
	return &command{
		name: "nats", args: "",
		summary: "Forwards a durable consumer's events to NATS JetStream until interrupted: subject PREFIX+topic, " +
			"Nats-Msg-Id = event id (the stream drops repeats), acknowledged in caucus after JetStream acknowledged. " +
			"The subjects must belong to a stream.",
		flags: func(fs *flag.FlagSet) {
			f.register(fs)
			fs.StringVar(&url, "nats-url", "nats://127.0.0.1:4222", "NATS server `URLs`, comma-separated")
			fs.StringVar(&prefix, "subject-prefix", "caucus.", "put before each event's topic to make its subject")
		},
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 0, 0, ""); err != nil {
				return err
			}
			sink, err := relay.NewNATSSink(relay.NATSConfig{URL: url, SubjectPrefix: prefix})
			if err != nil {
				return err
			}
			return f.run(e, sink)
		},
	}
}

func relayWebhookCommand() *command {
	var f relayFlags
	var url, secretFile string
	return &command{
		name: "webhook", args: "",
		summary: "Forwards a durable consumer's events to an HTTP endpoint until interrupted: POST of the payload with " +
			"Idempotency-Key = event id and Caucus-Signature (HMAC-SHA256 of \"<unix time>.<body>\" with the secret); " +
			"2xx acknowledges, 408/429/5xx are retried, other answers give the event back at once.",
		flags: func(fs *flag.FlagSet) {
			f.register(fs)
			fs.StringVar(&url, "url", "", "the endpoint to POST to (required)")
			fs.StringVar(&secretFile, "secret-file", "", "file holding the signing secret (required)")
		},
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 0, 0, ""); err != nil {
				return err
			}
			if url == "" || secretFile == "" {
				return usagef("--url and --secret-file are required")
			}
			secret, err := os.ReadFile(secretFile)
			if err != nil {
				return fmt.Errorf("reading the webhook secret: %w", err)
			}
			sink, err := relay.NewWebhookSink(relay.WebhookConfig{URL: url, Secret: bytes.TrimSpace(secret)})
			if err != nil {
				return err
			}
			return f.run(e, sink)
		},
	}
}
