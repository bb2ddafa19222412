package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/caucus/caucus/internal/embed"
)

// runDev starts a local cluster of in-process members on 127.0.0.1 with real TCP and real disk.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("caucus dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	members := fs.Int("members", 3, "number of members")
	dir := fs.String("data-dir", "", "directory for the members' data (default: a new temporary directory, removed on exit)")
	basePort := fs.Int("base-port", 2379, "first client port; member i (from 0) serves clients on base+2i, peers on base+2i+1 and gossip (UDP and TCP) on base+20+i (0: any free ports)")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *members < 1 || *members > 9 {
		return fmt.Errorf("dev: --members %d must be between 1 and 9", *members)
	}
	var lvl slog.LevelVar
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("dev: --log-level: %w", err)
	}
	lg := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: &lvl}))
	root := *dir
	if root == "" {
		tmp, err := os.MkdirTemp("", "caucus-dev-")
		if err != nil {
			return fmt.Errorf("dev: temporary directory: %w", err)
		}
		root = tmp
		defer os.RemoveAll(tmp)
	}
	// Every member's listeners are opened before any member starts, so that the first members'
	// dials to the later ones wait in the accept backlog instead of failing (and warning) while
	// those start, and so that a port found free stays ours.
	type listeners struct{ client, peer net.Listener }
	ls := make([]listeners, *members)
	defer func() {
		for _, l := range ls {
			for _, x := range []net.Listener{l.client, l.peer} {
				if x != nil {
					x.Close() // a no-op once the member owning it has stopped
				}
			}
		}
	}()
	for i := range ls {
		client, peer := "127.0.0.1:0", "127.0.0.1:0"
		if *basePort != 0 {
			client, peer = fmt.Sprintf("127.0.0.1:%d", *basePort+2*i), fmt.Sprintf("127.0.0.1:%d", *basePort+2*i+1)
		}
		var err error
		if ls[i].client, err = listen(client); err != nil {
			return err
		}
		if ls[i].peer, err = listen(peer); err != nil {
			return err
		}
	}
	type addrs struct{ client, peer string }
	as := make([]addrs, *members)
	for i, l := range ls {
		as[i] = addrs{l.client.Addr().String(), l.peer.Addr().String()}
	}
	var initial []string
	for i, a := range as {
		initial = append(initial, fmt.Sprintf("n%d=http://%s", i+1, a.peer))
	}
	var running []*embed.Member
	defer func() {
		// Members stopped one after the other see their peers go away; that is the point of
		// stopping, not something to warn about.
		lvl.Set(max(lvl.Level(), slog.LevelError))
		for _, m := range running {
			m.Stop()
		}
	}()
	var endpoints []string
	for i, a := range as {
		cfg := embed.DefaultConfig(fmt.Sprintf("n%d", i+1))
		cfg.DataDir = filepath.Join(root, cfg.Name)
		cfg.ListenClientURL = "http://" + a.client
		cfg.ListenPeerURL = "http://" + a.peer
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.ClusterToken = "caucus-dev"
		cfg.ClientListener, cfg.PeerListener = ls[i].client, ls[i].peer
		cfg.Logger = lg
		// Gossip with the local profile on a port of each member's own; the first member is
		// the others' way in (they would also find each other through the log).
		cfg.GossipProfile = embed.GossipLocal
		cfg.GossipAddr = "127.0.0.1:0"
		if *basePort != 0 {
			cfg.GossipAddr = fmt.Sprintf("127.0.0.1:%d", *basePort+20+i)
		}
		if i > 0 {
			cfg.GossipJoin = []string{running[0].GossipAddr()}
		}
		m, err := embed.Start(cfg)
		if err != nil {
			return fmt.Errorf("dev: start %s: %w", cfg.Name, err)
		}
		running = append(running, m)
		endpoints = append(endpoints, m.ClientURL)
	}
	eps := strings.Join(endpoints, ",")
	fmt.Fprintf(stdout, `caucus dev: %d members running (data in %s)

  endpoints: %s

Try, in another terminal:
  export CAUCUS_ENDPOINTS=%s
  go run ./cmd/caucus put greeting hello
  go run ./cmd/caucus get greeting
  go run ./cmd/caucus member list
  go run ./cmd/caucus status
  curl -s -X POST -H 'Content-Type: application/json' -d '{"key":"Z3JlZXRpbmc="}' %s/caucus.v1.KV/Range

Press Ctrl-C to stop.
`, *members, root, eps, eps, endpoints[0])
	select {
	case <-ctx.Done():
	case <-running[0].Done():
	}
	fmt.Fprintln(stdout, "caucus dev: stopping")
	return nil
}

func listen(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dev: listen on %s (choose other ports with --base-port, or 0 for any): %w", addr, err)
	}
	return l, nil
}
