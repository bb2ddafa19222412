package nemesis

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDockerBackend drives the Docker backend against a real container (FROM scratch around a
// static do-nothing binary built here, since there is no registry) and checks each primitive's
// effect through `docker inspect`.
func TestDockerBackend(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an image and runs a container")
	}
	if err := exec.Command("docker", "info").Run(); err != nil {
		t.Skip("docker not available:", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	must := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module sleeper\n\ngo 1.21\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nimport \"time\"\n\nfunc main() {\n\tfor {\n\t\ttime.Sleep(time.Hour)\n\t}\n}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY sleeper /sleeper\nENTRYPOINT [\"/sleeper\"]\n"), 0o644)
	must("go", "build", "-o", "sleeper", ".")
	tag := fmt.Sprintf("caucus-nemesis-test:%d", os.Getpid())
	name := fmt.Sprintf("caucus-nemesis-test-%d", os.Getpid())
	network := name + "-net"
	must("docker", "build", "-q", "-t", tag, ".")
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", tag).Run() })
	must("docker", "network", "create", "--internal", network)
	t.Cleanup(func() { exec.Command("docker", "network", "rm", network).Run() })
	must("docker", "run", "-d", "--name", name, "--network", network, tag)
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })

	inspect := func(format string) string { return must("docker", "inspect", "-f", format, name) }
	d := Docker{Containers: []string{name}, Network: network}
	step := func(what string, f func(context.Context, string) error, format, want string) {
		t.Helper()
		if err := f(ctx, name); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := inspect(format); got != want {
			t.Fatalf("after %s: %s = %q, want %q", what, format, got, want)
		}
	}
	step("pause", d.Pause, "{{.State.Status}}", "paused")
	step("resume", d.Resume, "{{.State.Status}}", "running")
	step("kill", d.Kill, "{{.State.Status}}", "exited")
	step("restart", d.Restart, "{{.State.Status}}", "running")
	nets := "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}"
	step("partition", func(ctx context.Context, n string) error { return d.Partition(ctx, []string{n}) }, nets, "")
	step("heal", func(ctx context.Context, _ string) error { return d.HealNetwork(ctx) }, nets, network)
	// Healing a member that was never cut is harmless.
	if err := d.HealNetwork(ctx); err != nil {
		t.Fatalf("second heal: %v", err)
	}
}
