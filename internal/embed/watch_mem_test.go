package embed

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/nativeapi"
)

// idleWatchers is how many watchers TestWatchMemoryPerIdleWatcher opens.
const idleWatchers = 2000

// maxBytesPerIdleWatcher bounds what an idle watcher may cost its member (measured: about
// 10 KiB, most of it the goroutine that serves the stream and its stack).
const maxBytesPerIdleWatcher = 24 << 10

// TestWatchMemoryPerIdleWatcher measures what idle watchers cost a member: a child process
// opens idleWatchers watches of distinct keys over the native protocol (a connection per 100,
// below the streams-per-connection limit) and reads their first response; the member's heap
// and stacks grow by the difference, divided by the watchers. The clients live in the child,
// so only the member's side is counted.
func TestWatchMemoryPerIdleWatcher(t *testing.T) {
	if testing.Short() {
		t.Skip("opens thousands of streams")
	}
	tc := newTestCluster(t, 1)
	tc.waitLeader()
	m := tc.members[0]
	inUse := func() (heap, stacks uint64, goroutines int) {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc, ms.StackInuse, runtime.NumGoroutine()
	}
	hBefore, sBefore, gBefore := inUse()

	cmd := exec.Command(os.Args[0], "-test.run=^TestWatchMemoryHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CAUCUS_WATCH_MEM_ADDR="+strings.TrimPrefix(m.ClientURL, "http://"),
		"CAUCUS_WATCH_MEM_N="+strconv.Itoa(idleWatchers))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close() // the child exits at EOF
		if err := cmd.Wait(); err != nil {
			t.Errorf("watching child: %v", err)
		}
	}()
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- nil
				io.Copy(io.Discard, stdout)
				return
			}
		}
		ready <- fmt.Errorf("the child ended before it was ready: %v", sc.Err())
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the child did not open its watches within 60s")
	}
	if st := m.Server.WatchStats(); st.Watchers != idleWatchers || st.Live != idleWatchers {
		t.Fatalf("watch stats %+v, want %d live watchers", st, idleWatchers)
	}
	hAfter, sAfter, gAfter := inUse()
	heap, stacks := (int64(hAfter)-int64(hBefore))/idleWatchers, (int64(sAfter)-int64(sBefore))/idleWatchers
	per := heap + stacks
	t.Logf("%d idle watchers: %d bytes each (%d of heap, %d of stacks), %.2f goroutines each",
		idleWatchers, per, heap, stacks, float64(gAfter-gBefore)/idleWatchers)
	if per > maxBytesPerIdleWatcher {
		t.Fatalf("an idle watcher costs %d bytes, bound %d", per, maxBytesPerIdleWatcher)
	}
}

// TestWatchMemoryHelper is the child process of TestWatchMemoryPerIdleWatcher.
func TestWatchMemoryHelper(t *testing.T) {
	addr := os.Getenv("CAUCUS_WATCH_MEM_ADDR")
	if addr == "" {
		t.Skip("run by TestWatchMemoryPerIdleWatcher")
	}
	n, _ := strconv.Atoi(os.Getenv("CAUCUS_WATCH_MEM_N"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var conns []*nativeapi.Client
	for i := range n {
		if i%100 == 0 {
			conns = append(conns, nativeapi.NewClient(nativeapi.ClientConfig{Addr: addr}))
		}
		s, err := nativeapi.EventsClient{C: conns[len(conns)-1]}.Watch(ctx, connect.NewRequest(&caucusv1.WatchRequest{Key: []byte(fmt.Sprint("idle/", i))}))
		if err != nil {
			t.Fatalf("watch %d: %v", i, err)
		}
		if !s.Receive() {
			t.Fatalf("watch %d: %v", i, s.Err())
		}
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}
