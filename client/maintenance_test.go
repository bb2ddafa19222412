package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/client/clienttest"
	"github.com/caucus/caucus/internal/nativeapi"
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

// A member from before native streams answers the native open with Unimplemented: the snapshot
// falls back to connect on the same member.
func TestSnapshotFallsBackToConnect(t *testing.T) {
	fc := clienttest.NewCluster(t, 1)
	c := newClient(t, Config{Endpoints: fc.Endpoints(), Protocol: ProtocolNative})
	ctx := context.Background()
	for i := range 5 {
		if _, err := c.Put(ctx, fmt.Sprintf("key-%d", i), "value"); err != nil {
			t.Fatal(err)
		}
	}
	// A native server that serves no stream stands in for the older member's native side.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	old := nativeapi.NewServer(nativeapi.ServerConfig{Logger: slog.New(slog.DiscardHandler)})
	sl := nativeapi.Split(ln, old, nativeapi.SplitConfig{})
	defer func() { old.Close(); sl.Close() }()
	oldClient := nativeapi.NewClient(nativeapi.ClientConfig{Addr: ln.Addr().String()})
	defer oldClient.Close()
	c.endpoints[0].maint = nativeapi.MaintenanceClient{C: oldClient}

	var buf bytes.Buffer
	n, err := c.SnapshotSave(ctx, &buf)
	if err != nil {
		t.Fatalf("SnapshotSave: %v", err)
	}
	if want := fc.Snapshot(); n != int64(len(want)) || !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("snapshot of %d bytes, want the member's %d", n, len(want))
	}
	if s := oldClient.Streams.Load(); s != 1 {
		t.Errorf("%d native attempts, want 1 before the fallback", s)
	}
}

// chunkedMaint streams the given chunks as a member's snapshot.
type chunkedMaint struct {
	caucusv1connect.UnimplementedMaintenanceHandler
	chunks []*caucusv1.SnapshotResponse
}

func (m *chunkedMaint) Snapshot(_ context.Context, _ *connect.Request[caucusv1.SnapshotRequest], s *connect.ServerStream[caucusv1.SnapshotResponse]) error {
	for _, c := range m.chunks {
		if err := s.Send(c); err != nil {
			return err
		}
	}
	return nil
}

// A snapshot whose remaining_bytes do not add up (skipped or repeated data, or a member that
// never announces its size) fails instead of leaving a corrupt copy.
func TestSnapshotChecksRemainingBytes(t *testing.T) {
	chunk := func(blob string, remaining uint64) *caucusv1.SnapshotResponse {
		return &caucusv1.SnapshotResponse{Blob: []byte(blob), RemainingBytes: remaining}
	}
	for _, tc := range []struct {
		name    string
		chunks  []*caucusv1.SnapshotResponse
		wantErr bool
	}{
		{"consistent", []*caucusv1.SnapshotResponse{chunk("abc", 5), chunk("de", 3), chunk("fgh", 0)}, false},
		{"a chunk lost", []*caucusv1.SnapshotResponse{chunk("abc", 5), chunk("fgh", 0)}, true},
		{"a chunk repeated", []*caucusv1.SnapshotResponse{chunk("abc", 5), chunk("de", 3), chunk("de", 3), chunk("fgh", 0)}, true},
		{"data after the last chunk", []*caucusv1.SnapshotResponse{chunk("abc", 0), chunk("de", 0)}, true},
		{"truncated", []*caucusv1.SnapshotResponse{chunk("abc", 5)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := nativeapi.NewServer(nativeapi.ServerConfig{Handlers: nativeapi.Handlers{Maintenance: &chunkedMaint{chunks: tc.chunks}}, Logger: slog.New(slog.DiscardHandler)})
			sl := nativeapi.Split(ln, srv, nativeapi.SplitConfig{})
			defer func() { srv.Close(); sl.Close() }()
			nc := nativeapi.NewClient(nativeapi.ClientConfig{Addr: ln.Addr().String()})
			defer nc.Close()
			var buf bytes.Buffer
			_, err = snapshotVia(context.Background(), nativeapi.MaintenanceClient{C: nc}, &buf)
			if (err != nil) != tc.wantErr {
				t.Fatalf("snapshotVia = %v, want an error: %v", err, tc.wantErr)
			}
			if err == nil && buf.String() != "abcdefgh" {
				t.Errorf("saved %q", buf.String())
			}
		})
	}
}
