package server

import (
	"testing"

	"github.com/caucus/caucus/internal/mvcc"
)

func TestNativeConfigMatchesHTTP(t *testing.T) {
	limits := mvcc.DefaultLimits()
	limits.MaxRequestBytes = 12345
	s := New(Config{Limits: limits})
	cfg := s.NativeConfig()
	if cfg.MaxRequestBytes != 12345 {
		t.Errorf("native request limit %d, want the connect handlers' %d", cfg.MaxRequestBytes, 12345)
	}
	h := cfg.Handlers
	if h.KV == nil || h.Lease == nil || h.Cluster == nil || h.Maintenance == nil {
		t.Errorf("native handlers miss a service: %+v", h)
	}
	if h.Intercept != nil {
		t.Error("the server installs no interceptor: both protocols must run the same code")
	}
	// Zero limits still bound native frames.
	if got := New(Config{}).NativeConfig().MaxRequestBytes; got != mvcc.DefaultLimits().MaxRequestBytes {
		t.Errorf("native request limit with zero Limits = %d, want the default %d", got, mvcc.DefaultLimits().MaxRequestBytes)
	}
}
