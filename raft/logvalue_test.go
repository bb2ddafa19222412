package raft

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestNodeIDLogsHex: member ids log in the hexadecimal the CLI prints and takes.
func TestNodeIDLogsHex(t *testing.T) {
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "member", NodeID(0xdf35b6940c8ba007))
	if !strings.Contains(buf.String(), "member=df35b6940c8ba007") {
		t.Fatalf("logged %q", buf.String())
	}
}
