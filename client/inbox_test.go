package client

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/DATA-DOG/go-sqlmock"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// memInbox is a transactional in-memory InboxStore whose commits can be made to fail after
// they took effect (the acknowledgement of a commit lost).
type memInbox struct {
	ids     map[string]bool
	effects map[string]int
}

type memTx struct {
	ids     []string
	effects []string
}

func (m *memInbox) Begin(context.Context) (*memTx, error) { return &memTx{}, nil }
func (m *memInbox) Record(_ context.Context, tx *memTx, id string) (bool, error) {
	if m.ids[id] {
		return false, nil
	}
	tx.ids = append(tx.ids, id)
	return true, nil
}
func (m *memInbox) Commit(tx *memTx) error {
	for _, id := range tx.ids {
		m.ids[id] = true
	}
	for _, e := range tx.effects {
		m.effects[e]++
	}
	return nil
}
func (m *memInbox) Rollback(*memTx) error { return nil }

// TestInboxRunsEffectOncePerEvent: redeliveries of an event whose effect committed (the ack was
// lost) do not run it again; a failed effect leaves no record, so the redelivery runs it.
func TestInboxRunsEffectOncePerEvent(t *testing.T) {
	store := &memInbox{ids: map[string]bool{}, effects: map[string]int{}}
	fail := true
	h := Inbox[*memTx](store, func(_ context.Context, tx *memTx, d *Delivery) error {
		if d.GetEvent().GetId() == "b" && fail {
			fail = false
			return errors.New("effect failed")
		}
		tx.effects = append(tx.effects, d.GetEvent().GetId())
		return nil
	})
	deliver := func(id string) error {
		return h(context.Background(), &Delivery{Event: &caucusv1.Event{Id: id}})
	}
	for _, id := range []string{"a", "a", "b", "b", "a", "b"} {
		_ = deliver(id)
	}
	if store.effects["a"] != 1 || store.effects["b"] != 1 {
		t.Fatalf("effects %v, want each once", store.effects)
	}
}

// TestSQLInbox: the statements SQLInbox runs, and that an id already recorded (no row affected)
// skips the effect but commits.
func TestSQLInbox(t *testing.T) {
	db, mock, err := sqlmock.New()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ran := 0
	h := Inbox[*sql.Tx](SQLInbox{DB: db}, func(ctx context.Context, tx *sql.Tx, d *Delivery) error {
		ran++
		_, err := tx.ExecContext(ctx, "UPDATE accounts SET welcomed = true WHERE id = $1", string(d.GetEvent().GetKey()))
		return err
	})
	mock.ExpectBegin()
	mock.ExpectExec("INSERT INTO caucus_inbox").WithArgs("e1").WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectExec("UPDATE accounts").WithArgs("u1").WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectCommit()
	mock.ExpectBegin()
	mock.ExpectExec("INSERT INTO caucus_inbox").WithArgs("e1").WillReturnResult(sqlmock.NewResult(0, 0))
	mock.ExpectCommit()
	d := &Delivery{Event: &caucusv1.Event{Id: "e1", Key: []byte("u1")}}
	for range 2 {
		if err := h(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	if ran != 1 {
		t.Fatalf("effect ran %d times, want 1", ran)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}
