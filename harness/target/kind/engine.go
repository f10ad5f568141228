package kind

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"sigs.k8s.io/kind/pkg/cluster"
)

// engine is the container engine kind's nodes run on.
type engine struct {
	Name string // docker, podman or nerdctl
	Path string
}

// providerOption is kind's node provider for the engine.
func (e engine) providerOption() cluster.ProviderOption {
	switch e.Name {
	case "podman":
		return cluster.ProviderWithPodman()
	case "nerdctl":
		return cluster.ProviderWithNerdctl(e.Path)
	default:
		return cluster.ProviderWithDocker()
	}
}

// engines are tried in kind's own detection order. kind's DetectNodeProvider only checks
// that a client prints its version; the harness also needs the engine's name (for the
// error line and to pull images with it) and to know that its daemon answers, so it asks
// each engine for `info` and hands kind the provider explicitly.
var engines = []string{"docker", "nerdctl", "podman"}

// ProviderEnv is kind's own variable for choosing the engine; the harness honours it too.
const ProviderEnv = "KIND_EXPERIMENTAL_PROVIDER"

// infoTimeout bounds `<engine> info`: a daemon that does not answer in that time is not
// going to run a cluster.
const infoTimeout = 15 * time.Second

// runner runs a command with a deadline and returns its combined output.
type runner func(ctx context.Context, name string, args ...string) (string, error)

func runCommand(ctx context.Context, name string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// detectEngine finds a container engine whose daemon answers. It fails with one line
// naming what is missing and the fix: no engine on PATH, or engines whose daemons do not
// answer (the first one's error is quoted).
func detectEngine(ctx context.Context, lookPath func(string) (string, error), run runner) (engine, error) {
	candidates := engines
	if chosen := os.Getenv(ProviderEnv); chosen != "" {
		candidates = []string{chosen}
	}
	var found []engine
	var firstErr string
	for _, name := range candidates {
		path, err := lookPath(name)
		if err != nil {
			continue
		}
		e := engine{Name: name, Path: path}
		found = append(found, e)
		ictx, cancel := context.WithTimeout(ctx, infoTimeout)
		out, err := run(ictx, path, "info")
		cancel()
		if err == nil {
			return e, nil
		}
		if firstErr == "" {
			firstErr = lastLine(out, err)
		}
	}
	const otherwise = "or use TARGET=local (-target=local), which needs no container engine"
	switch {
	case len(found) == 0 && len(candidates) == 1:
		return engine{}, fmt.Errorf("no container engine: %s=%s but %s is not on PATH; install it and start it, or unset %s, %s",
			ProviderEnv, candidates[0], candidates[0], ProviderEnv, otherwise)
	case len(found) == 0:
		return engine{}, fmt.Errorf("no container engine: kind runs its nodes as containers and none of %s is on PATH; install Docker Engine or Podman and start it, %s",
			strings.Join(engines, ", "), otherwise)
	default:
		e := found[0]
		return engine{}, fmt.Errorf("%s is on PATH (%s) but its daemon does not answer (`%s info`: %s); start it (e.g. sudo systemctl start %s, or Docker Desktop) and run again, %s",
			e.Name, e.Path, e.Name, firstErr, daemonUnit(e.Name), otherwise)
	}
}

// daemonUnit is the service that serves an engine's clients.
func daemonUnit(name string) string {
	switch name {
	case "nerdctl":
		return "containerd"
	case "podman":
		return "podman.socket"
	default:
		return name
	}
}

// lastLine is the last non-empty line a failed command printed, or its error.
func lastLine(out string, err error) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return err.Error()
}
