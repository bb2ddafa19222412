package gossipnet

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caucus/caucus/gossip"
)

// Defaults of the named limits (Config fields left zero take them).
const (
	DefaultDialTimeout       = 2 * time.Second
	DefaultReadTimeout       = 5 * time.Second
	DefaultWriteTimeout      = 5 * time.Second
	DefaultMaxInboundStreams = 64
	// DefaultMaxOutboundStreams bounds the stream sends in flight; more are dropped (and
	// counted), which the core tolerates like any lost message.
	DefaultMaxOutboundStreams = 64
	DefaultLeaveTimeout       = 3 * time.Second
	inboxSize                 = 256
)

// ErrClosed is returned by calls on a closed driver.
var ErrClosed = errors.New("gossipnet: driver closed")

// Config configures a Driver.
type Config struct {
	// Core is the gossip core's configuration. Core.Addr is the advertised host:port; a port of 0
	// is replaced by the port bound.
	Core gossip.Config
	// BindAddr is the host:port to bind (UDP and TCP alike); empty: Core.Addr.
	BindAddr string
	// Keyring, if set, encrypts every message (AES-GCM) and refuses what no key opens.
	// KeyringFile, if set instead, is read at start and by Reload.
	Keyring     *Keyring
	KeyringFile string

	DialTimeout, ReadTimeout, WriteTimeout time.Duration
	MaxInboundStreams                      int
	MaxOutboundStreams                     int
	// LeaveTimeout bounds how long Close waits for the leave announcement to spread.
	LeaveTimeout time.Duration
	Logger       *slog.Logger
}

// Stats are the driver's own counters (the core's are in Status().Counters).
type Stats struct {
	MalformedDatagrams uint64 // datagrams over the size limit or refused by the core
	MalformedStreams   uint64 // stream frames over the limit, cut short, or refused by the core
	Undecryptable      uint64 // messages no key of the ring opens (or unsealed ones), refused
	StreamsRefused     uint64 // inbound connections over MaxInboundStreams, closed at once
	StreamsDropped     uint64 // stream sends over MaxOutboundStreams, dropped
	SendErrors         uint64 // datagram writes, dials and stream writes that failed
	EventsDropped      uint64 // events a full subscriber buffer did not take
	DatagramsDropped   uint64 // datagrams the test hook dropped
}

type counters struct {
	malformedDatagrams, malformedStreams, undecryptable, streamsRefused, streamsDropped,
	sendErrors, eventsDropped, datagramsDropped atomic.Uint64
}

// input is a message received, handed to the loop.
type input struct {
	from   string
	stream bool
	data   []byte
	// reply, for a stream received on an inbound connection, takes the frames the core answers
	// on that connection (Packet.Reply) right after stepping it.
	reply chan [][]byte
}

type op struct {
	fn   func(*gossip.Node)
	done chan struct{}
}

// Driver runs one gossip.Node on real sockets. See the package doc.
type Driver struct {
	cfg  Config
	log  *slog.Logger
	keys *Keyring
	node *gossip.Node
	addr string // advertised

	udp *net.UDPConn
	tcp *net.TCPListener

	inbox chan input
	ops   chan op
	stop  chan struct{}
	left  chan struct{} // closed by the loop once the leave has spread
	wg    sync.WaitGroup

	inSem, outSem chan struct{}
	c             counters

	subMu sync.Mutex
	subs  []*Subscription

	closeOnce sync.Once
	leaving   bool // loop-owned

	udpCache map[string]*net.UDPAddr // loop-owned

	// dropUDP, if set (tests), drops datagrams to or from an address for which it returns true.
	dropUDP atomic.Pointer[func(addr string) bool]
}

// Subscription receives membership events in a bounded buffer; when it is full, events are
// dropped (and counted) rather than block the loop.
type Subscription struct {
	C       <-chan gossip.Event
	c       chan gossip.Event
	dropped atomic.Uint64
}

// Dropped is the number of events this subscription missed because its buffer was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Start binds the sockets and starts the driver. It joins nobody: call Join.
func Start(cfg Config) (*Driver, error) {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxInboundStreams <= 0 {
		cfg.MaxInboundStreams = DefaultMaxInboundStreams
	}
	if cfg.MaxOutboundStreams <= 0 {
		cfg.MaxOutboundStreams = DefaultMaxOutboundStreams
	}
	if cfg.LeaveTimeout <= 0 {
		cfg.LeaveTimeout = DefaultLeaveTimeout
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	d := &Driver{
		cfg: cfg, log: lg, keys: cfg.Keyring,
		inbox: make(chan input, inboxSize), ops: make(chan op),
		stop: make(chan struct{}), left: make(chan struct{}),
		inSem: make(chan struct{}, cfg.MaxInboundStreams), outSem: make(chan struct{}, cfg.MaxOutboundStreams),
		udpCache: map[string]*net.UDPAddr{},
	}
	if cfg.KeyringFile != "" {
		k, err := LoadKeyringFile(cfg.KeyringFile)
		if err != nil {
			return nil, err
		}
		d.keys = k
	}
	bind := cfg.BindAddr
	if bind == "" {
		bind = cfg.Core.Addr
	}
	if err := d.listen(bind); err != nil {
		return nil, err
	}
	core := cfg.Core
	host, port, err := net.SplitHostPort(core.Addr)
	if err != nil {
		d.closeSockets()
		return nil, fmt.Errorf("gossipnet: advertised address %q: %w", core.Addr, err)
	}
	if port == "0" {
		core.Addr = net.JoinHostPort(host, strconv.Itoa(d.tcp.Addr().(*net.TCPAddr).Port))
	}
	if core.Seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		core.Seed = binary.LittleEndian.Uint64(b[:])
	}
	if core.Logger == nil {
		core.Logger = lg
	}
	node, err := gossip.New(core)
	if err != nil {
		d.closeSockets()
		return nil, fmt.Errorf("gossipnet: %w", err)
	}
	d.node, d.addr, d.cfg.Core = node, core.Addr, core
	d.log = lg.With("member", core.Name)
	d.wg.Add(3)
	go d.loop()
	go d.readUDP()
	go d.accept()
	return d, nil
}

// listen binds TCP then UDP on the same port; with port 0, the port TCP got (retried a few times
// if UDP finds it taken).
func (d *Driver) listen(bind string) error {
	for attempt := 0; ; attempt++ {
		tcp, err := net.Listen("tcp", bind)
		if err != nil {
			return fmt.Errorf("gossipnet: listen tcp %s: %w", bind, err)
		}
		ta := tcp.Addr().(*net.TCPAddr)
		udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ta.IP, Port: ta.Port, Zone: ta.Zone})
		if err != nil {
			tcp.Close()
			if _, port, _ := net.SplitHostPort(bind); port == "0" && attempt < 10 {
				continue
			}
			return fmt.Errorf("gossipnet: listen udp %s: %w", ta, err)
		}
		// A larger receive buffer rides out bursts (a joiner's gossip) while the loop is busy.
		_ = udp.SetReadBuffer(1 << 20)
		d.tcp, d.udp = tcp.(*net.TCPListener), udp
		return nil
	}
}

// Addr is the advertised address (host:port, UDP and TCP).
func (d *Driver) Addr() string { return d.addr }

// Name is the member's name in the group.
func (d *Driver) Name() string { return d.cfg.Core.Name }

// Subscribe returns a subscription to membership events with a buffer of the given size.
func (d *Driver) Subscribe(buffer int) *Subscription {
	c := make(chan gossip.Event, max(buffer, 1))
	s := &Subscription{C: c, c: c}
	d.subMu.Lock()
	d.subs = append(d.subs, s)
	d.subMu.Unlock()
	return s
}

// Unsubscribe stops delivering events to s.
func (d *Driver) Unsubscribe(s *Subscription) {
	d.subMu.Lock()
	defer d.subMu.Unlock()
	for i, x := range d.subs {
		if x == s {
			d.subs = append(d.subs[:i:i], d.subs[i+1:]...)
			return
		}
	}
}

// do runs fn on the loop, which owns the node.
func (d *Driver) do(fn func(*gossip.Node)) error {
	o := op{fn: fn, done: make(chan struct{})}
	select {
	case d.ops <- o:
	case <-d.stop:
		return ErrClosed
	}
	select {
	case <-o.done:
		return nil
	case <-d.stop:
		return ErrClosed
	}
}

// Join starts push-pulls with the given addresses (asynchronous: see gossip.Node.Join).
func (d *Driver) Join(addrs ...string) error {
	return d.do(func(n *gossip.Node) { n.Join(addrs...) })
}

// UpdateMeta announces new metadata.
func (d *Driver) UpdateMeta(meta []byte) error {
	var err error
	if e := d.do(func(n *gossip.Node) { err = n.UpdateMeta(meta) }); e != nil {
		return e
	}
	return err
}

// Members returns the node's view of the group (nil once closed).
func (d *Driver) Members() []gossip.Member {
	var ms []gossip.Member
	_ = d.do(func(n *gossip.Node) { ms = n.Members() })
	return ms
}

// Member returns the node's view of one member.
func (d *Driver) Member(name string) (gossip.Member, bool) {
	var m gossip.Member
	var ok bool
	_ = d.do(func(n *gossip.Node) { m, ok = n.Member(name) })
	return m, ok
}

// Status returns the core's status (the zero Status once closed).
func (d *Driver) Status() gossip.Status {
	var st gossip.Status
	_ = d.do(func(n *gossip.Node) { st = n.Status() })
	return st
}

// Stats returns the driver's counters.
func (d *Driver) Stats() Stats {
	return Stats{
		MalformedDatagrams: d.c.malformedDatagrams.Load(), MalformedStreams: d.c.malformedStreams.Load(),
		Undecryptable: d.c.undecryptable.Load(), StreamsRefused: d.c.streamsRefused.Load(),
		StreamsDropped: d.c.streamsDropped.Load(), SendErrors: d.c.sendErrors.Load(),
		EventsDropped: d.c.eventsDropped.Load(), DatagramsDropped: d.c.datagramsDropped.Load(),
	}
}

// Keyring returns the keyring in use (nil without encryption).
func (d *Driver) Keyring() *Keyring { return d.keys }

// Reload rereads Config.KeyringFile and replaces the keys (the server calls it on SIGHUP). On
// error the keys in use stay. Without a keyring file it does nothing.
func (d *Driver) Reload() error {
	if d.cfg.KeyringFile == "" {
		return nil
	}
	keys, err := ReadKeyringFile(d.cfg.KeyringFile)
	if err != nil {
		return err
	}
	if err := d.keys.Set(keys...); err != nil {
		return fmt.Errorf("%s: %w", d.cfg.KeyringFile, err)
	}
	d.log.Info("gossip keyring reloaded", "keys", len(keys))
	return nil
}

// Close leaves gracefully: it announces the leave and waits (at most LeaveTimeout) until the
// announcement has spread, then stops.
func (d *Driver) Close() error {
	alone := false
	err := d.do(func(n *gossip.Node) {
		// With no other live member there is nobody to tell: do not wait for the spread.
		alone = !slices.ContainsFunc(n.Members(), func(m gossip.Member) bool {
			return m.Name != d.cfg.Core.Name && (m.State == gossip.StateAlive || m.State == gossip.StateSuspect)
		})
		n.Leave()
		d.leaving = !alone
	})
	if err == nil && !alone {
		t := time.NewTimer(d.cfg.LeaveTimeout)
		select {
		case <-d.left:
		case <-t.C:
			d.log.Warn("gossip leave not spread within the timeout; stopping anyway", "timeout", d.cfg.LeaveTimeout)
		}
		t.Stop()
	}
	d.Abort()
	return nil
}

// Abort stops at once without announcing anything: to the others it looks like a crash.
func (d *Driver) Abort() {
	d.closeOnce.Do(func() {
		close(d.stop)
		d.closeSockets()
		d.wg.Wait()
	})
}

func (d *Driver) closeSockets() {
	if d.udp != nil {
		d.udp.Close()
	}
	if d.tcp != nil {
		d.tcp.Close()
	}
}

// loop owns the node: ticks, inputs and calls, each followed by sending what the node asks.
func (d *Driver) loop() {
	defer d.wg.Done()
	tick := time.NewTicker(d.cfg.Core.TickInterval)
	defer tick.Stop()
	for {
		var reply chan [][]byte
		select {
		case <-d.stop:
			return
		case <-tick.C:
			d.node.Tick()
		case in := <-d.inbox:
			if err := d.node.Step(gossip.Packet{Addr: in.from, Stream: in.stream, Data: in.data}); err != nil {
				if in.stream {
					d.c.malformedStreams.Add(1)
				} else {
					d.c.malformedDatagrams.Add(1)
				}
				d.log.Debug("gossip message refused", "addr", in.from, "stream", in.stream, "err", err)
			}
			reply = in.reply
		case o := <-d.ops:
			o.fn(d.node)
			close(o.done)
		}
		d.flush(reply)
		if d.leaving && d.node.Status().LeaveSpread {
			close(d.left)
			d.leaving = false
		}
	}
}

// flush sends what the node has ready. Stream answers to the message just stepped go back on its
// connection when reply is set; every other stream message goes over a connection of its own.
func (d *Driver) flush(reply chan [][]byte) {
	var replies [][]byte
	defer func() {
		if reply != nil {
			reply <- replies // buffered for one: never blocks
		}
	}()
	if !d.node.HasReady() {
		return
	}
	rd := d.node.Ready()
	for _, p := range rd.Packets {
		switch {
		case !p.Stream:
			d.sendDatagram(p)
		case p.Reply && reply != nil:
			replies = append(replies, d.seal(p.Data))
		default:
			d.sendStream(p.Addr, d.seal(p.Data))
		}
	}
	if len(rd.Events) > 0 {
		d.subMu.Lock()
		for _, s := range d.subs {
			for _, e := range rd.Events {
				select {
				case s.c <- e:
				default:
					s.dropped.Add(1)
					d.c.eventsDropped.Add(1)
				}
			}
		}
		d.subMu.Unlock()
	}
}

func (d *Driver) seal(b []byte) []byte {
	if d.keys == nil {
		return b
	}
	return d.keys.Seal(make([]byte, 0, len(b)+Overhead), b)
}

func (d *Driver) open(b []byte, from string) ([]byte, bool) {
	if d.keys == nil {
		return b, true
	}
	out, err := d.keys.Open(b)
	if err != nil {
		d.c.undecryptable.Add(1)
		d.log.Debug("gossip message refused", "addr", from, "err", err)
		return nil, false
	}
	return out, true
}

func (d *Driver) dropped(addr string) bool {
	if f := d.dropUDP.Load(); f != nil && (*f)(addr) {
		d.c.datagramsDropped.Add(1)
		return true
	}
	return false
}

func (d *Driver) sendDatagram(p gossip.Packet) {
	if d.dropped(p.Addr) {
		return
	}
	ua, ok := d.udpCache[p.Addr]
	if !ok {
		var err error
		if ua, err = net.ResolveUDPAddr("udp", p.Addr); err != nil {
			d.c.sendErrors.Add(1)
			d.log.Debug("gossip datagram not sent", "addr", p.Addr, "err", err)
			return
		}
		if len(d.udpCache) > 4096 { // bounded: addresses of forgotten members go too
			clear(d.udpCache)
		}
		d.udpCache[p.Addr] = ua
	}
	if _, err := d.udp.WriteToUDP(d.seal(p.Data), ua); err != nil {
		d.c.sendErrors.Add(1)
		d.log.Debug("gossip datagram not sent", "addr", p.Addr, "err", err)
	}
}

func (d *Driver) maxFrame() int {
	n := d.cfg.Core.MaxStreamBytes
	if d.keys != nil {
		n += Overhead
	}
	return n
}

func (d *Driver) deliver(in input) bool {
	select {
	case d.inbox <- in:
		return true
	case <-d.stop:
		return false
	}
}

func (d *Driver) readUDP() {
	defer d.wg.Done()
	limit := d.cfg.Core.MaxPacketBytes
	if d.keys != nil {
		limit += Overhead
	}
	buf := make([]byte, 64<<10)
	for {
		n, from, err := d.udp.ReadFromUDP(buf)
		if err != nil {
			select {
			case <-d.stop:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		fa := from.String()
		if d.dropped(fa) {
			continue
		}
		if n > limit {
			d.c.malformedDatagrams.Add(1)
			d.log.Debug("gossip datagram refused: over the size limit", "addr", fa, "bytes", n, "limit", limit)
			continue
		}
		data, ok := d.open(append([]byte(nil), buf[:n]...), fa)
		if !ok {
			continue
		}
		if !d.deliver(input{from: fa, data: data}) {
			return
		}
	}
}

func (d *Driver) accept() {
	defer d.wg.Done()
	for {
		c, err := d.tcp.Accept()
		if err != nil {
			select {
			case <-d.stop:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		select {
		case d.inSem <- struct{}{}:
		default:
			d.c.streamsRefused.Add(1)
			d.log.Debug("gossip stream refused: too many inbound streams", "addr", c.RemoteAddr().String(), "limit", d.cfg.MaxInboundStreams)
			c.Close()
			continue
		}
		d.wg.Add(1)
		go d.serve(c)
	}
}

// serve reads frames from an inbound connection, steps each and writes the answers back, until
// the peer closes its side, a limit or timeout is hit, or the driver stops.
func (d *Driver) serve(c net.Conn) {
	defer d.wg.Done()
	defer func() { <-d.inSem }()
	defer c.Close()
	from := c.RemoteAddr().String()
	stopWatch := closeOnStop(c, d.stop)
	defer stopWatch()
	reply := make(chan [][]byte, 1)
	for {
		frame, err := d.readFrame(c)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				d.c.malformedStreams.Add(1)
				d.log.Debug("gossip stream closed", "addr", from, "err", err)
			}
			return
		}
		data, ok := d.open(frame, from)
		if !ok {
			return
		}
		if !d.deliver(input{from: from, stream: true, data: data, reply: reply}) {
			return
		}
		var frames [][]byte
		select {
		case frames = <-reply:
		case <-d.stop:
			return
		}
		for _, f := range frames {
			if err := d.writeFrame(c, f); err != nil {
				d.c.sendErrors.Add(1)
				d.log.Debug("gossip stream answer not sent", "addr", from, "err", err)
				return
			}
		}
	}
}

// sendStream dials addr, writes one frame, closes its write side and steps what comes back.
func (d *Driver) sendStream(addr string, frame []byte) {
	select {
	case d.outSem <- struct{}{}:
	default:
		d.c.streamsDropped.Add(1)
		d.log.Debug("gossip stream dropped: too many in flight", "addr", addr, "limit", d.cfg.MaxOutboundStreams)
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer func() { <-d.outSem }()
		c, err := net.DialTimeout("tcp", addr, d.cfg.DialTimeout)
		if err != nil {
			d.c.sendErrors.Add(1)
			d.log.Debug("gossip stream not sent", "addr", addr, "err", err)
			return
		}
		defer c.Close()
		stopWatch := closeOnStop(c, d.stop)
		defer stopWatch()
		if err := d.writeFrame(c, frame); err != nil {
			d.c.sendErrors.Add(1)
			d.log.Debug("gossip stream not sent", "addr", addr, "err", err)
			return
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		for {
			f, err := d.readFrame(c)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					d.c.malformedStreams.Add(1)
					d.log.Debug("gossip stream answer not read", "addr", addr, "err", err)
				}
				return
			}
			data, ok := d.open(f, addr)
			if !ok || !d.deliver(input{from: addr, stream: true, data: data}) {
				return
			}
		}
	}()
}

// closeOnStop closes c when stop closes, so that blocked reads and writes end with the driver; the
// returned func releases the watcher.
func closeOnStop(c net.Conn, stop <-chan struct{}) func() {
	done := make(chan struct{})
	go func() {
		select {
		case <-stop:
			c.Close()
		case <-done:
		}
	}()
	return func() { close(done) }
}

var errFrameTooLarge = errors.New("frame over the size limit")

// readFrame reads a 4-byte big-endian length and that many bytes, within ReadTimeout. A clean
// end of stream before a frame is io.EOF.
func (d *Driver) readFrame(c net.Conn) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(d.cfg.ReadTimeout))
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("frame header cut short: %w", err)
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if int64(n) > int64(d.maxFrame()) {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", errFrameTooLarge, n, d.maxFrame())
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("frame of %d bytes cut short: %w", n, err)
	}
	return buf, nil
}

func (d *Driver) writeFrame(c net.Conn, frame []byte) error {
	_ = c.SetWriteDeadline(time.Now().Add(d.cfg.WriteTimeout))
	buf := make([]byte, 4, 4+len(frame))
	binary.BigEndian.PutUint32(buf, uint32(len(frame)))
	_, err := c.Write(append(buf, frame...))
	return err
}
