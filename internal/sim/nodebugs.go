package sim

import (
	"fmt"
	"slices"
	"strings"

	"github.com/caucus/caucus/internal/node"
)

// nodeBugNames lists node.DriverBugs switches by field name, in declaration order.
var nodeBugNames = []string{
	"AckBeforePersist", "ReportUnsyncedLeaderSync", "SkipApplyAfterSnapshot", "AnswerBeforeApply", "NeverSyncLog",
	"ReportAppliedAsLost",
}

// NodeBugNames returns the names ParseNodeBugs accepts.
func NodeBugNames() []string { return slices.Clone(nodeBugNames) }

func nodeBugField(b *node.DriverBugs, name string) *bool {
	switch name {
	case "AckBeforePersist":
		return &b.AckBeforePersist
	case "ReportUnsyncedLeaderSync":
		return &b.ReportUnsyncedLeaderSync
	case "SkipApplyAfterSnapshot":
		return &b.SkipApplyAfterSnapshot
	case "AnswerBeforeApply":
		return &b.AnswerBeforeApply
	case "NeverSyncLog":
		return &b.NeverSyncLog
	case "ReportAppliedAsLost":
		return &b.ReportAppliedAsLost
	}
	return nil
}

// ParseNodeBugs turns a comma-separated list of node.DriverBugs field names into the switches.
func ParseNodeBugs(list string) (node.DriverBugs, error) {
	var b node.DriverBugs
	if list == "" {
		return b, nil
	}
	for _, name := range strings.Split(list, ",") {
		f := nodeBugField(&b, strings.TrimSpace(name))
		if f == nil {
			return b, fmt.Errorf("sim: unknown node bug %q (known: %s)", name, strings.Join(nodeBugNames, ", "))
		}
		*f = true
	}
	return b, nil
}

// FormatNodeBugs is the inverse of ParseNodeBugs.
func FormatNodeBugs(b node.DriverBugs) string {
	var on []string
	for _, name := range nodeBugNames {
		if *nodeBugField(&b, name) {
			on = append(on, name)
		}
	}
	return strings.Join(on, ",")
}
