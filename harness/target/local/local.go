// Package local is the target that runs everywhere: a real Kubernetes control plane
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), kwok's fake node and
// one real istiod process per revision, all on loopback, built from pinned modules. There
// is no container runtime and no Envoy: it proves admission, injection, served xDS and
// sync status, never traffic. After bring-up it is reached like any cluster: through its
// kubeconfig, with kwok serving the fake node's kubelet API (port-forward, logs) on
// 127.0.0.1.
package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/addon/emulator"
	"github.com/aks-istio-conformance/conformance/harness/cluster"
	"github.com/aks-istio-conformance/conformance/harness/target"
	"github.com/aks-istio-conformance/conformance/harness/timing"
)

// Local is the running local target.
type Local struct {
	cp      *controlPlane
	istiod  *istiodRuntime
	road    *cluster.Cluster
	addon   *emulator.Emulator
	rec     *timing.Recorder
	stopBr  context.CancelFunc
	bridged sync.WaitGroup
	closing sync.Once
	err     error
}

var _ target.Target = (*Local)(nil)

// Open brings the cluster up, enables the requested revisions and returns when their
// webhooks are served and their istiod pods answer through the API server. On failure
// everything started is stopped again.
func Open(ctx context.Context, opts target.Options) (_ *Local, err error) {
	if len(opts.Revisions) == 0 {
		return nil, errors.New("local target: no revision to enable")
	}
	if err := os.MkdirAll(opts.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("local target: work directory: %w", err)
	}
	l := &Local{rec: &timing.Recorder{}}
	start := time.Now()
	l.cp, err = startControlPlane(ctx, opts.WorkDir, l.rec)
	if err != nil {
		return nil, fmt.Errorf("local target: %w", err)
	}
	defer func() {
		if err != nil {
			_ = l.stop() // a failed start leaves nothing running
		}
	}()
	if l.road, err = cluster.New(l.cp.restConfig); err != nil {
		return nil, fmt.Errorf("local target: %w", err)
	}
	kube, err := kubernetes.NewForConfig(l.cp.restConfig)
	if err != nil {
		return nil, fmt.Errorf("local target: %w", err)
	}
	l.istiod = newIstiodRuntime(opts.WorkDir, l.cp.kubeconfig, l.cp.files, l.road)
	l.istiod.bridge = newKwokBridge(kube, l.cp.client, l.istiod.lookup)
	bridgeCtx, cancel := context.WithCancel(context.Background())
	l.stopBr = cancel
	l.bridged.Add(1)
	go l.istiod.bridge.run(bridgeCtx, &l.bridged)
	l.addon = emulator.New(l.cp.client, l.istiod, l.rec)
	for _, rev := range opts.Revisions {
		if err := l.addon.Enable(ctx, rev); err != nil {
			return nil, fmt.Errorf("local target: enable %s: %w", rev, err)
		}
	}
	l.rec.Add("target ready", time.Since(start))
	return l, nil
}

func (l *Local) Name() string             { return "local" }
func (l *Local) RESTConfig() *rest.Config { return rest.CopyConfig(l.cp.restConfig) }
func (l *Local) KubeconfigPath() string   { return l.cp.kubeconfig }
func (l *Local) Addon() addon.Operations  { return l.addon }
func (l *Local) Phases() []timing.Phase   { return l.rec.Phases() }

func (l *Local) Capabilities() target.Capabilities {
	// An emulated cluster belongs to the run: mesh-wide changes and add-on operations are
	// safe. There is no Envoy, so no data plane.
	return target.Capabilities{DataPlane: false, MeshWideChanges: true, AddonOperations: true, EmulatedAddon: true}
}

// Close stops istiod, then the control plane in reverse order. It is safe to call more
// than once.
func (l *Local) Close(context.Context) error { return l.stop() }

func (l *Local) stop() error {
	l.closing.Do(func() {
		var errs []error
		if l.stopBr != nil {
			l.stopBr()
			l.bridged.Wait()
		}
		if l.road != nil {
			l.road.Close()
		}
		if l.istiod != nil {
			errs = append(errs, l.istiod.stop())
		}
		errs = append(errs, l.cp.stop())
		l.err = errors.Join(errs...)
	})
	return l.err
}
