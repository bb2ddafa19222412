// Package proxy is a fault-injecting TCP proxy for partition tests without Docker or root
// networking: every member's advertised peer URL points at a Proxy that forwards to the member's
// real peer listener, and the nemesis cuts links by changing the Proxy's rules.
//
// # Model
//
// A connection is accepted from a source (another member dialing this one) and forwarded to the
// target (this member). Traffic has two directions: Up (source -> target: the bytes the dialer
// sends) and Down (target -> source: the replies). Each direction of each connection is governed
// by the rule for the connection's source label, falling back to the rule for AnySource:
//
//   - Pass forwards bytes.
//   - Blackhole silently discards bytes, as a network that drops every packet: the writer's
//     writes still succeed. A connection that lost bytes has a hole in its stream, which a real
//     TCP connection never delivers, so when the direction passes again such a connection is
//     closed instead of resumed, as a TCP connection that timed out during the partition.
//   - Reject closes existing connections and closes new ones right after accept, like a peer
//     whose port refuses connections.
//
// Source labels come from an Identify function. Members dial from the kernel's choice of source
// address (127.0.0.1 for any loopback destination), so addresses cannot tell members apart;
// ProcIdentify finds the process owning the dialing socket through /proc instead (Linux).
//
// Invariants: bytes are never reordered or duplicated; a stream is either delivered as a
// contiguous prefix or the connection is closed; once Close returns, no goroutine of the proxy
// writes to either side.
package proxy

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Direction selects one or both directions of traffic.
type Direction int

const (
	// Up is source -> target.
	Up Direction = 1 << iota
	// Down is target -> source.
	Down
	// Both is Up|Down.
	Both = Up | Down
)

func (d Direction) String() string {
	switch d {
	case Up:
		return "up"
	case Down:
		return "down"
	case Both:
		return "both"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// Mode is what happens to the traffic of one direction.
type Mode int

const (
	Pass Mode = iota
	Blackhole
	Reject
)

func (m Mode) String() string {
	return [...]string{"pass", "blackhole", "reject"}[m]
}

// AnySource is the label whose rules apply to connections without a rule of their own.
const AnySource = "*"

type rule struct{ up, down Mode }

// Proxy forwards TCP connections from its listener to one target address.
type Proxy struct {
	ln       net.Listener
	target   string
	identify func(net.Conn) string

	mu     sync.Mutex
	rules  map[string]rule
	conns  map[*conn]struct{}
	closed bool
	wg     sync.WaitGroup

	// discarded counts blackholed bytes per direction (index 0 Up, 1 Down).
	discarded [2]atomic.Int64
	// unidentified counts accepted connections whose source could not be labeled; rules for
	// named sources do not apply to them, so a partition relying on labels would leak.
	unidentified atomic.Int64
}

type conn struct {
	source   string
	src, dst net.Conn
	// tainted[d] is set once bytes of direction d were discarded.
	taintedUp, taintedDown bool
}

// Listen starts a proxy on listenAddr (use port 0 for any) forwarding to target. identify labels
// each accepted connection with its source; nil labels every connection "".
func Listen(listenAddr, target string, identify func(net.Conn) string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, fmt.Errorf("proxy: listen %s: %w", listenAddr, err)
	}
	if identify == nil {
		identify = func(net.Conn) string { return "" }
	}
	p := &Proxy{ln: ln, target: target, identify: identify, rules: map[string]rule{}, conns: map[*conn]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the proxy's listening address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Set sets the mode of direction dir for connections from source (AnySource for all sources
// without their own rule). Moving a direction back to Pass closes connections that lost bytes.
func (p *Proxy) Set(source string, dir Direction, mode Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.rules[source]
	if !ok && source != AnySource {
		r = p.rules[AnySource]
	}
	if dir&Up != 0 {
		r.up = mode
	}
	if dir&Down != 0 {
		r.down = mode
	}
	p.rules[source] = r
	p.enforceLocked()
}

// Heal removes every rule: all traffic passes. Connections that lost bytes are closed.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.rules)
	p.enforceLocked()
}

// Discarded reports how many bytes were blackholed in each direction so far.
func (p *Proxy) Discarded() (up, down int64) {
	return p.discarded[0].Load(), p.discarded[1].Load()
}

// Unidentified reports how many accepted connections got no source label.
func (p *Proxy) Unidentified() int64 { return p.unidentified.Load() }

// Rules describes the current rules, for logs.
func (p *Proxy) Rules() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]string{}
	for s, r := range p.rules {
		out[s] = fmt.Sprintf("up=%v down=%v", r.up, r.down)
	}
	return out
}

func (p *Proxy) ruleLocked(source string) rule {
	if r, ok := p.rules[source]; ok {
		return r
	}
	return p.rules[AnySource]
}

// enforceLocked closes connections that a rule change has made unusable: rejected ones, and
// tainted ones whose direction passes again.
func (p *Proxy) enforceLocked() {
	for c := range p.conns {
		r := p.ruleLocked(c.source)
		if r.up == Reject || r.down == Reject ||
			(c.taintedUp && r.up == Pass) || (c.taintedDown && r.down == Pass) {
			p.dropLocked(c)
		}
	}
}

func (p *Proxy) dropLocked(c *conn) {
	delete(p.conns, c)
	c.src.Close()
	if c.dst != nil {
		c.dst.Close()
	}
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	err := p.ln.Close()
	for c := range p.conns {
		p.dropLocked(c)
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		src, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(src)
	}
}

func (p *Proxy) serve(src net.Conn) {
	defer p.wg.Done()
	c := &conn{source: p.identify(src), src: src}
	if c.source == "" {
		p.unidentified.Add(1)
	}
	p.mu.Lock()
	r := p.ruleLocked(c.source)
	if p.closed || r.up == Reject || r.down == Reject {
		p.mu.Unlock()
		src.Close()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()

	dst, err := net.Dial("tcp", p.target)
	p.mu.Lock()
	if _, live := p.conns[c]; err != nil || !live {
		// The target is down (the member was killed) or the connection was dropped meanwhile:
		// close the source side so the dialer sees the failure as it would without the proxy.
		delete(p.conns, c)
		p.mu.Unlock()
		src.Close()
		if err == nil {
			dst.Close()
		}
		return
	}
	c.dst = dst
	p.mu.Unlock()

	done := make(chan struct{}, 2)
	go func() { p.pump(c, Up, dst, src); done <- struct{}{} }()
	go func() { p.pump(c, Down, src, dst); done <- struct{}{} }()
	<-done
	// One direction ended (EOF or error): tear the whole connection down so the other pump's
	// blocked read returns. Half-close is not modeled; the peer transports do not rely on it.
	p.mu.Lock()
	if _, live := p.conns[c]; live {
		p.dropLocked(c)
	}
	p.mu.Unlock()
	<-done
}

// pump copies one direction, consulting the rules for every chunk so that a rule change
// applies to established connections at once.
func (p *Proxy) pump(c *conn, dir Direction, w io.Writer, r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			p.mu.Lock()
			rl := p.ruleLocked(c.source)
			mode := rl.up
			if dir == Down {
				mode = rl.down
			}
			tainted := c.taintedUp
			if dir == Down {
				tainted = c.taintedDown
			}
			if mode == Blackhole {
				if dir == Up {
					c.taintedUp = true
				} else {
					c.taintedDown = true
				}
			}
			p.mu.Unlock()
			switch {
			case mode == Blackhole:
				p.discarded[dir>>1].Add(int64(n))
			case tainted || mode == Reject:
				// The stream has a hole, or the connection is being rejected: never deliver
				// bytes after a gap. enforceLocked closes it; stop here in case it raced.
				return
			default:
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return // EOF or a closed connection: serve tears the pair down
		}
	}
}
