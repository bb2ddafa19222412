package server

import (
	"context"
	"testing"
	"time"
)

// TestWithDeadline: no client deadline gets the configured default; a client deadline shorter
// than MaxRequestTimeout is kept; a longer one is cut to MaxRequestTimeout, because the
// exactly-once sessions assume a write cannot linger on a member for longer.
func TestWithDeadline(t *testing.T) {
	s := New(Config{RequestTimeout: 2 * time.Second})
	cases := []struct {
		name   string
		client time.Duration // 0: no deadline
		want   time.Duration
	}{
		{"none", 0, 2 * time.Second},
		{"short", 10 * time.Second, 10 * time.Second},
		{"long", 10 * time.Minute, MaxRequestTimeout},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			if c.client > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, c.client)
				defer cancel()
			}
			start := time.Now()
			ctx, cancel := s.withDeadline(ctx)
			defer cancel()
			dl, ok := ctx.Deadline()
			if !ok {
				t.Fatal("no deadline")
			}
			if got := dl.Sub(start); got > c.want+time.Second || got < c.want-time.Second {
				t.Fatalf("deadline in %v, want about %v", got, c.want)
			}
		})
	}
	if got := New(Config{RequestTimeout: time.Hour}).cfg.RequestTimeout; got != MaxRequestTimeout {
		t.Fatalf("configured request timeout of 1h kept as %v, want it capped at %v", got, MaxRequestTimeout)
	}
}
