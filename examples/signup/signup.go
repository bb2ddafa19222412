// Package signup is a small user-signup service written twice, to show the dual writes problem
// and caucus's answer to it.
//
// A signup saves the user and must cause exactly one downstream effect (here: a "welcome"
// message in a NATS JetStream stream, which a mailer would consume). Both versions store users
// in caucus and run the same code path; they differ only in how the event leaves:
//
//   - Naive saves the user, then publishes to NATS itself. A crash between the two leaves a
//     user without a welcome; a client that retries a signup whose answer it never got (the
//     service died after publishing) causes a second welcome.
//   - Outbox saves the user with its event in the same caucus write; `caucus relay nats`
//     (relay.Run) forwards the event with Nats-Msg-Id = event id. A crash anywhere loses
//     nothing and duplicates nothing: the write is one log entry, the client's retry is
//     deduplicated by its session, and the relay's redeliveries by JetStream.
//
// signup_test.go kills the service at random points under load, stops cluster members and
// the relay, and counts the divergences between users and welcomes.
package signup

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caucus/caucus/client"
)

// Topic is the caucus topic of signup events; WelcomeSubject the NATS subject prefix of
// welcomes ("welcome." + user id).
const (
	Topic          = "users"
	WelcomeSubject = "welcome."
)

// ErrCrashed is what a service "killed" at a crash point returns: the process died there, and
// the caller never got an answer.
var ErrCrashed = errors.New("signup: service crashed")

// CrashFunc decides whether the service dies at the named point of a signup.
type CrashFunc func(point string) bool

// UserKey is where a user is stored.
func UserKey(id string) string { return "user/" + id }

// Naive saves the user, then publishes the welcome: two writes to two systems.
type Naive struct {
	KV    *client.Client
	JS    jetstream.JetStream
	Crash CrashFunc
}

// Signup registers user id.
func (s *Naive) Signup(ctx context.Context, id, name string) error {
	if _, err := s.KV.Put(ctx, UserKey(id), name); err != nil {
		return fmt.Errorf("save user %s: %w", id, err)
	}
	if s.Crash("after-save") {
		return ErrCrashed
	}
	msg := nats.NewMsg(WelcomeSubject + id)
	msg.Data = []byte(name)
	if _, err := s.JS.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish welcome %s: %w", id, err)
	}
	if s.Crash("after-publish") {
		return ErrCrashed
	}
	return nil
}

// Outbox saves the user and its event in one caucus write; the relay delivers the event.
type Outbox struct {
	KV    *client.Client
	Crash CrashFunc
}

// Signup registers user id: it creates the user with its event if the user does not exist, so
// a caller's retry of a signup that did happen publishes nothing more.
func (s *Outbox) Signup(ctx context.Context, id, name string) error {
	if s.Crash("before-save") {
		return ErrCrashed
	}
	ev := client.NewEvent(Topic, id, []byte(name))
	ev.Id = "signup-" + id
	_, err := s.KV.Txn(ctx).If(client.Compare(client.CreateRevision(UserKey(id)), "=", 0)).
		Then(client.OpPut(UserKey(id), name, client.WithEvents(ev))).Commit()
	if err != nil {
		return fmt.Errorf("save user %s: %w", id, err)
	}
	if s.Crash("after-save") {
		return ErrCrashed
	}
	return nil
}
