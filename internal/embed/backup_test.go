package embed

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caucus/caucus/client"
	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// TestSnapshotSaveHoldsEveryAppliedWrite: a snapshot download holds every write the member
// applied, even those its group commit still holds (here the group commit is a minute long, so
// without the flush before the copy the snapshot would miss every write below).
func TestSnapshotSaveHoldsEveryAppliedWrite(t *testing.T) {
	tc := newTestClusterWith(t, 1, func(cfg *Config) { cfg.ApplyCommitInterval = time.Minute })
	tc.waitLeader()
	m := tc.members[0]
	cli, err := client.New(client.Config{Endpoints: []string{m.ClientURL}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < 10; i++ {
		if _, err := cli.Put(ctx, fmt.Sprintf("k%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := cli.SnapshotSave(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := mvcc.Open(path, mvcc.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, err := st.Range(&logpb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	if err != nil || len(r.Kvs) != 10 {
		t.Fatalf("the snapshot holds %d of the 10 acknowledged writes (%v)", len(r.GetKvs()), err)
	}
}
