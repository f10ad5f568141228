// Package local is the target that runs everywhere: a real Kubernetes control plane
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), kwok's fake node and
// one real istiod process per revision, all on loopback, built from pinned modules. There
// is no container runtime and no Envoy: it proves admission, injection, served xDS and
// sync status, never traffic.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/client-go/rest"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/addon/emulator"
	"github.com/aks-istio-conformance/conformance/harness/process"
	"github.com/aks-istio-conformance/conformance/harness/target"
	"github.com/aks-istio-conformance/conformance/harness/timing"
)

// Local is the running local target.
type Local struct {
	cp      *controlPlane
	istiod  *istiodRuntime
	addon   *emulator.Emulator
	rec     *timing.Recorder
	closing sync.Once
	err     error
}

var _ target.Target = (*Local)(nil)

// Open brings the cluster up, enables the requested revisions and returns when their
// webhooks are served. On failure everything started is stopped again.
func Open(ctx context.Context, opts target.Options) (_ *Local, err error) {
	if len(opts.Revisions) == 0 {
		return nil, errors.New("local target: no revision to enable")
	}
	if err := os.MkdirAll(opts.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("local target: work directory: %w", err)
	}
	l := &Local{rec: &timing.Recorder{}}
	start := time.Now()
	l.cp, err = startControlPlane(ctx, opts.WorkDir, opts.Detached, l.rec)
	if err != nil {
		return nil, fmt.Errorf("local target: %w", err)
	}
	defer func() {
		if err != nil {
			_ = l.stop() // detached or not: a failed start leaves nothing running
		}
	}()
	l.istiod = newIstiodRuntime(opts.WorkDir, l.cp.kubeconfig, l.cp.files, opts.Detached)
	l.addon = emulator.New(l.cp.client, l.istiod, l.rec)
	for _, rev := range opts.Revisions {
		if err := l.addon.Enable(ctx, rev); err != nil {
			return nil, fmt.Errorf("local target: enable %s: %w", rev, err)
		}
	}
	l.rec.Add("target ready", time.Since(start))
	if opts.Detached {
		if err := l.writeState(opts.WorkDir); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func (l *Local) Name() string             { return "local" }
func (l *Local) RESTConfig() *rest.Config { return rest.CopyConfig(l.cp.restConfig) }
func (l *Local) KubeconfigPath() string   { return l.cp.kubeconfig }
func (l *Local) Addon() addon.Operations  { return l.addon }
func (l *Local) Phases() []timing.Phase   { return l.rec.Phases() }

// Istiod returns the loopback addresses of a revision's istiod process.
func (l *Local) Istiod(_ context.Context, revision string) (target.IstiodEndpoints, error) {
	return l.istiod.endpoints(revision)
}

func (l *Local) Capabilities() target.Capabilities {
	// An emulated cluster belongs to the run: mesh-wide changes and add-on operations are
	// safe. There is no Envoy, so no data plane.
	return target.Capabilities{DataPlane: false, MeshWideChanges: true, AddonOperations: true, EmulatedAddon: true}
}

// Close stops istiod, then the control plane in reverse order. A detached target is left
// running for `make down`.
func (l *Local) Close(context.Context) error {
	if l.cp.detached {
		return nil
	}
	return l.stop()
}

func (l *Local) stop() error {
	l.closing.Do(func() {
		var errs []error
		if l.istiod != nil {
			errs = append(errs, l.istiod.stop())
		}
		errs = append(errs, l.cp.stop())
		l.err = errors.Join(errs...)
	})
	return l.err
}

// state is what `make down` needs to stop a detached target.
type state struct {
	Kubeconfig string `json:"kubeconfig"`
	// PIDs in stop order: istiods first, etcd last.
	PIDs []int `json:"pids"`
}

const stateFile = "state.json"

func (l *Local) writeState(dir string) error {
	s := state{Kubeconfig: l.cp.kubeconfig, PIDs: l.istiod.pids()}
	for i := len(l.cp.procs) - 1; i >= 0; i-- {
		s.PIDs = append(s.PIDs, l.cp.procs[i].PID())
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, stateFile), data, 0o644)
}

// Running reports the kubeconfig of a detached target left in dir by `make up`, or "".
func Running(dir string) string {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return ""
	}
	var s state
	if json.Unmarshal(data, &s) != nil {
		return ""
	}
	return s.Kubeconfig
}

// StopDetached stops a target left running in dir by `make up`.
func StopDetached(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no local target is running from %s (nothing to stop)", dir)
	}
	if err != nil {
		return err
	}
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	var errs []error
	for _, pid := range s.PIDs {
		errs = append(errs, process.StopPID(pid, 15*time.Second))
	}
	_ = os.RemoveAll(filepath.Join(dir, "etcd"))
	errs = append(errs, os.Remove(filepath.Join(dir, stateFile)))
	return errors.Join(errs...)
}
