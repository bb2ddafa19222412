package fsm

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/raft"
)

// Chores are the proposals a member makes on its own, checked every ChoreInterval:
//
//   - every member, once it knows a leader: its own attributes (client URLs, the newest log
//     format version it applies, and its gossip address once every member applies version 4),
//     until the membership table shows them, as etcd publishes its attributes; clients and `member list` learn where to reach it from them;
//   - the leader only: a LeaseExpire command for leases whose TTL has passed on its clock; a
//     compaction when automatic compaction is due (autocompact.go); and, in a cluster whose log
//     holds no settings yet, its configured settings as the initial ones, once every member
//     applies log format version 2.
//
// Each is an ordinary command: its effect comes from the log, the same on every member. A chore
// that loses a race (a leadership change, a manual compaction) is refused or ignored at apply.

// DefaultChoreInterval is how often chores are checked; expired leases are revoked at most this
// late (etcd checks every 500 ms too).
const DefaultChoreInterval = 500 * time.Millisecond

// maxExpirePerCommand bounds the leases one LeaseExpire command revokes.
const maxExpirePerCommand = 1000

// ChoreConfig configures a member's chores.
type ChoreConfig struct {
	// ClientURLs are published in this member's attributes.
	ClientURLs []string
	// GossipAddr is published in this member's attributes once every member applies log
	// format version 4 ("" : none).
	GossipAddr string
	// AutoCompaction compacts old revisions automatically; the zero value disables it.
	AutoCompaction AutoCompaction
	// InitialSettings are proposed by the first leader of a cluster whose log holds no
	// settings (nil: none; the store's defaults then stay until an operator sets some).
	InitialSettings *logpb.Settings
	// Interval between checks (0: DefaultChoreInterval).
	Interval time.Duration
	// Now is the clock chores are measured and stamped with (nil: time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Chores runs a member's chores (see the package doc).
type Chores struct {
	cfg       ChoreConfig
	p         *Proposer
	store     *mvcc.Store
	log       *slog.Logger
	compact   *autoCompactor
	lastLease time.Time
}

// NewChores returns the chores of the member p proposes for, reading store.
func NewChores(p *Proposer, store *mvcc.Store, cfg ChoreConfig) *Chores {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultChoreInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	c := &Chores{cfg: cfg, p: p, store: store, log: lg.With("component", "chores")}
	if cfg.AutoCompaction.Mode != "" {
		c.compact = &autoCompactor{cfg: cfg.AutoCompaction}
	}
	return c
}

// Run checks the chores every interval until stop is closed, proposing each due command and
// waiting for it (bounded by timeout) before the next: a chore never piles up proposals while
// the cluster cannot commit. While a chore is pending that a new member or cluster waits on
// (its attributes, the initial settings), it checks every settleInterval instead, so that a
// new cluster applies its configured settings within moments of electing a leader.
func (c *Chores) Run(stop <-chan struct{}, timeout time.Duration) {
	t := time.NewTimer(0)
	defer t.Stop()
	start := time.Now()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		cmds := c.Due(c.cfg.Now(), c.p.Node().Status())
		settling := false
		for _, cmd := range cmds {
			switch cmd.Op.(type) {
			case *logpb.Command_MemberAttributes, *logpb.Command_Settings:
				settling = true
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			res, err := c.p.Propose(ctx, cmd)
			cancel()
			if err == nil {
				err = res.Err
			}
			if err != nil {
				c.log.Debug("chore proposal not applied", "op", opName(cmd), "err", err)
			} else if _, ok := cmd.Op.(*logpb.Command_Compaction); ok {
				c.log.Info("auto-compaction applied", "revision", cmd.GetCompaction().GetRevision(), "mode", c.cfg.AutoCompaction.Mode)
			}
			select {
			case <-stop:
				return
			default:
			}
		}
		// A member that knows no leader yet, or a cluster still waiting for its members'
		// attributes before it can set its initial settings, is settling too.
		if st := c.p.Node().Status(); st.SoftState.Lead == raft.None || c.waitsForSettings() {
			settling = true
		}
		if settling && time.Since(start) < maxSettle {
			t.Reset(settleInterval)
		} else {
			t.Reset(c.cfg.Interval)
		}
	}
}

// settleInterval is how often chores are checked while a new member or cluster settles, for at
// most maxSettle after the member starts (a cluster with a member of an older release settles
// only once it is upgraded).
const (
	settleInterval = 20 * time.Millisecond
	maxSettle      = 30 * time.Second
)

// waitsForSettings reports whether initial settings are configured but not replicated yet.
func (c *Chores) waitsForSettings() bool {
	return c.cfg.InitialSettings != nil && !c.store.HasSettings()
}

// Due returns the commands this member should propose now, given its Raft status. It changes
// only the chores' own schedule (auto-compaction samples), so tests and the simulator can call it
// with a clock of their own.
func (c *Chores) Due(now time.Time, st raft.Status) []*logpb.Command {
	if st.SoftState.Lead == raft.None {
		return nil
	}
	var out []*logpb.Command
	if a := c.attributes(st.ID); a != nil {
		out = append(out, &logpb.Command{Op: &logpb.Command_MemberAttributes{MemberAttributes: a}})
	}
	if st.SoftState.State != raft.StateLeader {
		return out
	}
	if u := c.initialSettings(); u != nil {
		out = append(out, &logpb.Command{Op: &logpb.Command_Settings{Settings: u}})
	}
	if c.compact != nil {
		if t := c.compact.target(now, c.store.Rev(), c.store.CompactRev()); t != 0 {
			out = append(out, &logpb.Command{Op: &logpb.Command_Compaction{Compaction: &logpb.CompactionRequest{Revision: t}}})
		}
	}
	if ids := c.store.ExpiredLeases(now, maxExpirePerCommand); len(ids) > 0 {
		out = append(out, &logpb.Command{Op: &logpb.Command_LeaseExpire{LeaseExpire: &logpb.LeaseExpire{Ids: ids}}})
	}
	return out
}

// attributes returns this member's attributes if the table does not show them yet (nil if it
// does, or if the member is not in the table).
//
// The gossip address needs version 4: it is published only once every member has published
// that it applies version 4, so a member first publishes its version, then (when the table says
// every member can apply it) its gossip address.
func (c *Chores) attributes(id raft.NodeID) *logpb.MemberAttributes {
	ms := c.store.Members()
	gossipAddr := ""
	if c.cfg.GossipAddr != "" && !slices.ContainsFunc(ms, func(m mvcc.Member) bool { return m.LogVersion < logpb.Version4 }) {
		gossipAddr = c.cfg.GossipAddr
	}
	for _, m := range ms {
		if raft.NodeID(m.ID) != id {
			continue
		}
		if slices.Equal(m.ClientURLs, c.cfg.ClientURLs) && m.LogVersion == logpb.MaxVersion && m.GossipAddr == gossipAddr {
			return nil
		}
		return &logpb.MemberAttributes{Id: m.ID, ClientUrls: c.cfg.ClientURLs, LogVersion: logpb.MaxVersion, GossipAddr: gossipAddr}
	}
	return nil
}

// initialSettings returns the initial settings update if the log holds none and every member
// applies version 2 (an older member would stop at the entry).
func (c *Chores) initialSettings() *logpb.SettingsUpdate {
	if c.cfg.InitialSettings == nil || c.store.HasSettings() {
		return nil
	}
	ms := c.store.Members()
	if len(ms) == 0 {
		return nil
	}
	for _, m := range ms {
		if m.LogVersion < logpb.Version2 {
			return nil
		}
	}
	return &logpb.SettingsUpdate{Initial: true, Set: c.cfg.InitialSettings}
}

func opName(c *logpb.Command) string {
	switch c.Op.(type) {
	case *logpb.Command_MemberAttributes:
		return "member-attributes"
	case *logpb.Command_Settings:
		return "initial-settings"
	case *logpb.Command_Compaction:
		return "auto-compaction"
	case *logpb.Command_LeaseExpire:
		return "lease-expire"
	}
	return "other"
}
