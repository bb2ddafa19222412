package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/embed"
	"github.com/caucus/caucus/internal/watch"
)

// TestServerFlagPrecedence: a flag on the command line wins over the environment, which wins over
// the config file, which wins over the default; every flag is reachable from all three.
func TestServerFlagPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "caucus.json")
	if err := os.WriteFile(file, []byte(`{"name": "from-file", "session-ttl": "20m", "max-sessions": 7, "session-retry-window": "1m"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"CAUCUS_SESSION_TTL":  "30m",
		"CAUCUS_MAX_SESSIONS": "9",
	}
	cfg, _, err := parseServerFlags([]string{"--config-file", file, "--max-sessions", "11"}, io.Discard, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "from-file" {
		t.Errorf("name = %q, want the config file's", cfg.Name)
	}
	if cfg.Limits.SessionTTL != 30*time.Minute {
		t.Errorf("session TTL = %v, want the environment's 30m over the file's 20m", cfg.Limits.SessionTTL)
	}
	if cfg.Limits.MaxSessions != 11 {
		t.Errorf("max sessions = %d, want the flag's 11 over the environment's and the file's", cfg.Limits.MaxSessions)
	}
	if cfg.Limits.SessionRetryWindow != time.Minute {
		t.Errorf("retry window = %v, want the file's 1m", cfg.Limits.SessionRetryWindow)
	}
	if _, _, err := parseServerFlags([]string{"--session-ttl", "soon"}, io.Discard, func(string) string { return "" }); err == nil {
		t.Error("an unparsable duration was accepted")
	}
	// The commit-broadcast delay reaches the member's configuration, from the environment too.
	cfg, _, err = parseServerFlags(nil, io.Discard, func(k string) string {
		return map[string]string{"CAUCUS_COMMIT_BROADCAST_DELAY": "-1ns"}[k]
	})
	if err != nil || cfg.CommitBroadcastDelay != -time.Nanosecond {
		t.Errorf("commit broadcast delay from the environment = %v (%v), want -1ns (announce at once)", cfg.CommitBroadcastDelay, err)
	}
	// Deferred leader sync is off unless asked for, by flag or environment.
	cfg, _, err = parseServerFlags(nil, io.Discard, func(string) string { return "" })
	if err != nil || cfg.LeaderSyncDelay != 0 {
		t.Errorf("default leader sync delay = %v (%v), want 0 (the leader syncs first)", cfg.LeaderSyncDelay, err)
	}
	cfg, _, err = parseServerFlags(nil, io.Discard, func(k string) string {
		return map[string]string{"CAUCUS_LEADER_SYNC_DELAY": "2ms"}[k]
	})
	if err != nil || cfg.LeaderSyncDelay != 2*time.Millisecond {
		t.Errorf("CAUCUS_LEADER_SYNC_DELAY = %v (%v), want 2ms", cfg.LeaderSyncDelay, err)
	}
	// So does the log directory (etcd's --wal-dir), which defaults to the data directory's.
	cfg, _, err = parseServerFlags([]string{"--wal-dir", "/disks/log/n1"}, io.Discard, func(string) string { return "" })
	if err != nil || cfg.WALDir != "/disks/log/n1" {
		t.Errorf("--wal-dir = %q (%v), want /disks/log/n1", cfg.WALDir, err)
	}
	cfg, _, err = parseServerFlags([]string{"--quota-backend-bytes", "8589934592"}, io.Discard, func(string) string { return "" })
	if err != nil || cfg.QuotaBackendBytes != 8<<30 {
		t.Errorf("--quota-backend-bytes = %d (%v), want 8 GiB", cfg.QuotaBackendBytes, err)
	}
	cfg, _, err = parseServerFlags(nil, io.Discard, func(k string) string { return map[string]string{"CAUCUS_WAL_DIR": "/disks/log"}[k] })
	if err != nil || cfg.WALDir != "/disks/log" {
		t.Errorf("CAUCUS_WAL_DIR = %q (%v), want /disks/log", cfg.WALDir, err)
	}
}

// TestAutoCompactionFlags: the retention is read in the unit of its mode, as etcd reads it.
func TestAutoCompactionFlags(t *testing.T) {
	parse := func(args ...string) (embed.Config, error) {
		cfg, _, err := parseServerFlags(args, io.Discard, func(string) string { return "" })
		return cfg, err
	}
	cfg, err := parse("--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1")
	if err != nil || cfg.AutoCompaction.Period != time.Hour {
		t.Errorf("periodic 1 = %v, %v; want 1h (bare numbers are hours)", cfg.AutoCompaction.Period, err)
	}
	cfg, err = parse("--auto-compaction-mode", "periodic", "--auto-compaction-retention", "30m")
	if err != nil || cfg.AutoCompaction.Period != 30*time.Minute {
		t.Errorf("periodic 30m = %v, %v", cfg.AutoCompaction.Period, err)
	}
	cfg, err = parse("--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000")
	if err != nil || cfg.AutoCompaction.Retention != 1000 {
		t.Errorf("revision 1000 = %d, %v", cfg.AutoCompaction.Retention, err)
	}
	for _, bad := range [][]string{
		{"--auto-compaction-mode", "revision"},
		{"--auto-compaction-retention", "5"},
		{"--auto-compaction-mode", "revision", "--auto-compaction-retention", "1h"},
		{"--auto-compaction-mode", "periodic", "--auto-compaction-retention", "soon"},
		{"--auto-compaction-mode", "weekly", "--auto-compaction-retention", "5"},
	} {
		if _, err := parse(bad...); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestWatchFlags: the watch limits are this member's flags, with the package's defaults, and
// values that would switch a safeguard off are refused.
func TestWatchFlags(t *testing.T) {
	noEnv := func(string) string { return "" }
	cfg, _, err := parseServerFlags([]string{"--max-watchers", "50", "--watch-stall-timeout", "5s"}, io.Discard, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Watch.MaxWatchers != 50 || cfg.Watch.StallTimeout != 5*time.Second || cfg.Watch.ProgressInterval != watch.DefaultProgressInterval {
		t.Fatalf("watch options %+v", cfg.Watch)
	}
	for _, bad := range [][]string{{"--max-watchers", "0"}, {"--watch-progress-interval", "-1s"}, {"--watch-stall-timeout", "0s"}, {"--watch-buffer-bytes", "0"}} {
		if _, _, err := parseServerFlags(bad, io.Discard, noEnv); err == nil || !strings.Contains(err.Error(), "must be positive") {
			t.Errorf("%v: %v, want a refusal", bad, err)
		}
	}
}

func TestServerGossipFlags(t *testing.T) {
	noEnv := func(string) string { return "" }
	cfg, _, err := parseServerFlags([]string{"--listen-peer-urls", "http://10.1.2.3:2380"}, io.Discard, noEnv)
	if err != nil || cfg.GossipAddr != "10.1.2.3:7946" || cfg.GossipProfile != "lan" || cfg.GossipJoin != nil {
		t.Fatalf("defaults: addr %q profile %q join %v, err %v; want 10.1.2.3:7946, lan, none", cfg.GossipAddr, cfg.GossipProfile, cfg.GossipJoin, err)
	}
	cfg, _, err = parseServerFlags([]string{"--gossip-addr", "off"}, io.Discard, noEnv)
	if err != nil || cfg.GossipAddr != "" {
		t.Fatalf("--gossip-addr=off: addr %q, err %v", cfg.GossipAddr, err)
	}
	cfg, _, err = parseServerFlags([]string{"--gossip-addr", "127.0.0.1:8000", "--gossip-join", "a:1, b:2", "--gossip-profile", "wan",
		"--gossip-label", "blue", "--gossip-keyring-file", "/etc/caucus/keys"}, io.Discard, noEnv)
	if err != nil || cfg.GossipAddr != "127.0.0.1:8000" || strings.Join(cfg.GossipJoin, ",") != "a:1,b:2" || cfg.GossipProfile != "wan" ||
		cfg.GossipLabel != "blue" || cfg.GossipKeyringFile != "/etc/caucus/keys" {
		t.Fatalf("explicit gossip flags: %+v, %v", cfg, err)
	}
	if _, _, err := parseServerFlags([]string{"--listen-peer-urls", "http://0.0.0.0:2380"}, io.Discard, noEnv); err == nil || !strings.Contains(err.Error(), "--gossip-addr") {
		t.Fatalf("a wildcard peer host gave no gossip default error: %v", err)
	}
	cfg, _, _ = parseServerFlags([]string{"--gossip-profile", "mars"}, io.Discard, noEnv)
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--gossip-profile") {
		t.Fatalf("an unknown profile passed validation: %v", err)
	}
}
