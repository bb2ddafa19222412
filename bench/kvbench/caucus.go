package kvbench

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/caucus/caucus/client"
)

// Caucus is a caucus cluster of real server processes (`caucus server`), spoken to with the
// public Go client.
type Caucus struct {
	// Bin is the caucus server binary.
	Bin string
	// Args are extra server flags (e.g. --enable-pprof to profile the members during a run).
	Args []string
}

// Name implements System.
func (Caucus) Name() string { return "caucus" }

// Command implements System. Logging is cut to errors, as for the etcd members.
func (c Caucus) Command() []string {
	return append([]string{c.Bin, "server", "--log-level", "error"}, c.Args...)
}

// Dial implements System.
func (Caucus) Dial(endpoints []string) (KV, error) {
	c, err := client.New(client.Config{Endpoints: endpoints})
	if err != nil {
		return nil, err
	}
	return caucusKV{c}, nil
}

// Leader implements System.
func (Caucus) Leader(ctx context.Context, endpoints []string) (string, error) {
	c, err := client.New(client.Config{Endpoints: endpoints, MaxRetries: -1})
	if err != nil {
		return "", err
	}
	defer c.Close()
	var errs []error
	for _, ep := range endpoints {
		st, err := c.Status(ctx, ep)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if st.GetLeader() != 0 && st.GetLeader() == st.GetHeader().GetMemberId() {
			return ep, nil
		}
	}
	return "", fmt.Errorf("no caucus member reports itself leader: %w", errors.Join(errs...))
}

type caucusKV struct{ c *client.Client }

func (k caucusKV) Put(ctx context.Context, key, value string) error {
	_, err := k.c.Put(ctx, key, value)
	return err
}

func (k caucusKV) Get(ctx context.Context, key string, serializable bool) error {
	var err error
	if serializable {
		_, err = k.c.Get(ctx, key, client.WithSerializable())
	} else {
		_, err = k.c.Get(ctx, key)
	}
	return err
}

func (k caucusKV) Close() error { return k.c.Close() }

// BuildCaucus builds the caucus server binary into out. benchDir is the bench module's directory
// (its parent is caucus's module root). It first builds from caucus's own module, with the
// dependency versions the project pins; if that fails (e.g. the root go.mod lags behind a new
// import), it builds the same package from the bench module, whose go.mod replaces caucus with
// the parent directory.
func BuildCaucus(ctx context.Context, benchDir, out string) error {
	var errs []error
	for _, b := range []struct{ dir, pkg string }{
		{filepath.Join(benchDir, ".."), "./cmd/caucus"},
		{benchDir, "github.com/caucus/caucus/cmd/caucus"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, b.pkg)
		cmd.Dir = b.dir
		output, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("go build %s in %s: %v\n%s", b.pkg, b.dir, err, output))
	}
	return errors.Join(errs...)
}
