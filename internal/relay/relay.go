package relay

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/caucus/caucus/client"
)

// Config configures a relay.
type Config struct {
	// Consumer is the durable consumer whose events are forwarded. It must exist.
	Consumer string
	// Parallelism bounds the events in flight (keys in parallel; one key at a time). Default 16.
	Parallelism int
	// Retry bounds the attempts of one delivery before it is given back (DefaultRetry if zero).
	Retry  Retry
	Logger *slog.Logger
}

// Run forwards the consumer's events to sink until ctx ends, acknowledging each in caucus only
// once the sink has. When ctx ends, deliveries in flight are abandoned and given back (their
// destination may already hold them: the event id makes the next attempt a duplicate it drops).
func Run(ctx context.Context, cli *client.Client, sink Sink, cfg Config) error {
	if cfg.Parallelism <= 0 {
		cfg.Parallelism = 16
	}
	if cfg.Retry == (Retry{}) {
		cfg.Retry = DefaultRetry
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	lg = lg.With("component", "relay", "consumer", cfg.Consumer)
	if _, err := cli.ConsumerInfo(ctx, cfg.Consumer); err != nil {
		return fmt.Errorf("relay: consumer %q: %w", cfg.Consumer, err)
	}
	lg.Info("relay started")
	err := cli.Consume(ctx, cfg.Consumer, func(_ context.Context, d *client.Delivery) error {
		// The handler's own context outlives ctx (Consume lets handlers finish); a relay that
		// stops gives a delivery back rather than retrying it for the rest of its span.
		ev := d.GetEvent()
		err := send(ctx, sink, ev, cfg.Retry, sleep)
		if err != nil && ctx.Err() == nil {
			lg.Warn("relay: delivery failed; given back", "event", ev.GetId(), "topic", ev.GetTopic(),
				"revision", ev.GetRevision(), "index", ev.GetIndex(), "attempt", d.GetAttempt(), "err", err)
		}
		return err
	}, client.WithParallelism(cfg.Parallelism))
	lg.Info("relay stopped", "err", err)
	return err
}
