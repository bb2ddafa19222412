package proxy

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// ProcIdentify returns an identify function for Listen that labels a connection with the name of
// the process that dialed it. pids returns the current name -> pid map (members restart with new
// pids, so it is consulted on every accept). It works on Linux only, where /proc exposes which
// process owns which socket; elsewhere, or when the dialer cannot be found (it already closed
// the socket), the label is "" and only AnySource rules apply.
//
// How: the accepted connection's remote address is the dialer's local address. /proc/net/tcp{,6}
// maps that (local, remote) address pair to a socket inode, and /proc/<pid>/fd of the owning
// process holds a symlink "socket:[inode]".
func ProcIdentify(pids func() map[string]int) func(net.Conn) string {
	return func(c net.Conn) string {
		remote, ok1 := c.RemoteAddr().(*net.TCPAddr)
		local, ok2 := c.LocalAddr().(*net.TCPAddr)
		if !ok1 || !ok2 {
			return ""
		}
		inode, err := socketInode(remote, local)
		if err != nil {
			return ""
		}
		want := "socket:[" + inode + "]"
		for name, pid := range pids() {
			dir := fmt.Sprintf("/proc/%d/fd", pid)
			ents, err := os.ReadDir(dir)
			if err != nil {
				continue
			}
			for _, e := range ents {
				if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == want {
					return name
				}
			}
		}
		return ""
	}
}

// socketInode finds the inode of the TCP socket whose local address is laddr and remote address
// is raddr.
func socketInode(laddr, raddr *net.TCPAddr) (string, error) {
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(file)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 {
				continue
			}
			l, err1 := parseProcAddr(fields[1])
			r, err2 := parseProcAddr(fields[2])
			if err1 != nil || err2 != nil {
				continue
			}
			if sameAddr(l, laddr) && sameAddr(r, raddr) {
				f.Close()
				return fields[9], nil
			}
		}
		f.Close()
	}
	return "", fmt.Errorf("proxy: no socket %v -> %v in /proc/net/tcp", laddr, raddr)
}

func sameAddr(a, b *net.TCPAddr) bool { return a.Port == b.Port && a.IP.Equal(b.IP) }

// parseProcAddr parses "0100007F:1F90": the address is hex of the in-memory (host byte order,
// little-endian on every platform Go targets with /proc) 32-bit words, the port is big hex.
func parseProcAddr(s string) (*net.TCPAddr, error) {
	host, port, ok := strings.Cut(s, ":")
	if !ok {
		return nil, fmt.Errorf("proxy: bad /proc address %q", s)
	}
	raw, err := hex.DecodeString(host)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return nil, fmt.Errorf("proxy: bad /proc address %q", s)
	}
	ip := make(net.IP, len(raw))
	for w := 0; w < len(raw); w += 4 {
		ip[w], ip[w+1], ip[w+2], ip[w+3] = raw[w+3], raw[w+2], raw[w+1], raw[w]
	}
	p, err := strconv.ParseUint(port, 16, 16)
	if err != nil {
		return nil, fmt.Errorf("proxy: bad /proc port %q: %w", s, err)
	}
	return &net.TCPAddr{IP: ip, Port: int(p)}, nil
}
