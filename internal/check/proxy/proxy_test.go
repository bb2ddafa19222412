package proxy

import (
	"bufio"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

// echoServer echoes every line it reads back to the sender and reports each received line.
func echoServer(t *testing.T) (addr string, lines <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 100)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					ch <- sc.Text()
					if _, err := c.Write([]byte(sc.Text() + "\n")); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), ch
}

func start(t *testing.T, target string, identify func(net.Conn) string) *Proxy {
	t.Helper()
	p, err := Listen("127.0.0.1:0", target, identify)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// A generous bound so that a broken proxy fails the test instead of hanging it.
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t, c, bufio.NewReader(c)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.c.Write([]byte(s + "\n")); err != nil {
		c.t.Fatalf("write %q: %v", s, err)
	}
}

func (c *client) roundTrip(s string) {
	c.t.Helper()
	c.send(s)
	got, err := c.r.ReadString('\n')
	if err != nil || got != s+"\n" {
		c.t.Fatalf("round trip %q: got %q, %v", s, got, err)
	}
}

// closed asserts the proxy closed the connection: the next read ends without data.
func (c *client) closed() {
	c.t.Helper()
	b, err := c.r.ReadByte()
	if err == nil {
		c.t.Fatalf("connection still open, read %q", b)
	}
}

// waitFor polls cond until it holds: the proxy's counters are updated by its own goroutines.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

func TestPass(t *testing.T) {
	target, lines := echoServer(t)
	p := start(t, target, nil)
	c := dial(t, p.Addr())
	c.roundTrip("hello")
	if got := <-lines; got != "hello" {
		t.Fatalf("target got %q", got)
	}
}

func TestBlackholeBothWaysThenHeal(t *testing.T) {
	target, lines := echoServer(t)
	p := start(t, target, nil)
	c := dial(t, p.Addr())
	c.roundTrip("before")
	<-lines

	p.Set(AnySource, Both, Blackhole)
	c.send("lost")
	waitFor(t, "discarded upstream bytes", func() bool { up, _ := p.Discarded(); return up == 5 })
	// A connection opened during the partition is blackholed too.
	c2 := dial(t, p.Addr())
	c2.send("lost2")
	waitFor(t, "discarded upstream bytes", func() bool { up, _ := p.Discarded(); return up == 11 })
	select {
	case l := <-lines:
		t.Fatalf("target received %q through a blackhole", l)
	default:
	}

	p.Heal()
	// Streams with holes are closed rather than resumed.
	c.closed()
	c2.closed()
	c3 := dial(t, p.Addr())
	c3.roundTrip("after")
	if got := <-lines; got != "after" {
		t.Fatalf("target got %q, want only the post-heal line", got)
	}
}

func TestBlackholeOneWay(t *testing.T) {
	target, lines := echoServer(t)
	p := start(t, target, nil)
	c := dial(t, p.Addr())
	p.Set(AnySource, Down, Blackhole)
	c.send("ping")
	// Up still passes: the target receives the line; its echo is discarded.
	if got := <-lines; got != "ping" {
		t.Fatalf("target got %q", got)
	}
	waitFor(t, "discarded downstream bytes", func() bool { _, down := p.Discarded(); return down == 5 })
	if up, _ := p.Discarded(); up != 0 {
		t.Fatalf("discarded %d upstream bytes under a downstream-only blackhole", up)
	}
	p.Set(AnySource, Down, Pass)
	c.closed()
	dial(t, p.Addr()).roundTrip("healed")
}

func TestReject(t *testing.T) {
	target, _ := echoServer(t)
	p := start(t, target, nil)
	c := dial(t, p.Addr())
	c.roundTrip("x")
	p.Set(AnySource, Both, Reject)
	c.closed()
	dial(t, p.Addr()).closed()
	p.Heal()
	dial(t, p.Addr()).roundTrip("y")
}

func TestTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := start(t, addr, nil)
	c := dial(t, p.Addr())
	if _, err := c.r.ReadByte(); err == nil {
		t.Fatal("proxy to a dead target kept the connection open")
	}
}

// TestPerSourceRules identifies this very process through /proc: a rule for another source does
// not touch our connections, a rule for ours does.
func TestPerSourceRules(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ProcIdentify needs /proc")
	}
	target, _ := echoServer(t)
	pid := os.Getpid()
	p := start(t, target, ProcIdentify(func() map[string]int { return map[string]int{"me": pid} }))
	c := dial(t, p.Addr())
	c.roundTrip("a")
	p.Set("other", Both, Reject)
	c.roundTrip("b")
	p.Set("me", Both, Reject)
	c.closed()
	dial(t, p.Addr()).closed()
	p.Set("me", Both, Pass)
	// AnySource applies to us only where we have no rule of our own.
	p.Set(AnySource, Both, Reject)
	dial(t, p.Addr()).roundTrip("c")
}
