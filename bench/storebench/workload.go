package storebench

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Params configures one run of the workload on one engine.
type Params struct {
	N          int   // puts of the load phase, applied in batches of LoadBatch
	LoadBatch  int   // commands per batch while loading
	KeySpace   int   // keys are 8-byte big-endian integers, uniform in [0, KeySpace)
	ValueSize  int   // bytes per value (random, so incompressible)
	BatchSizes []int // commands per batch of each measured write phase
	Writes     int   // commands of each measured write phase
	Readers    []int // concurrent point readers of each read phase
	IdleReads  int   // point reads by one reader with no writer (the read path's own cost)
	IdleRanges int   // ranges read by one reader with no writer
	RangeLen   int   // keys per range read
	// ReadWrites is the number of commands the writer applies during each read phase, in
	// batches of ReadBatch; the phase lasts as long as they take, so that every engine ends up
	// with the same data and the sizes measured later compare equal states.
	ReadWrites int
	ReadBatch  int
	// ReadWriteRate paces that writer (commands per second; 0: as fast as it can). A paced
	// writer offers both engines the same load, so the readers' throughput compares like with
	// like; an unpaced one lets the engine with the faster writer take the cores from readers.
	ReadWriteRate int
	Budget        int // deletions per commit while compacting history (internal/mvcc: 4096)
	Seed          uint64
}

// Metric is one measured quantity.
type Metric struct {
	Name  string  `json:"name"`
	Unit  string  `json:"unit"`
	Value float64 `json:"value"`
	// Higher is set when a larger value is better (throughput).
	Higher bool `json:"higher,omitempty"`
}

// Run loads an empty engine of kind in dir and measures every phase, returning the metrics in a
// fixed order. The engine's files are left in dir.
func Run(kind Kind, dir string, cfg Config, p Params) ([]Metric, error) {
	r := &runner{kind: kind, cfg: cfg, p: p, dir: dir,
		rng:    rand.New(rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15)),
		values: make([][]byte, 1024)}
	for i := range r.values {
		r.values[i] = make([]byte, p.ValueSize)
		for j := range r.values[i] {
			r.values[i][j] = byte(r.rng.Uint32())
		}
	}
	eng, err := kind.Open(filepath.Join(dir, "db"), cfg)
	if err != nil {
		return nil, err
	}
	r.eng = eng
	defer func() {
		if r.eng != nil {
			r.eng.Close()
		}
	}()
	for _, phase := range []func() error{r.load, r.writes, r.memory, r.reads, r.snapshot, r.compact} {
		if err := phase(); err != nil {
			return r.out, err
		}
	}
	return r.out, nil
}

type runner struct {
	kind   Kind
	cfg    Config
	p      Params
	dir    string
	eng    Engine
	rng    *rand.Rand
	values [][]byte
	index  uint64
	out    []Metric
}

func (r *runner) add(name, unit string, v float64, higher bool) {
	r.out = append(r.out, Metric{Name: name, Unit: unit, Value: v, Higher: higher})
	slog.Debug("metric", "engine", r.kind.Name, "name", name, "value", v, "unit", unit)
}

// key returns a uniformly drawn key of the key space.
func key(rng *rand.Rand, space int) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(rng.IntN(space)))
}

// apply applies n puts in batches of b and returns per-batch latencies.
func (r *runner) apply(n, b int, rng *rand.Rand) ([]time.Duration, error) {
	puts := make([]Put, b)
	lat := make([]time.Duration, 0, n/b+1)
	for done := 0; done < n; {
		m := min(b, n-done)
		for i := range m {
			puts[i] = Put{Key: key(rng, r.p.KeySpace), Value: r.values[rng.IntN(len(r.values))]}
		}
		r.index++
		start := time.Now()
		if err := r.eng.Apply(r.index, puts[:m]); err != nil {
			return lat, err
		}
		lat = append(lat, time.Since(start))
		done += m
	}
	return lat, nil
}

// usage is a sample of the process's resource counters.
type usage struct {
	wall  time.Time
	cpu   time.Duration // user + system
	wchar int64         // bytes handed to write system calls (/proc/self/io)
	// dirtied counts bytes of page cache this process newly dirtied (write_bytes minus
	// cancelled_write_bytes of /proc/self/io): rewriting a page that is still dirty does not
	// count again, so it approximates what writeback will send to the device.
	dirtied int64
}

func sample() usage {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru) // cannot fail with RUSAGE_SELF
	u := usage{wall: time.Now(), cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
	u.wchar, _ = procField("/proc/self/io", "wchar:")
	wb, _ := procField("/proc/self/io", "write_bytes:")
	cb, _ := procField("/proc/self/io", "cancelled_write_bytes:")
	u.dirtied = wb - cb
	return u
}

// procField reads a numeric field of a /proc file ("VmRSS:" of status is in kB).
func procField(path, field string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			return strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no field %q", path, field)
}

// writeMetrics records a write phase of n commands that ran from start to fg, after which the
// engine's background work lasted until settled. Throughput is given both ways; CPU and bytes
// written include the background work, which is part of what a command costs.
func (r *runner) writeMetrics(name string, n int, lat []time.Duration, start, fg, settled usage) {
	r.add(name+" throughput", "cmd/s", float64(n)/fg.wall.Sub(start.wall).Seconds(), true)
	r.add(name+" throughput incl. background", "cmd/s", float64(n)/settled.wall.Sub(start.wall).Seconds(), true)
	r.add(name+" CPU incl. background", "µs/cmd", float64((settled.cpu-start.cpu).Microseconds())/float64(n), false)
	r.add(name+" written incl. background", "B/cmd", float64(settled.wchar-start.wchar)/float64(n), false)
	r.add(name+" newly dirtied incl. background", "B/cmd", float64(settled.dirtied-start.dirtied)/float64(n), false)
	slices.Sort(lat)
	r.add(name+" commit p99", "µs", float64(lat[len(lat)*99/100].Microseconds()), false)
}

// writePhase applies n commands in batches of b and records its metrics under name.
func (r *runner) writePhase(name string, n, b int) error {
	start := sample()
	lat, err := r.apply(n, b, r.rng)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	fg := sample()
	if err := r.eng.Settle(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	r.writeMetrics(name, n, lat, start, fg, sample())
	return nil
}

func (r *runner) load() error {
	if err := r.writePhase(fmt.Sprintf("load B=%d", r.p.LoadBatch), r.p.N, r.p.LoadBatch); err != nil {
		return err
	}
	// Pebble without its WAL holds the newest writes only in memory: flush, so that the size
	// counts all the data, as bbolt's file does.
	if f, ok := r.eng.(interface{ Flush() error }); ok {
		if err := f.Flush(); err != nil {
			return fmt.Errorf("load: %w", err)
		}
	}
	if err := r.eng.Settle(); err != nil {
		return fmt.Errorf("load: %w", err)
	}
	alloc, _, err := DiskUsage(r.eng.Dir())
	if err != nil {
		return err
	}
	r.add(fmt.Sprintf("disk after %d puts", r.p.N), "MiB", float64(alloc)/(1<<20), false)
	return nil
}

func (r *runner) writes() error {
	for _, b := range r.p.BatchSizes {
		if err := r.writePhase(fmt.Sprintf("write B=%d", b), r.p.Writes, b); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) memory() error {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.add("Go heap in use after writes", "MiB", float64(ms.HeapInuse)/(1<<20), false)
	anon, err := procField("/proc/self/status", "RssAnon:")
	if err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	file, err := procField("/proc/self/status", "RssFile:")
	if err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	r.add("RSS anonymous after writes", "MiB", float64(anon)/1024, false)
	r.add("RSS file-backed after writes", "MiB", float64(file)/1024, false)
	return nil
}

// reads runs point readers, then one range reader, each against a writer applying batches.
func (r *runner) reads() error {
	if err := r.eng.Settle(); err != nil {
		return fmt.Errorf("reads: %w", err)
	}
	rng := rand.New(rand.NewPCG(r.p.Seed, 0))
	buf := make([]byte, 0, r.p.ValueSize)
	start := sample()
	for range r.p.IdleReads {
		if _, _, err := r.eng.Get(key(rng, r.p.KeySpace), buf[:0]); err != nil {
			return fmt.Errorf("point reads without writer: %w", err)
		}
	}
	end := sample()
	r.add("point reads, 1 reader, no writer", "reads/s", float64(r.p.IdleReads)/end.wall.Sub(start.wall).Seconds(), true)
	r.add("point read CPU, no writer", "µs/read", float64((end.cpu-start.cpu).Nanoseconds())/1e3/float64(r.p.IdleReads), false)
	start = sample()
	for range r.p.IdleRanges {
		if _, _, err := r.eng.Range(key(rng, r.p.KeySpace), r.p.RangeLen); err != nil {
			return fmt.Errorf("range reads without writer: %w", err)
		}
	}
	end = sample()
	r.add(fmt.Sprintf("range %d keys, 1 reader, no writer", r.p.RangeLen), "keys/s",
		float64(r.p.IdleRanges*r.p.RangeLen)/end.wall.Sub(start.wall).Seconds(), true)
	for _, n := range r.p.Readers {
		reads, wrote, err := r.readPhase(n, func(rng *rand.Rand, buf []byte) (int, error) {
			_, _, err := r.eng.Get(key(rng, r.p.KeySpace), buf[:0])
			return 1, err
		})
		if err != nil {
			return fmt.Errorf("point reads with %d readers: %w", n, err)
		}
		r.add(fmt.Sprintf("point reads, %d readers + writer", n), "reads/s", reads, true)
		r.add(fmt.Sprintf("writer during %d point readers", n), "cmd/s", wrote, true)
	}
	ranges, wrote, err := r.readPhase(1, func(rng *rand.Rand, _ []byte) (int, error) {
		keys, _, err := r.eng.Range(key(rng, r.p.KeySpace), r.p.RangeLen)
		return keys, err
	})
	if err != nil {
		return fmt.Errorf("range reads: %w", err)
	}
	r.add(fmt.Sprintf("range %d keys, 1 reader + writer", r.p.RangeLen), "keys/s", ranges, true)
	r.add("writer during range reader", "cmd/s", wrote, true)
	return nil
}

// readPhase runs readers goroutines calling read while this goroutine applies ReadWrites
// commands in batches of ReadBatch, paced at ReadWriteRate, and returns the items read per second
// and the commands applied per second (below ReadWriteRate if the engine could not keep up).
func (r *runner) readPhase(readers int, read func(*rand.Rand, []byte) (int, error)) (float64, float64, error) {
	// Start from a quiet engine: the phase pays only for the background work its own writes cause.
	if err := r.eng.Settle(); err != nil {
		return 0, 0, err
	}
	var (
		stop  atomic.Bool
		total atomic.Int64
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	start := time.Now()
	for i := range readers {
		rng := rand.New(rand.NewPCG(r.p.Seed+uint64(i)+1, uint64(readers)))
		wg.Go(func() {
			buf := make([]byte, 0, r.p.ValueSize)
			n := 0
			defer func() { total.Add(int64(n)) }()
			for !stop.Load() {
				k, err := read(rng, buf)
				if err != nil {
					errMu.Lock()
					first = err
					errMu.Unlock()
					stop.Store(true)
					return
				}
				n += k
			}
		})
	}
	var werr error
	for done := 0; done < r.p.ReadWrites && werr == nil && !stop.Load(); done += r.p.ReadBatch {
		_, werr = r.apply(min(r.p.ReadBatch, r.p.ReadWrites-done), r.p.ReadBatch, r.rng)
		if r.p.ReadWriteRate > 0 {
			// Pacing, not synchronization: the writer models clients offering a fixed load.
			due := start.Add(time.Duration(float64(done+r.p.ReadBatch) / float64(r.p.ReadWriteRate) * float64(time.Second)))
			time.Sleep(time.Until(due))
		}
	}
	stop.Store(true)
	wg.Wait()
	el := time.Since(start).Seconds()
	if werr != nil {
		return 0, 0, werr
	}
	if first != nil {
		return 0, 0, first
	}
	return float64(total.Load()) / el, float64(r.p.ReadWrites) / el, nil
}

func (r *runner) snapshot() error {
	path := filepath.Join(r.dir, "snapshot")
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	start := time.Now()
	n, err := r.eng.WriteSnapshot(f) // bbolt copies its file in large writes; pebble buffers
	if err == nil {
		err = syncFile(f)
	} else {
		f.Close()
	}
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	r.add("snapshot write+fsync", "s", time.Since(start).Seconds(), false)
	r.add("snapshot size", "MiB", float64(n)/(1<<20), false)

	f, err = os.Open(path)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	start = time.Now()
	restored, err := r.kind.Restore(filepath.Join(r.dir, "restored"), r.cfg, f)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	r.add("restore", "s", time.Since(start).Seconds(), false)
	defer os.RemoveAll(restored.Dir())
	if restored.Rev() != r.eng.Rev() || restored.Applied() != r.eng.Applied() {
		restored.Close()
		return fmt.Errorf("restore: got revision %d index %d, want %d %d",
			restored.Rev(), restored.Applied(), r.eng.Rev(), r.eng.Applied())
	}
	if err := restored.Close(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return os.Remove(path)
}

func (r *runner) compact() error {
	start := time.Now()
	removed, err := r.eng.CompactHistory(r.p.Budget)
	if err != nil {
		return err
	}
	r.add("compact history (delete old versions)", "s", time.Since(start).Seconds(), false)
	r.add("old versions deleted", "count", float64(removed), false)
	if err := r.eng.Settle(); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	alloc, _, err := DiskUsage(r.eng.Dir())
	if err != nil {
		return err
	}
	r.add("disk after compaction", "MiB", float64(alloc)/(1<<20), false)
	start = time.Now()
	if err := r.eng.Reclaim(); err != nil {
		return err
	}
	if err := r.eng.Settle(); err != nil {
		return fmt.Errorf("reclaim: %w", err)
	}
	r.add("reclaim (bbolt defrag / pebble manual compaction)", "s", time.Since(start).Seconds(), false)
	if alloc, _, err = DiskUsage(r.eng.Dir()); err != nil {
		return err
	}
	r.add("disk after reclaim", "MiB", float64(alloc)/(1<<20), false)
	return nil
}
