// Package server serves caucus's public API (api/caucus/v1) for one member with connect-go, so
// that gRPC clients and plain HTTP/JSON clients (curl) use the same handlers on the client port.
//
// Every request gets a deadline (the client's, or RequestTimeout): nothing waits forever for a
// quorum that is not there. Writes become Raft proposals and are answered with the result the
// state machine produced when it applied them on this member; linearizable reads wait for a
// read index confirmed by a quorum; serializable reads are answered from local state, and their
// header says which applied index they reflect. Watches stream from the member's watch hub
// (internal/watch); consumer fetches long-poll at the member and propose only when something is
// ready. A request that needs a newer log format than some member applies is refused before it
// is proposed (checkLogVersion).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/internal/fsm"
	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/internal/node"
	"github.com/caucus/caucus/internal/watch"
)

// Version is the server version reported by Status.
const Version = "0.1.0-dev"

// DefaultRequestTimeout bounds a request whose client set no deadline.
const DefaultRequestTimeout = 5 * time.Second

// MaxRequestTimeout bounds how long a write or a linearizable read waits on this member,
// whatever deadline the client asked for. It must stay well below mvcc's session retry window
// (DefaultSessionRetryWindow, 2 min), which assumes that a copy of a write reaches the leader's
// log, or is dropped, within a bounded time of being sent.
const MaxRequestTimeout = 30 * time.Second

// DefaultQuotaBackendBytes is the default QuotaBackendBytes: 2 GiB, etcd's default. bbolt maps
// the whole file into memory and a snapshot copies it, so a member wants a bound well below its
// RAM and disk.
const DefaultQuotaBackendBytes = 2 << 30

// ErrNoSpace refuses a write because the state machine's file has reached the quota. Reads,
// deletes, compaction and lease revocation still work: compact old revisions, then defragment
// (caucus defrag) to give the space back, and writes resume by themselves.
var ErrNoSpace = errors.New("database space exceeded")

// TestBug plants a deliberate consistency bug so that the checker (internal/check) can be shown
// to catch it. Only the hidden --unsafe-test-bug flag sets it.
type TestBug string

const (
	// BugNone is production behaviour.
	BugNone TestBug = ""
	// BugStaleReads serves linearizable reads from local state without a read index.
	BugStaleReads TestBug = "stale-reads"
	// BugAckBeforeCommit acknowledges a put as soon as it is handed to Raft, before it is
	// committed: a read right after the acknowledgement can miss it, and a leader failure can
	// lose it.
	BugAckBeforeCommit TestBug = "ack-before-commit"
)

// Config configures a Server.
type Config struct {
	Node *node.Node
	// Proposer proposes this member's writes; Store serves its reads.
	Proposer  *fsm.Proposer
	Store     *mvcc.Store
	ClusterID uint64
	// Limits are the local transport limits (MaxRequestBytes bounds a request read from a
	// connection). What a request may contain is checked against the replicated settings
	// (Store.Limits).
	Limits         mvcc.Limits
	RequestTimeout time.Duration
	// QuotaBackendBytes bounds the state machine's file: past it, writes that would grow it are
	// refused (see ErrNoSpace). 0 means DefaultQuotaBackendBytes; negative, no quota.
	QuotaBackendBytes int64
	// MemberID derives a new member's id from its name and peer URLs.
	MemberID func(name string, peerURLs []string) uint64
	// GossipState, if set, returns this member's gossip view of a member (alive, suspect,
	// dead, left, or "" when unknown); member list carries it.
	GossipState func(id uint64) string
	// Watch holds the limits of watches (internal/watch); zero fields take its defaults.
	Watch  watch.Options
	Bug    TestBug
	Logger *slog.Logger
}

// Server implements the four API services.
type Server struct {
	cfg   Config
	n     *node.Node
	prop  *fsm.Proposer
	store *mvcc.Store
	log   *slog.Logger
	watch *watch.Hub
	// fetchWaiting counts consumer fetches waiting at this member for new events.
	fetchWaiting atomic.Int32
	// logVersions caches the oldest log format version of the members (checkLogVersion).
	logVersions atomic.Pointer[logVersionCache]
	// size and sizeAt (unix nanoseconds) cache the state machine file's size for the quota;
	// since counts the bytes of the writes accepted on that measure.
	size, sizeAt, since atomic.Int64
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	cfg.RequestTimeout = min(cfg.RequestTimeout, MaxRequestTimeout)
	if cfg.QuotaBackendBytes == 0 {
		cfg.QuotaBackendBytes = DefaultQuotaBackendBytes
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	s := &Server{cfg: cfg, n: cfg.Node, prop: cfg.Proposer, store: cfg.Store, log: lg.With("component", "server")}
	s.watch = watch.New(watch.Config{Store: cfg.Store, KV: kvFromLog, Event: EventFromLog, Options: cfg.Watch, Logger: lg})
	// Watchers and waiting fetches see a write once it is committed to the store: while there
	// are any, the node commits promptly rather than at its group-commit interval.
	if cfg.Store != nil {
		cfg.Store.SetPromptReaders(func(keys [][]byte, topics []string) bool {
			return s.fetchWaiting.Load() > 0 || s.watch.Interested(keys, topics)
		})
	}
	return s
}

// Handler returns the HTTP handler serving every service. Serve it with Protocols() so that gRPC
// clients can use cleartext HTTP/2 while curl uses HTTP/1.1.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	// Responses are not compressed: on a LAN the CPU costs more than the bytes save (measured in
	// bench/kvbench: gzip was a quarter of server CPU on small reads).
	opts := []connect.HandlerOption{connect.WithReadMaxBytes(s.cfg.Limits.MaxRequestBytes), connect.WithCompressMinBytes(math.MaxInt)}
	mux.Handle(caucusv1connect.NewKVHandler(&kvService{s}, opts...))
	mux.Handle(caucusv1connect.NewLeaseHandler(&leaseService{s}, opts...))
	mux.Handle(caucusv1connect.NewClusterHandler(&clusterService{s}, opts...))
	mux.Handle(caucusv1connect.NewMaintenanceHandler(&maintenanceService{s}, opts...))
	path, events := caucusv1connect.NewEventsHandler(&eventsService{s: s}, opts...)
	mux.Handle(path, withResponseController(events))
	mux.Handle(caucusv1connect.NewConsumersHandler(&consumersService{s}, opts...))
	mux.HandleFunc("/health", s.health)
	return mux
}

// Protocols returns the protocols the client port serves: HTTP/1.1 and cleartext HTTP/2.
func Protocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return p
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	st := s.n.Status()
	if err := s.n.Err(); err != nil {
		http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if st.SoftState.Lead == 0 {
		http.Error(w, "unhealthy: no leader", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "ok leader=%x term=%d\n", uint64(st.SoftState.Lead), st.HardState.Term)
}

// withDeadline applies the default request timeout when the client set none, and caps a
// client's deadline at MaxRequestTimeout: a proposal must not wait in this member's queues for
// longer than the exactly-once sessions' retry window assumes (internal/mvcc/session.go).
func (s *Server) withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	d := s.cfg.RequestTimeout
	if dl, ok := ctx.Deadline(); ok {
		if time.Until(dl) <= MaxRequestTimeout {
			return context.WithCancel(ctx)
		}
		d = MaxRequestTimeout
	}
	return context.WithTimeout(ctx, d)
}

func (s *Server) header(rev int64) *caucusv1.ResponseHeader {
	st := s.n.Status()
	if rev == 0 {
		rev = s.store.Rev()
	}
	return &caucusv1.ResponseHeader{
		ClusterId:        s.cfg.ClusterID,
		MemberId:         uint64(s.n.ID()),
		Revision:         rev,
		RaftTerm:         st.HardState.Term,
		RaftAppliedIndex: s.store.AppliedIndex(),
	}
}

// propose validates and replicates cmd, returning the state machine's response.
func (s *Server) propose(ctx context.Context, cmd *logpb.Command) (any, error) {
	if err := s.store.Limits().Validate(cmd); err != nil {
		return nil, toConnect(err)
	}
	if err := s.checkQuota(cmd); err != nil {
		return nil, err
	}
	if err := s.checkLogVersion(cmd); err != nil {
		return nil, err
	}
	if _, put := cmd.GetOp().(*logpb.Command_Put); put && s.cfg.Bug == BugAckBeforeCommit {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
			defer cancel()
			_, _ = s.prop.Propose(ctx, cmd)
		}()
		return &logpb.PutResponse{}, nil
	}
	ctx, cancel := s.withDeadline(ctx)
	defer cancel()
	res, err := s.prop.Propose(ctx, cmd)
	if err != nil {
		return nil, toConnect(err)
	}
	if res.Err != nil {
		return nil, toConnect(res.Err)
	}
	return res.Resp, nil
}

// checkQuota refuses cmd if it could grow the state machine's file and the file has reached the
// quota. As etcd's, the check is this member's, at the API: members' files grow alike, and one
// that lags behind the quota only delays the refusal.
func (s *Server) checkQuota(cmd *logpb.Command) error {
	if s.cfg.QuotaBackendBytes < 0 || !growsStore(cmd) {
		return nil
	}
	size := s.storeSize(int64(proto.Size(cmd)))
	if size < s.cfg.QuotaBackendBytes {
		return nil
	}
	return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%w: the state machine file is %d bytes, quota %d (--quota-backend-bytes): compact old revisions and defragment", ErrNoSpace, size, s.cfg.QuotaBackendBytes))
}

// quotaRecheck is how long a measured size of the state machine file is reused while it is
// well below the quota: a stat per write would be a syscall on every put.
const quotaRecheck = 100 * time.Millisecond

// storeSize returns the state machine file's size, for a write of n bytes. Far from the quota a
// measure is reused for quotaRecheck, as long as it plus the bytes of the writes accepted on it
// stays below 90% of the quota: a burst of large writes measures again as soon as it could
// near the quota, however fast it comes. Near the quota or past it every write measures, so
// that the refusal starts at the quota (behind it by at most the writes applied but not yet
// committed to the file, node.DefaultApplyCommitInterval) and a defragment that shrank the file
// lets writes through at once.
func (s *Server) storeSize(n int64) int64 {
	now := time.Now().UnixNano()
	if size := s.size.Load(); measureStillGood(now, s.sizeAt.Load(), size, s.since.Add(n), s.cfg.QuotaBackendBytes) {
		return size
	}
	size := s.store.Size()
	s.size.Store(size)
	s.since.Store(0)
	s.sizeAt.Store(now)
	return size
}

// measureStillGood reports whether a size measured at at (0: never) may stand for the file at
// now, after writes of since bytes were accepted on it, under quota (see storeSize).
func measureStillGood(now, at, size, since, quota int64) bool {
	return at != 0 && now-at < int64(quotaRecheck) && size+since < quota/10*9
}

// growsStore reports whether cmd may add data: a put, a transaction with a put in either branch,
// a new lease. Deletes, compaction and lease revocation free space and are never refused.
func growsStore(cmd *logpb.Command) bool {
	switch op := cmd.GetOp().(type) {
	case *logpb.Command_Put, *logpb.Command_LeaseGrant:
		return true
	case *logpb.Command_Txn:
		for _, ops := range [][]*logpb.RequestOp{op.Txn.GetSuccess(), op.Txn.GetFailure()} {
			for _, o := range ops {
				if o.GetRequestPut() != nil {
					return true
				}
			}
		}
	}
	return false
}

// linearize waits until a read on this member is linearizable.
func (s *Server) linearize(ctx context.Context) error {
	if s.cfg.Bug == BugStaleReads {
		return nil
	}
	ctx, cancel := s.withDeadline(ctx)
	defer cancel()
	if err := s.n.LinearizableRead(ctx); err != nil {
		return toConnect(err)
	}
	return nil
}

// toConnect maps internal errors to API status codes with a message that says what happened.
func toConnect(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	code := connect.CodeInternal
	switch {
	case errors.Is(err, node.ErrUnavailable), errors.Is(err, node.ErrStopped):
		code = connect.CodeUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = connect.CodeCanceled
	case errors.Is(err, mvcc.ErrCompacted), errors.Is(err, mvcc.ErrFutureRev):
		code = connect.CodeOutOfRange
	case errors.Is(err, mvcc.ErrLeaseNotFound), errors.Is(err, mvcc.ErrConsumerNotFound):
		code = connect.CodeNotFound
	case errors.Is(err, mvcc.ErrLeaseExists), errors.Is(err, mvcc.ErrConsumerExists):
		code = connect.CodeAlreadyExists
	case errors.Is(err, mvcc.ErrStaleAttempt), errors.Is(err, mvcc.ErrNotPending):
		// The delivery was answered, redelivered, or never made: re-sending cannot succeed.
		code = connect.CodeFailedPrecondition
	case errors.Is(err, mvcc.ErrTooManyConsumers):
		code = connect.CodeResourceExhausted
	case errors.Is(err, mvcc.ErrStaleSequence), errors.Is(err, mvcc.ErrSessionExpired):
		// Nothing was applied, and re-sending the same request cannot succeed: the client has
		// to decide (package client moves to a new session or reports an unknown outcome).
		code = connect.CodeFailedPrecondition
	case errors.Is(err, mvcc.ErrIdempotencyKeyReused):
		code = connect.CodeFailedPrecondition
	case errors.Is(err, mvcc.ErrTooManySessions), errors.Is(err, mvcc.ErrTooManyTopics), errors.Is(err, mvcc.ErrTooManyIdempotencyKeys):
		code = connect.CodeResourceExhausted
	case errors.Is(err, mvcc.ErrKeyTooLarge), errors.Is(err, mvcc.ErrValueTooLarge),
		errors.Is(err, mvcc.ErrRequestTooLarge), errors.Is(err, mvcc.ErrTooManyOps),
		errors.Is(err, mvcc.ErrDuplicateKey), errors.Is(err, mvcc.ErrUnknownKeyspace),
		errors.Is(err, mvcc.ErrEmptyKey), errors.Is(err, mvcc.ErrInvalidArgument),
		errors.Is(err, mvcc.ErrInvalidTopic), errors.Is(err, mvcc.ErrEventTooLarge), errors.Is(err, mvcc.ErrTooManyEvents):
		code = connect.CodeInvalidArgument
	case errors.Is(err, errMember):
		code = connect.CodeInvalidArgument
	}
	return connect.NewError(code, err)
}

var errMember = errors.New("server: invalid member request")

// checkLogVersion refuses a command of a newer log format version than some member applies:
// that member would stop at the entry (logpb.CheckVersion). Members publish the version they
// apply when they start (logpb.MemberAttributes.log_version), so the refusal ends once the
// last member runs a release that knows the version. The oldest member's version is cached
// until the membership table changes: reading it on every write cost a tenth of a member's CPU.
func (s *Server) checkLogVersion(cmd *logpb.Command) error {
	v := logpb.Needs(cmd)
	if v == logpb.Version1 {
		return nil // every release applies it
	}
	gen := s.store.MembersGen()
	if c := s.logVersions.Load(); c != nil && c.gen == gen && c.min >= v {
		return nil
	}
	oldest := logVersionCache{gen: gen, min: logpb.MaxVersion}
	var behind *mvcc.Member
	for _, m := range s.store.Members() {
		have := max(m.LogVersion, logpb.Version1)
		if have < oldest.min {
			oldest.min = have
		}
		if have < v && behind == nil {
			behind = &m
		}
	}
	s.logVersions.Store(&oldest)
	if behind != nil {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"server: member %x (%s) runs a release that applies log format versions up to %d, and this request needs %d (%s): upgrade it first",
			behind.ID, behind.Name, max(behind.LogVersion, logpb.Version1), v, logpb.VersionFeature(v)))
	}
	return nil
}

// logVersionCache is the oldest log format version the members apply, as of a MembersGen.
type logVersionCache struct {
	gen uint64
	min uint32
}
