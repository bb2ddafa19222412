package nativeapi

import (
	"sync"
	"sync/atomic"
)

// Calls run on reused goroutines. A call's goroutine grows its stack to what the handler needs
// (request decoding, the store's read path, the propose path: tens of KiB), and a fresh
// goroutine per call would grow (copy) it again for every request; on a small serializable read
// that copying measured about a tenth of the member's CPU. Idle workers wait for the next call;
// at most maxIdleWorkers of them are kept, the rest exit. The runtime shrinks the stack of a
// worker that no longer needs it at garbage collection, as for any goroutine.

// maxIdleWorkers bounds the goroutines kept waiting for calls (each holds its stack).
const maxIdleWorkers = 256

// unaryCall is one unary call to serve.
type unaryCall struct {
	c       *serverConn
	h       RequestHeader
	payload []byte
	bp      *[]byte
}

type workers struct {
	calls chan unaryCall
	idle  atomic.Int32
	// started counts the workers ever started (tests check that calls reuse them).
	started atomic.Int64
	done    chan struct{} // closed by Server.Close: idle workers exit
	once    sync.Once
	wg      sync.WaitGroup
}

func newWorkers() *workers {
	return &workers{calls: make(chan unaryCall), done: make(chan struct{})}
}

// run hands cl to an idle worker, or starts one.
func (w *workers) run(cl unaryCall) {
	select {
	case w.calls <- cl:
	default:
		w.wg.Add(1)
		w.started.Add(1)
		go w.work(cl)
	}
}

func (w *workers) work(cl unaryCall) {
	defer w.wg.Done()
	for {
		cl.c.serve(cl.h, cl.payload, cl.bp)
		if w.idle.Add(1) > maxIdleWorkers {
			w.idle.Add(-1)
			return
		}
		select {
		case cl = <-w.calls:
			w.idle.Add(-1)
		case <-w.done:
			w.idle.Add(-1)
			return
		}
	}
}

// stop makes idle workers exit and waits for every worker; calls must have returned. Calling
// it again (Close twice) only waits.
func (w *workers) stop() {
	w.once.Do(func() { close(w.done) })
	w.wg.Wait()
}
