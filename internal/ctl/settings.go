package ctl

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/client"
)

// settingField is one replicated setting as the CLI names it: the same name as the server flag
// that gives a new cluster its initial value.
type settingField struct {
	name string
	// duration: the value is a Go duration (stored in milliseconds); otherwise an integer.
	duration bool
	get      func(s *caucusv1.ClusterSettings) int64
	set      func(s *caucusv1.ClusterSettings, v int64)
}

func settingFields() []settingField {
	return []settingField{
		{"max-key-bytes", false, (*caucusv1.ClusterSettings).GetMaxKeyBytes, func(s *caucusv1.ClusterSettings, v int64) { s.MaxKeyBytes = v }},
		{"max-value-bytes", false, (*caucusv1.ClusterSettings).GetMaxValueBytes, func(s *caucusv1.ClusterSettings, v int64) { s.MaxValueBytes = v }},
		{"max-request-bytes", false, (*caucusv1.ClusterSettings).GetMaxRequestBytes, func(s *caucusv1.ClusterSettings, v int64) { s.MaxRequestBytes = v }},
		{"max-txn-ops", false, (*caucusv1.ClusterSettings).GetMaxTxnOps, func(s *caucusv1.ClusterSettings, v int64) { s.MaxTxnOps = v }},
		{"max-range-results", false, (*caucusv1.ClusterSettings).GetMaxRangeResults, func(s *caucusv1.ClusterSettings, v int64) { s.MaxRangeResults = v }},
		{"max-lease-ttl-seconds", false, (*caucusv1.ClusterSettings).GetMaxLeaseTtlSeconds, func(s *caucusv1.ClusterSettings, v int64) { s.MaxLeaseTtlSeconds = v }},
		{"max-leases", false, (*caucusv1.ClusterSettings).GetMaxLeases, func(s *caucusv1.ClusterSettings, v int64) { s.MaxLeases = v }},
		{"max-sessions", false, (*caucusv1.ClusterSettings).GetMaxSessions, func(s *caucusv1.ClusterSettings, v int64) { s.MaxSessions = v }},
		{"session-ttl", true, (*caucusv1.ClusterSettings).GetSessionTtlMs, func(s *caucusv1.ClusterSettings, v int64) { s.SessionTtlMs = v }},
		{"session-retry-window", true, (*caucusv1.ClusterSettings).GetSessionRetryWindowMs, func(s *caucusv1.ClusterSettings, v int64) { s.SessionRetryWindowMs = v }},
		{"max-event-bytes", false, (*caucusv1.ClusterSettings).GetMaxEventBytes, func(s *caucusv1.ClusterSettings, v int64) { s.MaxEventBytes = v }},
		{"max-events-per-write", false, (*caucusv1.ClusterSettings).GetMaxEventsPerWrite, func(s *caucusv1.ClusterSettings, v int64) { s.MaxEventsPerWrite = v }},
		{"max-topics", false, (*caucusv1.ClusterSettings).GetMaxTopics, func(s *caucusv1.ClusterSettings, v int64) { s.MaxTopics = v }},
		{"idempotency-retention", true, (*caucusv1.ClusterSettings).GetIdempotencyRetentionMs, func(s *caucusv1.ClusterSettings, v int64) { s.IdempotencyRetentionMs = v }},
		{"max-idempotency-keys", false, (*caucusv1.ClusterSettings).GetMaxIdempotencyKeys, func(s *caucusv1.ClusterSettings, v int64) { s.MaxIdempotencyKeys = v }},
	}
}

func (f settingField) format(s *caucusv1.ClusterSettings) string {
	v := f.get(s)
	if f.duration {
		return (time.Duration(v) * time.Millisecond).String()
	}
	return strconv.FormatInt(v, 10)
}

// parseSettings parses NAME=VALUE arguments into an update.
func parseSettings(args []string) (*caucusv1.ClusterSettings, error) {
	byName := map[string]settingField{}
	var names []string
	for _, f := range settingFields() {
		byName[f.name] = f
		names = append(names, f.name)
	}
	out := &caucusv1.ClusterSettings{}
	for _, a := range args {
		name, val, ok := strings.Cut(a, "=")
		f, known := byName[name]
		if !ok || !known {
			return nil, usagef("%q is not NAME=VALUE with NAME one of %s", a, strings.Join(names, ", "))
		}
		var v int64
		if f.duration {
			d, err := time.ParseDuration(val)
			if err != nil || d < time.Millisecond {
				return nil, usagef("%s=%q: want a duration of at least 1ms, such as 90s or 2h", name, val)
			}
			v = d.Milliseconds()
		} else {
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || n < 1 {
				return nil, usagef("%s=%q: want a positive integer", name, val)
			}
			v = n
		}
		f.set(out, v)
	}
	return out, nil
}

func printSettings(w io.Writer, s *caucusv1.ClusterSettings) {
	for _, f := range settingFields() {
		fmt.Fprintf(w, "%s: %s\n", f.name, f.format(s))
	}
}

func settingsTable(s *caucusv1.ClusterSettings) [][]string {
	var rows [][]string
	for _, f := range settingFields() {
		rows = append(rows, []string{f.name, f.format(s)})
	}
	return rows
}

func clusterSettingsCommand() *command {
	return &command{
		name: "settings",
		args: "[set NAME=VALUE...]",
		summary: "Shows the replicated cluster settings (the limits every member applies); with set, changes them " +
			"through the log. NAME is a server flag that sets a new cluster's initial value: " +
			"max-key-bytes, max-value-bytes, max-request-bytes, max-txn-ops, max-range-results, " +
			"max-lease-ttl-seconds, max-leases, max-sessions, session-ttl, session-retry-window, " +
			"max-event-bytes, max-events-per-write, max-topics, idempotency-retention, max-idempotency-keys.",
		run: func(e *env, args []string) error {
			if len(args) == 0 {
				return e.showSettings()
			}
			if args[0] != "set" {
				return usagef("unknown argument %q: settings takes no argument, or set NAME=VALUE...", args[0])
			}
			if err := wantArgs(args[1:], 1, len(settingFields()), "at least one NAME=VALUE"); err != nil {
				return err
			}
			set, err := parseSettings(args[1:])
			if err != nil {
				return err
			}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				resp, err := cli.UpdateClusterSettings(ctx, set)
				if err != nil {
					return err
				}
				return e.output(resp, func(w io.Writer) { printSettings(w, resp.GetSettings()) })
			})
		},
	}
}

func (e *env) showSettings() error {
	return e.withClient(func(ctx context.Context, cli *client.Client) error {
		resp, err := cli.ClusterSettings(ctx)
		if err != nil {
			return err
		}
		if e.writeOut == "table" {
			printTable(e.stdout, []string{"SETTING", "VALUE"}, settingsTable(resp.GetSettings()))
			return nil
		}
		return e.output(resp, func(w io.Writer) {
			printSettings(w, resp.GetSettings())
			if !resp.GetReplicated() {
				fmt.Fprintln(w, "(not replicated yet: the answering member's release defaults)")
			}
		})
	})
}
