package nativeapi

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// DefaultSniffTimeout bounds how long a new connection may take to send the bytes that tell
// the protocols apart. HTTP clients and native clients both speak first, so a healthy client
// needs one round trip at most.
const DefaultSniffTimeout = 10 * time.Second

// SplitConfig configures Split.
type SplitConfig struct {
	// SniffTimeout bounds the sniffing of one connection (default DefaultSniffTimeout).
	SniffTimeout time.Duration
	Logger       *slog.Logger
}

// Listener is the HTTP side of a split client port: it implements net.Listener and yields
// every accepted connection that does not start with the native preface, with the bytes
// sniffed from it replayed. Native connections go to the Server given to Split.
type Listener struct {
	ln     net.Listener
	native *Server
	sniff  time.Duration
	log    *slog.Logger

	httpConns chan net.Conn
	done      chan struct{} // closed by Close

	mu       sync.Mutex
	sniffing map[net.Conn]struct{} // connections being sniffed, closed by Close
	closed   bool
	err      error // why the accept loop stopped

	closeOnce sync.Once
	wg        sync.WaitGroup // the accept loop and sniffers
}

// Split serves the native protocol and HTTP on one listener. It accepts from ln in its own
// goroutine and returns the listener the HTTP server should Serve. Closing the returned
// listener closes ln and stops sniffing; it does not close native, whose connections the
// caller closes with native.Close.
func Split(ln net.Listener, native *Server, cfg SplitConfig) *Listener {
	if cfg.SniffTimeout <= 0 {
		cfg.SniffTimeout = DefaultSniffTimeout
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	l := &Listener{
		ln:        ln,
		native:    native,
		sniff:     cfg.SniffTimeout,
		log:       lg.With("component", "nativeapi"),
		httpConns: make(chan net.Conn),
		done:      make(chan struct{}),
		sniffing:  make(map[net.Conn]struct{}),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Accept returns the next HTTP connection. After Close (or when the underlying listener
// fails) it returns an error wrapping net.ErrClosed or the listener's error.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.httpConns:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		err := l.err
		l.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return nil, err
	}
}

// Addr returns the underlying listener's address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Close closes the underlying listener and every connection still being sniffed, and waits for
// the sniffers to return. Connections already handed over are not affected.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		err = l.ln.Close()
		l.shutdown(nil)
	})
	l.wg.Wait()
	return err
}

// shutdown stops Accept, recording why, and closes the connections being sniffed.
func (l *Listener) shutdown(cause error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.err = cause
	for c := range l.sniffing {
		c.Close()
	}
	l.mu.Unlock()
	close(l.done)
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and similar: back off instead of spinning, as
				// net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-l.done:
					return
				}
			}
			if errors.Is(err, net.ErrClosed) {
				err = nil
			} else {
				err = fmt.Errorf("nativeapi: accept on %s: %w", l.ln.Addr(), err)
			}
			l.shutdown(err)
			return
		}
		backoff = 0
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			c.Close()
			return
		}
		l.sniffing[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.route(c)
	}
}

// route sniffs c and hands it to the native server or the HTTP side.
func (l *Listener) route(c net.Conn) {
	defer l.wg.Done()
	br := bufio.NewReaderSize(c, readBufSize)
	native, err := l.sniffConn(c, br)
	l.mu.Lock()
	_, owned := l.sniffing[c]
	delete(l.sniffing, c)
	closed := l.closed
	l.mu.Unlock()
	if !owned || closed {
		c.Close()
		return
	}
	if err != nil {
		l.log.Debug("client connection closed before it chose a protocol", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	if native {
		if err := l.native.ServeConn(c, br); err != nil {
			l.log.Debug("native server refused a connection", "remote", c.RemoteAddr().String(), "err", err)
		}
		return
	}
	// Hand over the bytes read so far, then the connection itself.
	replay, _ := br.Peek(br.Buffered())
	hc := &replayConn{Conn: c, replay: bytes.Clone(replay)}
	select {
	case l.httpConns <- hc:
	case <-l.done:
		c.Close()
	}
}

// sniffConn reads until the bytes received either diverge from the native preface (HTTP) or
// complete it (native, and the preface is consumed). It reads no more than it needs to decide,
// beyond what one read returns, and gives up after the sniff timeout.
func (l *Listener) sniffConn(c net.Conn, br *bufio.Reader) (native bool, err error) {
	if err := c.SetReadDeadline(time.Now().Add(l.sniff)); err != nil {
		return false, fmt.Errorf("setting the sniff deadline: %w", err)
	}
	want := 1
	for {
		b, err := br.Peek(want)
		if !bytes.Equal(b, preface[:len(b)]) {
			native = false
			break
		}
		if len(b) == PrefaceLen {
			native = true
			break
		}
		if err != nil {
			return false, fmt.Errorf("sniffing the protocol after %d bytes: %w", len(b), err)
		}
		// Ask for whatever more arrived, at least one byte.
		want = min(max(br.Buffered(), len(b))+1, PrefaceLen)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return false, fmt.Errorf("clearing the sniff deadline: %w", err)
	}
	if native {
		_, _ = br.Discard(PrefaceLen)
	}
	return native, nil
}

// replayConn returns replay before reading from Conn again.
type replayConn struct {
	net.Conn
	replay []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
