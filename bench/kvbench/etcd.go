package kvbench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EtcdMemberCommand is the subcommand under which the benchmark binary runs one etcd member.
const EtcdMemberCommand = "etcd-member"

// Etcd is etcd v3 (the version this module requires). Its members are separate processes
// running the benchmark's own executable with EtcdMemberCommand, which serves etcd through its
// embed package, i.e. the same server code the etcd binary runs, with etcd's default tuning
// (100 ms heartbeat, 1 s election, fsync on). Separate processes make the servers' CPU time and
// memory measurable apart from the load generator's, as for caucus.
type Etcd struct {
	// Exe is the executable that understands EtcdMemberCommand (normally os.Executable()).
	Exe string
}

// Name implements System.
func (Etcd) Name() string { return "etcd" }

// Command implements System.
func (e Etcd) Command() []string { return []string{e.Exe, EtcdMemberCommand} }

// Supports implements System.
func (Etcd) Supports(op Op) bool { return op != OpPutEvent && op != OpConsumerLatency }

// Members implements System.
func (Etcd) Members() int { return 3 }

// Dial implements System.
func (Etcd) Dial(endpoints []string) (KV, error) {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, err
	}
	return etcdKV{c}, nil
}

// Leader implements System.
func (Etcd) Leader(ctx context.Context, endpoints []string) (string, error) {
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
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
		if st.Leader != 0 && st.Leader == st.Header.GetMemberId() {
			return ep, nil
		}
	}
	return "", fmt.Errorf("no etcd member reports itself leader: %w", errors.Join(errs...))
}

type etcdKV struct{ c *clientv3.Client }

func (k etcdKV) Put(ctx context.Context, key, value string) error {
	_, err := k.c.Put(ctx, key, value)
	return err
}

func (k etcdKV) Get(ctx context.Context, key string, serializable bool) error {
	var err error
	if serializable {
		_, err = k.c.Get(ctx, key, clientv3.WithSerializable())
	} else {
		_, err = k.c.Get(ctx, key)
	}
	return err
}

func (k etcdKV) Close() error { return k.c.Close() }

// Revision implements WatchKV.
func (k etcdKV) Revision(ctx context.Context) (int64, error) {
	resp, err := k.c.Get(ctx, "kvbench/revision")
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// Watch implements WatchKV. etcd has no events: a topic watch fails at once. The created
// notification is etcd's word that the watch is registered.
func (k etcdKV) Watch(ctx context.Context, spec WatchSpec, fn func([]byte)) (<-chan struct{}, <-chan error) {
	ready, done := make(chan struct{}), make(chan error, 1)
	if spec.Topic != "" {
		done <- errors.New("kvbench: etcd publishes no events")
		return ready, done
	}
	opts := []clientv3.OpOption{clientv3.WithCreatedNotify()}
	if spec.Prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	if spec.Rev > 0 {
		opts = append(opts, clientv3.WithRev(spec.Rev))
	}
	wc := k.c.Watch(ctx, spec.Key, opts...)
	go func() {
		isReady := false
		for resp := range wc {
			if err := resp.Err(); err != nil {
				if ctx.Err() != nil {
					break
				}
				done <- err
				return
			}
			if !isReady && resp.Created {
				isReady = true
				close(ready)
			}
			for _, ev := range resp.Events {
				fn(ev.Kv.Value)
			}
		}
		done <- nil
	}()
	return ready, done
}

// RunEtcdMember runs one etcd member until SIGTERM or SIGINT. args are the member flags
// StartCluster passes (etcd's own flag names).
func RunEtcdMember(args []string) error {
	fs := flag.NewFlagSet(EtcdMemberCommand, flag.ContinueOnError)
	name := fs.String("name", "", "member name")
	dir := fs.String("data-dir", "", "data directory")
	lcurls := fs.String("listen-client-urls", "", "client URLs to listen on")
	acurls := fs.String("advertise-client-urls", "", "client URLs to advertise")
	lpurls := fs.String("listen-peer-urls", "", "peer URLs to listen on")
	apurls := fs.String("initial-advertise-peer-urls", "", "peer URLs to advertise")
	initial := fs.String("initial-cluster", "", "name=peerURL,...")
	state := fs.String("initial-cluster-state", embed.ClusterStateFlagNew, "new or existing")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = *name, *dir
	cfg.InitialCluster, cfg.ClusterState = *initial, *state
	cfg.LogLevel = "error"
	var err error
	for _, u := range []struct {
		dst *[]url.URL
		src string
	}{{&cfg.ListenClientUrls, *lcurls}, {&cfg.AdvertiseClientUrls, *acurls}, {&cfg.ListenPeerUrls, *lpurls}, {&cfg.AdvertisePeerUrls, *apurls}} {
		if *u.dst, err = parseURLs(u.src); err != nil {
			return err
		}
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return err
	case <-sig:
		return nil
	}
	select {
	case err := <-e.Err():
		return err
	case <-sig:
		return nil
	}
}

func parseURLs(s string) ([]url.URL, error) {
	var out []url.URL
	for _, p := range strings.Split(s, ",") {
		u, err := url.Parse(p)
		if err != nil {
			return nil, err
		}
		out = append(out, *u)
	}
	return out, nil
}
