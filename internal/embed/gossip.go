package embed

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/caucus/caucus/gossip"
	"github.com/caucus/caucus/internal/gossipnet"
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/raft"
)

// Gossip profiles (--gossip-profile): the core's named timings.
const (
	GossipLAN   = "lan"
	GossipWAN   = "wan"
	GossipLocal = "local"
)

// GossipMeta is what a member announces in its gossip metadata.
type GossipMeta struct {
	ID         string   `json:"id"` // the Raft member id, hexadecimal as `member list` prints it
	ClientURLs []string `json:"client_urls,omitempty"`
}

// GossipName is a member's name in gossip: its Raft member id in hexadecimal, as the CLI prints it.
func GossipName(id uint64) string { return fmt.Sprintf("%x", id) }

func (c *Config) validateGossip() error {
	if c.GossipAddr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.GossipAddr); err != nil {
		return fmt.Errorf("embed: --gossip-addr %q is not host:port: %w", c.GossipAddr, err)
	}
	switch c.GossipProfile {
	case "", GossipLAN, GossipWAN, GossipLocal:
	default:
		return fmt.Errorf("embed: --gossip-profile %q must be lan, wan or local", c.GossipProfile)
	}
	for _, a := range c.GossipJoin {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("embed: --gossip-join address %q is not host:port: %w", a, err)
		}
	}
	if l := c.gossipLabel(); len(l) > gossip.MaxLabelBytes {
		return fmt.Errorf("embed: gossip label (--gossip-label, default the cluster token) is %d bytes, more than %d", len(l), gossip.MaxLabelBytes)
	}
	return nil
}

func (c *Config) gossipLabel() string {
	if c.GossipLabel != "" {
		return c.GossipLabel
	}
	return c.ClusterToken
}

func gossipCoreConfig(profile, name, addr string) gossip.Config {
	switch profile {
	case GossipWAN:
		return gossip.DefaultWANConfig(name, addr)
	case GossipLocal:
		return gossip.DefaultLocalConfig(name, addr)
	}
	return gossip.DefaultLANConfig(name, addr)
}

// startGossip starts this member's gossip driver (nil if gossip is off).
func startGossip(cfg Config, id raft.NodeID, clientURL string, lg *slog.Logger) (*gossipnet.Driver, error) {
	if cfg.GossipAddr == "" {
		return nil, nil
	}
	core := gossipCoreConfig(cfg.GossipProfile, GossipName(uint64(id)), cfg.GossipAddr)
	core.Label = cfg.gossipLabel()
	meta, err := json.Marshal(GossipMeta{ID: GossipName(uint64(id)), ClientURLs: []string{clientURL}})
	if err == nil && len(meta) > gossip.MaxMetaBytes {
		meta, err = json.Marshal(GossipMeta{ID: GossipName(uint64(id))}) // URLs too long: the id alone
	}
	if err != nil {
		return nil, fmt.Errorf("embed: gossip metadata: %w", err)
	}
	core.Meta = meta
	d, err := gossipnet.Start(gossipnet.Config{Core: core, KeyringFile: cfg.GossipKeyringFile, Logger: lg})
	if err != nil {
		return nil, fmt.Errorf("embed: start gossip on %s: %w", cfg.GossipAddr, err)
	}
	return d, nil
}

// Gossip returns the member's gossip driver (nil when gossip is off).
func (m *Member) Gossip() *gossipnet.Driver { return m.gossip }

// GossipAddr is the gossip address this member advertises ("" when gossip is off).
func (m *Member) GossipAddr() string {
	if m.gossip == nil {
		return ""
	}
	return m.gossip.Addr()
}

// GossipState is this member's gossip view of member id: alive, suspect, dead, left, or "" when
// unknown (gossip off, or not heard of yet).
func (m *Member) GossipState(id uint64) string {
	if m.gossip == nil {
		return ""
	}
	gm, ok := m.gossip.Member(GossipName(id))
	if !ok {
		return ""
	}
	return gm.State.String()
}

// ReloadGossipKeyring rereads --gossip-keyring-file (`caucus server` calls it on SIGHUP).
func (m *Member) ReloadGossipKeyring() error {
	if m.gossip == nil {
		return nil
	}
	return m.gossip.Reload()
}

// gossipJoinInterval is how often a member checks that it gossips with every Raft member.
func gossipJoinInterval(profile string) time.Duration {
	return 2 * gossipCoreConfig(profile, "x", "x:0").ProbeInterval
}

// joinGossip keeps this member's gossip connected: every interval it joins the gossip addresses
// that the Raft members published (from the membership table) of members it does not know or
// knows only as dead or left, and the --gossip-join addresses while it knows no other member.
func (m *Member) joinGossip(stop <-chan struct{}, store *mvcc.Store, extra []string, every time.Duration) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		t.Reset(every)
		known := map[string]gossip.State{}
		for _, gm := range m.gossip.Members() {
			known[gm.Name] = gm.State
		}
		var addrs []string
		for _, rm := range store.Members() {
			if rm.ID == uint64(m.ID) || rm.GossipAddr == "" {
				continue
			}
			if st, ok := known[GossipName(rm.ID)]; !ok || st == gossip.StateDead || st == gossip.StateLeft {
				addrs = append(addrs, rm.GossipAddr)
			}
		}
		if len(known) <= 1 {
			addrs = append(addrs, extra...)
		}
		slices.Sort(addrs)
		addrs = slices.Compact(addrs)
		if len(addrs) > 0 {
			m.log.Debug("gossip join", "addrs", addrs)
			if err := m.gossip.Join(addrs...); err != nil {
				return
			}
		}
	}
}
