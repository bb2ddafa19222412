package client

import (
	"context"
	"database/sql"
	"fmt"
)

// An inbox makes a consumer's effect on another system happen once per event, although
// delivery is at least once: the handler records the event's id in that system, in the same
// transaction as the effect, and skips an id it has recorded before. It is what to use when the
// effect lives outside caucus (a row in your database, a charge recorded in a ledger). When the
// effect is a write to caucus, acknowledge in the same caucus transaction instead (OpAck): no
// inbox needed. When the effect cannot join a transaction at all (an email sent through an
// API), neither is enough: pass the event id as that API's idempotency key.

// InboxStore is a transactional store that records processed event ids.
type InboxStore[Tx any] interface {
	// Begin starts a transaction for one delivery.
	Begin(ctx context.Context) (Tx, error)
	// Record records id in tx; done is false if id was recorded before (then the effect must
	// not run again).
	Record(ctx context.Context, tx Tx, id string) (done bool, err error)
	Commit(tx Tx) error
	Rollback(tx Tx) error
}

// Inbox returns a Consume handler that runs effect at most once per event id in store: in one
// transaction it records the id and runs effect; a delivery whose id is recorded already is
// acknowledged without running effect. An error (from the store or effect) rolls the
// transaction back and gives the delivery back.
func Inbox[Tx any](store InboxStore[Tx], effect func(ctx context.Context, tx Tx, d *Delivery) error) Handler {
	return func(ctx context.Context, d *Delivery) error {
		tx, err := store.Begin(ctx)
		if err != nil {
			return fmt.Errorf("inbox: begin: %w", err)
		}
		fresh, err := store.Record(ctx, tx, d.GetEvent().GetId())
		if err == nil && fresh {
			err = effect(ctx, tx, d)
		}
		if err != nil {
			_ = store.Rollback(tx)
			return err
		}
		if err := store.Commit(tx); err != nil {
			return fmt.Errorf("inbox: commit event %s: %w", d.GetEvent().GetId(), err)
		}
		return nil
	}
}

// SQLInbox is an InboxStore on database/sql: a table with a unique id column,
//
//	CREATE TABLE caucus_inbox (event_id TEXT PRIMARY KEY)
//
// Insert is the statement that records an id and affects no row when it is there already; the
// default, "INSERT INTO caucus_inbox (event_id) VALUES ($1) ON CONFLICT DO NOTHING", suits
// PostgreSQL and SQLite; for MySQL use "INSERT IGNORE INTO caucus_inbox (event_id) VALUES (?)".
type SQLInbox struct {
	DB     *sql.DB
	Insert string
	// TxOptions are the options of each transaction (nil: the driver's defaults).
	TxOptions *sql.TxOptions
}

// DefaultSQLInboxInsert is SQLInbox's default Insert.
const DefaultSQLInboxInsert = "INSERT INTO caucus_inbox (event_id) VALUES ($1) ON CONFLICT DO NOTHING"

func (s SQLInbox) Begin(ctx context.Context) (*sql.Tx, error) { return s.DB.BeginTx(ctx, s.TxOptions) }

func (s SQLInbox) Record(ctx context.Context, tx *sql.Tx, id string) (bool, error) {
	q := s.Insert
	if q == "" {
		q = DefaultSQLInboxInsert
	}
	res, err := tx.ExecContext(ctx, q, id)
	if err != nil {
		return false, fmt.Errorf("inbox: record event %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("inbox: record event %s: %w", id, err)
	}
	return n == 1, nil
}

func (s SQLInbox) Commit(tx *sql.Tx) error   { return tx.Commit() }
func (s SQLInbox) Rollback(tx *sql.Tx) error { return tx.Rollback() }
