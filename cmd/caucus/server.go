package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caucus/caucus/internal/embed"
	"github.com/caucus/caucus/internal/fsm"
	"github.com/caucus/caucus/internal/server"
	"github.com/caucus/caucus/internal/watch"
)

// serverFlags binds a member's configuration to flags. Every flag can also be set with an
// environment variable (CAUCUS_ plus the flag name in upper case with - as _) or in a JSON config
// file ({"name": "n1", "data-dir": "..."}); a flag on the command line wins over the environment,
// which wins over the file.
func serverFlags(fs *flag.FlagSet, cfg *embed.Config) (configFile, logLevel, bug, retention *string, g gossipFlags) {
	fs.StringVar(&cfg.Name, "name", cfg.Name, "human-readable name of this member")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for the log, snapshots and state machine (default <name>.caucus)")
	fs.StringVar(&cfg.WALDir, "wal-dir", "", "directory for the log, e.g. on a dedicated disk (default <data-dir>/wal)")
	fs.StringVar(&cfg.ListenClientURL, "listen-client-urls", cfg.ListenClientURL, "URL to serve the client API on")
	fs.StringVar(&cfg.AdvertiseClientURL, "advertise-client-urls", "", "client URL to advertise to the cluster (default: the listen URL)")
	fs.StringVar(&cfg.ListenPeerURL, "listen-peer-urls", cfg.ListenPeerURL, "URL to listen on for peer traffic")
	fs.StringVar(&cfg.AdvertisePeerURL, "initial-advertise-peer-urls", "", "peer URL to advertise to the cluster (default: the listen URL)")
	fs.StringVar(&cfg.InitialCluster, "initial-cluster", "", "initial members: name=peerURL,name=peerURL (default: this member alone)")
	fs.StringVar(&cfg.InitialClusterState, "initial-cluster-state", cfg.InitialClusterState, "new (bootstrap) or existing (join)")
	fs.StringVar(&cfg.ClusterToken, "initial-cluster-token", cfg.ClusterToken, "token shared by the members of one cluster; member and cluster ids derive from it")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", cfg.HeartbeatInterval, "leader heartbeat interval (one Raft tick)")
	fs.DurationVar(&cfg.ElectionTimeout, "election-timeout", cfg.ElectionTimeout, "base election timeout (randomized up to 2x)")
	fs.Uint64Var(&cfg.SnapshotEntries, "snapshot-count", cfg.SnapshotEntries, "applied entries between snapshots")
	fs.DurationVar(&cfg.ApplyCommitInterval, "apply-commit-interval", cfg.ApplyCommitInterval, "longest applied entries wait for their state-machine commit (serializable reads may lag by up to it; 0: 10ms)")
	fs.DurationVar(&cfg.CommitBroadcastDelay, "commit-broadcast-delay", cfg.CommitBroadcastDelay, "longest the leader lets a new commit index wait for the next append to carry it to the followers (idle followers apply up to this much later; 0: 1ms; negative: at once)")
	fs.DurationVar(&cfg.LeaderSyncDelay, "leader-sync-delay", cfg.LeaderSyncDelay, "let the leader sync its own log after its followers, waiting at most this long for a second follower's acknowledgement before it syncs (0: off, the leader syncs every write before counting itself, as etcd; try 1ms when the members' logs share one disk)")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", cfg.RequestTimeout, "deadline for requests whose client set none")
	fs.Int64Var(&cfg.QuotaBackendBytes, "quota-backend-bytes", cfg.QuotaBackendBytes, "largest the state machine file may grow before writes are refused (0: 2 GiB, as etcd; negative: no quota)")
	fs.IntVar(&cfg.Limits.MaxRequestBytes, "max-request-bytes", cfg.Limits.MaxRequestBytes, "largest client request accepted")
	fs.IntVar(&cfg.Limits.MaxValueBytes, "max-value-bytes", cfg.Limits.MaxValueBytes, "largest value accepted")
	fs.IntVar(&cfg.Limits.MaxKeyBytes, "max-key-bytes", cfg.Limits.MaxKeyBytes, "largest key accepted")
	fs.IntVar(&cfg.Limits.MaxSessions, "max-sessions", cfg.Limits.MaxSessions, "exactly-once client sessions remembered (least recently used forgotten first, never within the retry window)")
	fs.DurationVar(&cfg.Limits.SessionTTL, "session-ttl", cfg.Limits.SessionTTL, "how long an unused client session is remembered")
	fs.DurationVar(&cfg.Limits.SessionRetryWindow, "session-retry-window", cfg.Limits.SessionRetryWindow, "a session used this recently is never forgotten (at most --session-ttl)")
	fs.IntVar(&cfg.Limits.MaxTxnOps, "max-txn-ops", cfg.Limits.MaxTxnOps, "most operations in one transaction branch")
	fs.IntVar(&cfg.Limits.MaxEventBytes, "max-event-bytes", cfg.Limits.MaxEventBytes, "largest event accepted (topic, key, payload, headers and id)")
	fs.IntVar(&cfg.Limits.MaxEventsPerWrite, "max-events-per-write", cfg.Limits.MaxEventsPerWrite, "most events one write publishes")
	fs.IntVar(&cfg.Limits.MaxTopics, "max-topics", cfg.Limits.MaxTopics, "most topics holding retained events at once")
	fs.DurationVar(&cfg.Limits.IdempotencyRetention, "idempotency-retention", cfg.Limits.IdempotencyRetention, "how long an idempotency key is remembered after its write")
	fs.IntVar(&cfg.Limits.MaxIdempotencyKeys, "max-idempotency-keys", cfg.Limits.MaxIdempotencyKeys, "most idempotency keys remembered at once")
	fs.IntVar(&cfg.Watch.MaxWatchers, "max-watchers", watch.DefaultMaxWatchers, "most watches this member serves at once")
	fs.DurationVar(&cfg.Watch.ProgressInterval, "watch-progress-interval", watch.DefaultProgressInterval, "how often an idle watch that asked for progress gets a progress response")
	fs.DurationVar(&cfg.Watch.StallTimeout, "watch-stall-timeout", watch.DefaultStallTimeout, "how long a watch response may wait for a client that does not read before the watch is cut off")
	fs.IntVar(&cfg.Watch.TotalBufferBytes, "watch-buffer-bytes", watch.DefaultTotalBufferBytes, "watch data this member queues for all its watchers (then the slowest read from storage)")
	fs.BoolVar(&cfg.EnablePprof, "enable-pprof", false, "serve runtime profiles under /debug/pprof/ on the client port")
	fs.StringVar(&cfg.AutoCompaction.Mode, "auto-compaction-mode", "", "compact old revisions automatically: periodic or revision (default: off)")
	retention = fs.String("auto-compaction-retention", "", "periodic: history to keep (a duration, or hours as a bare number, as etcd); revision: revisions to keep")
	g.addr = fs.String("gossip-addr", "", "host:port to gossip on, UDP and TCP, bound and advertised to the other members (default: the host of --listen-peer-urls with port "+strconv.Itoa(defaultGossipPort)+"; port 0: any free port; off: no gossip)")
	g.join = fs.String("gossip-join", "", "comma-separated gossip addresses (host:port) of members to join, besides those the members publish in the log")
	fs.StringVar(&cfg.GossipProfile, "gossip-profile", embed.GossipLAN, "gossip timings: lan (1s probes), wan (5s probes, slower suspicion) or local (one host)")
	fs.StringVar(&cfg.GossipKeyringFile, "gossip-keyring-file", "", "file of AES keys (one base64 key of 16, 24 or 32 bytes per line, the first encrypts) for gossip; reread on SIGHUP (default: no encryption)")
	fs.StringVar(&cfg.GossipLabel, "gossip-label", "", "label every gossip message carries; members with another label are never merged (default: --initial-cluster-token)")
	configFile = fs.String("config-file", "", "optional JSON file of flag values")
	logLevel = fs.String("log-level", "info", "debug, info, warn or error")
	bug = fs.String("unsafe-test-bug", "", "DO NOT USE: plants a consistency bug for checker tests (stale-reads, ack-before-commit)")
	return
}

func parseServerFlags(args []string, stderr io.Writer, getenv func(string) string) (embed.Config, *slog.Logger, error) {
	cfg := embed.DefaultConfig("default")
	fs := flag.NewFlagSet("caucus server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile, logLevel, bug, retention, gossip := serverFlags(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		return cfg, nil, err
	}
	if fs.NArg() > 0 {
		return cfg, nil, fmt.Errorf("server: unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	// Environment next, then the config file, each only for flags not set by a stronger source.
	var fileErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := "CAUCUS_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(env); v != "" {
			if err := fs.Set(f.Name, v); err != nil && fileErr == nil {
				fileErr = fmt.Errorf("server: environment %s=%q: %w", env, v, err)
			}
			set[f.Name] = true
		}
	})
	if fileErr != nil {
		return cfg, nil, fileErr
	}
	if *configFile != "" {
		b, err := os.ReadFile(*configFile)
		if err != nil {
			return cfg, nil, fmt.Errorf("server: read config file: %w", err)
		}
		var values map[string]any
		if err := json.Unmarshal(b, &values); err != nil {
			return cfg, nil, fmt.Errorf("server: config file %s is not a JSON object: %w", *configFile, err)
		}
		for k, v := range values {
			if fs.Lookup(k) == nil {
				return cfg, nil, fmt.Errorf("server: config file %s: unknown setting %q", *configFile, k)
			}
			if set[k] {
				continue
			}
			if err := fs.Set(k, fmt.Sprint(v)); err != nil {
				return cfg, nil, fmt.Errorf("server: config file %s: %s=%v: %w", *configFile, k, v, err)
			}
		}
	}
	if cfg.DataDir == "" {
		cfg.DataDir = cfg.Name + ".caucus"
	}
	if err := gossip.apply(&cfg); err != nil {
		return cfg, nil, err
	}
	if err := parseRetention(&cfg, *retention); err != nil {
		return cfg, nil, err
	}
	if w := cfg.Watch; w.MaxWatchers < 1 || w.ProgressInterval <= 0 || w.StallTimeout <= 0 || w.TotalBufferBytes < 1 {
		return cfg, nil, fmt.Errorf("server: --max-watchers, --watch-progress-interval, --watch-stall-timeout and --watch-buffer-bytes must be positive (got %d, %v, %v, %d)",
			w.MaxWatchers, w.ProgressInterval, w.StallTimeout, w.TotalBufferBytes)
	}
	switch server.TestBug(*bug) {
	case server.BugNone, server.BugStaleReads, server.BugAckBeforeCommit:
		cfg.Bug = server.TestBug(*bug)
	default:
		return cfg, nil, fmt.Errorf("server: unknown --unsafe-test-bug %q", *bug)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, nil, fmt.Errorf("server: --log-level: %w", err)
	}
	lg := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	cfg.Logger = lg
	return cfg, lg, nil
}

func runServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, lg, err := parseServerFlags(args, stderr, os.Getenv)
	if err != nil {
		return err
	}
	if cfg.Bug != server.BugNone {
		lg.Warn("UNSAFE: running with a planted consistency bug for checker tests", "bug", cfg.Bug)
	}
	m, err := embed.Start(cfg)
	if err != nil {
		return err
	}
	stopReload := reloadOnHangup(m, lg)
	defer stopReload()
	select {
	case <-ctx.Done():
		m.Stop()
		return nil
	case <-m.Done():
		m.Stop()
		if err := m.Node.Err(); err != nil {
			return fmt.Errorf("member stopped: %w", err)
		}
		return nil
	}
}

// parseRetention reads --auto-compaction-retention in the unit its mode needs: a duration for
// periodic (a bare number means hours, as etcd reads it), a count of revisions for revision.
func parseRetention(cfg *embed.Config, v string) error {
	ac := &cfg.AutoCompaction
	if v == "" {
		if ac.Mode != "" {
			return fmt.Errorf("server: --auto-compaction-mode %s needs --auto-compaction-retention", ac.Mode)
		}
		return nil
	}
	switch ac.Mode {
	case fsm.AutoCompactionPeriodic:
		if h, err := strconv.ParseFloat(v, 64); err == nil {
			ac.Period = time.Duration(h * float64(time.Hour))
		} else if ac.Period, err = time.ParseDuration(v); err != nil {
			return fmt.Errorf("server: --auto-compaction-retention %q: want a duration such as 30m, or hours: %w", v, err)
		}
	case fsm.AutoCompactionRevision:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("server: --auto-compaction-retention %q: want a number of revisions: %w", v, err)
		}
		ac.Retention = n
	case "":
		return fmt.Errorf("server: --auto-compaction-retention needs --auto-compaction-mode (periodic or revision)")
	}
	return ac.Validate()
}

// defaultGossipPort is the gossip port when --gossip-addr is not set (memberlist's, as Serf and
// Consul use it).
const defaultGossipPort = 7946

type gossipFlags struct{ addr, join *string }

// apply sets the gossip fields of cfg from --gossip-addr and --gossip-join.
func (g gossipFlags) apply(cfg *embed.Config) error {
	if *g.join != "" {
		for _, a := range strings.Split(*g.join, ",") {
			if a = strings.TrimSpace(a); a != "" {
				cfg.GossipJoin = append(cfg.GossipJoin, a)
			}
		}
	}
	switch addr := *g.addr; addr {
	case "off":
		cfg.GossipAddr = ""
		return nil
	case "":
		u, err := url.Parse(strings.Split(cfg.ListenPeerURL, ",")[0])
		if err != nil || u.Hostname() == "" {
			return fmt.Errorf("server: no --gossip-addr, and no host in --listen-peer-urls %q to default it from", cfg.ListenPeerURL)
		}
		host := u.Hostname()
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return fmt.Errorf("server: --listen-peer-urls %q binds every address; set --gossip-addr to the host:port the other members reach (or off)", cfg.ListenPeerURL)
		}
		cfg.GossipAddr = net.JoinHostPort(host, strconv.Itoa(defaultGossipPort))
	default:
		cfg.GossipAddr = addr
	}
	// embed.Config.Validate checks the address, the profile and the label.
	return nil
}

// reloadOnHangup rereads the gossip keyring when the process receives SIGHUP.
func reloadOnHangup(m *embed.Member, lg *slog.Logger) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				if err := m.ReloadGossipKeyring(); err != nil {
					lg.Error("gossip keyring not reloaded; the keys in use stay", "err", err)
				}
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}
