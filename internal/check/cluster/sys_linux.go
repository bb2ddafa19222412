package cluster

import "syscall"

// sysProcAttr makes a member die with the launcher (no orphaned servers after a crashed test)
// and puts it in its own process group, so a terminal's Ctrl-C reaches only the launcher, which
// then stops the members in order.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
