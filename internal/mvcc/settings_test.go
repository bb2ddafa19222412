package mvcc

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/logpb"
)

func settingsCmd(u *logpb.SettingsUpdate) *logpb.Command {
	return &logpb.Command{Op: &logpb.Command_Settings{Settings: u}}
}

// TestReplicatedSettings walks the life of the replicated settings: the store applies with
// Options.Limits until the log sets them; the initial update applies once; a later update
// changes what it sets and keeps the rest; an invalid one is refused deterministically and
// changes nothing; the values survive a reopen and travel in a snapshot.
func TestReplicatedSettings(t *testing.T) {
	h := newHarness(t, Options{Limits: Limits{MaxValueBytes: 8}})
	if h.s.HasSettings() {
		t.Fatal("a new store has replicated settings")
	}
	wantErr(t, h.cmd(putCmd("k", "123456789")).Err, ErrValueTooLarge)

	h.ok(settingsCmd(&logpb.SettingsUpdate{Initial: true, Set: &logpb.Settings{MaxValueBytes: 16}}))
	if !h.s.HasSettings() || h.s.Limits().MaxValueBytes != 16 {
		t.Fatalf("after the initial update: has=%v limits=%+v", h.s.HasSettings(), h.s.Limits())
	}
	h.put("k", "123456789") // 9 bytes: allowed now
	// A second initial update (a late proposal of another first leader) changes nothing.
	h.ok(settingsCmd(&logpb.SettingsUpdate{Initial: true, Set: &logpb.Settings{MaxValueBytes: 4}}))
	if got := h.s.Limits().MaxValueBytes; got != 16 {
		t.Fatalf("a repeated initial update changed MaxValueBytes to %d", got)
	}
	h.ok(settingsCmd(&logpb.SettingsUpdate{Set: &logpb.Settings{MaxTxnOps: 3}}))
	if l := h.s.Limits(); l.MaxTxnOps != 3 || l.MaxValueBytes != 16 {
		t.Fatalf("update of MaxTxnOps: limits=%+v, want MaxTxnOps 3 and MaxValueBytes kept at 16", l)
	}
	// Settings that cannot work are refused as a whole, the same way on every member.
	r := h.cmd(settingsCmd(&logpb.SettingsUpdate{Set: &logpb.Settings{MaxTxnOps: 5, SessionRetryWindowNanos: int64(2 * time.Hour)}}))
	wantErr(t, r.Err, ErrInvalidArgument)
	if !strings.Contains(r.Err.Error(), "SessionRetryWindow") {
		t.Fatalf("refusal does not name the setting: %v", r.Err)
	}
	if got := h.s.Limits().MaxTxnOps; got != 3 {
		t.Fatalf("a refused update changed MaxTxnOps to %d", got)
	}
	// A batch sees its own update at once: a put after the update in the same batch obeys it.
	res := h.batch(settingsCmd(&logpb.SettingsUpdate{Set: &logpb.Settings{MaxValueBytes: 2}}), putCmd("k2", "abc"))
	wantErr(t, res[1].Err, ErrValueTooLarge)

	// Reopen: the replicated values win over Options.Limits.
	path := h.s.path
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path, Options{NoSync: true, Limits: Limits{MaxValueBytes: 8}})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if l := s2.Limits(); !s2.HasSettings() || l.MaxValueBytes != 2 || l.MaxTxnOps != 3 {
		t.Fatalf("after reopen: has=%v limits=%+v", s2.HasSettings(), l)
	}
	// A store restored from a snapshot of it takes its settings too.
	s3, err := Open(filepath.Join(t.TempDir(), "kv.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	var buf strings.Builder
	if _, err := s2.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	if err := s3.Restore(strings.NewReader(buf.String())); err != nil {
		t.Fatal(err)
	}
	if l := s3.Limits(); !s3.HasSettings() || l.MaxValueBytes != 2 {
		t.Fatalf("after restore: has=%v limits=%+v", s3.HasSettings(), l)
	}
}
