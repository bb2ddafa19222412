package node

import "time"

// Clock is the node's source of time: the current time, the loop's timers and its tick source.
// Every place the node reads time or arms a timer goes through it, so that a simulator can run
// a member on simulated time (Config.Time). The real clock is the default.
type Clock interface {
	Now() time.Time
	// NewTimer returns a running timer that fires once, d from now.
	NewTimer(d time.Duration) Timer
	// NewTicker returns a ticker that fires every d; a tick the reader has not taken yet is
	// not queued again (time.Ticker's behaviour).
	NewTicker(d time.Duration) Ticker
}

// Timer is the part of *time.Timer the node uses.
type Timer interface {
	C() <-chan time.Time
	Reset(d time.Duration) bool
	Stop() bool
}

// Ticker is the part of *time.Ticker the node uses.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// realClock is the operating system's clock.
type realClock struct{}

func (realClock) Now() time.Time                   { return time.Now() }
func (realClock) NewTimer(d time.Duration) Timer   { return realTimer{time.NewTimer(d)} }
func (realClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }
func (t realTimer) C() <-chan time.Time            { return t.t.C }
func (t realTimer) Reset(d time.Duration) bool     { return t.t.Reset(d) }
func (t realTimer) Stop() bool                     { return t.t.Stop() }
func (t realTicker) C() <-chan time.Time           { return t.t.C }
func (t realTicker) Stop()                         { t.t.Stop() }

type realTimer struct{ t *time.Timer }
type realTicker struct{ t *time.Ticker }

// stoppedTimer returns a timer of c that is not running, for the loop to Reset when needed.
func stoppedTimer(c Clock) Timer {
	t := c.NewTimer(time.Hour)
	t.Stop()
	return t
}

// clockOrReal returns c, or the real clock if c is nil.
func clockOrReal(c Clock) Clock {
	if c == nil {
		return realClock{}
	}
	return c
}
