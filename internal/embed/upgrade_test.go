package embed

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	bolt "go.etcd.io/bbolt"

	"github.com/caucus/caucus/client"
)

// untar extracts a gzipped tar into dir.
func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, filepath.Clean(dir)+string(os.PathSeparator)) {
			t.Fatalf("archive entry %q escapes %s", h.Name, dir)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			out, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(out, tr); err != nil {
				t.Fatal(err)
			}
			if err := out.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// previousReleaseConfig is a member that opens the data directory of testdata/datadir-0.1.0:
// the member id derives from the token and the advertised peer URL it had.
func previousReleaseConfig(t *testing.T, dataDir string) Config {
	cfg := fastConfig("n1")
	cfg.DataDir = dataDir
	cfg.ClusterToken = "caucus-cluster"
	cfg.AdvertisePeerURL = "http://127.0.0.1:23801"
	cfg.InitialCluster = "n1=http://127.0.0.1:23801"
	cfg.PeerListener = listen(t)
	cfg.ListenPeerURL = "http://" + cfg.PeerListener.Addr().String()
	cfg.ClientListener = listen(t)
	cfg.ListenClientURL = "http://" + cfg.ClientListener.Addr().String()
	return cfg
}

// TestDataDirOfPreviousRelease: a data directory written by caucus 0.1.0 (log entries that
// embedded caucus.v1 messages, no log format version, a schema 3 state machine file and a
// snapshot of it; testdata/README.md says how it was made) opens with this release and keeps
// working: every key, the transaction's outcome, the compaction, and the lease (whose TTL ran
// out long ago, so the leader expires it and its key goes); new writes land, survive a restart,
// and the cluster adopts replicated settings once its member publishes that it applies them.
func TestDataDirOfPreviousRelease(t *testing.T) {
	root := t.TempDir()
	untar(t, filepath.Join("testdata", "datadir-0.1.0.tar.gz"), root)
	dataDir := filepath.Join(root, "n1.caucus")
	cfg := previousReleaseConfig(t, dataDir)
	m, err := Start(cfg)
	if err != nil {
		t.Fatalf("start on the 0.1.0 data directory: %v", err)
	}
	defer func() { m.Stop() }()
	cli, err := client.New(client.Config{Endpoints: []string{m.ClientURL}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	check := func(stage string) {
		t.Helper()
		resp, err := cli.Get(ctx, "key", client.WithPrefix())
		if err != nil {
			t.Fatalf("%s: get: %v", stage, err)
		}
		got := map[string]string{}
		for _, kv := range resp.GetKvs() {
			got[string(kv.GetKey())] = string(kv.GetValue())
		}
		if len(got) != 59 || got["key1"] != "" || got["key2"] != "value2b" || got["key60"] != "value60" {
			t.Fatalf("%s: %d keys (key1=%q key2=%q key60=%q), want key2..key60 with key2 rewritten", stage, len(got), got["key1"], got["key2"], got["key60"])
		}
		for k, want := range map[string]string{"greeting": "bonjour", "txnkey": "yes"} {
			r, err := cli.Get(ctx, k)
			if err != nil || len(r.GetKvs()) != 1 || string(r.GetKvs()[0].GetValue()) != want {
				t.Fatalf("%s: %s = %v (%v), want %s", stage, k, r.GetKvs(), err, want)
			}
		}
		if _, err := cli.Get(ctx, "key5", client.WithRev(5)); connect.CodeOf(err) != connect.CodeOutOfRange {
			t.Fatalf("%s: a read below the compacted revision 10: %v, want OutOfRange", stage, err)
		}
	}
	check("after the upgrade")

	// The lease expired long ago by the clock: the leader revokes it, with its key.
	waitFor(t, "the expired lease revoked", func() bool {
		r, err := cli.Get(ctx, "leased")
		return err == nil && len(r.GetKvs()) == 0
	})
	// The member publishes that it applies log format version 2, and the cluster takes its
	// configured limits as replicated settings.
	waitFor(t, "replicated settings", func() bool { return m.FSM.Store().HasSettings() })

	for i := 0; i < 20; i++ {
		if _, err := cli.Put(ctx, fmt.Sprintf("new%02d", i), "after-upgrade"); err != nil {
			t.Fatalf("put after the upgrade: %v", err)
		}
	}
	cli.Close()
	m.Stop()

	cfg = previousReleaseConfig(t, dataDir)
	m, err = Start(cfg)
	if err != nil {
		t.Fatalf("restart after the upgrade: %v", err)
	}
	cli, err = client.New(client.Config{Endpoints: []string{m.ClientURL}})
	if err != nil {
		t.Fatal(err)
	}
	check("after a restart")
	r, err := cli.Get(ctx, "new", client.WithPrefix(), client.WithCountOnly())
	if err != nil || r.GetCount() != 20 {
		t.Fatalf("writes after the upgrade, after a restart: %v (%v), want 20", r.GetCount(), err)
	}
}

// TestDataDirOfNewerReleaseRefused: a state machine file of a schema newer than this release
// knows is refused at start with a message naming both versions and what to do, and is left as
// it was.
func TestDataDirOfNewerReleaseRefused(t *testing.T) {
	root := t.TempDir()
	untar(t, filepath.Join("testdata", "datadir-0.1.0.tar.gz"), root)
	dataDir := filepath.Join(root, "n1.caucus")
	db, err := bolt.Open(filepath.Join(dataDir, "kv.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte{0, 0, 0, 0, 0, 0, 0, 99})
	})
	if err2 := db.Close(); err == nil {
		err = err2
	}
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(dataDir, "kv.db"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(previousReleaseConfig(t, dataDir))
	if err == nil {
		t.Fatal("a state machine file of schema 99 was opened")
	}
	for _, want := range []string{"schema version 99", "newer release"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("refusal %q does not say %q", err, want)
		}
	}
	after, err := os.ReadFile(filepath.Join(dataDir, "kv.db"))
	if err != nil || string(after) != string(before) {
		t.Fatalf("the refused file changed (%v)", err)
	}
}

// waitFor polls cond (the member runs on wall-clock time) for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
