// Package logpb is caucus's log format: the messages a normal Raft entry carries and the state
// machine stores (log.proto). It is internal and versioned apart from the public API
// (api/caucus/v1); internal/server translates between the two.
//
// Every Command says which format version a member needs to apply it (Command.version, 0 read
// as 1). A member applies only versions up to MaxVersion, and stops with an error that names
// the version it needs otherwise: skipping or half-applying an entry would make it diverge from
// its peers. Proposers stamp the lowest version that can apply the command (Needs), and propose
// a command of a newer version only once every member has published that it applies it
// (logpb.MemberAttributes.log_version), so a rolling upgrade never stops an older member.
package logpb

import "fmt"

// Log format versions.
const (
	// Version1 is the first format. Its messages have the field numbers of the caucus.v1
	// messages of the same name, so entries and stored results written before the format had a
	// package of its own (and no version field) read as version 1.
	Version1 uint32 = 1
	// Version2 adds replicated cluster settings (Command.settings).
	Version2 uint32 = 2
	// Version3 adds events published with writes (PutRequest.events, DeleteRangeRequest.events,
	// Command.publish, RequestOp.request_publish) and the durable consumers' commands.
	Version3 uint32 = 3
	// Version4 adds the gossip address to member attributes (MemberAttributes.gossip_addr).
	Version4 uint32 = 4
	// MaxVersion is the newest version this release applies.
	MaxVersion = Version4
)

// VersionOf returns the format version a command was stamped with (1 if none).
func VersionOf(c *Command) uint32 {
	if v := c.GetVersion(); v != 0 {
		return v
	}
	return Version1
}

// Needs returns the lowest format version that can apply c.
func Needs(c *Command) uint32 {
	if sessionKeyed(c) {
		return Version3
	}
	switch op := c.GetOp().(type) {
	case *Command_Settings:
		return Version2
	case *Command_MemberAttributes:
		if op.MemberAttributes.GetGossipAddr() != "" {
			return Version4
		}
	case *Command_Publish, *Command_ConsumerCreate, *Command_ConsumerDelete, *Command_Fetch, *Command_Ack:
		return Version3
	case *Command_Put:
		if len(op.Put.GetEvents()) > 0 {
			return Version3
		}
	case *Command_DeleteRange:
		if len(op.DeleteRange.GetEvents()) > 0 {
			return Version3
		}
	case *Command_Txn:
		for _, ops := range [][]*RequestOp{op.Txn.GetSuccess(), op.Txn.GetFailure()} {
			for _, o := range ops {
				if opNeedsVersion3(o) {
					return Version3
				}
			}
		}
	}
	return Version1
}

// opNeedsVersion3 reports whether a transaction op publishes or acknowledges events.
func opNeedsVersion3(o *RequestOp) bool {
	switch r := o.GetRequest().(type) {
	case *RequestOp_RequestPublish, *RequestOp_RequestAck:
		return true
	case *RequestOp_RequestPut:
		return len(r.RequestPut.GetEvents()) > 0
	case *RequestOp_RequestDeleteRange:
		return len(r.RequestDeleteRange.GetEvents()) > 0
	}
	return false
}

// UnknownVersionError is a command of a format version this release does not apply.
type UnknownVersionError struct {
	Index   uint64
	Version uint32
}

func (e *UnknownVersionError) Error() string {
	return fmt.Sprintf("log entry %d needs log format version %d, but this release applies versions 1 to %d: "+
		"upgrade this member to a release that applies version %d (its log and data are intact)",
		e.Index, e.Version, MaxVersion, e.Version)
}

// CheckVersion returns an *UnknownVersionError if c, committed at index, needs a newer format
// version than MaxVersion.
func CheckVersion(index uint64, c *Command) error {
	if v := VersionOf(c); v > MaxVersion {
		return &UnknownVersionError{Index: index, Version: v}
	}
	return nil
}

// VersionFeature names what a format version added, for messages.
func VersionFeature(v uint32) string {
	switch v {
	case Version1:
		return "the key-value store"
	case Version2:
		return "replicated settings"
	case Version3:
		return "events and durable consumers"
	case Version4:
		return "gossip addresses"
	}
	return fmt.Sprintf("log format version %d", v)
}

// sessionKeyed reports whether c names its write with an idempotency key (version 3): a member
// that does not know the field would apply a repeat again.
func sessionKeyed(c *Command) bool {
	type sessioned interface{ GetSession() *Session }
	var s sessioned
	switch op := c.GetOp().(type) {
	case *Command_Put:
		s = op.Put
	case *Command_DeleteRange:
		s = op.DeleteRange
	case *Command_Txn:
		s = op.Txn
	case *Command_Publish:
		s = op.Publish
	case *Command_Ack:
		s = op.Ack
	default:
		return false
	}
	return s.GetSession().GetIdempotencyKey() != ""
}
