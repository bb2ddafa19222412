package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caucus/caucus/internal/mvcc"
)

// The state machine commits without fsync (mvcc.Options.NoSync) and relies on the WAL: after a
// process crash the kernel's page cache still holds every page bbolt wrote, so the file is
// consistent and the log replays what it lacks. After a power loss or a kernel crash that is no
// longer true: bbolt may have written a meta page whose tree pages never reached the disk, and
// the file can look valid while holding garbage. The two cases differ in one observable way: the
// kernel rebooted. So while unsynced commits may be outstanding, the data directory holds a
// marker naming the boot that wrote them; a start under a different boot discards the state
// machine and rebuilds it from the newest snapshot and the log, which are always synced.
//
// The marker is written (and synced) before the first unsynced commit and removed only after a
// clean close has synced the store.

// unsyncedMarker is the file, in the data directory, that names the boot of a kernel that may
// hold unsynced state-machine pages.
const unsyncedMarker = "kv.db.unsynced"

// bootID identifies the running kernel boot. A variable so tests can simulate a reboot.
var bootID = func() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// guardUnsynced runs before the state machine is opened. It returns whether the store file was
// discarded because it may have lost unsynced pages, and arms the marker for this boot.
func guardUnsynced(dataDir, storePath string, lg *slog.Logger) (discarded bool, err error) {
	boot, err := bootID()
	if err != nil {
		// Without a boot id a reboot cannot be told from a process crash. Rebuilding on every
		// start would be safe but turns each restart into a full replay; say so instead.
		lg.Warn("cannot read the kernel boot id; a power loss may leave the state machine inconsistent", "err", err)
		return false, nil
	}
	marker := filepath.Join(dataDir, unsyncedMarker)
	prev, err := os.ReadFile(marker)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return false, fmt.Errorf("fsm: read %s: %w", marker, err)
	case string(bytes.TrimSpace(prev)) != boot:
		if _, statErr := os.Stat(storePath); statErr == nil {
			aside, err := moveAside(storePath, "discarded")
			if err != nil {
				return false, fmt.Errorf("fsm: move aside state machine written without fsync before a reboot: %w", err)
			}
			lg.Warn("the machine rebooted since the state machine was last written without fsync; rebuilding it from the snapshot and the log",
				"moved_aside", aside, "previous_boot", string(bytes.TrimSpace(prev)), "boot", boot)
			discarded = true
		}
	}
	if err := writeSyncedFile(marker, []byte(boot+"\n")); err != nil {
		return discarded, fmt.Errorf("fsm: arm %s: %w", marker, err)
	}
	return discarded, nil
}

// releaseUnsynced syncs the store and removes the marker: the next start may trust the file
// whatever happened to the machine in between.
func releaseUnsynced(dataDir string, store *mvcc.Store) error {
	if err := store.Sync(); err != nil {
		return fmt.Errorf("fsm: sync state machine at close: %w", err)
	}
	marker := filepath.Join(dataDir, unsyncedMarker)
	if err := os.Remove(marker); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("fsm: remove %s: %w", marker, err)
	}
	return syncDir(dataDir)
}

// moveAside renames path to path.<why>-<unix time> (kept for inspection, never deleted) and
// syncs the directory, returning the new name.
func moveAside(path, why string) (string, error) {
	aside := fmt.Sprintf("%s.%s-%d", path, why, time.Now().Unix())
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("rename %s to %s: %w", path, aside, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return "", err
	}
	return aside, nil
}

func writeSyncedFile(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
