// Package nemesis injects faults into a caucus cluster while a workload runs: process crashes
// (kill -9 and restart on the same data), pauses (SIGSTOP/SIGCONT), network partitions, and
// membership changes, aimed at the leader, a follower, or a majority.
//
// A Backend knows how to do each primitive to a named member: Processes drives a local
// cluster.Cluster (partitions through its peer proxies), Docker drives containers with the
// docker CLI (kill/start, pause/unpause, network disconnect/connect). A Nemesis turns a fault
// kind and a target into calls on the Backend and records what it did; Schedule alternates
// healthy and faulty periods until its context ends.
//
// # Invariants
//
//   - Every injected fault is healed: Heal undoes all faults the Nemesis injected, and the
//     schedule calls it at the end of each fault period and once more on exit, even when the
//     context was canceled, so a run never ends with a member down, paused or cut off.
//   - Faults are recorded with the history recorder's monotonic clock, so availability can be
//     attributed to phases exactly.
//   - Target selection asks the cluster itself (Maintenance.Status) who leads, at injection time.
package nemesis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caucus/caucus/internal/check/cluster"
)

// Backend performs fault primitives on named members.
type Backend interface {
	// Members are the names of the members, and Endpoint maps one to its client URL.
	Members() []string
	Endpoint(name string) string
	Kill(ctx context.Context, name string) error
	Restart(ctx context.Context, name string) error
	Pause(ctx context.Context, name string) error
	Resume(ctx context.Context, name string) error
	// Partition isolates the members of cut from the others (both directions). Backends that
	// cannot express groups (Docker) isolate each member of cut on its own, which is stronger.
	Partition(ctx context.Context, cut []string) error
	// HealNetwork undoes Partition.
	HealNetwork(ctx context.Context) error
}

// Kind is a fault kind.
type Kind string

const (
	Kill      Kind = "kill"
	Pause     Kind = "pause"
	Partition Kind = "partition"
	// Member removes a follower from the membership and adds it back under load (process
	// backend only; see Membership).
	Member Kind = "member"
)

// ParseTargets parses "leader,follower,majority" ("" = all three).
func ParseTargets(s string) ([]Target, error) {
	var out []Target
	for _, f := range strings.Split(s, ",") {
		t := Target(strings.TrimSpace(f))
		switch t {
		case "":
		case Leader, Follower, Majority:
			out = append(out, t)
		default:
			return nil, fmt.Errorf("nemesis: unknown target %q (want leader, follower, majority)", f)
		}
	}
	return out, nil
}

// ParseKinds parses "kill,pause,partition" ("none" or "" = no faults).
func ParseKinds(s string) ([]Kind, error) {
	if s == "" || s == "none" {
		return nil, nil
	}
	var out []Kind
	for _, f := range strings.Split(s, ",") {
		k := Kind(strings.TrimSpace(f))
		switch k {
		case Kill, Pause, Partition, Member:
			out = append(out, k)
		default:
			return nil, fmt.Errorf("nemesis: unknown fault %q (want kill, pause, partition, member)", f)
		}
	}
	return out, nil
}

// Target selects which members a fault hits.
type Target string

const (
	Leader   Target = "leader"
	Follower Target = "follower"
	// Majority is the leader plus enough followers to make a majority: the rest cannot elect.
	Majority Target = "majority"
)

// Event is one fault injection, with the recorder's timestamps.
type Event struct {
	Kind    Kind     `json:"kind"`
	Target  Target   `json:"target"`
	Members []string `json:"members"`
	Start   int64    `json:"start"`
	End     int64    `json:"end"` // 0 while active
	Error   string   `json:"error,omitempty"`
}

func (e Event) String() string {
	return fmt.Sprintf("%s %s %v", e.Kind, e.Target, e.Members)
}

// Nemesis injects and heals faults through a Backend.
type Nemesis struct {
	b     Backend
	httpc *http.Client
	now   func() int64
	rng   *rand.Rand

	mu     sync.Mutex
	active []active
	events []Event
	// Membership changes are only possible on backends that can start a fresh member.
	member Membership
}

type active struct {
	ev   int
	heal func(context.Context) error
}

// Membership is implemented by backends that support removing and re-adding a member.
type Membership interface {
	// RemoveAndReadd removes name from the cluster and adds it back as a new member with
	// empty data; it returns once the new member's process is started.
	RemoveAndReadd(ctx context.Context, name string) error
}

// New returns a Nemesis on b. now is the history clock; seed makes target choices repeatable.
func New(b Backend, now func() int64, seed uint64) *Nemesis {
	n := &Nemesis{b: b, httpc: cluster.NewHTTPClient(time.Second), now: now, rng: rand.New(rand.NewPCG(seed, seed^0x5eed))}
	if m, ok := b.(Membership); ok {
		n.member = m
	}
	return n
}

// Events returns the faults injected so far.
func (n *Nemesis) Events() []Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.events)
}

// Active describes the faults currently injected, for progress lines.
func (n *Nemesis) Active() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var s []string
	for _, a := range n.active {
		s = append(s, n.events[a.ev].String())
	}
	return strings.Join(s, "; ")
}

// resolve picks the members a target names. The leader is asked of the cluster; without one
// (an election is running) Leader falls back to a random member, which still exercises the
// fault, and the event records who was hit.
func (n *Nemesis) resolve(ctx context.Context, t Target, exclude []string) ([]string, error) {
	var eps []string
	for _, m := range n.b.Members() {
		eps = append(eps, n.b.Endpoint(m))
	}
	leader := ""
	if ep, err := cluster.LeaderOf(ctx, n.httpc, eps); err == nil {
		for _, m := range n.b.Members() {
			if n.b.Endpoint(m) == ep {
				leader = m
			}
		}
	}
	var candidates []string
	for _, m := range n.b.Members() {
		if !slices.Contains(exclude, m) {
			candidates = append(candidates, m)
		}
	}
	if len(candidates) == 0 {
		return nil, errors.New("nemesis: no member left to target")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	var followers []string
	for _, m := range candidates {
		if m != leader {
			followers = append(followers, m)
		}
	}
	n.rng.Shuffle(len(followers), func(i, j int) { followers[i], followers[j] = followers[j], followers[i] })
	switch t {
	case Leader:
		if leader != "" && slices.Contains(candidates, leader) {
			return []string{leader}, nil
		}
		return []string{candidates[n.rng.IntN(len(candidates))]}, nil
	case Follower:
		if len(followers) == 0 {
			return nil, errors.New("nemesis: no follower to target")
		}
		return followers[:1], nil
	case Majority:
		need := len(n.b.Members())/2 + 1
		var out []string
		if leader != "" && slices.Contains(candidates, leader) {
			out = append(out, leader)
		}
		for _, f := range followers {
			if len(out) < need {
				out = append(out, f)
			}
		}
		sort.Strings(out)
		return out, nil
	}
	return nil, fmt.Errorf("nemesis: unknown target %q", t)
}

// Inject injects one fault of kind k at target t, avoiding members already faulted, and
// records it. The fault stays until Heal.
func (n *Nemesis) Inject(ctx context.Context, k Kind, t Target) (Event, error) {
	n.mu.Lock()
	var busy []string
	for _, a := range n.active {
		busy = append(busy, n.events[a.ev].Members...)
	}
	n.mu.Unlock()
	members, err := n.resolve(ctx, t, busy)
	if err != nil {
		return Event{}, err
	}
	ev := Event{Kind: k, Target: t, Members: members, Start: n.now()}
	var heal func(context.Context) error
	var injErr error
	switch k {
	case Kill:
		for _, m := range members {
			if injErr = n.b.Kill(ctx, m); injErr != nil {
				break
			}
		}
		heal = func(ctx context.Context) error {
			var errs []error
			for _, m := range members {
				errs = append(errs, n.b.Restart(ctx, m))
			}
			return errors.Join(errs...)
		}
	case Pause:
		for _, m := range members {
			if injErr = n.b.Pause(ctx, m); injErr != nil {
				break
			}
		}
		heal = func(ctx context.Context) error {
			var errs []error
			for _, m := range members {
				errs = append(errs, n.b.Resume(ctx, m))
			}
			return errors.Join(errs...)
		}
	case Partition:
		injErr = n.b.Partition(ctx, members)
		heal = n.b.HealNetwork
	case Member:
		if n.member == nil {
			return Event{}, errors.New("nemesis: this backend cannot change membership")
		}
		if len(members) != 1 || t != Follower {
			return Event{}, errors.New("nemesis: membership changes target one follower")
		}
		// The change completes within Inject (remove, then re-add and start); there is nothing
		// to heal afterwards.
		// Bounded: a membership change that cannot complete (no quorum, a server bug) must
		// not stall the schedule for the rest of the run.
		mctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		injErr = n.member.RemoveAndReadd(mctx, members[0])
		cancel()
		heal = func(context.Context) error { return nil }
	default:
		return Event{}, fmt.Errorf("nemesis: unknown fault kind %q", k)
	}
	if injErr != nil {
		ev.Error = injErr.Error()
	}
	n.mu.Lock()
	n.events = append(n.events, ev)
	n.active = append(n.active, active{ev: len(n.events) - 1, heal: heal})
	n.mu.Unlock()
	if injErr != nil {
		return ev, fmt.Errorf("nemesis: inject %v: %w", ev, injErr)
	}
	return ev, nil
}

// Heal undoes every active fault, most recent first, and records when each ended.
func (n *Nemesis) Heal(ctx context.Context) error {
	n.mu.Lock()
	act := n.active
	n.active = nil
	n.mu.Unlock()
	var errs []error
	for i := len(act) - 1; i >= 0; i-- {
		err := act[i].heal(ctx)
		n.mu.Lock()
		n.events[act[i].ev].End = n.now()
		if err != nil {
			n.events[act[i].ev].Error = strings.TrimPrefix(n.events[act[i].ev].Error+"; heal: "+err.Error(), "; ")
			errs = append(errs, fmt.Errorf("nemesis: heal %v: %w", n.events[act[i].ev], err))
		}
		n.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Step is one fault of a schedule.
type Step struct {
	Kind   Kind
	Target Target
}

// Plan lists the fault steps a schedule cycles through. Alone, each kind is aimed in turn at
// the leader, a follower and a majority (membership changes only at a follower); combined,
// every step injects two kinds at once (e.g. a partition of the leader while a follower is
// paused), which is where quorum is lost and recovery paths overlap.
// targets restricts the single-fault steps to those targets (nil = leader, follower, majority).
func Plan(kinds []Kind, combined bool, only []Target) [][]Step {
	if len(only) == 0 {
		only = []Target{Leader, Follower, Majority}
	}
	targets := func(k Kind) []Target {
		if k == Member {
			return []Target{Follower}
		}
		return only
	}
	var plan [][]Step
	if !combined || len(kinds) < 2 {
		for _, t := range only {
			for _, k := range kinds {
				if slices.Contains(targets(k), t) {
					plan = append(plan, []Step{{k, t}})
				}
			}
		}
		return plan
	}
	for i, a := range kinds {
		for _, b := range kinds[i+1:] {
			if a == Member || b == Member {
				continue
			}
			plan = append(plan, []Step{{a, Leader}, {b, Follower}}, []Step{{b, Leader}, {a, Follower}})
		}
	}
	return plan
}

// Schedule runs plan in a loop until ctx ends: healthy for quiet, then one step's faults for
// fault, then heal. The first period is healthy, so the workload has a baseline. Injection
// errors are logged and the schedule goes on (a fault on an already-dead member is not a
// reason to stop the test); heal errors are returned at the end.
func (n *Nemesis) Schedule(ctx context.Context, plan [][]Step, quiet, fault time.Duration, logf func(string, ...any)) error {
	var healErrs []error
	for i := 0; len(plan) > 0; i++ {
		if !wait(ctx, quiet) {
			break
		}
		for _, s := range plan[i%len(plan)] {
			ev, err := n.Inject(ctx, s.Kind, s.Target)
			if err != nil {
				logf("nemesis: %v", err)
				continue
			}
			logf("nemesis: injected %v", ev)
		}
		wait(ctx, fault)
		hctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := n.Heal(hctx); err != nil {
			logf("nemesis: %v", err)
			healErrs = append(healErrs, err)
		} else {
			logf("nemesis: healed")
		}
		cancel()
	}
	<-ctx.Done()
	// Heal with a fresh context: the run's context is what ended the schedule, possibly in the
	// middle of a fault period or an injection.
	hctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Heal(hctx); err != nil {
		healErrs = append(healErrs, err)
	}
	return errors.Join(healErrs...)
}

// wait sleeps for d unless ctx ends first; it reports whether the full time passed. This is
// scheduling (how long a fault lasts), not synchronization.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
