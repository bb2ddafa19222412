package raft

import (
	"log/slog"
	"strconv"
)

// LogValue makes a NodeID log as lower-case hexadecimal, the format the CLI uses for member ids,
// so that an id in a log line can be pasted into a command. (No String method: it would change
// what fmt's %x prints for a NodeID.)
func (id NodeID) LogValue() slog.Value { return slog.StringValue(strconv.FormatUint(uint64(id), 16)) }
