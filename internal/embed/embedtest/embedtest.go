// Package embedtest starts real caucus members in the test's process, for the tests of packages
// built on top of a cluster (relays, examples). It is test support: nothing in the product
// imports it. (internal/embed's own tests have their own helpers: they cannot import a package
// that imports embed.)
package embedtest

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/embed"
	"github.com/caucus/caucus/internal/logpb"
)

// Quiet is a logger that discards everything.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Cluster is n real members in this process, on loopback, with short Raft timeouts.
type Cluster struct {
	t       testing.TB
	cfgs    []embed.Config
	Members []*embed.Member
}

// Start starts n members and waits until every member applies log format version 3 as every
// member sees it (writes with events are refused until then, as during a rolling upgrade). The
// members stop when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	var peers []net.Listener
	var initial []string
	for i := range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, l)
		initial = append(initial, fmt.Sprintf("n%d=http://%s", i+1, l.Addr()))
	}
	root := t.TempDir()
	for i := range n {
		cfg := embed.DefaultConfig(fmt.Sprintf("n%d", i+1))
		cl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg.DataDir = filepath.Join(root, cfg.Name)
		cfg.PeerListener, cfg.ClientListener = peers[i], cl
		cfg.ListenPeerURL, cfg.ListenClientURL = "http://"+peers[i].Addr().String(), "http://"+cl.Addr().String()
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.HeartbeatInterval, cfg.ElectionTimeout = 10*time.Millisecond, 100*time.Millisecond
		cfg.Logger = Quiet()
		c.cfgs = append(c.cfgs, cfg)
	}
	for _, cfg := range c.cfgs {
		m, err := embed.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.Members = append(c.Members, m)
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			if m != nil {
				m.Stop()
			}
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !c.ready(n) {
		if time.Now().After(deadline) {
			t.Fatal("cluster not ready (every member on log format version 3) within 10s")
		}
		time.Sleep(5 * time.Millisecond) // polling real members, which run on wall-clock time
	}
	return c
}

func (c *Cluster) ready(n int) bool {
	for _, m := range c.Members {
		ms := m.FSM.Store().Members()
		if len(ms) != n {
			return false
		}
		for _, mm := range ms {
			if mm.LogVersion < logpb.Version3 {
				return false
			}
		}
	}
	return true
}

// Endpoints returns the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, cfg := range c.cfgs {
		eps = append(eps, cfg.ListenClientURL)
	}
	return eps
}

// Bounce stops member i and starts it again on its data directory and addresses (a kill and
// restart: the member's log is synced, so this is what kill -9 leaves of it).
func (c *Cluster) Bounce(i int) {
	c.t.Helper()
	c.Members[i].Stop()
	cfg := c.cfgs[i]
	pl, err := net.Listen("tcp", strings.TrimPrefix(cfg.ListenPeerURL, "http://"))
	if err != nil {
		c.t.Fatal(err)
	}
	cl, err := net.Listen("tcp", strings.TrimPrefix(cfg.ListenClientURL, "http://"))
	if err != nil {
		c.t.Fatal(err)
	}
	cfg.PeerListener, cfg.ClientListener = pl, cl
	m, err := embed.Start(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.Members[i] = m
}
