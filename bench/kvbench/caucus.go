package kvbench

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/caucus/caucus/client"
)

// Caucus is a caucus cluster of real server processes (`caucus server`), spoken to with the
// public Go client.
type Caucus struct {
	// Bin is the caucus server binary.
	Bin string
	// Args are extra server flags (e.g. --enable-pprof to profile the members during a run).
	Args []string
}

// Name implements System.
func (Caucus) Name() string { return "caucus" }

// Command implements System. Logging is cut to errors, as for the etcd members.
func (c Caucus) Command() []string {
	// Any free gossip port: the members share 127.0.0.1, where the default port would collide.
	return append([]string{c.Bin, "server", "--log-level", "error", "--gossip-addr", "127.0.0.1:0"}, c.Args...)
}

// Supports implements System.
func (Caucus) Supports(Op) bool { return true }

// Members implements System.
func (Caucus) Members() int { return 3 }

// Dial implements System.
func (Caucus) Dial(endpoints []string) (KV, error) {
	c, err := client.New(client.Config{Endpoints: endpoints})
	if err != nil {
		return nil, err
	}
	return caucusKV{c}, nil
}

// Leader implements System.
func (Caucus) Leader(ctx context.Context, endpoints []string) (string, error) {
	c, err := client.New(client.Config{Endpoints: endpoints, MaxRetries: -1})
	if err != nil {
		return "", err
	}
	defer c.Close()
	var errs []error
	for _, ep := range endpoints {
		st, err := c.Status(ctx, ep)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if st.GetLeader() != 0 && st.GetLeader() == st.GetHeader().GetMemberId() {
			return ep, nil
		}
	}
	return "", fmt.Errorf("no caucus member reports itself leader: %w", errors.Join(errs...))
}

type caucusKV struct{ c *client.Client }

func (k caucusKV) Put(ctx context.Context, key, value string) error {
	_, err := k.c.Put(ctx, key, value)
	return err
}

func (k caucusKV) Get(ctx context.Context, key string, serializable bool) error {
	var err error
	if serializable {
		_, err = k.c.Get(ctx, key, client.WithSerializable())
	} else {
		_, err = k.c.Get(ctx, key)
	}
	return err
}

func (k caucusKV) Close() error { return k.c.Close() }

// PutEvent implements EventKV: the event's key is the put's key, as an outbox's would be.
func (k caucusKV) PutEvent(ctx context.Context, key, value, topic string, payload []byte) error {
	_, err := k.c.Put(ctx, key, value, client.WithEvents(client.NewEvent(topic, key, payload)))
	return err
}

// Revision implements WatchKV.
func (k caucusKV) Revision(ctx context.Context) (int64, error) {
	resp, err := k.c.Get(ctx, "kvbench/revision")
	if err != nil {
		return 0, err
	}
	return resp.GetHeader().GetRevision(), nil
}

// Watch implements WatchKV. A topic watch has an empty key, so it selects events only. Ready
// asks for progress responses: the first one of a stream is the member's word that the watch
// is registered (at most one more a second follows while the watch is idle).
func (k caucusKV) Watch(ctx context.Context, spec WatchSpec, fn func([]byte)) (<-chan struct{}, <-chan error) {
	key := spec.Key
	var opts []client.OpOption
	switch {
	case spec.Topic != "":
		key = ""
		opts = append(opts, client.WithTopics(spec.Topic))
	case spec.Prefix:
		opts = append(opts, client.WithPrefix())
	}
	if spec.Rev > 0 {
		opts = append(opts, client.WithRev(spec.Rev))
	}
	if spec.Ready {
		opts = append(opts, client.WithProgressNotify())
	}
	ready, done := make(chan struct{}), make(chan error, 1)
	wc := k.c.Watch(ctx, key, opts...)
	go func() {
		isReady := false
		for resp := range wc {
			if resp.Err != nil {
				done <- resp.Err
				return
			}
			if !isReady && resp.Progress {
				isReady = true
				close(ready)
			}
			for _, it := range resp.Items {
				if ev := it.GetEvent(); ev != nil {
					fn(ev.GetPayload())
				} else {
					fn(it.GetChange().GetKv().GetValue())
				}
			}
		}
		done <- nil
	}()
	return ready, done
}

// queueTopic is the topic a queue's messages are published to.
func queueTopic(queue string) string { return "kvbench.q." + queue }

// CreateQueue implements QueueKV: a durable consumer of the queue's topic, from the events
// published after it, with the server's defaults (30 s ack wait, 5 deliveries).
func (k caucusKV) CreateQueue(ctx context.Context, queue string) error {
	_, err := k.c.ConsumerCreate(ctx, &client.ConsumerConfig{Name: queue, Topics: []string{queueTopic(queue)}})
	return err
}

// DeleteQueue implements QueueKV.
func (k caucusKV) DeleteQueue(ctx context.Context, queue string) error {
	return k.c.ConsumerDelete(ctx, queue)
}

// Publish implements QueueKV: an event without a key (so the consumer may deliver any number
// at once, as a JetStream pull consumer does) and without a write.
func (k caucusKV) Publish(ctx context.Context, queue string, payload []byte) error {
	_, err := k.c.Publish(ctx, client.NewEvent(queueTopic(queue), "", payload))
	return err
}

// Consume implements QueueKV with client.Consume, which acknowledges each delivery (a
// replicated write) once its handler returned.
func (k caucusKV) Consume(ctx context.Context, queue string, parallel int, fn func([]byte)) error {
	var opts []client.ConsumeOption
	if parallel > 0 {
		opts = append(opts, client.WithParallelism(parallel))
	}
	return k.c.Consume(ctx, queue, func(_ context.Context, d *client.Delivery) error {
		fn(d.GetEvent().GetPayload())
		return nil
	}, opts...)
}

// BuildCaucus builds the caucus server binary into out. benchDir is the bench module's directory
// (its parent is caucus's module root). It first builds from caucus's own module, with the
// dependency versions the project pins; if that fails (e.g. the root go.mod lags behind a new
// import), it builds the same package from the bench module, whose go.mod replaces caucus with
// the parent directory.
func BuildCaucus(ctx context.Context, benchDir, out string) error {
	var errs []error
	for _, b := range []struct{ dir, pkg string }{
		{filepath.Join(benchDir, ".."), "./cmd/caucus"},
		{benchDir, "github.com/caucus/caucus/cmd/caucus"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, b.pkg)
		cmd.Dir = b.dir
		output, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("go build %s in %s: %v\n%s", b.pkg, b.dir, err, output))
	}
	return errors.Join(errs...)
}
