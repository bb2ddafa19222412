package nemesis

import (
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/caucus/caucus/internal/check/cluster"
)

// Processes is the Backend of a local cluster.Cluster.
type Processes struct{ C *cluster.Cluster }

func (p Processes) node(name string) (*cluster.Node, error) {
	if n := p.C.Node(name); n != nil {
		return n, nil
	}
	return nil, fmt.Errorf("nemesis: no member %q", name)
}

func (p Processes) Members() []string {
	var out []string
	for _, n := range p.C.Nodes {
		out = append(out, n.Name)
	}
	return out
}

func (p Processes) Endpoint(name string) string {
	if n := p.C.Node(name); n != nil {
		return n.ClientURL
	}
	return ""
}

func (p Processes) Kill(_ context.Context, name string) error {
	n, err := p.node(name)
	if err != nil {
		return err
	}
	return n.Kill()
}

func (p Processes) Restart(_ context.Context, name string) error {
	n, err := p.node(name)
	if err != nil {
		return err
	}
	return n.Restart()
}

func (p Processes) Pause(_ context.Context, name string) error {
	n, err := p.node(name)
	if err != nil {
		return err
	}
	return n.Pause()
}

func (p Processes) Resume(_ context.Context, name string) error {
	n, err := p.node(name)
	if err != nil {
		return err
	}
	return n.Resume()
}

func (p Processes) Partition(_ context.Context, cut []string) error {
	var in, out []*cluster.Node
	for _, n := range p.C.Nodes {
		if contains(cut, n.Name) {
			in = append(in, n)
		} else {
			out = append(out, n)
		}
	}
	p.C.Partition(in, out)
	return nil
}

func (p Processes) HealNetwork(context.Context) error {
	p.C.HealNetwork()
	return nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Docker is the Backend of a cluster of containers (e.g. deploy/docker-compose.3.yml). Members
// are container names; Endpoints maps each to the client URL the checker reaches it at
// (published ports on 127.0.0.1). Network is the Docker network the members talk over:
// disconnecting a container from it isolates the container from its peers and from clients.
type Docker struct {
	Containers []string
	Endpoints  map[string]string
	Network    string
}

func (d Docker) docker(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("nemesis: docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (d Docker) Members() []string           { return d.Containers }
func (d Docker) Endpoint(name string) string { return d.Endpoints[name] }

func (d Docker) Kill(ctx context.Context, name string) error {
	return d.docker(ctx, "kill", "--signal", "KILL", name)
}

// Restart starts the killed container again; its named volume keeps the data directory.
func (d Docker) Restart(ctx context.Context, name string) error { return d.docker(ctx, "start", name) }
func (d Docker) Pause(ctx context.Context, name string) error   { return d.docker(ctx, "pause", name) }
func (d Docker) Resume(ctx context.Context, name string) error  { return d.docker(ctx, "unpause", name) }

func (d Docker) Partition(ctx context.Context, cut []string) error {
	for _, c := range cut {
		if err := d.docker(ctx, "network", "disconnect", d.Network, c); err != nil {
			return err
		}
	}
	return nil
}

// HealNetwork reconnects every container; "already connected" is not an error here, since
// only the cut ones were disconnected.
func (d Docker) HealNetwork(ctx context.Context) error {
	var first error
	for _, c := range d.Containers {
		if err := d.docker(ctx, "network", "connect", d.Network, c); err != nil &&
			!strings.Contains(err.Error(), "already exists") && !strings.Contains(err.Error(), "already connected") && first == nil {
			first = err
		}
	}
	return first
}

// RemoveAndReadd implements Membership for local processes.
func (p Processes) RemoveAndReadd(ctx context.Context, name string) error {
	return p.C.ReplaceMember(ctx, name)
}
