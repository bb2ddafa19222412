package kvbench

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// FsyncLatency measures the disk the members write to: n sequential 4 KiB appends to a file in
// dir, each followed by fdatasync, as a WAL does. Every put of both systems waits for at least
// one such sync (on a quorum of members), so the ratios between the systems follow it; it is
// printed with every run so that runs on different disks can be compared.
func FsyncLatency(dir string, n int) (p50, p99 time.Duration, err error) {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(filepath.Clean(f.Name()))
	defer f.Close()
	buf := make([]byte, 4096)
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		if _, err := f.Write(buf); err != nil {
			return 0, 0, fmt.Errorf("fsync probe: %w", err)
		}
		if err := fdatasync(f); err != nil {
			return 0, 0, fmt.Errorf("fsync probe: %w", err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}
