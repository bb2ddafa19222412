package raftbench

import (
	"fmt"
	"testing"
)

// TestDrive checks that the harness really replicates: every proposal is applied by the leader,
// and after settling every node has applied the same index, with compaction exercised (the run
// crosses CompactEvery several times).
func TestDrive(t *testing.T) {
	for _, impl := range Impls {
		for _, wire := range []bool{false, true} {
			for _, proposers := range []int{1, 64} {
				name := fmt.Sprintf("%s/wire=%v/proposers=%d", impl, wire, proposers)
				t.Run(name, func(t *testing.T) {
					opts := Options{Wire: wire, CompactEvery: 500, KeepEntries: 100}
					c, err := New(impl, opts)
					if err != nil {
						t.Fatal(err)
					}
					before := c.AppliedIndexes()[0]
					const n = 3000
					if err := c.Drive(proposers, n); err != nil {
						t.Fatal(err)
					}
					if err := c.Settle(); err != nil {
						t.Fatal(err)
					}
					// Every proposal is one log entry; nothing else is appended in a stable term.
					if got := c.AppliedIndexes()[0] - before; got != n {
						t.Fatalf("applied index advanced by %d, want %d", got, n)
					}
				})
			}
		}
	}
}

// BenchmarkRaft reports, per committed proposal, time and allocations for each implementation
// with 1 and 64 outstanding proposals, in memory mode (no encoding). Compare with benchstat.
func BenchmarkRaft(b *testing.B) { benchmarkRaft(b, Options{}) }

// BenchmarkRaftWire is BenchmarkRaft with every message and persisted record encoded in the
// implementation's wire format.
func BenchmarkRaftWire(b *testing.B) { benchmarkRaft(b, Options{Wire: true}) }

func benchmarkRaft(b *testing.B, opts Options) {
	for _, impl := range Impls {
		for _, proposers := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/proposers=%d", impl, proposers), func(b *testing.B) {
				c, err := New(impl, opts)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				if err := c.Drive(proposers, b.N); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "proposals/s")
			})
		}
	}
}
