package kvbench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSMemberCommand is the subcommand under which the benchmark binary runs a NATS server.
const NATSMemberCommand = "nats-member"

// NATS is one NATS server with JetStream (github.com/nats-io/nats-server/v2, the server code of
// the nats-server binary), the anchor of the consumer workloads: a stream with file storage and
// one replica, and a durable pull consumer with explicit acks. It runs in its own process (this
// benchmark's executable with NATSMemberCommand) so that its CPU time and memory are measured
// apart from the load generator's, as for the other systems. It is a single server: nothing is
// replicated. With SyncAlways unset the file store writes each message to the operating system
// but fsyncs only every 2 minutes (sync_interval, the default), so an acknowledged message
// survives the process's crash but not the machine's; SyncAlways opens the store's files with
// O_SYNC, so a message is on disk when it is acknowledged (sync_interval: always).
type NATS struct {
	// Exe is the executable that understands NATSMemberCommand (normally os.Executable()).
	Exe        string
	SyncAlways bool
}

// Name implements System.
func (n NATS) Name() string {
	if n.SyncAlways {
		return "nats-sync"
	}
	return "nats"
}

// Supports implements System.
func (NATS) Supports(op Op) bool { return op == OpConsumerLatency }

// Members implements System: a single server.
func (NATS) Members() int { return 1 }

// Command implements System.
func (n NATS) Command() []string {
	return []string{n.Exe, NATSMemberCommand, "--sync-always=" + strconv.FormatBool(n.SyncAlways)}
}

// natsURL turns a member's client URL (http://host:port) into the NATS URL of the same address.
func natsURL(clientURL string) (string, error) {
	u, err := url.Parse(clientURL)
	if err != nil {
		return "", err
	}
	return "nats://" + u.Host, nil
}

// Dial implements System.
func (NATS) Dial(endpoints []string) (KV, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("kvbench: nats: no endpoint")
	}
	u, err := natsURL(endpoints[0])
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(u, nats.Name("kvbench"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("kvbench: nats: connect %s: %w", u, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &natsKV{nc: nc, js: js}, nil
}

// Leader implements System: the server, once JetStream answers.
func (n NATS) Leader(ctx context.Context, endpoints []string) (string, error) {
	kv, err := n.Dial(endpoints)
	if err != nil {
		return "", err
	}
	defer kv.Close()
	if _, err := kv.(*natsKV).js.AccountInfo(ctx); err != nil {
		return "", fmt.Errorf("kvbench: nats: JetStream not ready: %w", err)
	}
	return endpoints[0], nil
}

type natsKV struct {
	nc *nats.Conn
	js jetstream.JetStream
}

var errNoKV = errors.New("kvbench: nats: no key-value workloads (the NATS anchor serves the consumer workloads only)")

func (k *natsKV) Put(context.Context, string, string) error { return errNoKV }
func (k *natsKV) Get(context.Context, string, bool) error   { return errNoKV }
func (k *natsKV) Close() error                              { k.nc.Close(); return nil }
func natsSubject(queue string) string                       { return "kvbench." + queue }
func (k *natsKV) DeleteQueue(ctx context.Context, queue string) error {
	return k.js.DeleteStream(ctx, queue)
}

// CreateQueue implements QueueKV: a stream of the queue's subject (file storage, one replica)
// and a durable pull consumer with explicit acks.
func (k *natsKV) CreateQueue(ctx context.Context, queue string) error {
	if _, err := k.js.CreateStream(ctx, jetstream.StreamConfig{Name: queue, Subjects: []string{natsSubject(queue)},
		Storage: jetstream.FileStorage, Replicas: 1}); err != nil {
		return err
	}
	_, err := k.js.CreateOrUpdateConsumer(ctx, queue, jetstream.ConsumerConfig{Durable: queue, AckPolicy: jetstream.AckExplicitPolicy})
	return err
}

// Publish implements QueueKV: a JetStream publish, which returns once the stream stored the
// message (its PubAck).
func (k *natsKV) Publish(ctx context.Context, queue string, payload []byte) error {
	_, err := k.js.Publish(ctx, natsSubject(queue), payload)
	return err
}

// Consume implements QueueKV with the pull consumer's Consume at the client's defaults (it
// keeps up to 500 messages requested ahead). Messages are handled one at a time, on the
// client's delivery goroutine; each Ack is sent without waiting for the server's reply
// (JetStream's default; caucus's Consume waits for each ack to be committed), so parallel is
// not used.
func (k *natsKV) Consume(ctx context.Context, queue string, _ int, fn func([]byte)) error {
	cons, err := k.js.Consumer(ctx, queue, queue)
	if err != nil {
		return err
	}
	var ackErr atomic.Pointer[error]
	cc, err := cons.Consume(func(m jetstream.Msg) {
		fn(m.Data())
		if err := m.Ack(); err != nil {
			ackErr.CompareAndSwap(nil, &err)
		}
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Stop()
	<-cc.Closed()
	if err := ackErr.Load(); err != nil {
		return *err
	}
	return nil
}

// RunNATSMember runs one NATS server with JetStream until SIGTERM or SIGINT. args are the
// member flags StartCluster passes (etcd's names; the peer flags are accepted and ignored).
func RunNATSMember(args []string) error {
	fs := flag.NewFlagSet(NATSMemberCommand, flag.ContinueOnError)
	dir := fs.String("data-dir", "", "JetStream store directory")
	lcurls := fs.String("listen-client-urls", "", "client URL to listen on (host:port)")
	syncAlways := fs.Bool("sync-always", false, "fsync every write (O_SYNC store files)")
	for _, ignored := range []string{"name", "advertise-client-urls", "listen-peer-urls", "initial-advertise-peer-urls", "initial-cluster", "initial-cluster-state"} {
		fs.String(ignored, "", "ignored")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := url.Parse(*lcurls)
	if err != nil {
		return err
	}
	host, portStr, err := net.SplitHostPort(u.Host)
	if err != nil {
		return fmt.Errorf("nats member: listen URL %q: %w", *lcurls, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("nats member: listen URL %q: %w", *lcurls, err)
	}
	opts := &server.Options{Host: host, Port: port, JetStream: true, StoreDir: *dir, SyncAlways: *syncAlways,
		NoSigs: true, NoLog: true}
	s, err := server.NewServer(opts)
	if err != nil {
		return err
	}
	go s.Start()
	defer s.Shutdown()
	if !s.ReadyForConnections(30 * time.Second) {
		return errors.New("nats member: server not ready after 30 s")
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}
