package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/api/caucus/v1/caucusv1connect"
	"github.com/caucus/caucus/client/clienttest"
)

// fakeDefrag answers Defragment on the fake cluster (which does not implement it): member i of
// the cluster reports (i+1) MiB before and 64 KiB after. It records the order of the calls and
// whether two were ever in flight at once.
type fakeDefrag struct {
	fc       *clienttest.Cluster
	mu       sync.Mutex
	order    []uint64
	inFlight int
	overlap  bool
}

func newFakeDefrag(fc *clienttest.Cluster) *fakeDefrag {
	d := &fakeDefrag{fc: fc}
	fc.SetInterceptor(d.intercept)
	return d
}

func (d *fakeDefrag) intercept(ctx context.Context, m *clienttest.Member, procedure string, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
	if procedure != caucusv1connect.MaintenanceDefragmentProcedure {
		return next(ctx, req)
	}
	d.mu.Lock()
	d.order = append(d.order, m.ID)
	d.inFlight++
	d.overlap = d.overlap || d.inFlight > 1
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.inFlight--
		d.mu.Unlock()
	}()
	i := slices.Index(d.fc.Members, m)
	return connect.NewResponse(&caucusv1.DefragmentResponse{
		Header:       &caucusv1.ResponseHeader{ClusterId: clienttest.ClusterID, MemberId: m.ID},
		DbSizeBefore: int64(i+1) << 20, DbSizeAfter: 64 << 10,
	}), nil
}

func (d *fakeDefrag) calls() ([]uint64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.order), d.overlap
}

func TestDefrag(t *testing.T) {
	fc := clienttest.NewCluster(t, 3)
	d := newFakeDefrag(fc)

	out := mustRun(t, fc, "", "defrag")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("defrag printed %q, want 3 lines", out)
	}
	for i, m := range fc.Members {
		re := regexp.MustCompile(fmt.Sprintf(`^Finished defragmenting member %s \(%x\): %s -> 65\.5 kB, took \S+$`,
			regexp.QuoteMeta(m.URL), m.ID, regexp.QuoteMeta(humanBytes(int64(i+1)<<20))))
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d = %q, want it to match %s", i, lines[i], re)
		}
	}
	order, overlap := d.calls()
	if want := []uint64{fc.Members[0].ID, fc.Members[1].ID, fc.Members[2].ID}; !slices.Equal(order, want) || overlap {
		t.Errorf("members defragmented in order %x (overlapping: %v), want %x one at a time", order, overlap, want)
	}

	var js []struct {
		Endpoint   string
		Defragment struct {
			Before string `json:"dbSizeBefore"`
			After  string `json:"dbSizeAfter"`
		}
	}
	out = mustRun(t, fc, "", "defrag", "-w", "json")
	if err := json.Unmarshal([]byte(out), &js); err != nil || len(js) != 3 ||
		js[1].Endpoint != fc.Members[1].URL || js[1].Defragment.Before != fmt.Sprint(2<<20) || js[1].Defragment.After != fmt.Sprint(64<<10) {
		t.Errorf("defrag -w json printed %q (%v)", out, err)
	}

	// A member that cannot be reached fails the command, but the others are still defragmented.
	fc.Members[1].Stop()
	r := runCtl(t, fc, "", "defrag", "-w", "table")
	if r.err == nil || !strings.Contains(r.err.Error(), fc.Members[1].URL) {
		t.Errorf("defrag with a stopped member: err %v; want an error naming it", r.err)
	}
	if strings.Count(r.stdout, "| http") != 2 || !strings.Contains(r.stdout, "DB SIZE AFTER") ||
		!strings.Contains(r.stdout, fc.Members[2].URL) || strings.Contains(r.stdout, fc.Members[1].URL) {
		t.Errorf("defrag -w table printed:\n%s\nwant a header and the 2 live members", r.stdout)
	}
	if order, _ := d.calls(); len(order) != 8 || order[7] != fc.Members[2].ID {
		t.Errorf("calls %x: the member after the stopped one was not defragmented", order)
	}

	if r := runCtl(t, fc, "", "defrag", "extra"); r.err == nil {
		t.Error("defrag with an argument succeeded")
	}
}
