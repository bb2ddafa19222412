package mvcc

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caucus/caucus/internal/logpb"
	"google.golang.org/protobuf/proto"
)

// sessionModel is the session rules of session.go written as plainly as possible: a map, a
// clock, and a linear scan for the least recently used session.
type sessionModel struct {
	lim      Limits
	clock    int64
	sessions map[uint64]*modelSession
}

type modelSession struct {
	seq     uint64
	lastUse int64
	resp    proto.Message
}

// Outcomes of a sessioned write: applied, answered as a retry, or refused with an error.
const (
	outApplied = "applied"
	outRetry   = "retry"
)

var (
	outStale   = ErrStaleSequence
	outExpired = ErrSessionExpired
	outTooMany = ErrTooManySessions
	outInvalid = ErrInvalidArgument
)

// oldest returns the least recently used session; ties go to the smaller client id, like the
// sesslru bucket's key order.
func (m *sessionModel) oldest() (uint64, *modelSession) {
	var id uint64
	var o *modelSession
	for c, s := range m.sessions {
		if o == nil || s.lastUse < o.lastUse || (s.lastUse == o.lastUse && c < id) {
			id, o = c, s
		}
	}
	return id, o
}

func (m *sessionModel) young(s *modelSession) bool {
	return m.clock-s.lastUse < int64(m.lim.SessionRetryWindow)
}

// decide returns the outcome of a write (client, seq) at time now, updating everything but the
// stored response of an applied write (remember does that).
func (m *sessionModel) decide(now int64, client, seq uint64) any {
	m.clock = max(m.clock, now)
	for c, s := range m.sessions {
		if m.clock-s.lastUse >= int64(m.lim.SessionTTL) {
			delete(m.sessions, c)
		}
	}
	if seq == 0 {
		return outInvalid
	}
	s, ok := m.sessions[client]
	switch {
	case ok && seq > s.seq:
		s.seq, s.lastUse = seq, m.clock
		return outApplied
	case ok && seq == s.seq:
		s.lastUse = m.clock
		return outRetry
	case ok:
		return outStale
	case seq > 1:
		return outExpired
	}
	if len(m.sessions) >= m.lim.MaxSessions {
		if _, o := m.oldest(); m.young(o) {
			return outTooMany
		}
	}
	m.sessions[client] = &modelSession{seq: 1, lastUse: m.clock}
	for len(m.sessions) > m.lim.MaxSessions {
		c, o := m.oldest()
		if m.young(o) {
			break
		}
		delete(m.sessions, c)
	}
	return outApplied
}

// sessionWorkload generates sessioned puts from a few client lanes that behave like the client
// package (next write, retries of the last one, moving to a fresh client id) plus misbehaving
// ones (stale and arbitrary sequences), with command times that mostly advance slowly, sometimes stall, sometimes jump
// past the window or TTL, and sometimes go back (a leader with a slower clock).
func sessionWorkload(seed uint64, n int) []*logpb.Command {
	rng := rand.New(rand.NewPCG(seed, seed^0x5e55))
	last := map[uint64]uint64{}
	clients := []uint64{1, 2, 3, 4, 5, 6}
	next := uint64(7)
	now := baseTime.UnixNano()
	var out []*logpb.Command
	for i := range n {
		switch p := rng.IntN(100); {
		case p < 70:
			now += int64(rng.IntN(15_000)) * int64(time.Millisecond)
		case p < 80:
		case p < 90:
			now -= int64(rng.IntN(5_000)) * int64(time.Millisecond)
		default:
			now += int64(30+rng.IntN(150)) * int64(time.Second)
		}
		slot := rng.IntN(len(clients))
		if rng.IntN(100) < 8 {
			// The client moves to a fresh lane, as package client does after ErrSessionExpired.
			clients[slot] = next
			next++
		}
		client := clients[slot]
		seq := last[client]
		switch p := rng.IntN(100); {
		case p < 45 || seq == 0:
			seq++
		case p < 75:
			// retry the last sequence
		case p < 90:
			seq -= min(seq, uint64(1+rng.IntN(2)))
		default:
			seq = uint64(rng.IntN(6))
		}
		last[client] = max(last[client], seq)
		c := sessPut(client, seq, fmt.Sprintf("k%d", i%7), fmt.Sprint(i))
		c.TimeUnixNano = now
		out = append(out, c)
	}
	return out
}

// TestSessionMatchesModel applies random session workloads to a store and to the model and
// compares every outcome. It also checks the property the retry window exists for: a write
// (client, sequence) applied twice had its two applications at least SessionRetryWindow apart
// in store time.
func TestSessionMatchesModel(t *testing.T) {
	lim := Limits{SessionTTL: 3 * time.Minute, SessionRetryWindow: time.Minute, MaxSessions: 3}
	outcomes := map[any]int{}
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			h := newHarness(t, Options{Limits: lim})
			m := &sessionModel{lim: lim.withDefaults(), sessions: map[uint64]*modelSession{}}
			appliedAt := map[[2]uint64]int64{}
			cmds := sessionWorkload(seed, 500)
			rng := rand.New(rand.NewPCG(seed, 0xba7c4))
			for i := 0; i < len(cmds); {
				// Random batch sizes: batching must not change any decision.
				batch := cmds[i:min(len(cmds), i+1+rng.IntN(8))]
				rev := h.s.Rev()
				res := h.batch(batch...)
				for j, c := range batch {
					s := sessionOf(c)
					want := m.decide(c.GetTimeUnixNano(), s.GetClientId(), s.GetSequence())
					outcomes[want]++
					r := res[j]
					where := fmt.Sprintf("seed %d command %d (client %d seq %d at %v)", seed, i+j, s.GetClientId(), s.GetSequence(),
						time.Duration(c.GetTimeUnixNano()-baseTime.UnixNano()))
					switch want {
					case outApplied:
						if r.Err != nil {
							t.Fatalf("%s: %v, model applies it", where, r.Err)
						}
						rev++
						if got := r.Resp.(*logpb.PutResponse).GetHeader().GetRevision(); got != rev {
							t.Fatalf("%s: applied at revision %d, want %d", where, got, rev)
						}
						m.sessions[s.GetClientId()].resp = r.Resp
						key := [2]uint64{s.GetClientId(), s.GetSequence()}
						if first, ok := appliedAt[key]; ok && m.clock-first < int64(lim.SessionRetryWindow) {
							t.Fatalf("%s: applied again %v after its first application, inside the retry window", where, time.Duration(m.clock-first))
						}
						appliedAt[key] = m.clock
					case outRetry:
						if r.Err != nil || !proto.Equal(r.Resp, m.sessions[s.GetClientId()].resp) {
							t.Fatalf("%s: %v / %v, want the stored result %v", where, r.Resp, r.Err, m.sessions[s.GetClientId()].resp)
						}
					default:
						if !errorsIs(r.Err, want.(*Error)) {
							t.Fatalf("%s: %v / %v, want %v", where, r.Resp, r.Err, want)
						}
					}
				}
				if h.s.Rev() != rev {
					t.Fatalf("seed %d: revision %d after the batch at command %d, model %d", seed, h.s.Rev(), i, rev)
				}
				i += len(batch)
			}
			var want []string
			for _, c := range slices.Sorted(maps.Keys(m.sessions)) {
				want = append(want, fmt.Sprintf("%d seq=%d last=%v", c, m.sessions[c].seq, time.Duration(m.sessions[c].lastUse-baseTime.UnixNano())))
			}
			var got []string
			for _, l := range sessionTable(t, h.s) {
				got = append(got, l[:strings.Index(l, " res=")])
			}
			if !slices.Equal(got, want) {
				t.Fatalf("seed %d: sessions\n%s\nmodel\n%s", seed, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			checkInvariants(t, h.s)
		})
	}
	// Guard against a vacuous test: every outcome must occur.
	for _, o := range []any{outApplied, outRetry, outStale, outExpired, outTooMany, outInvalid} {
		if outcomes[o] < 10 {
			t.Errorf("outcome %v occurred %d times over all seeds: %v", o, outcomes[o], outcomes)
		}
	}
}

// Two stores fed the same session workload, one command per batch and in large batches, give
// the same results and end in the same state, session table included.
func TestSessionDeterminism(t *testing.T) {
	const seed = 99
	lim := Limits{SessionTTL: 3 * time.Minute, SessionRetryWindow: time.Minute, MaxSessions: 3}
	cmds := sessionWorkload(seed, 800)
	run := func(batchSize int) (*harness, []string) {
		h := newHarness(t, Options{Limits: lim})
		var out []string
		for i := 0; i < len(cmds); i += batchSize {
			for _, r := range h.batch(cloneCmds(cmds[i:min(i+batchSize, len(cmds))])...) {
				b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(r.Resp)
				out = append(out, fmt.Sprintf("%x|%v", b, r.Err))
			}
		}
		return h, out
	}
	h1, r1 := run(1)
	h2, r2 := run(100)
	for i := range r1 {
		if r1[i] != r2[i] {
			t.Fatalf("seed %d: result %d differs: %s vs %s", seed, i, r1[i], r2[i])
		}
	}
	if a, b := strings.Join(sessionTable(t, h1.s), "\n"), strings.Join(sessionTable(t, h2.s), "\n"); a != b {
		t.Fatalf("seed %d: session tables differ:\n%s\nvs\n%s", seed, a, b)
	}
	if a, b := dump(t, h1.s), dump(t, h2.s); a != b {
		t.Fatalf("seed %d: states differ:\n%s\nvs\n%s", seed, a, b)
	}
	if len(sessionTable(t, h1.s)) == 0 {
		t.Fatalf("seed %d: workload left no session to compare", seed)
	}
}
