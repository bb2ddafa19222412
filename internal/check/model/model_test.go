package model

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caucus/caucus/internal/check/history"
)

// h builds synthetic histories: each op is given explicitly with its interval, so the tests pin
// down the exact real-time order the checker must respect.
type h struct{ ops []history.Op }

func (b *h) op(process int, call, ret int64, st history.Status, in, out any) int {
	id := len(b.ops)
	if st == history.Unknown {
		ret = history.Infinity
	}
	b.ops = append(b.ops, history.Op{ID: id, Process: process, Call: call, Return: ret, Status: st, Input: in, Output: out})
	return id
}

func w(k, v string) RegisterInput { return RegisterInput{Kind: RegWrite, Key: k, Value: v} }
func r(k string) RegisterInput    { return RegisterInput{Kind: RegRead, Key: k} }
func sr(k string) RegisterInput   { return RegisterInput{Kind: RegRead, Key: k, Serializable: true} }
func cas(k, e, v string) RegisterInput {
	return RegisterInput{Kind: RegCAS, Key: k, Expect: e, Value: v}
}
func val(v string) RegisterOutput { return RegisterOutput{Value: v} }

var ok = RegisterOutput{}

func TestRegisterAcceptsValid(t *testing.T) {
	var b h
	b.op(0, 0, 10, history.OK, w("x", "1"), ok)
	b.op(1, 5, 15, history.OK, r("x"), val("")) // concurrent with the write: may see either
	b.op(1, 20, 30, history.OK, cas("x", "1", "2"), RegisterOutput{Succeeded: true})
	b.op(0, 25, 35, history.OK, r("x"), val("2"))
	b.op(2, 40, 50, history.OK, cas("x", "1", "3"), RegisterOutput{Succeeded: false})
	b.op(2, 60, 70, history.OK, r("x"), val("2"))
	b.op(3, 0, 5, history.OK, r("y"), val(""))     // another key: its own partition
	b.op(4, 80, 90, history.OK, sr("x"), val("1")) // stale but was written: allowed
	b.op(4, 91, 92, history.Fail, w("x", "9"), nil)
	got := CheckRegister(b.ops, 0)
	if !got.Valid {
		t.Fatalf("valid history rejected: %v", got.Result)
	}
}

func TestRegisterCatchesStaleRead(t *testing.T) {
	var b h
	b.op(0, 0, 10, history.OK, w("x", "1"), ok)
	b.op(0, 20, 30, history.OK, w("x", "2"), ok)
	// Begins after write 2 was acknowledged, returns the overwritten value: the stale-read bug.
	b.op(1, 40, 50, history.OK, r("x"), val("1"))
	got := CheckRegister(b.ops, 0)
	if got.Valid || got.Inconclusive || len(got.Violations) != 1 || got.Violations[0].Kind != "nonlinearizable" {
		t.Fatalf("stale read not caught: %+v", got.Result)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "viz.html")
	if err := got.Visualize(p); err != nil {
		t.Fatal(err)
	}
	html, err := os.ReadFile(p)
	if err != nil || !strings.Contains(string(html), "read(x)") {
		t.Fatalf("visualization missing the operations: %v", err)
	}
}

func TestRegisterCatchesLostWrite(t *testing.T) {
	var b h
	b.op(0, 0, 10, history.OK, w("x", "1"), ok)
	b.op(1, 20, 30, history.OK, r("x"), val("")) // acknowledged write vanished
	if got := CheckRegister(b.ops, 0); got.Valid {
		t.Fatal("lost write not caught")
	}
}

func TestRegisterCASMustAgreeWithState(t *testing.T) {
	var b h
	b.op(0, 0, 10, history.OK, w("x", "1"), ok)
	// The compare held (x was 1) yet the server reported failure.
	b.op(0, 20, 30, history.OK, cas("x", "1", "2"), RegisterOutput{Succeeded: false})
	if got := CheckRegister(b.ops, 0); got.Valid {
		t.Fatal("cas result inconsistent with state not caught")
	}
}

func TestRegisterUnknownWriteMayOrMayNotHappen(t *testing.T) {
	for _, seen := range []string{"1", "2"} {
		var b h
		b.op(0, 0, 10, history.OK, w("x", "1"), ok)
		b.op(1, 20, 0, history.Unknown, w("x", "2"), nil)
		b.op(2, 100, 110, history.OK, r("x"), val(seen))
		if got := CheckRegister(b.ops, 0); !got.Valid {
			t.Fatalf("unknown write, read %q: rejected: %v", seen, got.Result)
		}
	}
	// But an unknown write cannot be observed before it was invoked.
	var b h
	b.op(0, 0, 10, history.OK, r("x"), val("2"))
	b.op(1, 20, 0, history.Unknown, w("x", "2"), nil)
	if got := CheckRegister(b.ops, 0); got.Valid {
		t.Fatal("read of a value before its write was invoked accepted")
	}
}

func TestRegisterUnknownCASResolvedByState(t *testing.T) {
	var b h
	b.op(0, 0, 10, history.OK, w("x", "1"), ok)
	b.op(1, 20, 0, history.Unknown, cas("x", "5", "6"), nil) // compare cannot hold: no effect
	b.op(2, 100, 110, history.OK, r("x"), val("6"))
	if got := CheckRegister(b.ops, 0); got.Valid {
		t.Fatal("unknown cas whose compare could not hold was allowed to take effect")
	}
}

func TestRegisterSerializablePhantom(t *testing.T) {
	var b h
	b.op(0, 0, 10, history.OK, w("x", "1"), ok)
	b.op(1, 20, 30, history.OK, sr("x"), val("7")) // never written
	b.op(2, 20, 30, history.OK, sr("x"), val("8")) // written only after the read returned
	b.op(0, 40, 50, history.OK, w("x", "8"), ok)
	b.op(3, 60, 70, history.OK, sr("x"), val("9")) // written only by a definitely failed write
	b.op(0, 55, 56, history.Fail, w("x", "9"), nil)
	got := CheckRegister(b.ops, 0)
	if got.Valid || len(got.Violations) != 3 {
		t.Fatalf("want 3 phantom reads, got %v", got.Result)
	}
	for _, v := range got.Violations {
		if v.Kind != "phantom-read" {
			t.Fatalf("unexpected violation %v", v)
		}
	}
}

func setRead(final, ser bool, els ...int) (SetRead, SetReadResult) {
	return SetRead{Final: final, Serializable: ser}, SetReadResult{Elements: els}
}

func TestSetValid(t *testing.T) {
	var b h
	b.op(0, 0, 10, history.OK, SetAdd{1}, nil)
	b.op(1, 5, 0, history.Unknown, SetAdd{2}, nil)
	b.op(2, 5, 6, history.Fail, SetAdd{3}, nil)
	in, out := setRead(false, true, nil...) // serializable: may be stale
	b.op(3, 20, 30, history.OK, in, out)
	in, out = setRead(true, false, 1, 2)
	b.op(3, 40, 50, history.OK, in, out)
	if got := CheckSet(b.ops); !got.Valid {
		t.Fatalf("valid set history rejected: %v", got)
	}
}

func TestSetCatchesLostElement(t *testing.T) {
	var b h
	b.op(0, 0, 10, history.OK, SetAdd{1}, nil)
	b.op(0, 11, 20, history.OK, SetAdd{2}, nil)
	in, out := setRead(true, false, 2)
	b.op(1, 40, 50, history.OK, in, out)
	got := CheckSet(b.ops)
	if got.Valid || len(got.Violations) != 1 || got.Violations[0].Kind != "lost" {
		t.Fatalf("lost element not caught: %v", got)
	}
}

func TestSetCatchesUnexpectedAndStale(t *testing.T) {
	var b h
	b.op(0, 0, 10, history.OK, SetAdd{1}, nil)
	b.op(0, 11, 12, history.Fail, SetAdd{2}, nil)
	in, out := setRead(false, true, 1) // observed 1
	b.op(1, 20, 30, history.OK, in, out)
	in, out = setRead(false, false) // linearizable, after: must contain 1
	b.op(2, 40, 50, history.OK, in, out)
	in, out = setRead(true, false, 1, 2, 99)
	b.op(2, 60, 70, history.OK, in, out)
	got := CheckSet(b.ops)
	kinds := map[string]int{}
	for _, v := range got.Violations {
		kinds[v.Kind]++
	}
	if kinds["stale-read"] != 1 || kinds["unexpected"] != 2 || len(got.Violations) != 3 {
		t.Fatalf("want 1 stale-read and 2 unexpected, got %v", got)
	}
}

func TestSetRequiresFinalRead(t *testing.T) {
	var b h
	b.op(0, 0, 10, history.OK, SetAdd{1}, nil)
	if got := CheckSet(b.ops); got.Valid {
		t.Fatal("history without a final read accepted")
	}
}

func bankRead(ser bool, rev int64, bal ...int64) (BankRead, BankReadResult) {
	m := map[int]int64{}
	for i, v := range bal {
		m[i] = v
	}
	return BankRead{Serializable: ser}, BankReadResult{Balances: m, Revision: rev}
}

func TestBankValid(t *testing.T) {
	var b h
	in, out := bankRead(false, 5, 10, 10, 10)
	b.op(0, 0, 10, history.OK, in, out)
	b.op(1, 0, 10, history.OK, BankTransfer{From: 0, To: 1, Amount: 3}, BankTransferResult{Succeeded: true})
	in, out = bankRead(false, 6, 7, 13, 10)
	b.op(0, 20, 30, history.OK, in, out)
	in, out = bankRead(true, 5, 10, 10, 10) // stale serializable read: fine
	b.op(2, 40, 50, history.OK, in, out)
	if got := CheckBank(b.ops, 3, 30); !got.Valid {
		t.Fatalf("valid bank history rejected: %v", got)
	}
}

func TestBankCatchesTotalChange(t *testing.T) {
	var b h
	in, out := bankRead(false, 6, 7, 10, 10) // debit applied without the credit
	b.op(0, 0, 10, history.OK, in, out)
	got := CheckBank(b.ops, 3, 30)
	if got.Valid || got.Violations[0].Kind != "wrong-total" {
		t.Fatalf("total change not caught: %v", got)
	}
	var c h
	in, out = bankRead(true, 6, 10, 20) // missing account (serializable reads are checked too)
	c.op(0, 0, 10, history.OK, in, out)
	if got := CheckBank(c.ops, 3, 30); got.Valid {
		t.Fatal("missing account not caught")
	}
}

func TestBankCatchesRevisionGoingBack(t *testing.T) {
	var b h
	in, out := bankRead(true, 9, 10, 10, 10)
	b.op(0, 0, 10, history.OK, in, out)
	in, out = bankRead(false, 7, 10, 10, 10)
	b.op(1, 20, 30, history.OK, in, out)
	got := CheckBank(b.ops, 3, 30)
	if got.Valid || got.Violations[0].Kind != "stale-read" {
		t.Fatalf("revision regression not caught: %v", got)
	}
}

// TestBankPreSetupState: the accounts are created by one transaction, so the empty state before
// it is a real past state: a stale serializable read may return it, a linearizable read may not.
// (Found in CI: a serializable read on a member that had not yet applied the setup.)
func TestBankPreSetupState(t *testing.T) {
	var b h
	in, out := bankRead(true, 1)
	b.op(0, 0, 10, history.OK, in, out)
	if got := CheckBank(b.ops, 3, 30); !got.Valid {
		t.Fatalf("serializable read of the pre-setup state rejected: %v", got)
	}
	var c h
	in, out = bankRead(false, 1)
	c.op(0, 0, 10, history.OK, in, out)
	if got := CheckBank(c.ops, 3, 30); got.Valid {
		t.Fatal("linearizable read of the pre-setup state accepted")
	}
}
