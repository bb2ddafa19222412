package client

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/client/clienttest"
)

// defragRecorder answers Defragment on the fake cluster (which does not implement it) with sizes
// derived from the member, and records which members were asked.
type defragRecorder struct {
	mu    sync.Mutex
	asked []uint64
	fail  error // returned instead of a response when set
}

func (d *defragRecorder) intercept(ctx context.Context, m *clienttest.Member, procedure string, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
	if procedure != caucusv1connect.MaintenanceDefragmentProcedure {
		return next(ctx, req)
	}
	d.mu.Lock()
	d.asked = append(d.asked, m.ID)
	fail := d.fail
	d.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	return connect.NewResponse(&caucusv1.DefragmentResponse{
		Header:       &caucusv1.ResponseHeader{ClusterId: clienttest.ClusterID, MemberId: m.ID},
		DbSizeBefore: int64(m.ID % 1000 * 4096), DbSizeAfter: 4096,
	}), nil
}

func TestDefragmentAsksOneMember(t *testing.T) {
	for _, protocol := range []string{"", ProtocolConnect} {
		t.Run("protocol="+protocol, func(t *testing.T) {
			fc := clienttest.NewCluster(t, 3)
			rec := &defragRecorder{}
			fc.SetInterceptor(rec.intercept)
			// Members 0 and 1 are configured; member 2 is reached through an ad hoc connection.
			c := newClient(t, Config{Endpoints: fc.Endpoints()[:2], Protocol: protocol})
			ctx := context.Background()
			for _, i := range []int{1, 2} {
				m := fc.Members[i]
				resp, err := c.Defragment(ctx, m.URL)
				if err != nil {
					t.Fatalf("Defragment(%s): %v", m.URL, err)
				}
				if got := resp.GetHeader().GetMemberId(); got != m.ID {
					t.Errorf("Defragment(member %d) answered by %x, want %x", i, got, m.ID)
				}
				if resp.GetDbSizeBefore() != int64(m.ID%1000*4096) || resp.GetDbSizeAfter() != 4096 {
					t.Errorf("Defragment(member %d) sizes %d -> %d", i, resp.GetDbSizeBefore(), resp.GetDbSizeAfter())
				}
			}
			if want := []uint64{fc.Members[1].ID, fc.Members[2].ID}; !slices.Equal(rec.asked, want) {
				t.Errorf("members asked %x, want %x (each once, no other)", rec.asked, want)
			}
		})
	}
}

// A failed defragment is not retried, on that member or another: it may still be running.
func TestDefragmentSingleAttempt(t *testing.T) {
	fc := clienttest.NewCluster(t, 3)
	rec := &defragRecorder{fail: connect.NewError(connect.CodeUnavailable, errors.New("member busy"))}
	fc.SetInterceptor(rec.intercept)
	c := newClient(t, Config{Endpoints: fc.Endpoints()})
	_, err := c.Defragment(context.Background(), fc.Members[0].URL)
	if !IsUnavailable(err) {
		t.Fatalf("Defragment = %v, want unavailable", err)
	}
	if want := []uint64{fc.Members[0].ID}; !slices.Equal(rec.asked, want) {
		t.Errorf("members asked %x, want %x once", rec.asked, want)
	}
	if _, err := c.Defragment(context.Background(), "::bad url"); err == nil {
		t.Error("Defragment with an invalid endpoint succeeded")
	}
	c.Close()
	if _, err := c.Defragment(context.Background(), fc.Members[0].URL); !errors.Is(err, ErrClosed) {
		t.Errorf("Defragment after Close = %v, want ErrClosed", err)
	}
}
