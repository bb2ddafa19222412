package gossipnet

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caucus/caucus/gossip"
)

// fastConfig is DefaultLocalConfig sped up for tests on loopback: a 200 ms period, and a crash
// declared within about 2 periods plus 2 * 3 periods of suspicion.
func fastConfig(name string) gossip.Config {
	c := gossip.DefaultLocalConfig(name, "127.0.0.1:0")
	c.TickInterval = 2 * time.Millisecond
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 60 * time.Millisecond
	c.SuspicionMaxMult = 2
	c.GossipInterval = 40 * time.Millisecond
	c.PushPullInterval = 2 * time.Second
	return c
}

// tdriver is a driver with a record of every event it delivered.
type tdriver struct {
	*Driver
	mu     sync.Mutex
	events []gossip.Event
	done   chan struct{}
}

func (td *tdriver) sawEvent(name string, t gossip.EventType) bool {
	td.mu.Lock()
	defer td.mu.Unlock()
	return slices.ContainsFunc(td.events, func(e gossip.Event) bool { return e.Member.Name == name && e.Type == t })
}

func start(t *testing.T, cfg Config) *tdriver {
	t.Helper()
	d, err := Start(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", cfg.Core.Name, err)
	}
	td := &tdriver{Driver: d, done: make(chan struct{})}
	sub := d.Subscribe(1024)
	go func() {
		defer close(td.done)
		for {
			select {
			case e := <-sub.C:
				td.mu.Lock()
				td.events = append(td.events, e)
				td.mu.Unlock()
			case <-d.stop:
				return
			}
		}
	}()
	t.Cleanup(func() { d.Abort(); <-td.done })
	return td
}

func startN(t *testing.T, n int, mod func(i int, c *Config)) []*tdriver {
	t.Helper()
	var ds []*tdriver
	for i := range n {
		cfg := Config{Core: fastConfig(fmt.Sprintf("n%d", i+1))}
		if mod != nil {
			mod(i, &cfg)
		}
		ds = append(ds, start(t, cfg))
	}
	for _, d := range ds[1:] {
		if err := d.Join(ds[0].Addr()); err != nil {
			t.Fatal(err)
		}
	}
	return ds
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronization
	}
}

func stateOf(d *tdriver, name string) string {
	m, ok := d.Member(name)
	if !ok {
		return ""
	}
	return m.State.String()
}

func allSee(ds []*tdriver, names []string, state string) bool {
	for _, d := range ds {
		for _, n := range names {
			if stateOf(d, n) != state {
				return false
			}
		}
	}
	return true
}

func names(ds []*tdriver) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Name())
	}
	return out
}

func TestJoinAliveAndCrashDetected(t *testing.T) {
	ds := startN(t, 4, nil)
	waitFor(t, 5*time.Second, "every driver sees every other alive", func() bool { return allSee(ds, names(ds), "alive") })

	// A crash: no leave announced. Bound: probed within 2 periods (4 members), suspicion at most
	// 2 * 3 periods, plus slack for a loaded machine.
	victim := ds[3]
	victim.Abort()
	rest := ds[:3]
	start := time.Now()
	waitFor(t, 6*time.Second, "the others declare the crashed member dead", func() bool {
		return allSee(rest, []string{victim.Name()}, "dead")
	})
	t.Logf("crash declared dead everywhere after %v", time.Since(start).Round(time.Millisecond))
	for _, d := range rest {
		if !d.sawEvent(victim.Name(), gossip.EventDead) {
			t.Errorf("%s delivered no dead event for %s", d.Name(), victim.Name())
		}
		if st := d.Stats(); st.MalformedDatagrams+st.MalformedStreams+st.Undecryptable != 0 {
			t.Errorf("%s refused messages in a clean run: %+v", d.Name(), st)
		}
	}
}

func TestGracefulLeave(t *testing.T) {
	ds := startN(t, 3, nil)
	waitFor(t, 5*time.Second, "all alive", func() bool { return allSee(ds, names(ds), "alive") })
	leaver := ds[2]
	t0 := time.Now()
	if err := leaver.Close(); err != nil {
		t.Fatal(err)
	}
	if time.Since(t0) >= leaver.cfg.LeaveTimeout {
		t.Errorf("Close waited the whole LeaveTimeout: the leave never spread")
	}
	waitFor(t, 3*time.Second, "the others see the member left", func() bool {
		return allSee(ds[:2], []string{leaver.Name()}, "left")
	})
	for _, d := range ds[:2] {
		if d.sawEvent(leaver.Name(), gossip.EventDead) || d.sawEvent(leaver.Name(), gossip.EventSuspect) {
			t.Errorf("%s suspected or declared dead a member that left gracefully", d.Name())
		}
	}
	if leaver.Members() != nil {
		t.Errorf("a closed driver still answers Members")
	}
}

func TestLabelMismatchNeverMerges(t *testing.T) {
	a := start(t, Config{Core: withLabel(fastConfig("a"), "cluster-a")})
	b := start(t, Config{Core: withLabel(fastConfig("b"), "cluster-b")})
	if err := b.Join(a.Addr()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "a counts b's join as another cluster's", func() bool {
		return a.Status().Counters.LabelMismatch > 0
	})
	for _, d := range []*tdriver{a, b} {
		if ms := d.Members(); len(ms) != 1 {
			t.Errorf("%s knows %d members across labels: %v", d.Name(), len(ms), ms)
		}
	}
	if a.Stats().MalformedStreams == 0 {
		t.Errorf("the refused join was not counted by the driver")
	}
}

func withLabel(c gossip.Config, label string) gossip.Config {
	c.Label = label
	return c
}

func newKey(t *testing.T) []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func mustRing(t *testing.T, keys ...[]byte) *Keyring {
	k, err := NewKeyring(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyringOrdersTalkUnrelatedRefused(t *testing.T) {
	oldK, newK, other := newKey(t), newKey(t), newKey(t)
	a := start(t, Config{Core: fastConfig("a"), Keyring: mustRing(t, oldK, newK)})
	b := start(t, Config{Core: fastConfig("b"), Keyring: mustRing(t, newK, oldK)})
	c := start(t, Config{Core: fastConfig("c"), Keyring: mustRing(t, other)})
	if err := b.Join(a.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := c.Join(a.Addr()); err != nil {
		t.Fatal(err)
	}
	ab := []*tdriver{a, b}
	waitFor(t, 5*time.Second, "a [old,new] and b [new,old] see each other alive", func() bool {
		return allSee(ab, names(ab), "alive")
	})
	waitFor(t, 3*time.Second, "a refuses c's join", func() bool { return a.Stats().Undecryptable > 0 })
	if stateOf(a, "c") != "" || stateOf(b, "c") != "" || len(c.Members()) != 1 {
		t.Errorf("a member with an unrelated key merged: a sees %q, b sees %q, c knows %d", stateOf(a, "c"), stateOf(b, "c"), len(c.Members()))
	}
	// An unsealed message is refused too.
	plain := start(t, Config{Core: fastConfig("p")})
	if err := plain.Join(b.Addr()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "b refuses an unencrypted join", func() bool { return b.Stats().Undecryptable > 0 })
	if stateOf(b, "p") != "" {
		t.Errorf("an unencrypted member merged")
	}
}

func writeKeys(t *testing.T, path string, keys ...[]byte) {
	var sb strings.Builder
	sb.WriteString("# gossip keyring: the first key is the primary\n")
	for _, k := range keys {
		sb.WriteString(base64.StdEncoding.EncodeToString(k) + "\n")
	}
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestKeyRotationWithReload runs the documented rotation on three members with keyring files:
// install the new key as secondary everywhere, make it primary, remove the old one; Reload after
// each step. Nobody is ever suspected, and at the end only the new key is accepted.
func TestKeyRotationWithReload(t *testing.T) {
	dir := t.TempDir()
	oldK, newK := newKey(t), newKey(t)
	files := make([]string, 3)
	ds := startN(t, 3, func(i int, c *Config) {
		files[i] = filepath.Join(dir, fmt.Sprintf("keys%d", i))
		writeKeys(t, files[i], oldK)
		c.KeyringFile = files[i]
	})
	waitFor(t, 5*time.Second, "all alive", func() bool { return allSee(ds, names(ds), "alive") })
	steps := [][][]byte{{oldK, newK}, {newK, oldK}, {newK}}
	for s, keys := range steps {
		// Each member reloads at its own time; one push-pull round (every member probes and
		// gossips) passes between steps, as an operator would wait.
		for i, d := range ds {
			writeKeys(t, files[i], keys...)
			if err := d.Reload(); err != nil {
				t.Fatalf("step %d: reload %s: %v", s, d.Name(), err)
			}
		}
		// Every member's next probes must be answered under the new ring.
		marks := make([]uint64, len(ds))
		for i, d := range ds {
			marks[i] = d.Status().Tick
		}
		waitFor(t, 3*time.Second, "a few periods pass", func() bool {
			for i, d := range ds {
				if d.Status().Tick < marks[i]+300 { // 3 periods of 100 ticks
					return false
				}
			}
			return true
		})
		if !allSee(ds, names(ds), "alive") {
			t.Fatalf("step %d (%d keys): a member is no longer alive somewhere", s, len(keys))
		}
	}
	for _, d := range ds {
		for _, n := range names(ds) {
			if d.sawEvent(n, gossip.EventSuspect) || d.sawEvent(n, gossip.EventDead) {
				t.Errorf("%s suspected %s during the rotation", d.Name(), n)
			}
		}
		if u := d.Stats().Undecryptable; u != 0 {
			t.Errorf("%s refused %d messages during the rotation", d.Name(), u)
		}
	}
	late := start(t, Config{Core: fastConfig("late-old"), Keyring: mustRing(t, oldK)})
	if err := late.Join(ds[0].Addr()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "the removed key is refused", func() bool { return ds[0].Stats().Undecryptable > 0 })
	fresh := start(t, Config{Core: fastConfig("fresh"), Keyring: mustRing(t, newK)})
	if err := fresh.Join(ds[0].Addr()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a member with the new key joins everyone", func() bool {
		return allSee(ds, []string{"fresh"}, "alive")
	})
	if stateOf(ds[1], "late-old") != "" {
		t.Errorf("a member with only the removed key merged")
	}

	// A bad keyring file leaves the keys in use.
	if err := os.WriteFile(files[0], []byte("not base64!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ds[0].Reload(); err == nil {
		t.Errorf("Reload accepted a malformed keyring file")
	}
	if got := ds[0].keys.Keys(); len(got) != 1 || string(got[0]) != string(newK) {
		t.Errorf("a failed Reload changed the keys")
	}
}

// TestPacketTroubleNotDeath blocks UDP between two drivers: streams still work, so each reports
// the other in Status.PacketTrouble and nobody is suspected.
func TestPacketTroubleNotDeath(t *testing.T) {
	ds := startN(t, 2, nil)
	waitFor(t, 5*time.Second, "both alive", func() bool { return allSee(ds, names(ds), "alive") })
	a, b := ds[0], ds[1]
	block := func(from, to *tdriver) {
		f := func(addr string) bool { return addr == to.Addr() }
		from.dropUDP.Store(&f)
	}
	block(a, b)
	block(b, a)
	waitFor(t, 5*time.Second, "a reports packet trouble with b", func() bool {
		st := a.Status()
		return len(st.PacketTrouble) == 1 && st.PacketTrouble[0].Name == b.Name()
	})
	if a.Stats().DatagramsDropped == 0 {
		t.Fatalf("the hook dropped nothing")
	}
	if s := stateOf(a, b.Name()); s != "alive" || a.sawEvent(b.Name(), gossip.EventSuspect) {
		t.Errorf("a member reachable over streams was suspected (state %q)", s)
	}
	if !strings.Contains(a.Status().PacketTrouble[0].String(), "UDP port") {
		t.Errorf("packet trouble does not name the UDP port: %s", a.Status().PacketTrouble[0])
	}
}

func TestKeyringRejectsBadKeys(t *testing.T) {
	if _, err := NewKeyring(make([]byte, 15)); err == nil {
		t.Errorf("a 15-byte key was accepted")
	}
	if _, err := NewKeyring(); err == nil {
		t.Errorf("an empty keyring was accepted")
	}
	k := mustRing(t, newKey(t))
	sealed := k.Seal(nil, []byte("hello"))
	if len(sealed) != 5+Overhead {
		t.Errorf("sealed %d bytes, want %d", len(sealed), 5+Overhead)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := k.Open(sealed); err == nil {
		t.Errorf("a tampered message opened")
	}
}

func TestCloseAloneDoesNotWait(t *testing.T) {
	d := start(t, Config{Core: fastConfig("solo"), LeaveTimeout: 10 * time.Second})
	t0 := time.Now()
	d.Close()
	if el := time.Since(t0); el > 5*time.Second {
		t.Errorf("Close of a member alone waited %v for a leave nobody can hear", el)
	}
}
