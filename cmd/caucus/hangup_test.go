//go:build unix

package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/embed"
)

// TestHangupReloadsGossipKeyring: SIGHUP makes a running server reread its gossip keyring file.
func TestHangupReloadsGossipKeyring(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys")
	key := func() ([]byte, string) {
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		return k, base64.StdEncoding.EncodeToString(k) + "\n"
	}
	oldK, oldLine := key()
	newK, newLine := key()
	if err := os.WriteFile(keyFile, []byte(oldLine), 0o600); err != nil {
		t.Fatal(err)
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := embed.DefaultConfig("n1")
	cfg.DataDir = filepath.Join(dir, "n1")
	cfg.PeerListener, cfg.ClientListener = pl, cl
	cfg.ListenPeerURL, cfg.ListenClientURL = "http://"+pl.Addr().String(), "http://"+cl.Addr().String()
	cfg.GossipAddr, cfg.GossipProfile, cfg.GossipKeyringFile = "127.0.0.1:0", embed.GossipLocal, keyFile
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := embed.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	stop := reloadOnHangup(m, cfg.Logger)
	defer stop()
	if ks := m.Gossip().Keyring().Keys(); len(ks) != 1 || !bytes.Equal(ks[0], oldK) {
		t.Fatalf("keys at start: %d, want the file's one", len(ks))
	}
	if err := os.WriteFile(keyFile, []byte(newLine+oldLine), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ks := m.Gossip().Keyring().Keys()
		if len(ks) == 2 && bytes.Equal(ks[0], newK) && bytes.Equal(ks[1], oldK) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP did not reload the keyring: %d keys", len(ks))
		}
		time.Sleep(10 * time.Millisecond) // polling for the signal's effect
	}
}
