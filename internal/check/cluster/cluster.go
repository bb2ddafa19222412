// Package cluster launches and controls a local caucus cluster of real processes for fault
// injection tests: each member is a `caucus server` process on its own loopback address
// (127.0.0.10+i), and each member's advertised peer URL is a fault-injecting proxy
// (internal/check/proxy) in front of its real peer listener, so that partitions need neither
// Docker nor root networking.
//
// # Invariants
//
//   - A member restarted after Kill reuses its name, data directory, addresses and flags, as a
//     machine that rebooted; only its pid changes.
//   - Every process the cluster starts is stopped by Stop (paused ones are resumed first so that
//     they can exit), and on Linux dies with the launching process if that dies first.
//   - Member-to-member traffic always crosses a proxy; client traffic never does (clients talk to
//     the real client URL), so a partitioned member still answers clients, which is exactly the
//     situation in which stale reads are served.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/internal/check/proxy"
)

// Config describes a local cluster.
type Config struct {
	// Binary is the caucus executable. Build produces one.
	Binary string
	// Size is the number of members (default 3).
	Size int
	// Dir holds every member's data directory and log; created if missing.
	Dir string
	// ExtraArgs are appended to every member's `caucus server` command line (e.g.
	// --unsafe-test-bug=stale-reads).
	ExtraArgs []string
	// Log receives launcher diagnostics; nil discards.
	Log io.Writer
}

// Node is one member.
type Node struct {
	Name string
	// ClientURL is the member's client URL (http://ip:port), served directly.
	ClientURL string
	// PeerURL is the advertised peer URL: the proxy's address.
	PeerURL string
	// PeerListen is the member's real peer listener address (host:port), the proxy's target.
	PeerListen string
	DataDir    string
	LogPath    string
	Proxy      *proxy.Proxy

	c *Cluster

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the current process has exited
	paused bool
	state  string // --initial-cluster-state of the last start
}

// Cluster is a running local cluster.
type Cluster struct {
	cfg Config
	// Nodes is fixed once Start returns. While Start builds it, proxies already accept (and
	// call pids), hence nodesMu.
	Nodes   []*Node
	nodesMu sync.Mutex
	httpc   *http.Client
}

// ModuleRoot finds the directory of the caucus module's go.mod, starting at dir and walking up.
func ModuleRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/caucus/caucus\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("cluster: no github.com/caucus/caucus go.mod above %s", dir)
		}
	}
}

// Build compiles ./cmd/caucus of the module at root into outDir and returns the binary's path.
func Build(ctx context.Context, root, outDir string) (string, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("cluster: build: %w", err)
	}
	bin := filepath.Join(outDir, "caucus")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/caucus")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cluster: go build ./cmd/caucus: %w\n%s", err, out)
	}
	return bin, nil
}

// freePort reserves a port on ip by binding it and releasing it. Another process could take it
// in between; the window is small and Start fails loudly if it happens.
func freePort(ip string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Start launches the cluster and returns once every process is started (not once a leader is
// elected: use WaitLeader). On error everything started is stopped.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if cfg.Size == 0 {
		cfg.Size = 3
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c := &Cluster{cfg: cfg, httpc: NewHTTPClient(time.Second)}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	var initial []string
	for i := 0; i < cfg.Size; i++ {
		ip := fmt.Sprintf("127.0.0.%d", 10+i)
		cport, err := freePort(ip)
		if err != nil {
			return nil, fmt.Errorf("cluster: reserve client port on %s: %w", ip, err)
		}
		pport, err := freePort(ip)
		if err != nil {
			return nil, fmt.Errorf("cluster: reserve peer port on %s: %w", ip, err)
		}
		n := &Node{
			Name:       fmt.Sprintf("n%d", i+1),
			ClientURL:  fmt.Sprintf("http://%s:%d", ip, cport),
			PeerListen: net.JoinHostPort(ip, fmt.Sprint(pport)),
			c:          c,
		}
		n.DataDir = filepath.Join(cfg.Dir, n.Name)
		n.LogPath = filepath.Join(cfg.Dir, n.Name+".log")
		n.Proxy, err = proxy.Listen(net.JoinHostPort(ip, "0"), n.PeerListen, proxy.ProcIdentify(c.pids))
		if err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		n.PeerURL = "http://" + n.Proxy.Addr()
		c.nodesMu.Lock()
		c.Nodes = append(c.Nodes, n)
		c.nodesMu.Unlock()
		initial = append(initial, n.Name+"="+n.PeerURL)
	}
	for _, n := range c.Nodes {
		if err := n.start(strings.Join(initial, ",")); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// pids maps member names to the pids of their current processes, for proxy source labels.
func (c *Cluster) pids() map[string]int {
	c.nodesMu.Lock()
	nodes := c.Nodes
	c.nodesMu.Unlock()
	m := map[string]int{}
	for _, n := range nodes {
		n.mu.Lock()
		if n.cmd != nil && n.cmd.Process != nil {
			m[n.Name] = n.cmd.Process.Pid
		}
		n.mu.Unlock()
	}
	return m
}

func (n *Node) args(initial, state string) []string {
	a := []string{"server",
		"--name", n.Name,
		"--data-dir", n.DataDir,
		"--listen-client-urls", n.ClientURL,
		"--advertise-client-urls", n.ClientURL,
		"--listen-peer-urls", "http://" + n.PeerListen,
		"--initial-advertise-peer-urls", n.PeerURL,
		"--initial-cluster", initial,
		"--initial-cluster-state", state,
		// Any free port: clusters of concurrent tests share the host's loopback addresses.
		"--gossip-addr", net.JoinHostPort(host(n.PeerListen), "0"),
	}
	return append(a, n.c.cfg.ExtraArgs...)
}

func (n *Node) start(initial string) error { return n.startWith(initial, "new") }

// startWith starts the member's process. A restarted member passes the same flags as at
// creation ("new"): like etcd, the server must ignore the initial-cluster flags once its data
// directory holds state.
func (n *Node) startWith(initial, state string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("cluster: %s log: %w", n.Name, err)
	}
	cmd := exec.Command(n.c.cfg.Binary, n.args(initial, state)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("cluster: start %s: %w", n.Name, err)
	}
	fmt.Fprintf(n.c.cfg.Log, "cluster: started %s pid %d\n", n.Name, cmd.Process.Pid)
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	n.cmd, n.exited, n.paused, n.state = cmd, exited, false, state
	return nil
}

// Running reports whether the member's process is alive (paused counts as alive).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.exited == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// WaitExit waits until the member's current process exits on its own (or was killed) and
// returns how it ended, or returns ctx's error if it is still running when ctx ends. Tests use
// it to check that a member which stops after a fatal error (a full disk) says so with its exit
// status.
func (n *Node) WaitExit(ctx context.Context) (*os.ProcessState, error) {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return nil, fmt.Errorf("cluster: wait for %s to exit: never started", n.Name)
	}
	select {
	case <-exited:
		// cmd.Wait stored ProcessState before exited was closed.
		return cmd.ProcessState, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("cluster: wait for %s (pid %d) to exit: %w", n.Name, cmd.Process.Pid, ctx.Err())
	}
}

// Kill sends SIGKILL and waits for the process to exit.
func (n *Node) Kill() error {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.paused = false
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("cluster: kill %s: %w", n.Name, err)
	}
	<-exited
	return nil
}

// Restart starts the member again on the same data directory after Kill (or a crash).
func (n *Node) Restart() error {
	if n.Running() {
		return fmt.Errorf("cluster: restart %s: still running", n.Name)
	}
	var initial []string
	for _, m := range n.c.Nodes {
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	n.mu.Lock()
	state := n.state
	n.mu.Unlock()
	return n.startWith(strings.Join(initial, ","), state)
}

// Pause stops the process with SIGSTOP: it keeps its sockets but answers nothing.
func (n *Node) Pause() error { return n.signal(syscall.SIGSTOP, true) }

// Resume continues a paused process with SIGCONT.
func (n *Node) Resume() error { return n.signal(syscall.SIGCONT, false) }

func (n *Node) signal(sig syscall.Signal, paused bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return fmt.Errorf("cluster: signal %s: not started", n.Name)
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("cluster: signal %v to %s: %w", sig, n.Name, err)
	}
	n.paused = paused
	return nil
}

// Partition cuts every link between members of different groups, in both directions. Members
// in no group keep all their links. Partitions replace earlier ones.
func (c *Cluster) Partition(groups ...[]*Node) {
	c.HealNetwork()
	group := map[*Node]int{}
	for i, g := range groups {
		for _, n := range g {
			group[n] = i + 1
		}
	}
	for _, a := range c.Nodes {
		for _, b := range c.Nodes {
			if a != b && group[a] != 0 && group[b] != 0 && group[a] != group[b] {
				// b's connections into a are blackholed both ways; a's into b symmetrically when
				// the loop reaches (b, a).
				a.Proxy.Set(b.Name, proxy.Both, proxy.Blackhole)
			}
		}
	}
}

// CutOneWay makes to stop hearing from from, while from still hears to: the bytes from sends
// (on its own connections into to, and as replies on to's connections into from) are dropped.
func (c *Cluster) CutOneWay(from, to *Node) {
	to.Proxy.Set(from.Name, proxy.Up, proxy.Blackhole)
	from.Proxy.Set(to.Name, proxy.Down, proxy.Blackhole)
}

// Unidentified counts peer connections, over all proxies, whose dialing member could not be
// identified: per-member partition rules did not apply to them. Nonzero means partitions
// leaked (or a non-member connected to a peer port).
func (c *Cluster) Unidentified() int64 {
	var n int64
	for _, m := range c.Nodes {
		n += m.Proxy.Unidentified()
	}
	return n
}

// HealNetwork removes every proxy rule.
func (c *Cluster) HealNetwork() {
	for _, n := range c.Nodes {
		n.Proxy.Heal()
	}
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, n := range c.Nodes {
		eps = append(eps, n.ClientURL)
	}
	return eps
}

// Node returns the member named name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// WaitLeader polls Status on every member until one is leader as seen by itself, or ctx ends.
func (c *Cluster) WaitLeader(ctx context.Context) (*Node, error) {
	var last error
	for {
		name, err := LeaderOf(ctx, c.httpc, c.Endpoints())
		if err == nil {
			if n := c.nodeByURL(name); n != nil {
				return n, nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: no leader: %w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster) nodeByURL(u string) *Node {
	for _, n := range c.Nodes {
		if n.ClientURL == u {
			return n
		}
	}
	return nil
}

// Stop resumes paused members and stops every process (SIGTERM, then SIGKILL after a grace
// period), then closes the proxies. It is safe to call more than once.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.mu.Lock()
			cmd, exited := n.cmd, n.exited
			n.mu.Unlock()
			if cmd == nil {
				return
			}
			cmd.Process.Signal(syscall.SIGCONT)
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}()
	}
	wg.Wait()
	for _, n := range c.Nodes {
		if n.Proxy != nil {
			n.Proxy.Close()
		}
	}
}

// NewHTTPClient returns an HTTP client speaking HTTP/1.1 and cleartext HTTP/2 (prior knowledge,
// as caucus members serve h2c), with dial bounded by dialTimeout.
func NewHTTPClient(dialTimeout time.Duration) *http.Client {
	t := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: dialTimeout}).DialContext,
		MaxIdleConnsPerHost: 64,
	}
	t.Protocols = new(http.Protocols)
	t.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: t}
}

// Status queries one member's Maintenance.Status with a short deadline.
func Status(ctx context.Context, httpc *http.Client, endpoint string) (*caucusv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := caucusv1connect.NewMaintenanceClient(httpc, endpoint).Status(ctx, connect.NewRequest(&caucusv1.StatusRequest{}))
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", endpoint, err)
	}
	return resp.Msg, nil
}

// LeaderOf asks every endpoint for its status and returns the endpoint of the member that is
// leader in the highest term seen, as reported by that member itself (a deposed leader that
// has not noticed yet can only claim a lower term).
func LeaderOf(ctx context.Context, httpc *http.Client, endpoints []string) (string, error) {
	type st struct {
		ep string
		s  *caucusv1.StatusResponse
	}
	res := make([]st, len(endpoints))
	var wg sync.WaitGroup
	for i, ep := range endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s, err := Status(ctx, httpc, ep); err == nil {
				res[i] = st{ep, s}
			}
		}()
	}
	wg.Wait()
	best, bestTerm := "", uint64(0)
	for _, r := range res {
		if r.s == nil || r.s.GetHeader() == nil {
			continue
		}
		if r.s.Leader != 0 && r.s.Leader == r.s.GetHeader().GetMemberId() && r.s.RaftTerm >= bestTerm {
			best, bestTerm = r.ep, r.s.RaftTerm
		}
	}
	if best == "" {
		return "", errors.New("no member reports itself leader")
	}
	return best, nil
}

func host(hostPort string) string {
	h, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return hostPort
	}
	return h
}
