//go:build unix

package mvcc

import "syscall"

// processCPU returns the CPU time (user and system) this process has used, in nanoseconds.
// Benchmarks report it per operation: on a machine shared with other work it is steadier than
// wall time.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
