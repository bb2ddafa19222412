package fsm

import (
	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// The settings concern: the replicated limits (internal/mvcc/settings.go), set through the log
// by an operator or, once, by a new cluster's first leader (chores.go).

func updateSettings(u *logpb.SettingsUpdate) mvcc.Op {
	return func(b *mvcc.Batch) (proto.Message, error) { return b.UpdateSettings(u) }
}

// refuse is the Op of a command without a known operation. Validation refuses such a command
// before any Op runs; this one refuses it again should that ever change.
func refuse(*mvcc.Batch) (proto.Message, error) {
	return nil, &mvcc.Error{Code: mvcc.ErrInvalidArgument.Code, Message: "command has no operation this release applies"}
}
