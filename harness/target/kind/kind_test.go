package kind

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"

	"github.com/aks-istio-conformance/conformance/harness/profile"
	"github.com/aks-istio-conformance/conformance/harness/target"
	"github.com/aks-istio-conformance/conformance/harness/traffic"
)

func TestClusterConfig(t *testing.T) {
	c := ClusterConfig("asmc-ab12c")
	if c.Name != "asmc-ab12c" || c.Kind != "Cluster" || c.APIVersion != "kind.x-k8s.io/v1alpha4" {
		t.Errorf("cluster %s %s/%s", c.Name, c.APIVersion, c.Kind)
	}
	var roles []v1alpha4.NodeRole
	for _, n := range c.Nodes {
		roles = append(roles, n.Role)
		// Kubernetes 1.33, pinned by the digest of kind v0.30.0's release notes.
		if n.Image != "kindest/node:v1.33.4@sha256:25a6018e48dfcaee478f4a59af81157a437f15e6e140bf103f85a2e7cd0cbbf2" {
			t.Errorf("node %s image %s", n.Role, n.Image)
		}
	}
	if !slices.Equal(roles, []v1alpha4.NodeRole{v1alpha4.ControlPlaneRole, v1alpha4.WorkerRole}) {
		t.Errorf("roles %v", roles)
	}
	if c.Nodes[1].Labels[profile.SystemNodeLabel] != "system" {
		t.Errorf("worker labels %v: want the AKS system-node label the gateways prefer", c.Nodes[1].Labels)
	}
	// kind's defaults are filled in (what `kind create cluster --config` would use).
	if c.Networking.PodSubnet == "" || c.Networking.ServiceSubnet == "" || c.Networking.KubeProxyMode != v1alpha4.IPTablesProxyMode || c.Networking.DisableDefaultCNI {
		t.Errorf("networking %+v", c.Networking)
	}
	// It is a valid kind config file too (for people reproducing a run by hand).
	data, err := yaml.Marshal(c)
	if err != nil || !strings.Contains(string(data), "kind: Cluster") || !strings.Contains(string(data), "role: worker") {
		t.Errorf("config as YAML: %v\n%s", err, data)
	}
}

func TestClusterNameFollowsTheRun(t *testing.T) {
	run := "/r/reports/20261123-101010-asmc-k3x9q/"
	for workDir, want := range map[string]string{
		run + "kind":                  "asmc-k3x9q",
		run + "lifecycle":             "asmc-k3x9q-lifecycle", // a runbook's own cluster beside the run's
		run + "Roll_Back":             "asmc-k3x9q-roll-back",
		run + strings.Repeat("x", 60): "asmc-k3x9q-" + strings.Repeat("x", 39),
	} {
		if got := ClusterName(workDir); got != want {
			t.Errorf("%s: name %q, want %q", workDir, got, want)
		}
	}
	valid := regexp.MustCompile(`^[a-z0-9.-]{1,50}$`)
	a, b := ClusterName(filepath.Join(t.TempDir(), "kind")), ClusterName(filepath.Join(t.TempDir(), "kind"))
	if !valid.MatchString(a) || !strings.HasPrefix(a, "asmc-") || a == b {
		t.Errorf("names without a run id: %q, %q", a, b)
	}
}

func TestImagesTheTargetUses(t *testing.T) {
	var profiles []profile.Profile
	for _, rev := range []string{"asm-1-28", "asm-1-27"} {
		p, err := profile.Load(rev)
		if err != nil {
			t.Fatal(err)
		}
		profiles = append(profiles, p)
	}
	got := Images(profiles, traffic.ClientImage{Image: traffic.DefaultImage})
	want := []string{
		"mcr.microsoft.com/oss/istio/install-cni:1.27.9-distroless",
		"mcr.microsoft.com/oss/istio/install-cni:1.28.3-distroless",
		"mcr.microsoft.com/oss/istio/pilot:1.27.9-distroless",
		"mcr.microsoft.com/oss/istio/pilot:1.28.3-distroless",
		"mcr.microsoft.com/oss/istio/proxyv2:1.27.9-distroless",
		"mcr.microsoft.com/oss/istio/proxyv2:1.28.3-distroless",
		"registry.k8s.io/e2e-test-images/agnhost:2.53",
	}
	if !slices.Equal(got, want) {
		t.Errorf("images\n got %v\nwant %v", got, want)
	}
	// The sidecar image is the one the injection specs expect of the profile.
	if !slices.Contains(got, profiles[0].ProxyImageRef()) {
		t.Errorf("%s (the profile's injected proxy) is not among %v", profiles[0].ProxyImageRef(), got)
	}
	m, err := Mirrored(profiles[0], "docker.io/istio/")
	if err != nil || m["mcr.microsoft.com/oss/istio/pilot:1.28.3-distroless"] != "docker.io/istio/pilot:1.28.3-distroless" || len(m) != 3 {
		t.Errorf("mirror %v, %v", m, err)
	}
	for _, bad := range []string{"docker.io/istio:1.28.3", "docker.io/istio@sha256:00", "docker io"} {
		if _, err := Mirrored(profiles[0], bad); err == nil || !strings.Contains(err.Error(), MirrorEnv) {
			t.Errorf("mirror %q: %v", bad, err)
		}
	}
	if extra := unplanned([]string{want[3], "docker.io/istio/pilot:1.28.3"}, want); !slices.Equal(extra, []string{"docker.io/istio/pilot:1.28.3"}) {
		t.Errorf("unplanned %v", extra)
	}
}

// fakeEngines plays a machine's container engines: which are on PATH and what `info`
// answers.
func fakeEngines(onPath map[string]string) (func(string) (string, error), runner, *[]string) {
	var ran []string
	look := func(name string) (string, error) {
		if _, ok := onPath[name]; ok {
			return "/usr/bin/" + name, nil
		}
		return "", errors.New("not found")
	}
	run := func(_ context.Context, name string, args ...string) (string, error) {
		ran = append(ran, filepath.Base(name)+" "+strings.Join(args, " "))
		if out := onPath[filepath.Base(name)]; out != "" {
			return out, errors.New("exit status 1")
		}
		return "Server Version: 28.2.2", nil
	}
	return look, run, &ran
}

func TestDetectEngineSaysWhatIsMissingInOneLine(t *testing.T) {
	t.Setenv(ProviderEnv, "")
	daemonDown := "Client:\n Version: 28.2.2\n\nServer:\nCannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n"
	for _, tc := range []struct {
		name   string
		onPath map[string]string // engine -> failing info output ("" answers)
		env    string
		want   []string
		engine string
	}{
		{name: "none", onPath: map[string]string{}, want: []string{"no container engine", "docker, nerdctl, podman", "TARGET=local"}},
		{name: "daemon down", onPath: map[string]string{"docker": daemonDown},
			want: []string{"docker is on PATH (/usr/bin/docker) but its daemon does not answer", "Cannot connect to the Docker daemon", "systemctl start docker", "TARGET=local"}},
		{name: "docker down, podman works", onPath: map[string]string{"docker": daemonDown, "podman": ""}, engine: "podman"},
		{name: "docker", onPath: map[string]string{"docker": "", "podman": ""}, engine: "docker"},
		{name: "chosen but missing", onPath: map[string]string{"docker": ""}, env: "podman", want: []string{ProviderEnv + "=podman", "not on PATH"}},
	} {
		t.Setenv(ProviderEnv, tc.env)
		look, run, ran := fakeEngines(tc.onPath)
		e, err := detectEngine(context.Background(), look, run)
		if tc.engine != "" {
			if err != nil || e.Name != tc.engine || e.providerOption() == nil {
				t.Errorf("%s: %+v, %v; want %s (ran %v)", tc.name, e, err, tc.engine, *ran)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: found %+v", tc.name, e)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: not one line: %q", tc.name, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", tc.name, err, w)
			}
		}
	}
}

// Open with no engine (or one whose daemon is down) fails at once and creates nothing: the
// path this machine takes.
func TestOpenFailsAtOnceWithoutARunningEngine(t *testing.T) {
	opts := target.Options{Name: "kind", Revisions: []string{"asm-1-28"}, WorkDir: filepath.Join(t.TempDir(), "kind")}
	t.Setenv(ProviderEnv, "")
	t.Setenv("PATH", t.TempDir())
	if _, err := Open(context.Background(), opts); err == nil || !strings.HasPrefix(err.Error(), "no container engine") {
		t.Errorf("no engine: %v", err)
	}
	bin := t.TempDir()
	script := "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "docker"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	_, err := Open(context.Background(), opts)
	if err == nil || !strings.Contains(err.Error(), "its daemon does not answer") || !strings.Contains(err.Error(), "Cannot connect") {
		t.Errorf("daemon down: %v", err)
	}
	if _, statErr := os.Stat(opts.WorkDir); !os.IsNotExist(statErr) {
		t.Errorf("work directory created before the engine check: %v", statErr)
	}
}

func TestPreflightRefusesWhatCannotRunBeforeCreatingAnything(t *testing.T) {
	t.Setenv("ASM_CONFORMANCE_CACHE", t.TempDir()) // nothing built
	t.Setenv(MirrorEnv, "")
	t.Setenv(traffic.ImageEnv, "")
	_, err := preflight(target.Options{Revisions: []string{"asm-1-28"}})
	if err == nil || !strings.Contains(err.Error(), "istio-render") || !strings.Contains(err.Error(), "build-binaries.sh istio-1.28.3") {
		t.Errorf("istio-render not built: %v", err)
	}
	var nb *profile.NoBuildError
	if _, err := preflight(target.Options{Revisions: []string{"asm-1-30"}}); !errors.As(err, &nb) {
		t.Errorf("asm-1-30 (no build here): %v", err)
	}
	if _, err := preflight(target.Options{}); err == nil || !strings.Contains(err.Error(), "-revisions") {
		t.Errorf("no revisions: %v", err)
	}
}

func TestDefaultGatewayIsWhereTheAPIServerReachesThisMachine(t *testing.T) {
	got, err := defaultGateway([]string{"default via 172.18.0.1 dev eth0", "172.18.0.0/16 dev eth0 proto kernel scope link src 172.18.0.2"})
	if err != nil || got != "172.18.0.1" {
		t.Errorf("gateway %q, %v", got, err)
	}
	if _, err := defaultGateway([]string{"172.18.0.0/16 dev eth0 proto kernel scope link"}); err == nil {
		t.Errorf("no default route accepted")
	}
}

// Close's steps fit in what the caller gives it (the suite gives a target's Close 2 minutes).
func TestCloseStepsFitTheCallersDeadline(t *testing.T) {
	if d := within(context.Background(), deleteTimeout); d != deleteTimeout {
		t.Errorf("no deadline: %s", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if d := within(ctx, collectTimeout); d > 15*time.Second || d < 14*time.Second {
		t.Errorf("20 s left: %s for collecting logs, want about 15 s", d)
	}
	if collectTimeout+deleteTimeout >= 2*time.Minute {
		t.Errorf("collect %s + delete %s do not fit the suite's 2 minutes", collectTimeout, deleteTimeout)
	}
}
