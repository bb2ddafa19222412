package server

import (
	"testing"
	"time"
)

func TestMeasureStillGood(t *testing.T) {
	const quota = 1000
	at := int64(time.Hour)
	cases := []struct {
		name              string
		now, at, size, by int64
		want              bool
	}{
		{"never measured", at, 0, 0, 0, false},
		{"fresh, far below the quota", at + 1, at, 100, 50, true},
		{"stale", at + int64(quotaRecheck), at, 100, 0, false},
		{"fresh, but the writes since could reach 90%", at + 1, at, 100, 800, false},
		{"fresh, measured at 90%", at + 1, at, 900, 0, false},
	}
	for _, c := range cases {
		if got := measureStillGood(c.now, c.at, c.size, c.by, quota); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
