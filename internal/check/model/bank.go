package model

import (
	"sort"

	"github.com/caucus/caucus/internal/check/history"
)

// BankTransfer is the input of a transfer: a transaction that moves Amount from one account to
// another, guarded by compares on both accounts' mod revisions.
type BankTransfer struct {
	From   int   `json:"from"`
	To     int   `json:"to"`
	Amount int64 `json:"amount"`
}

// BankTransferResult is the output of a completed transfer.
type BankTransferResult struct {
	// Succeeded reports whether the compares held (the transfer applied).
	Succeeded bool `json:"succeeded"`
}

// BankRead is the input of a read of every account in one Range.
type BankRead struct {
	Serializable bool `json:"serializable,omitempty"`
}

// BankReadResult is the output of a completed BankRead.
type BankReadResult struct {
	// Balances maps account number to balance; a missing account is a violation.
	Balances map[int]int64 `json:"balances"`
	// Revision is the store revision the Range was served at.
	Revision int64 `json:"revision"`
}

// CheckBank checks a bank history over accounts accounts holding total in all.
func CheckBank(ops []history.Op, accounts int, total int64) Result {
	res := Result{Valid: true, Stats: map[string]int{}}
	var reads []history.Op
	transfers := 0
	for _, op := range ops {
		switch op.Input.(type) {
		case BankRead:
			if op.Status == history.OK {
				reads = append(reads, op)
			}
		case BankTransfer:
			if op.Status == history.OK && op.Output.(BankTransferResult).Succeeded {
				transfers++
			}
		}
	}
	sort.Slice(reads, func(i, j int) bool { return reads[i].Call < reads[j].Call })
	byReturn := append([]history.Op(nil), reads...)
	sort.Slice(byReturn, func(i, j int) bool { return byReturn[i].Return < byReturn[j].Return })
	ri, maxRev, maxOp := 0, int64(0), -1
	for _, r := range reads {
		out := r.Output.(BankReadResult)
		if r.Input.(BankRead).Serializable && len(out.Balances) == 0 {
			// The accounts are created by one transaction before the workload starts, so a state
			// with none of them is the real state before that transaction: a stale serializable
			// read may return it. A linearizable read may not (the setup was acknowledged first).
			res.Stats["pre-setup-serializable-reads"]++
			continue
		}
		var sum int64
		for a, b := range out.Balances {
			sum += b
			if b < 0 {
				res.add("negative-balance", []int{r.ID}, "account %d has balance %d at revision %d", a, b, out.Revision)
			}
		}
		if len(out.Balances) != accounts {
			res.add("wrong-accounts", []int{r.ID}, "read saw %d accounts, want %d, at revision %d", len(out.Balances), accounts, out.Revision)
		}
		if sum != total {
			res.add("wrong-total", []int{r.ID}, "total is %d, want %d, at revision %d", sum, total, out.Revision)
		}
		if r.Input.(BankRead).Serializable {
			continue
		}
		// Any read (even serializable: it serves committed state) that finished before this
		// linearizable read began saw a revision this read must not precede.
		for ; ri < len(byReturn) && byReturn[ri].Return < r.Call; ri++ {
			if rev := byReturn[ri].Output.(BankReadResult).Revision; rev > maxRev {
				maxRev, maxOp = rev, byReturn[ri].ID
			}
		}
		if maxRev > out.Revision {
			res.add("stale-read", []int{maxOp, r.ID}, "linearizable read at revision %d began after a read at revision %d finished", out.Revision, maxRev)
		}
	}
	res.Stats["reads"] = len(reads)
	res.Stats["transfers-applied"] = transfers
	return res
}
