package wal

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/caucus/caucus/internal/vfs"
	"github.com/caucus/caucus/internal/wire"
)

// dumpWAL logs every record of every segment, to diagnose a failing seed.
func dumpWAL(t *testing.T, fsys vfs.FS) {
	names, _ := fsys.ReadDir(testDir)
	for _, n := range names {
		b, err := vfs.ReadFile(fsys, filepath.Join(testDir, n))
		if err != nil {
			t.Logf("%s: %v", n, err)
			continue
		}
		t.Logf("== %s (%d bytes)", n, len(b))
		for off := 0; off < len(b); {
			typ, p, sz, st, why := decodeFrame(b[off:])
			if st != frameOK {
				t.Logf("  %d: status %d %s", off, st, why)
				break
			}
			var d string
			switch typ {
			case recSegmentHeader:
				h, _ := decodeSegmentHeader(p)
				d = fmt.Sprintf("header %+v", h)
			case recEntry:
				e, _, _ := wire.DecodeEntry(p)
				d = fmt.Sprintf("entry %d/%d", e.Index, e.Term)
			case recHardState:
				hs, _, _ := wire.DecodeHardState(p)
				d = fmt.Sprintf("hs %+v", hs)
			case recSnapshot:
				m, k, _ := decodeMarker(p)
				d = fmt.Sprintf("marker %d/%d keep=%v", m.Index, m.Term, k)
			}
			t.Logf("  %d: %s", off, d)
			off += sz
		}
	}
}
