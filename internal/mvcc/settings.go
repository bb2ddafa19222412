package mvcc

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/caucus/caucus/internal/logpb"
)

// Replicated settings. The limits decide outcomes (a put of a value one byte over the limit is
// refused), so every member must apply with the same values: they live in the replicated state
// (the meta bucket, key "settings") and change only through the log (a Settings command). Until
// a cluster's log has set them, the store applies with Options.Limits, which the node gives the
// release's defaults so that every member of one release agrees; the first leader then proposes
// its configured values as the initial settings (logpb.SettingsUpdate.initial).

var metaSettings = []byte("settings")

// Settings converts limits to their replicated form.
func (l Limits) Settings() *logpb.Settings {
	return &logpb.Settings{
		MaxKeyBytes:               int64(l.MaxKeyBytes),
		MaxValueBytes:             int64(l.MaxValueBytes),
		MaxRequestBytes:           int64(l.MaxRequestBytes),
		MaxTxnOps:                 int64(l.MaxTxnOps),
		MaxRangeResults:           l.MaxRangeResults,
		MaxLeaseTtlSeconds:        l.MaxLeaseTTL,
		MaxLeases:                 int64(l.MaxLeases),
		MaxSessions:               int64(l.MaxSessions),
		SessionTtlNanos:           int64(l.SessionTTL),
		SessionRetryWindowNanos:   int64(l.SessionRetryWindow),
		MaxEventBytes:             int64(l.MaxEventBytes),
		MaxEventsPerWrite:         int64(l.MaxEventsPerWrite),
		MaxTopics:                 int64(l.MaxTopics),
		IdempotencyRetentionNanos: int64(l.IdempotencyRetention),
		MaxIdempotencyKeys:        int64(l.MaxIdempotencyKeys),
	}
}

// Merge returns l with the non-zero fields of s.
func (l Limits) Merge(s *logpb.Settings) Limits {
	set := func(dst *int, v int64) {
		if v != 0 {
			*dst = int(v)
		}
	}
	set(&l.MaxKeyBytes, s.GetMaxKeyBytes())
	set(&l.MaxValueBytes, s.GetMaxValueBytes())
	set(&l.MaxRequestBytes, s.GetMaxRequestBytes())
	set(&l.MaxTxnOps, s.GetMaxTxnOps())
	set(&l.MaxLeases, s.GetMaxLeases())
	set(&l.MaxSessions, s.GetMaxSessions())
	set(&l.MaxEventBytes, s.GetMaxEventBytes())
	set(&l.MaxEventsPerWrite, s.GetMaxEventsPerWrite())
	set(&l.MaxTopics, s.GetMaxTopics())
	set(&l.MaxIdempotencyKeys, s.GetMaxIdempotencyKeys())
	if v := s.GetIdempotencyRetentionNanos(); v != 0 {
		l.IdempotencyRetention = time.Duration(v)
	}
	if v := s.GetMaxRangeResults(); v != 0 {
		l.MaxRangeResults = v
	}
	if v := s.GetMaxLeaseTtlSeconds(); v != 0 {
		l.MaxLeaseTTL = v
	}
	if v := s.GetSessionTtlNanos(); v != 0 {
		l.SessionTTL = time.Duration(v)
	}
	if v := s.GetSessionRetryWindowNanos(); v != 0 {
		l.SessionRetryWindow = time.Duration(v)
	}
	return l
}

// Check reports limits that cannot work, quoting the offending values.
func (l Limits) Check() error { return l.check() }

// loadSettings reads the replicated settings; ok is false while the log has set none.
func loadSettings(tx *bolt.Tx) (l Limits, ok bool, err error) {
	v := tx.Bucket(bucketMeta).Get(metaSettings)
	if v == nil {
		return Limits{}, false, nil
	}
	var s logpb.Settings
	if err := proto.Unmarshal(v, &s); err != nil {
		return Limits{}, false, fmt.Errorf("mvcc: decode replicated settings: %w", err)
	}
	return Limits{}.Merge(&s).withDefaults(), true, nil
}

// publishLimits makes the limits of the committed state in tx the ones readers and the next
// batch see: the replicated settings if the log set them, Options.Limits otherwise.
func (s *Store) publishLimits(tx *bolt.Tx) error {
	l, ok, err := loadSettings(tx)
	if err != nil {
		return err
	}
	if !ok {
		l = s.opts.Limits
	}
	s.limits.Store(&l)
	s.hasSettings.Store(ok)
	return nil
}

// HasSettings reports whether the committed state holds replicated settings (a Settings command
// has been applied).
func (s *Store) HasSettings() bool { return s.hasSettings.Load() }

// applySettings applies a SettingsUpdate. Invalid values are refused deterministically (every
// member refuses the same command); an initial update applies only while none is stored.
func (b *Batch) applySettings(u *logpb.SettingsUpdate) (*logpb.Settings, error) {
	_, stored, err := loadSettings(b.tx)
	if err != nil {
		b.fail(err)
		return nil, nil
	}
	if u.GetInitial() && stored {
		return b.limits.Settings(), nil
	}
	next := b.limits.Merge(u.GetSet())
	if err := next.check(); err != nil {
		return nil, errorf(ErrInvalidArgument, "settings: %v", err)
	}
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(next.Settings())
	if err != nil {
		b.fail(fmt.Errorf("encode settings: %w", err))
		return nil, nil
	}
	if err := b.tx.Bucket(bucketMeta).Put(metaSettings, v); err != nil {
		b.fail(fmt.Errorf("store settings: %w", err))
		return nil, nil
	}
	b.limits, b.settingsChanged = next, true
	return next.Settings(), nil
}
