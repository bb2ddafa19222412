//go:build !unix

package mvcc

// processCPU is unavailable here: benchmarks report 0 CPU time.
func processCPU() int64 { return 0 }
