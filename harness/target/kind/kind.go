// Package kind is the target with real nodes and real Envoy sidecars: it creates a kind
// cluster (sigs.k8s.io/kind's Go API, on docker, podman or nerdctl), renders the add-on's
// layout with the same emulator as the local target, but runs istiod and the gateways as
// the rendered Deployments in the cluster with the add-on's images, and is then reached
// through its kubeconfig alone, like every target. It proves everything local proves, plus
// traffic: status codes, response flags, Envoy's own config.
//
// The cluster is the run's: it is deleted when the run ends, also when bring-up fails,
// unless KEEP_CLUSTER=1 keeps it for debugging.
package kind

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/kind/pkg/cluster"
	"sigs.k8s.io/kind/pkg/cluster/nodeutils"
	kindexec "sigs.k8s.io/kind/pkg/exec"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/addon/emulator"
	"github.com/aks-istio-conformance/conformance/harness/binaries"
	kcluster "github.com/aks-istio-conformance/conformance/harness/cluster"
	"github.com/aks-istio-conformance/conformance/harness/kube"
	"github.com/aks-istio-conformance/conformance/harness/profile"
	"github.com/aks-istio-conformance/conformance/harness/target"
	"github.com/aks-istio-conformance/conformance/harness/timing"
	"github.com/aks-istio-conformance/conformance/harness/traffic"
)

// KeepEnv keeps the cluster after the run (KEEP_CLUSTER=1): its kubeconfig stays in the
// run's directory, and `kind delete cluster --name <name>` removes it.
const KeepEnv = "KEEP_CLUSTER"

// Bounds of the steps kind itself performs without a context.
const (
	// createTimeout bounds creating the cluster: pulling the node image (about 1 GB),
	// starting the nodes and waiting for them to be Ready.
	createTimeout = 15 * time.Minute
	// readyWait is kind's own wait for the control plane and nodes.
	readyWait = 5 * time.Minute
	// collectTimeout and deleteTimeout bound Close's two steps; together they stay under
	// the two minutes the suite gives a target's Close.
	collectTimeout = 45 * time.Second
	deleteTimeout  = 60 * time.Second
)

// Kind is a running kind target.
type Kind struct {
	name       string
	kubeconfig string
	workDir    string
	keep       bool
	provider   *cluster.Provider
	cfg        *rest.Config
	road       *kcluster.Cluster
	ops        *emulator.Emulator
	rec        *timing.Recorder
	log        *os.File
	runtime    *emulator.InCluster

	closing sync.Once
	err     error
}

var _ target.Target = (*Kind)(nil)

// plan is what a run will create, checked before anything is.
type plan struct {
	profiles []profile.Profile
	images   []string
	mirror   map[string]string // add-on image -> mirror image, with ASM_KIND_IMAGE_MIRROR
}

// preflight checks, before a container is started, everything a run needs on this
// machine: the revisions' profiles and their istio-render builds, the probe image and the
// mirror setting. Each failure is one line with the fix.
func preflight(opts target.Options) (plan, error) {
	var pl plan
	if len(opts.Revisions) == 0 {
		return pl, errors.New("no revision to enable: set -revisions (REVISIONS)")
	}
	for _, rev := range opts.Revisions {
		p, err := profile.Load(rev)
		if err != nil {
			return pl, err
		}
		toolchain, err := p.LocalToolchain()
		if err != nil {
			return pl, err
		}
		// The emulator renders Istio's charts with the revision's own istio-render, on
		// this machine; `make binaries` builds it only for TARGET=local.
		if _, err := binaries.Path(toolchain, "istio-render"); err != nil {
			return pl, err
		}
		pl.profiles = append(pl.profiles, p)
	}
	probe, err := traffic.ClientImageFromEnv()
	if err != nil {
		return pl, err
	}
	pl.images = Images(pl.profiles, probe)
	if mirror := os.Getenv(MirrorEnv); mirror != "" {
		pl.mirror = map[string]string{}
		for _, p := range pl.profiles {
			m, err := Mirrored(p, mirror)
			if err != nil {
				return pl, err
			}
			for k, v := range m {
				pl.mirror[k] = v
			}
		}
	}
	return pl, nil
}

// Open creates the cluster, enables the requested revisions in it and returns when their
// istiods serve. A container engine whose daemon answers is checked first: without one,
// Open fails at once, starting nothing. On any later failure the cluster is deleted
// (unless kept).
func Open(ctx context.Context, opts target.Options) (_ *Kind, err error) {
	start := time.Now()
	rec := &timing.Recorder{}
	var eng engine
	if err := rec.Time("kind: container engine", func() error {
		var err error
		eng, err = detectEngine(ctx, exec.LookPath, runCommand)
		return err
	}); err != nil {
		return nil, err
	}
	pl, err := preflight(opts)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(opts.WorkDir, "logs"), 0o755); err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	logFile, err := os.Create(filepath.Join(opts.WorkDir, "logs", "kind.log"))
	if err != nil {
		return nil, err
	}
	k := &Kind{
		name: ClusterName(opts.WorkDir), kubeconfig: filepath.Join(opts.WorkDir, "kubeconfig"), workDir: opts.WorkDir,
		keep: keep(), rec: rec, log: logFile,
		provider: cluster.NewProvider(eng.providerOption(), cluster.ProviderWithLogger(fileLogger{logFile})),
	}
	fmt.Fprintf(logFile, "engine %s (%s); cluster %s; node image %s; images %s\n", eng.Name, eng.Path, k.name, NodeImage, strings.Join(pl.images, ", "))
	if err := rec.Time("kind: create cluster "+k.name, func() error { return k.create(ctx) }); err != nil {
		_ = logFile.Close()
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = k.Close(context.Background()) // a failed bring-up leaves no cluster behind
		}
	}()
	if k.cfg, err = clientcmd.BuildConfigFromFlags("", k.kubeconfig); err != nil {
		return nil, fmt.Errorf("kubeconfig %s of kind cluster %s: %w", k.kubeconfig, k.name, err)
	}
	k.cfg.Timeout = 30 * time.Second
	if k.road, err = kcluster.New(k.cfg); err != nil {
		return nil, err
	}
	if len(pl.mirror) > 0 {
		if err := rec.Time("kind: load images from "+os.Getenv(MirrorEnv), func() error {
			return preload(ctx, eng, runCommand, k.provider, k.name, filepath.Join(opts.WorkDir, "images"), pl.mirror)
		}); err != nil {
			return nil, err
		}
	}
	client, err := kube.NewClient(k.cfg)
	if err != nil {
		return nil, err
	}
	rt := emulator.NewInCluster(client, k.road)
	rt.PullHint = fmt.Sprintf("the nodes must reach %s; or set %s=docker.io/istio to load Istio's own build under the add-on's name",
		pl.profiles[0].ProxyImage.Hub, MirrorEnv)
	rt.PKIDir = filepath.Join(opts.WorkDir, "pki")
	host, hostErr := webhookHost(ctx, k.provider, k.name)
	if hostErr != nil {
		// The MeshConfig allow-list webhook is then not installed (the emulator records it).
		fmt.Fprintf(logFile, "no address of this machine for the harness's webhook: %v\n", hostErr)
	}
	rt.WebhookHost = host
	k.runtime = rt
	k.ops = emulator.New(client, rt, rec)
	for _, rev := range opts.Revisions {
		if err := k.ops.Enable(ctx, rev); err != nil {
			return nil, fmt.Errorf("enable %s on kind cluster %s: %w", rev, k.name, err)
		}
		// What the charts rendered must be what was planned (and preloaded).
		if extra := unplanned(rt.Images(rev), pl.images); len(extra) > 0 {
			return nil, fmt.Errorf("revision %s renders images %s that the kind target did not plan (%s): update kind.Images",
				rev, strings.Join(extra, ", "), strings.Join(pl.images, ", "))
		}
	}
	rec.Add("target ready", time.Since(start))
	return k, nil
}

// unplanned lists the rendered images missing from the plan.
func unplanned(rendered, planned []string) []string {
	var out []string
	for _, img := range rendered {
		if !slices.Contains(planned, img) {
			out = append(out, img)
		}
	}
	return out
}

// keep reads KEEP_CLUSTER.
func keep() bool {
	switch strings.ToLower(os.Getenv(KeepEnv)) {
	case "1", "true", "yes":
		return true
	}
	return false
}

// create runs kind's Create, which takes no context: past the deadline (or when ctx ends)
// the cluster's nodes are deleted from under it, which makes it return.
func (k *Kind) create(ctx context.Context) error {
	done := make(chan error, 1)
	go func() {
		done <- k.provider.Create(k.name,
			cluster.CreateWithV1Alpha4Config(ClusterConfig(k.name)),
			cluster.CreateWithWaitForReady(readyWait),
			// The run's own kubeconfig file: the user's ~/.kube/config is left alone.
			cluster.CreateWithKubeconfigPath(k.kubeconfig),
			cluster.CreateWithDisplayUsage(false), cluster.CreateWithDisplaySalutation(false))
	}()
	timer := time.NewTimer(createTimeout)
	defer timer.Stop()
	var why string
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("kind could not create cluster %s (details in %s): %v", k.name, k.log.Name(), err)
		}
		return nil
	case <-timer.C:
		why = "not created within " + createTimeout.String()
	case <-ctx.Done():
		why = "interrupted"
	}
	_ = k.provider.Delete(k.name, k.kubeconfig)
	select {
	case <-done:
	case <-time.After(deleteTimeout):
	}
	return fmt.Errorf("kind cluster %s %s; deleted (details in %s)", k.name, why, k.log.Name())
}

func (k *Kind) Name() string             { return "kind" }
func (k *Kind) RESTConfig() *rest.Config { return rest.CopyConfig(k.cfg) }
func (k *Kind) KubeconfigPath() string   { return k.kubeconfig }
func (k *Kind) Addon() addon.Operations  { return k.ops }
func (k *Kind) Phases() []timing.Phase   { return k.rec.Phases() }

// Capabilities: real sidecars (a data plane), and a cluster that belongs to the run, so
// mesh-wide changes and add-on operations (emulated) are safe.
func (k *Kind) Capabilities() target.Capabilities {
	return target.Capabilities{DataPlane: true, MeshWideChanges: true, AddonOperations: true, EmulatedAddon: true}
}

// Close collects the cluster's logs into the run's directory (kind's export: node
// journals, container logs), then deletes the cluster unless it is kept. It is safe to
// call more than once.
func (k *Kind) Close(ctx context.Context) error {
	k.closing.Do(func() {
		if k.road != nil {
			k.road.Close()
		}
		if k.runtime != nil {
			_ = k.runtime.Close()
		}
		// The nodes' logs go with the run's reports (CI uploads them); failing to collect
		// them is noted, not an error of the run.
		logs := filepath.Join(k.workDir, "logs", "cluster")
		if err := bounded(within(ctx, collectTimeout), func() error { return k.provider.CollectLogs(k.name, logs) }); err != nil {
			fmt.Fprintf(k.log, "collect logs into %s: %v\n", logs, err)
		}
		if k.keep {
			fmt.Fprintf(os.Stderr, "kind cluster %s kept (%s=1): KUBECONFIG=%s; delete it with `kind delete cluster --name %s`\n",
				k.name, KeepEnv, k.kubeconfig, k.name)
		} else if err := bounded(within(ctx, deleteTimeout), func() error { return k.provider.Delete(k.name, k.kubeconfig) }); err != nil {
			k.err = fmt.Errorf("delete kind cluster %s (delete it with `kind delete cluster --name %s`): %w", k.name, k.name, err)
		}
		_ = k.log.Close()
	})
	return k.err
}

// within is d, or less when ctx ends sooner (keeping a few seconds for what follows).
func within(ctx context.Context, d time.Duration) time.Duration {
	if deadline, ok := ctx.Deadline(); ok {
		if left := time.Until(deadline) - 5*time.Second; left < d {
			return max(left, time.Second)
		}
	}
	return d
}

// bounded runs f, which takes no context, and stops waiting for it after d.
func bounded(d time.Duration, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return fmt.Errorf("not done within %s", d)
	}
}

// webhookHost is this machine's address as the nodes see it: the default gateway of the
// control-plane node's container network, which rootful docker and podman put on a bridge
// of this machine. The API server (in that node) calls the harness's webhook there.
func webhookHost(ctx context.Context, provider *cluster.Provider, name string) (string, error) {
	all, err := provider.ListNodes(name)
	if err != nil {
		return "", err
	}
	cps, err := nodeutils.ControlPlaneNodes(all)
	if err != nil || len(cps) == 0 {
		return "", fmt.Errorf("no control-plane node in kind cluster %s: %v", name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	lines, err := kindexec.OutputLines(cps[0].CommandContext(ctx, "ip", "-4", "route", "show", "default"))
	if err != nil {
		return "", fmt.Errorf("ip route in node %s: %w", cps[0], err)
	}
	return defaultGateway(lines)
}

// defaultGateway reads the gateway of `ip route show default` ("default via 172.18.0.1 dev
// eth0").
func defaultGateway(lines []string) (string, error) {
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == "default" && f[1] == "via" && net.ParseIP(f[2]) != nil {
			return f[2], nil
		}
	}
	return "", fmt.Errorf("no default route in %q", strings.Join(lines, "; "))
}
