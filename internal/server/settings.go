package server

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/logpb"
	"github.com/caucus/caucus/internal/mvcc"
)

// Replicated cluster settings (internal/mvcc/settings.go): read from this member's committed
// state, changed through the log.

// settingsToAPI translates limits to the API's form (durations in milliseconds).
func settingsToAPI(l mvcc.Limits) *caucusv1.ClusterSettings {
	s := l.Settings()
	return &caucusv1.ClusterSettings{
		MaxKeyBytes: s.MaxKeyBytes, MaxValueBytes: s.MaxValueBytes, MaxRequestBytes: s.MaxRequestBytes,
		MaxTxnOps: s.MaxTxnOps, MaxRangeResults: s.MaxRangeResults, MaxLeaseTtlSeconds: s.MaxLeaseTtlSeconds,
		MaxLeases: s.MaxLeases, MaxSessions: s.MaxSessions,
		SessionTtlMs:         time.Duration(s.SessionTtlNanos).Milliseconds(),
		SessionRetryWindowMs: time.Duration(s.SessionRetryWindowNanos).Milliseconds(),
		MaxEventBytes:        s.MaxEventBytes, MaxEventsPerWrite: s.MaxEventsPerWrite, MaxTopics: s.MaxTopics,
		IdempotencyRetentionMs: time.Duration(s.IdempotencyRetentionNanos).Milliseconds(),
		MaxIdempotencyKeys:     s.MaxIdempotencyKeys,
	}
}

// settingsToLog translates an API update to the log's form; zero fields stay zero (unchanged).
func settingsToLog(s *caucusv1.ClusterSettings) (*logpb.Settings, error) {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"max_key_bytes", s.GetMaxKeyBytes()}, {"max_value_bytes", s.GetMaxValueBytes()},
		{"max_request_bytes", s.GetMaxRequestBytes()}, {"max_txn_ops", s.GetMaxTxnOps()},
		{"max_range_results", s.GetMaxRangeResults()}, {"max_lease_ttl_seconds", s.GetMaxLeaseTtlSeconds()},
		{"max_leases", s.GetMaxLeases()}, {"max_sessions", s.GetMaxSessions()},
		{"session_ttl_ms", s.GetSessionTtlMs()}, {"session_retry_window_ms", s.GetSessionRetryWindowMs()},
		{"max_event_bytes", s.GetMaxEventBytes()}, {"max_events_per_write", s.GetMaxEventsPerWrite()},
		{"max_topics", s.GetMaxTopics()}, {"idempotency_retention_ms", s.GetIdempotencyRetentionMs()},
		{"max_idempotency_keys", s.GetMaxIdempotencyKeys()},
	} {
		if f.v < 0 {
			return nil, fmt.Errorf("%w: setting %s is negative (%d)", mvcc.ErrInvalidArgument, f.name, f.v)
		}
	}
	const maxMs = int64(time.Duration(1<<63-1) / time.Millisecond)
	if s.GetSessionTtlMs() > maxMs || s.GetSessionRetryWindowMs() > maxMs || s.GetIdempotencyRetentionMs() > maxMs {
		return nil, fmt.Errorf("%w: a session duration above %d ms", mvcc.ErrInvalidArgument, maxMs)
	}
	return &logpb.Settings{
		MaxKeyBytes: s.GetMaxKeyBytes(), MaxValueBytes: s.GetMaxValueBytes(), MaxRequestBytes: s.GetMaxRequestBytes(),
		MaxTxnOps: s.GetMaxTxnOps(), MaxRangeResults: s.GetMaxRangeResults(), MaxLeaseTtlSeconds: s.GetMaxLeaseTtlSeconds(),
		MaxLeases: s.GetMaxLeases(), MaxSessions: s.GetMaxSessions(),
		SessionTtlNanos:         int64(time.Duration(s.GetSessionTtlMs()) * time.Millisecond),
		SessionRetryWindowNanos: int64(time.Duration(s.GetSessionRetryWindowMs()) * time.Millisecond),
		MaxEventBytes:           s.GetMaxEventBytes(), MaxEventsPerWrite: s.GetMaxEventsPerWrite(), MaxTopics: s.GetMaxTopics(),
		IdempotencyRetentionNanos: int64(time.Duration(s.GetIdempotencyRetentionMs()) * time.Millisecond),
		MaxIdempotencyKeys:        s.GetMaxIdempotencyKeys(),
	}, nil
}

func (c *clusterService) Settings(ctx context.Context, req *connect.Request[caucusv1.SettingsRequest]) (*connect.Response[caucusv1.SettingsResponse], error) {
	if req.Msg.Linearizable {
		if err := c.s.linearize(ctx); err != nil {
			return nil, err
		}
	}
	return connect.NewResponse(&caucusv1.SettingsResponse{
		Header: c.s.header(0), Settings: settingsToAPI(c.s.store.Limits()), Replicated: c.s.store.HasSettings(),
	}), nil
}

func (c *clusterService) UpdateSettings(ctx context.Context, req *connect.Request[caucusv1.UpdateSettingsRequest]) (*connect.Response[caucusv1.UpdateSettingsResponse], error) {
	set, err := settingsToLog(req.Msg.GetSet())
	if err != nil {
		return nil, toConnect(err)
	}
	r, err := c.s.propose(ctx, &logpb.Command{Op: &logpb.Command_Settings{Settings: &logpb.SettingsUpdate{Set: set}}})
	if err != nil {
		return nil, err
	}
	applied, ok := r.(*logpb.Settings)
	if !ok {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("server: state machine returned %T for a settings update", r))
	}
	c.s.log.Info("cluster settings updated", "settings", applied.String())
	return connect.NewResponse(&caucusv1.UpdateSettingsResponse{
		Header: c.s.header(0), Settings: settingsToAPI(mvcc.Limits{}.Merge(applied)),
	}), nil
}
