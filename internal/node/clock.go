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

// ManualClock is a Clock whose time moves only when its owner says (Set), for tests and the
// simulator. Its timers and tickers fire as time.Timer's do, one value in the channel and none
// queued behind it, when Set moves time past them. It is not safe for concurrent use: the
// node's loop and its owner must be one goroutine (see Driver).
type ManualClock struct {
	now    time.Time
	timers []*manualTimer
}

// NewManualClock returns a ManualClock reading now.
func NewManualClock(now time.Time) *ManualClock { return &ManualClock{now: now} }

type manualTimer struct {
	c      chan time.Time
	at     time.Time
	period time.Duration // tickers only
	active bool
}

// Now implements Clock.
func (c *ManualClock) Now() time.Time { return c.now }

// NewTimer implements Clock.
func (c *ManualClock) NewTimer(d time.Duration) Timer {
	t := &manualTimer{c: make(chan time.Time, 1), at: c.now.Add(d), active: true}
	c.timers = append(c.timers, t)
	return manualHandle{t, c}
}

// NewTicker implements Clock.
func (c *ManualClock) NewTicker(d time.Duration) Ticker {
	t := &manualTimer{c: make(chan time.Time, 1), at: c.now.Add(d), period: d, active: true}
	c.timers = append(c.timers, t)
	return manualTicker{manualHandle{t, c}}
}

// Set moves time to now and fires every timer due by then.
func (c *ManualClock) Set(now time.Time) {
	c.now = now
	for _, t := range c.timers {
		for t.active && !t.at.After(now) {
			select {
			case t.c <- t.at:
			default:
			}
			t.active = t.period > 0
			t.at = t.at.Add(t.period)
		}
	}
}

type manualHandle struct {
	t *manualTimer
	c *ManualClock
}

func (h manualHandle) C() <-chan time.Time { return h.t.c }

// Reset and Stop leave no stale value in the channel (time.Timer's behaviour since Go 1.23).
func (h manualHandle) Reset(d time.Duration) bool {
	was := h.Stop()
	h.t.at, h.t.active = h.c.now.Add(d), true
	return was
}

func (h manualHandle) Stop() bool {
	was := h.t.active
	h.t.active = false
	select {
	case <-h.t.c:
	default:
	}
	return was
}

type manualTicker struct{ h manualHandle }

func (t manualTicker) C() <-chan time.Time { return t.h.C() }
func (t manualTicker) Stop()               { t.h.Stop() }
