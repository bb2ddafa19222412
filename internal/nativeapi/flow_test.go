package nativeapi

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"
)

var flowSeeds = flag.Int("flow-seeds", 300, "seeds TestFlowControlModel runs")

// TestFlowControlModel runs a sender's flow and a receiver's flow against each other, one seeded
// random schedule per seed: sends, deliveries of message frames, reads and deliveries of credit
// frames interleave in any order (each direction in order, as on TCP), with messages of random
// sizes up to the whole window. The receiver must never see the window exceeded, messages must
// arrive in order, and once both sides stop racing, every message must get through: credit
// can never be stranded.
func TestFlowControlModel(t *testing.T) {
	for seed := range uint64(*flowSeeds) {
		if err := runFlowModel(seed); err != "" {
			t.Fatalf("seed %d: %s", seed, err)
		}
	}
}

func runFlowModel(seed uint64) string {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	window := int64(64 + rng.IntN(4096))
	sizes := make([]int64, 200)
	for i := range sizes {
		// Mostly small messages, some up to the whole window.
		if rng.IntN(4) == 0 {
			sizes[i] = 8 + rng.Int64N(window-7)
		} else {
			sizes[i] = 8 + rng.Int64N(min(window-7, 64))
		}
	}
	snd, rcv := newFlow(0), newFlow(window)
	snd.setSendWindow(window)
	var dataQ []*[]byte
	var creditQ []uint32
	sent, received := 0, 0
	done, cancel := context.WithCancel(context.Background())
	cancel() // next does not wait on a done context
	send := func() (bool, string) {
		if sent == len(sizes) {
			return false, ""
		}
		ok, err := snd.tryReserve(sizes[sent])
		if err != nil {
			return false, "tryReserve: " + err.Error()
		}
		if !ok {
			return false, ""
		}
		b := make([]byte, sizes[sent])
		binary.BigEndian.PutUint64(b, uint64(sent))
		dataQ = append(dataQ, &b)
		sent++
		return true, ""
	}
	deliver := func() (bool, string) {
		if len(dataQ) == 0 {
			return false, ""
		}
		bp := dataQ[0]
		dataQ = dataQ[1:]
		if err := rcv.deliver(bp); err != nil {
			return false, "the receiver refused a frame the sender had credit for: " + err.Error()
		}
		if st := rcv.stats(); st.Buffered > window {
			return false, "the receiver holds more than its window"
		}
		return true, ""
	}
	read := func() (bool, string) {
		bp, grant, err := rcv.next(done)
		if err != nil {
			return false, "" // nothing buffered
		}
		if got := binary.BigEndian.Uint64(*bp); got != uint64(received) {
			return false, "out of order"
		}
		received++
		if grant > 0 {
			creditQ = append(creditQ, grant)
		}
		return true, ""
	}
	credit := func() (bool, string) {
		if len(creditQ) == 0 {
			return false, ""
		}
		g := creditQ[0]
		creditQ = creditQ[1:]
		if err := snd.addCredit(g); err != nil {
			return false, "the sender refused credit: " + err.Error()
		}
		return true, ""
	}
	steps := []func() (bool, string){send, deliver, read, credit}
	// Race: random steps.
	for range 2000 {
		if _, err := steps[rng.IntN(len(steps))](); err != "" {
			return err
		}
	}
	// Settle: take every step that can progress until none can.
	for {
		progressed := false
		for _, step := range steps {
			ok, err := step()
			if err != "" {
				return err
			}
			progressed = progressed || ok
		}
		if !progressed {
			break
		}
	}
	if received != len(sizes) {
		return fmt.Sprintf("stuck: %d of %d messages received (window %d)", received, len(sizes), window)
	}
	if st := snd.stats(); st.PeakUnacked > window || st.Sent != st.Credited {
		return fmt.Sprintf("sender accounting: peak unacked %d, sent %d, credited %d", st.PeakUnacked, st.Sent, st.Credited)
	}
	return ""
}
