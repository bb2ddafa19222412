// Package client is the Go client of caucus: key-value reads and writes, transactions, leases,
// membership and maintenance, spoken to any member of a cluster.
//
// # Protocols
//
// By default unary calls to http:// endpoints use caucus's native binary protocol
// (Config.Protocol "native"): one multiplexed TCP connection per member on the client port,
// dialed by the first call and redialed after a failure. Snapshots, https:// endpoints and
// Config.Protocol "connect" use connect-go over HTTP. Errors are *connect.Error with the same
// codes and messages on both, so the retry rules below do not depend on the protocol.
//
// # Endpoints, retries and failover
//
// Every member serves every service, and followers forward writes to the leader, so any
// endpoint can answer any call. The client spreads reads round-robin over the configured
// endpoints and sends writes to the leader's endpoint when it knows it (learned in the
// background through Status), which saves the follower's forwarding hop. When an attempt fails
// with a transient error (the member is down, unreachable, has no quorum, or lost leadership),
// the call is retried on the next endpoint; after each full round over the endpoints it backs
// off exponentially with jitter. Retries stop at the call's deadline (Config.RequestTimeout
// when the context has none) or after Config.MaxRetries retries, whichever comes first, and the
// returned error then wraps both the context error and the last attempt's error.
//
// # Exactly-once writes
//
// A write whose attempt failed in transit may or may not have been applied, so blindly
// retrying it could apply it twice. Put, Delete and Txn therefore carry a Session
// {client_id, sequence}: the server remembers the last result per client id and answers a
// retry of the same sequence with that result instead of applying the write again.
//
// The server keeps only the LAST result per client id, so a session must never have two
// writes in flight: if write 7 were retried after write 8 of the same id reached the server,
// the server would refuse 7 as stale although its outcome was never reported. The client
// therefore keeps a pool of session "lanes", each with its own random 64-bit client id and
// sequence counter. A write takes a free lane (or opens a new one), increments the lane's
// sequence once, reuses that sequence on every retry, and returns the lane when it is done.
// Invariant: a lane has at most one write in flight, so every retry carries its lane's latest
// sequence. The number of lanes (client ids the server has to remember) is the peak number of
// concurrent writes of this Client.
//
// The server forgets idle sessions (after mvcc's session TTL, or least recently used first past
// its session limit, never within its retry window). A write whose session was forgotten moves
// once to a fresh client id if none of its attempts can have been applied, and otherwise fails
// with ErrOutcomeUnknown rather than risk a second application. A write re-sends for at most
// MaxWriteRetrySpan.
//
// Writes without sessions in the API (lease grant, membership changes) are retried only when
// the error proves the request was not applied (the connection was never established, or the
// member answered "not leader"); compaction, lease revocation and keep-alives are idempotent
// and retried like reads.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/internal/nativeapi"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultDialTimeout    = 2 * time.Second
	DefaultRequestTimeout = 5 * time.Second

	// backoffBase and backoffMax bound the sleep after each full round of failed attempts over
	// the endpoints; the first retry on another endpoint is immediate, so a single dead member
	// costs no latency beyond its own failed attempt.
	backoffBase = 25 * time.Millisecond
	backoffMax  = time.Second

	// minSplitAttempt is the smallest remaining budget that is split between attempts (see
	// attemptContext); below it an attempt gets all of what remains.
	minSplitAttempt = 2 * time.Second
)

// Config configures a Client. Only Endpoints is required.
type Config struct {
	// Endpoints are the client URLs of members, e.g. "http://10.0.0.1:2379". A bare
	// "host:port" means http://host:port.
	Endpoints []string
	// DialTimeout bounds establishing a connection to one endpoint (default 2s): native
	// connections always, HTTP ones only when HTTPClient is nil.
	DialTimeout time.Duration
	// RequestTimeout bounds a call, retries included, when its context has no deadline
	// (default 5s). KeepAlive loops and SnapshotSave are governed by their context alone.
	RequestTimeout time.Duration
	// MaxRetries bounds the retries of one call after its first attempt. 0 retries until the
	// deadline; a negative value disables retries.
	MaxRetries int
	// Protocol selects how calls travel: ProtocolNative ("native", the default when empty)
	// uses the native binary protocol for the unary calls to http:// endpoints;
	// ProtocolConnect ("connect") uses connect over HTTP for everything, e.g. for members
	// behind an HTTP proxy.
	Protocol string
	// HTTPClient carries the connect (HTTP) requests: snapshots, https:// endpoints, and
	// everything under ProtocolConnect. When nil the client uses its own transport speaking
	// HTTP/2 without TLS (h2c, prior knowledge) to http:// endpoints and HTTP/2 over TLS to
	// https:// ones.
	HTTPClient *http.Client
	// Logger receives retry and keep-alive diagnostics at debug and warn levels; nil discards.
	Logger *slog.Logger
}

// Client is a caucus client. It is safe for concurrent use; Close releases it.
type Client struct {
	cfg       Config
	endpoints []*endpoint
	httpc     *http.Client
	ownHTTP   bool
	log       *slog.Logger

	rr     atomic.Uint64 // round-robin cursor for reads
	leader atomic.Int64  // index of the leader's endpoint, -1 when unknown

	refreshing atomic.Bool // a background leader refresh is running

	lanes lanePool

	ctx    context.Context // canceled by Close; parents background work
	cancel context.CancelFunc

	mu     sync.Mutex // guards closed, and orders wg.Add before Close's wg.Wait
	closed bool
	wg     sync.WaitGroup // background goroutines
}

// endpoint is one member's client URL with its generated service clients.
type endpoint struct {
	url      string
	memberID atomic.Uint64     // learned from response headers; 0 until known
	native   *nativeapi.Client // nil when the endpoint speaks connect only
	kv       caucusv1connect.KVClient
	lease    caucusv1connect.LeaseClient
	cluster  caucusv1connect.ClusterClient
	maint    caucusv1connect.MaintenanceClient
	events   caucusv1connect.EventsClient
	consumer caucusv1connect.ConsumersClient
	// connectMaint is set beside a native maint: snapshots fall back to it when the member
	// predates native streams.
	connectMaint caucusv1connect.MaintenanceClient
}

// New returns a Client for cfg. It does not contact the cluster synchronously: an unreachable
// cluster shows up as errors of the first calls. In the background it asks the endpoints who
// the leader is, so that writes can go there directly.
func New(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, ErrNoEndpoints
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	protocol, err := checkProtocol(cfg.Protocol)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, log: log}
	c.leader.Store(-1)
	c.httpc = cfg.HTTPClient
	if c.httpc == nil {
		c.httpc = &http.Client{Transport: newTransport(cfg.DialTimeout)}
		c.ownHTTP = true
	}
	seen := make(map[string]bool)
	for _, raw := range cfg.Endpoints {
		u, err := normalizeEndpoint(raw)
		if err != nil {
			return nil, err
		}
		if seen[u] {
			continue // a duplicate would only skew round-robin and failover
		}
		seen[u] = true
		c.endpoints = append(c.endpoints, c.newEndpoint(u, protocol))
	}
	// Start the round-robin at a random endpoint so that many short-lived clients (etcdctl
	// style) do not all hit the first endpoint.
	c.rr.Store(rand.Uint64())
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if len(c.endpoints) > 1 {
		c.refreshLeaderAsync()
	}
	return c, nil
}

// newTransport builds the default transport: h2c for http:// (one multiplexed connection per
// member, like gRPC), HTTP/2 over TLS for https://, with HTTP/2 pings so that a connection to a
// partitioned member is detected and dropped instead of hanging new requests.
func newTransport(dialTimeout time.Duration) *http.Transport {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	return &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: dialTimeout,
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConnsPerHost: 16,
		Protocols:           &protocols,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 10 * time.Second,
			PingTimeout:     5 * time.Second,
		},
	}
}

// normalizeEndpoint validates raw and returns it as scheme://host[:port] without a trailing
// slash, the base URL connect-go appends procedure paths to.
func normalizeEndpoint(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("client: endpoint %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("client: endpoint %q: scheme %q is not http or https", raw, u.Scheme)
	}
	if u.Host == "" {
		return "", fmt.Errorf("client: endpoint %q: no host", raw)
	}
	return strings.TrimSuffix(u.Scheme+"://"+u.Host+u.Path, "/"), nil
}

// Endpoints returns the normalized endpoint URLs in configuration order.
func (c *Client) Endpoints() []string {
	out := make([]string, len(c.endpoints))
	for i, ep := range c.endpoints {
		out[i] = ep.url
	}
	return out
}

// Close stops background work (leader discovery, keep-alive loops), aborts calls in flight and
// releases idle connections. Calls in flight and made after Close fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	for _, ep := range c.endpoints {
		if ep.native != nil {
			ep.native.Close()
		}
	}
	if c.ownHTTP {
		c.httpc.CloseIdleConnections()
	}
	return nil
}

// target chooses where the first attempt of a call goes.
type target int

const (
	anyEndpoint    target = iota // round-robin (reads)
	leaderEndpoint               // the leader's endpoint when known (writes)
)

// policy decides which failed attempts may be retried.
type policy int

const (
	// retryTransient retries every transient failure: for reads, idempotent operations and
	// session writes, where a repeated application is impossible or harmless.
	retryTransient policy = iota
	// retryNotApplied retries only failures that prove the request was not applied.
	retryNotApplied
)

// call runs attempt against endpoints until it succeeds, fails permanently, or the deadline or
// retry budget runs out. op names the operation in errors and logs.
func (c *Client) call(ctx context.Context, op string, tgt target, pol policy, attempt func(ctx context.Context, ep *endpoint) error) error {
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	var cancel context.CancelFunc
	if _, ok := ctx.Deadline(); ok {
		ctx, cancel = context.WithCancel(ctx)
	} else {
		ctx, cancel = context.WithTimeout(ctx, c.cfg.RequestTimeout)
	}
	defer cancel()
	// Close aborts calls in flight instead of leaving them to their deadlines.
	defer context.AfterFunc(c.ctx, cancel)()
	n := len(c.endpoints)
	start := c.firstEndpoint(tgt)
	var lastErr error
	// telling is the last error that says more than that time ran out: when the call's
	// deadline cuts its last attempt short, the caller learns why the earlier ones failed
	// (e.g. "unavailable: no quorum") rather than only that the deadline passed. A timeout
	// never replaces a member's answer: an attempt sent with a millisecond left comes back
	// as the member's DeadlineExceeded a moment before the call's own context expires.
	// Only when nothing better is known does an attempt's own timeout (a silent member) tell.
	var telling error
	for try := 0; ; try++ {
		ep := c.endpoints[(start+try)%n]
		actx, acancel := attemptContext(ctx, n)
		err := attempt(actx, ep)
		acancel()
		if err == nil {
			return nil
		}
		lastErr = fmt.Errorf("%s via %s: %w", op, ep.url, err)
		if !isContextError(err) || (telling == nil && ctx.Err() == nil) {
			telling = lastErr
		}
		if c.ctx.Err() != nil {
			return fmt.Errorf("client: %w: %w", ErrClosed, lastErr)
		}
		if ctx.Err() != nil {
			return expired(ctx.Err(), try+1, telling, lastErr)
		}
		if !retryable(err, pol) {
			return lastErr
		}
		if tgt == leaderEndpoint || isNotLeader(err) {
			// The leader may have changed or the member may be gone; forget it and look again
			// so that the next writes go to the right place.
			c.leader.CompareAndSwap(int64((start+try)%n), -1)
			c.refreshLeaderAsync()
		}
		if c.cfg.MaxRetries < 0 || (c.cfg.MaxRetries > 0 && try >= c.cfg.MaxRetries) {
			return fmt.Errorf("client: giving up after %d attempt(s): %w", try+1, lastErr)
		}
		c.log.Debug("caucus client: retrying", "op", op, "endpoint", ep.url, "attempt", try+1, "err", err)
		if (try+1)%n == 0 {
			if err := sleepCtx(ctx, backoff((try+1)/n)); err != nil {
				return expired(err, try+1, telling, lastErr)
			}
		}
	}
}

// expired is the error of a call whose context ended (ctxErr) after tries attempts: it wraps
// the telling error, and the last attempt's when that is another.
func expired(ctxErr error, tries int, telling, lastErr error) error {
	if telling != nil && telling != lastErr {
		return fmt.Errorf("client: %w after %d attempt(s): %w (last attempt: %w)", ctxErr, tries, telling, lastErr)
	}
	return fmt.Errorf("client: %w after %d attempt(s): %w", ctxErr, tries, lastErr)
}

// headered is a response that says which member answered.
type headered interface {
	GetHeader() *caucusv1.ResponseHeader
}

// unary runs one request-response RPC through call (target tgt, retry policy pol) and returns
// the response message.
func unary[Resp any](ctx context.Context, c *Client, op string, tgt target, pol policy,
	rpc func(context.Context, *endpoint) (*connect.Response[Resp], error)) (*Resp, error) {
	var resp *Resp
	err := c.call(ctx, op, tgt, pol, answerInto(&resp, rpc))
	return resp, err
}

// unaryWrite is unary for a session write (see write): setSession stamps the request.
func unaryWrite[Resp any](ctx context.Context, c *Client, op string, setSession func(*caucusv1.Session),
	rpc func(context.Context, *endpoint) (*connect.Response[Resp], error)) (*Resp, error) {
	var resp *Resp
	err := c.write(ctx, op, setSession, answerInto(&resp, rpc))
	return resp, err
}

// answerInto turns rpc into an attempt that keeps the response message in *resp and notes on
// the endpoint which member answered, when the response says.
func answerInto[Resp any](resp **Resp, rpc func(context.Context, *endpoint) (*connect.Response[Resp], error)) func(context.Context, *endpoint) error {
	return func(ctx context.Context, ep *endpoint) error {
		r, err := rpc(ctx, ep)
		if err != nil {
			return err
		}
		*resp = r.Msg
		if h, ok := any(r.Msg).(headered); ok {
			ep.noteMember(h.GetHeader().GetMemberId())
		}
		return nil
	}
}

// isContextError reports whether err only says that a context ended.
func isContextError(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeDeadlineExceeded, connect.CodeCanceled:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// attemptContext bounds one attempt. With several endpoints, an attempt gets at most half of
// the remaining budget (when that budget is large) so that a member which accepted the
// connection and then went silent (partitioned, stopped) cannot consume the whole deadline:
// there is always time left to fail over.
func attemptContext(ctx context.Context, endpoints int) (context.Context, context.CancelFunc) {
	dl, _ := ctx.Deadline()
	remaining := time.Until(dl)
	if endpoints < 2 || remaining <= minSplitAttempt {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, remaining/2)
}

// firstEndpoint returns the index of the endpoint for the first attempt.
func (c *Client) firstEndpoint(tgt target) int {
	n := len(c.endpoints)
	if tgt == leaderEndpoint {
		if l := c.leader.Load(); l >= 0 && int(l) < n {
			return int(l)
		}
	}
	return int(c.rr.Add(1) % uint64(n))
}

// backoff returns the sleep after the given number of failed full rounds: exponential from
// backoffBase, capped at backoffMax, with full jitter in its upper half so that many clients
// do not retry in lockstep after a leader change.
func backoff(rounds int) time.Duration {
	d := backoffBase << min(rounds, 10)
	if d > backoffMax {
		d = backoffMax
	}
	return d/2 + rand.N(d/2+1)
}

// sleepCtx sleeps for d or until ctx is done, returning ctx's error in the latter case.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// noteMember records which member answered on ep, so that the leader id reported by Status can
// be mapped to an endpoint.
func (ep *endpoint) noteMember(memberID uint64) {
	if memberID != 0 {
		ep.memberID.Store(memberID)
	}
}

// goBackground runs f in a goroutine that Close waits for. It returns false, without running
// f, when the client is closed.
func (c *Client) goBackground(f func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// refreshLeaderAsync starts a leader refresh unless one is already running or the client is
// closed.
func (c *Client) refreshLeaderAsync() {
	if len(c.endpoints) < 2 || !c.refreshing.CompareAndSwap(false, true) {
		return
	}
	started := c.goBackground(func() {
		defer c.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.DialTimeout+time.Second)
		defer cancel()
		if err := c.refreshLeader(ctx); err != nil {
			c.log.Debug("caucus client: leader discovery failed", "err", err)
		}
	})
	if !started {
		c.refreshing.Store(false)
	}
}

// refreshLeader asks every endpoint for its Status concurrently and records the endpoint of the
// leader reported with the highest term. It returns an error when no endpoint reports a leader
// that one of the endpoints is.
func (c *Client) refreshLeader(ctx context.Context) error {
	type answer struct {
		idx          int
		leader, term uint64
	}
	answers := make(chan answer, len(c.endpoints))
	errs := make(chan error, len(c.endpoints))
	for i, ep := range c.endpoints {
		go func() {
			resp, err := ep.maint.Status(ctx, connect.NewRequest(&caucusv1.StatusRequest{}))
			if err != nil {
				errs <- fmt.Errorf("status of %s: %w", ep.url, err)
				return
			}
			ep.noteMember(resp.Msg.GetHeader().GetMemberId())
			answers <- answer{idx: i, leader: resp.Msg.GetLeader(), term: resp.Msg.GetRaftTerm()}
		}()
	}
	var best answer
	var errList []error
	for range c.endpoints {
		select {
		case a := <-answers:
			if a.leader != 0 && a.term >= best.term {
				best = a
			}
		case err := <-errs:
			errList = append(errList, err)
		}
	}
	if best.leader == 0 {
		return fmt.Errorf("no member reports a leader: %w", errors.Join(errList...))
	}
	for i, ep := range c.endpoints {
		if ep.memberID.Load() == best.leader {
			c.leader.Store(int64(i))
			return nil
		}
	}
	c.leader.Store(-1)
	return fmt.Errorf("leader %x is not among the endpoints", best.leader)
}
