package kvbench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// System is a key-value store under test: how to start one member and how to talk to a cluster.
type System interface {
	Name() string
	// Command is the argv that starts one member; StartCluster appends the member flags, which
	// are etcd's (--name, --data-dir, --listen-client-urls, ...) for every system.
	Command() []string
	// Dial returns a client connected to endpoints (client URLs).
	Dial(endpoints []string) (KV, error)
	// Leader returns the client URL of the member that reports itself leader, or an error if
	// none does yet.
	Leader(ctx context.Context, endpoints []string) (string, error)
	// Members is how many members make a cluster (3 for the replicated systems).
	Members() int
	// Supports reports whether the system can run workloads of op.
	Supports(op Op) bool
}

// Member is one server process.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	DataDir   string
	LogPath   string
	cmd       *exec.Cmd
	done      chan struct{} // closed when the process exited
	waitErr   error
}

// Pid returns the member's process id.
func (m *Member) Pid() int { return m.cmd.Process.Pid }

// Cluster is the members of one system.
type Cluster struct {
	System  System
	Members []*Member
}

// Endpoints returns the members' client URLs.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.Members))
	for i, m := range c.Members {
		out[i] = m.ClientURL
	}
	return out
}

// freePorts reserves n loopback ports by listening on port 0 and releasing them together, so
// that the same port is not handed out twice. (Another process could grab one before the member
// binds it; on a benchmark machine that is unlikely and shows up as a member failing to start.)
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// StartCluster starts n members of sys under baseDir (one data directory and one log file per
// member) and waits until one of them reports being the leader.
func StartCluster(ctx context.Context, sys System, baseDir string, n int) (*Cluster, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	c := &Cluster{System: sys}
	var initial []string
	for i := range n {
		m := &Member{
			Name:      fmt.Sprintf("n%d", i+1),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		}
		m.DataDir = filepath.Join(baseDir, sys.Name()+"-"+m.Name)
		m.LogPath = m.DataDir + ".log"
		initial = append(initial, m.Name+"="+m.PeerURL)
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		if err := m.start(sys.Command(), strings.Join(initial, ",")); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.waitLeader(ctx, 60*time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (m *Member) start(argv []string, initialCluster string) error {
	if err := os.MkdirAll(filepath.Dir(m.DataDir), 0o755); err != nil {
		return err
	}
	logf, err := os.Create(m.LogPath)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	args := append(argv[1:len(argv):len(argv)],
		"--name", m.Name,
		"--data-dir", m.DataDir,
		"--listen-client-urls", m.ClientURL,
		"--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL,
		"--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", initialCluster,
		"--initial-cluster-state", "new",
	)
	m.cmd = exec.Command(argv[0], args...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	// Members must not outlive the benchmark if it is killed.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		return fmt.Errorf("kvbench: start %s: %w", m.Name, err)
	}
	m.done = make(chan struct{})
	go func() {
		m.waitErr = m.cmd.Wait()
		close(m.done)
	}()
	return nil
}

// Exited reports whether the member's process has exited.
func (m *Member) Exited() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// LogTail returns the last bytes of the member's log, for error reports.
func (m *Member) LogTail(n int) string {
	b, _ := os.ReadFile(m.LogPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (c *Cluster) waitLeader(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		for _, m := range c.Members {
			if m.Exited() {
				return fmt.Errorf("kvbench: %s member %s exited (%v); log tail:\n%s",
					c.System.Name(), m.Name, m.waitErr, m.LogTail(2000))
			}
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := c.System.Leader(sctx, c.Endpoints())
		cancel()
		if err == nil {
			return nil
		}
		lastErr = err
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("kvbench: %s cluster has no leader after %v: %w", c.System.Name(), timeout, lastErr)
}

// CPU returns the total CPU time consumed so far by the members.
func (c *Cluster) CPU() (time.Duration, error) {
	var sum time.Duration
	for _, m := range c.Members {
		d, err := ProcCPU(m.Pid())
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}

// RSS returns the members' total resident memory in bytes.
func (c *Cluster) RSS() (int64, error) {
	var sum int64
	for _, m := range c.Members {
		r, err := ProcRSS(m.Pid())
		if err != nil {
			return 0, err
		}
		sum += r
	}
	return sum, nil
}

// Alive returns an error naming the first member whose process exited.
func (c *Cluster) Alive() error {
	for _, m := range c.Members {
		if m.Exited() {
			return fmt.Errorf("kvbench: %s member %s exited: %v", c.System.Name(), m.Name, m.waitErr)
		}
	}
	return nil
}

// Stop terminates the members (SIGTERM, then SIGKILL after 10 s) and waits for them.
func (c *Cluster) Stop() error {
	var errs []error
	for _, m := range c.Members {
		if m.cmd == nil || m.cmd.Process == nil {
			continue
		}
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, m := range c.Members {
		if m.done == nil {
			continue
		}
		select {
		case <-m.done:
		case <-time.After(10 * time.Second):
			_ = m.cmd.Process.Kill()
			<-m.done
			errs = append(errs, fmt.Errorf("kvbench: %s member %s ignored SIGTERM", c.System.Name(), m.Name))
		}
	}
	return errors.Join(errs...)
}
