// Package embed assembles a complete caucus member from its parts: the data directory and node
// (internal/node), the replicated application (internal/fsm), the peer transport
// (internal/transport), the API server (internal/server) and, when Config.GossipAddr is set,
// gossip (internal/gossipnet, gossip.go): named by the member id in hexadecimal, it publishes
// its address in the member's attributes, joins the addresses the membership table holds, and
// feeds the gossip state of `member list`. Stop leaves gossip gracefully before stopping.
// `caucus server` runs one member with it; `caucus dev` and the integration tests run several in
// one process.
//
// Identity: a member's id is derived from the cluster token and its peer URLs, and the cluster id
// from the token, so that every member computes the same ids without
// talking to the others, and a member added later gets the id `member add` announced.
package embed

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caucus/caucus/internal/fsm"
	"github.com/caucus/caucus/internal/gossipnet"
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/internal/nativeapi"
	"github.com/caucus/caucus/internal/node"
	"github.com/caucus/caucus/internal/server"
	"github.com/caucus/caucus/internal/transport"
	"github.com/caucus/caucus/internal/watch"
	"github.com/caucus/caucus/raft"
)

// Config is a member's configuration, in the vocabulary of etcd's flags.
type Config struct {
	Name    string
	DataDir string
	// WALDir, if set, holds the log instead of DataDir/wal (etcd's --wal-dir): a dedicated disk
	// keeps the log's fsyncs from queueing behind the rest of the member's writes.
	WALDir string
	// ListenClientURL and ListenPeerURL are the addresses to bind (http://host:port).
	ListenClientURL string
	ListenPeerURL   string
	// AdvertiseClientURL and AdvertisePeerURL are how others reach this member; they default to
	// the listen URLs.
	AdvertiseClientURL string
	AdvertisePeerURL   string
	// InitialCluster maps member names to peer URLs: "n1=http://10.0.0.1:2380,n2=...".
	InitialCluster string
	// InitialClusterState is "new" to bootstrap, "existing" to join a running cluster.
	InitialClusterState string
	ClusterToken        string
	// HeartbeatInterval is one Raft tick; ElectionTimeout is a multiple of it.
	HeartbeatInterval time.Duration
	ElectionTimeout   time.Duration
	SnapshotEntries   uint64
	// ApplyCommitInterval bounds how long applied entries wait for their state-machine commit
	// (0: node.DefaultApplyCommitInterval); serializable reads may lag by up to it.
	ApplyCommitInterval time.Duration
	// CommitBroadcastDelay is the longest the leader waits for its next append to carry a new
	// commit index to the followers before sending it alone (0: node.DefaultCommitBroadcastDelay;
	// negative: at once, as etcd). An idle follower's state lags the leader's by up to it.
	CommitBroadcastDelay time.Duration
	// LeaderSyncDelay, if positive, lets the leader sync its own log after its followers,
	// waiting at most this long for a second follower before it syncs (node.Config). Zero: the
	// leader syncs every write before counting itself, as etcd does.
	LeaderSyncDelay time.Duration
	// AutoCompaction compacts old revisions automatically (as etcd's --auto-compaction-*).
	AutoCompaction fsm.AutoCompaction
	RequestTimeout time.Duration
	// Limits are this member's values for the replicated cluster settings: the first leader of a
	// new cluster proposes them as the initial settings, and afterwards every member applies the
	// replicated values (`caucus cluster settings`). MaxRequestBytes also bounds what this
	// member reads from a client connection.
	Limits mvcc.Limits
	// QuotaBackendBytes bounds the state machine's file (0: server.DefaultQuotaBackendBytes,
	// negative: none); see server.ErrNoSpace.
	QuotaBackendBytes int64
	// NoSyncStateMachine skips fsync of the state machine's own commits (the WAL is synced and
	// replayed after a crash). It is the default: see ARCHITECTURE.md.
	NoSyncStateMachine bool
	// EnablePprof serves Go's runtime profiles under /debug/pprof/ on the client port, as etcd's
	// --enable-pprof does.
	EnablePprof bool
	// Watch holds the limits of watches (internal/watch); zero fields take its defaults.
	Watch  watch.Options
	Bug    server.TestBug
	Logger *slog.Logger
	// GossipAddr is the host:port this member gossips on (UDP and TCP, bound and advertised;
	// port 0 binds any free port); "" runs no gossip. GossipJoin lists addresses of members to
	// join besides those the membership table publishes. GossipProfile is lan (default), wan or
	// local. GossipKeyringFile, if set, encrypts gossip (gossipnet's keyring file). GossipLabel
	// keeps clusters apart on one network (default: ClusterToken).
	GossipAddr        string
	GossipJoin        []string
	GossipProfile     string
	GossipKeyringFile string
	GossipLabel       string
	// PeerListener and ClientListener, if set, are used instead of binding the listen URLs
	// (tests bind port 0 first so that the initial cluster can name real ports).
	PeerListener, ClientListener net.Listener
}

// DefaultConfig returns etcd-like defaults for a member called name on localhost.
func DefaultConfig(name string) Config {
	return Config{
		Name:                name,
		DataDir:             name + ".caucus",
		ListenClientURL:     "http://127.0.0.1:2379",
		ListenPeerURL:       "http://127.0.0.1:2380",
		InitialClusterState: "new",
		ClusterToken:        "caucus-cluster",
		HeartbeatInterval:   100 * time.Millisecond,
		ElectionTimeout:     1000 * time.Millisecond,
		// As etcd since 3.2: a snapshot copies the whole state machine, so it is taken rarely;
		// the entries since it stay in memory (about 30 MB at 300-byte entries).
		SnapshotEntries:    100000,
		RequestTimeout:     server.DefaultRequestTimeout,
		Limits:             mvcc.DefaultLimits(),
		NoSyncStateMachine: true,
	}
}

// Member is a running member.
type Member struct {
	ID        raft.NodeID
	ClusterID uint64
	Node      *node.Node
	// FSM is the member's state machine; Proposer proposes through Node.
	FSM      *fsm.FSM
	Proposer *fsm.Proposer
	// Server serves the client API.
	Server *server.Server
	// ClientURL is the URL clients use (the advertised one, with the real port if :0 was asked).
	ClientURL string
	PeerURL   string

	trans    *transport.Transport
	gossip   *gossipnet.Driver
	chores   chan struct{} // closed to stop the chores
	choresWG sync.WaitGroup
	http     *http.Server
	native   *nativeapi.Server
	clientLn *nativeapi.Listener // the HTTP side of the client port; native conns go to native
	log      *slog.Logger
	stopOnce sync.Once
	serveErr chan error
}

// MemberID derives a member's id from the cluster token and its peer URLs.
func MemberID(token string, peerURLs []string) uint64 {
	urls := append([]string(nil), peerURLs...)
	sort.Strings(urls)
	sum := sha256.Sum256([]byte(token + "\x00" + strings.Join(urls, ",")))
	id := binary.BigEndian.Uint64(sum[:8])
	if id == 0 {
		id = 1 // 0 is raft.None
	}
	return id
}

// ParseInitialCluster parses "name=url[,name=url...]" into members with derived ids.
func ParseInitialCluster(token, s string) ([]node.Member, error) {
	var out []node.Member
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, u, ok := strings.Cut(part, "=")
		if !ok || name == "" || u == "" {
			return nil, fmt.Errorf("embed: initial cluster entry %q is not name=url", part)
		}
		if _, err := hostPort(u); err != nil {
			return nil, fmt.Errorf("embed: initial cluster entry %q: %w", part, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("embed: initial cluster names member %q twice", name)
		}
		seen[name] = true
		out = append(out, node.Member{ID: raft.NodeID(MemberID(token, []string{u})), Name: name, PeerURLs: []string{u}})
	}
	if len(out) == 0 {
		return nil, errors.New("embed: initial cluster is empty")
	}
	return out, nil
}

// clusterID derives the cluster id from the cluster token alone, so that a member joining later
// (whose initial cluster lists more members) computes the same id as the founders.
func clusterID(token string) uint64 {
	sum := sha256.Sum256([]byte("cluster\x00" + token))
	id := binary.BigEndian.Uint64(sum[:8])
	if id == 0 {
		id = 1 // the transport reserves 0
	}
	return id
}

// hostPort extracts host:port from an http URL (peer URLs are written as URLs, as in etcd, but
// the peer transport is plain TCP).
func hostPort(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("parse URL %q: %w", raw, err)
	}
	if u.Scheme != "http" {
		return "", fmt.Errorf("URL %q: only http:// is supported (TLS comes later)", raw)
	}
	if u.Port() == "" {
		return "", fmt.Errorf("URL %q has no port", raw)
	}
	return u.Host, nil
}

func peerAddr(peerURLs []string) string {
	for _, u := range peerURLs {
		if hp, err := hostPort(u); err == nil {
			return hp
		}
	}
	return ""
}

// Validate checks the relationships between fields.
func (c *Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("embed: --name is required")
	case c.DataDir == "":
		return errors.New("embed: --data-dir is required")
	case c.HeartbeatInterval <= 0:
		return fmt.Errorf("embed: heartbeat interval %s must be > 0", c.HeartbeatInterval)
	case c.ElectionTimeout < 5*c.HeartbeatInterval:
		return fmt.Errorf("embed: election timeout %s must be at least 5x the heartbeat interval %s", c.ElectionTimeout, c.HeartbeatInterval)
	case c.InitialClusterState != "new" && c.InitialClusterState != "existing":
		return fmt.Errorf("embed: initial cluster state %q must be new or existing", c.InitialClusterState)
	}
	if err := c.validateGossip(); err != nil {
		return err
	}
	if err := c.AutoCompaction.Validate(); err != nil {
		return fmt.Errorf("embed: %w", err)
	}
	if err := mvcc.DefaultLimits().Merge(c.Limits.Settings()).Check(); err != nil {
		return fmt.Errorf("embed: %w", err)
	}
	return nil
}

// Start opens the member's data and starts serving. It returns once the listeners are bound.
func Start(cfg Config) (*Member, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	lg = lg.With("name", cfg.Name)
	peerHP, err := hostPort(cfg.ListenPeerURL)
	if err != nil {
		return nil, fmt.Errorf("embed: listen peer URL: %w", err)
	}
	clientHP, err := hostPort(cfg.ListenClientURL)
	if err != nil {
		return nil, fmt.Errorf("embed: listen client URL: %w", err)
	}
	peerLn, clientLn := cfg.PeerListener, cfg.ClientListener
	if peerLn == nil {
		if peerLn, err = net.Listen("tcp", peerHP); err != nil {
			return nil, fmt.Errorf("embed: listen for peers on %s: %w", peerHP, err)
		}
	}
	if clientLn == nil {
		if clientLn, err = net.Listen("tcp", clientHP); err != nil {
			peerLn.Close()
			return nil, fmt.Errorf("embed: listen for clients on %s: %w", clientHP, err)
		}
	}
	advPeer := cfg.AdvertisePeerURL
	if advPeer == "" {
		advPeer = "http://" + peerLn.Addr().String()
	}
	advClient := cfg.AdvertiseClientURL
	if advClient == "" {
		advClient = "http://" + clientLn.Addr().String()
	}
	initial := cfg.InitialCluster
	if initial == "" {
		initial = cfg.Name + "=" + advPeer
	}
	members, err := ParseInitialCluster(cfg.ClusterToken, initial)
	if err != nil {
		peerLn.Close()
		clientLn.Close()
		return nil, err
	}
	id := raft.NodeID(MemberID(cfg.ClusterToken, []string{advPeer}))
	found := false
	for _, m := range members {
		if m.ID == id {
			found = true
		}
	}
	if !found {
		peerLn.Close()
		clientLn.Close()
		return nil, fmt.Errorf("embed: this member's advertised peer URL %s is not in the initial cluster %q", advPeer, initial)
	}
	// Gossip starts first, so that its port is taken (and published) before the member is.
	gd, err := startGossip(cfg, id, advClient, lg)
	if err != nil {
		peerLn.Close()
		clientLn.Close()
		return nil, err
	}
	stopGossip := func() {
		if gd != nil {
			gd.Abort()
		}
	}
	gossipAddr := ""
	if gd != nil {
		gossipAddr = gd.Addr()
	}
	cid := clusterID(cfg.ClusterToken)
	tick := cfg.HeartbeatInterval
	rc := raft.DefaultConfig(id)
	rc.HeartbeatTick = 1
	rc.ElectionTick = int(cfg.ElectionTimeout / tick)
	rc.Seed = uint64(id) ^ uint64(time.Now().UnixNano())
	rc.Logger = lg
	bctx, err := fsm.BootstrapContext(members)
	if err != nil {
		stopGossip()
		peerLn.Close()
		clientLn.Close()
		return nil, err
	}
	var app *fsm.FSM
	nd, err := node.Open(node.OpenConfig{
		Config: node.Config{
			Raft:                 rc,
			TickInterval:         tick,
			SnapshotEntries:      cfg.SnapshotEntries,
			ApplyCommitInterval:  cfg.ApplyCommitInterval,
			CommitBroadcastDelay: cfg.CommitBroadcastDelay,
			LeaderSyncDelay:      cfg.LeaderSyncDelay,
			PeerAddr:             peerAddr,
			Logger:               lg,
		},
		DataDir:          cfg.DataDir,
		WALDir:           cfg.WALDir,
		NewCluster:       cfg.InitialClusterState == "new",
		InitialMembers:   members,
		BootstrapContext: bctx,
		PersistedApplied: func() (uint64, error) { return fsm.PersistedAppliedIndex(cfg.DataDir) },
		OpenStateMachine: func() (node.StateMachine, error) {
			// Until the log sets replicated settings, every member applies with the release's
			// defaults, the same everywhere; cfg.Limits become the initial settings (chores).
			f, err := fsm.Open(fsm.Options{ID: id, DataDir: cfg.DataDir, Logger: lg, Store: mvcc.Options{
				NoSync: cfg.NoSyncStateMachine, Limits: mvcc.DefaultLimits(), Logger: lg,
				InitialMmapSize: initialMmapSize(cfg.QuotaBackendBytes),
			}})
			app = f
			return f, err
		},
	})
	if err != nil {
		stopGossip()
		peerLn.Close()
		clientLn.Close()
		return nil, err
	}
	tr, err := transport.New(transport.Config{
		ID:          id,
		ClusterID:   cid,
		Listener:    peerLn,
		Handler:     nd.Step,
		Unreachable: nd.ReportUnreachable,
		Logger:      lg,
	})
	if err != nil {
		stopGossip()
		peerLn.Close()
		clientLn.Close()
		return nil, fmt.Errorf("embed: start peer transport: %w", err)
	}
	nd.SetTransport(transportAdapter{tr, lg}, members)
	tr.Start()
	nd.Start()
	prop := fsm.NewProposer(nd, nil)
	chores := fsm.NewChores(prop, app.Store(), fsm.ChoreConfig{
		ClientURLs:      []string{advClient},
		GossipAddr:      gossipAddr,
		AutoCompaction:  cfg.AutoCompaction,
		InitialSettings: cfg.Limits.Settings(),
		Logger:          lg,
	})
	var gossipState func(uint64) string
	if gd != nil {
		gossipState = func(id uint64) string {
			gm, ok := gd.Member(GossipName(id))
			if !ok {
				return ""
			}
			return gm.State.String()
		}
	}
	srv := server.New(server.Config{
		GossipState:       gossipState,
		Node:              nd,
		Proposer:          prop,
		Store:             app.Store(),
		ClusterID:         cid,
		Limits:            cfg.Limits,
		RequestTimeout:    cfg.RequestTimeout,
		QuotaBackendBytes: cfg.QuotaBackendBytes,
		MemberID:          func(_ string, urls []string) uint64 { return MemberID(cfg.ClusterToken, urls) },
		Watch:             cfg.Watch,
		Bug:               cfg.Bug,
		Logger:            lg,
	})
	handler := srv.Handler()
	if cfg.EnablePprof {
		mux := http.NewServeMux()
		mux.Handle("/", handler)
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		handler = mux
	}
	// One client port serves both the native protocol (the Go client's default) and HTTP
	// (connect, gRPC, JSON, /health, pprof): Split tells them apart by the first bytes.
	native := nativeapi.NewServer(srv.NativeConfig())
	httpLn := nativeapi.Split(clientLn, native, nativeapi.SplitConfig{Logger: lg})
	m := &Member{
		ID: id, ClusterID: cid, Node: nd, FSM: app, Proposer: prop, Server: srv, ClientURL: advClient, PeerURL: advPeer,
		trans: tr, gossip: gd, native: native, clientLn: httpLn, log: lg, serveErr: make(chan error, 1),
		chores: make(chan struct{}),
		// No overall read or write timeout: a snapshot download streams for as long as it
		// takes. Idle keep-alive connections are closed so that they cannot pile up.
		http: &http.Server{Handler: handler, Protocols: server.Protocols(), ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout: 2 * time.Minute},
	}
	m.choresWG.Add(1)
	go func() {
		defer m.choresWG.Done()
		chores.Run(m.chores, cfg.RequestTimeout)
	}()
	if gd != nil {
		m.choresWG.Add(1)
		go func() {
			defer m.choresWG.Done()
			m.joinGossip(m.chores, app.Store(), cfg.GossipJoin, gossipJoinInterval(cfg.GossipProfile))
		}()
	}
	go func() {
		err := m.http.Serve(httpLn)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		m.serveErr <- err
	}()
	lg.Info("member started", "member", id, "cluster", fmt.Sprintf("%x", cid),
		"client", advClient, "peer", advPeer, "gossip", gossipAddr)
	return m, nil
}

// Stop shuts the member down: stop serving clients, stop the node (closing its storage), close
// the transport. It is idempotent.
func (m *Member) Stop() {
	m.stopOnce.Do(func() {
		if m.gossip != nil {
			// Announce the leave first, so that the others see "left", not a failure.
			_ = m.gossip.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		m.Server.CloseWatches()  // else Shutdown would wait for their streams to end
		_ = m.http.Shutdown(ctx) // closes the client listener first
		_ = m.clientLn.Close()   // idempotent; waits for connections still being sniffed
		// Cancels native calls in flight and waits for them, before the node they wait on stops.
		_ = m.native.Close()
		close(m.chores)
		m.Node.Stop() // ends a chore's proposal in flight
		m.choresWG.Wait()
		m.trans.Close()
		m.log.Info("member stopped")
	})
}

// Done is closed when the member's node stops (Stop, or a fatal storage error).
func (m *Member) Done() <-chan struct{} { return m.Node.Done() }

// transportAdapter adapts the transport to node.Transport, logging address errors that the node
// cannot act on.
type transportAdapter struct {
	t   *transport.Transport
	log *slog.Logger
}

func (a transportAdapter) Send(msgs []raft.Message)  { a.t.Send(msgs) }
func (a transportAdapter) RemovePeer(id raft.NodeID) { a.t.RemovePeer(id) }
func (a transportAdapter) AddPeer(id raft.NodeID, addr string) {
	if addr == "" {
		a.log.Warn("member has no usable peer URL", "peer", id)
		return
	}
	a.t.AddPeer(id, addr)
}

// initialMmapSize maps the state machine's file once, as large as the quota lets it grow, so
// that bbolt never remaps it while it grows: a remap waits for every open read transaction
// and unmaps under the loop (etcd maps 10 GiB up front for the same reason). It is address
// space, not memory. Without a quota, 2 GiB; past it bbolt remaps as it would anyway.
func initialMmapSize(quota int64) int {
	switch {
	case quota == 0:
		quota = server.DefaultQuotaBackendBytes
	case quota < 0:
		quota = 2 << 30
	}
	return int(min(quota, math.MaxInt)) // a 32-bit build cannot map more
}
