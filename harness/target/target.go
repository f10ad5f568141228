// Package target defines "a cluster to test". Scenario code sees only this interface and
// its capabilities; the implementations (local, kind, aks) live in their own packages and
// are chosen by harness/targets.
package target

import (
	"context"

	"k8s.io/client-go/rest"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/timing"
)

// Capabilities say which kinds of evidence and change a target allows. A spec that needs
// one the target lacks is skipped with the capability named, never passed without it.
type Capabilities struct {
	// DataPlane: real Envoy sidecars run, so traffic can be sent and access logs read.
	DataPlane bool `json:"dataPlane"`
	// MeshWideChanges: the suite may change mesh-wide settings (the shared mesh ConfigMap,
	// root-namespace policies). Always true on emulated targets; opt-in on real clusters.
	MeshWideChanges bool `json:"meshWideChanges"`
	// AddonOperations: the add-on's operations (upgrade, gateways) can be performed.
	AddonOperations bool `json:"addonOperations"`
	// EmulatedAddon: the add-on is emulated, so scenarios may declare the cluster's Azure
	// facts (e.g. its network) that a real cluster has fixed.
	EmulatedAddon bool `json:"emulatedAddon"`
}

// Target is a cluster with the add-on (real or emulated) running.
type Target interface {
	// Name is the target's kind: local, kind or aks.
	Name() string
	// RESTConfig reaches the cluster's API server as an administrator.
	RESTConfig() *rest.Config
	// KubeconfigPath is a kubeconfig file for people and for kubectl-based confirm lines.
	KubeconfigPath() string
	Capabilities() Capabilities
	// Addon performs the add-on's operations and says which revisions run.
	Addon() addon.Operations
	// Phases are the bring-up timings, for the report.
	Phases() []timing.Phase
	// Close stops whatever the target started. It is safe to call more than once.
	Close(ctx context.Context) error
}

// Options choose and shape a target.
type Options struct {
	// Name is local, kind or aks.
	Name string
	// Revisions to run (the first is the default for scenarios); local and kind enable
	// them, aks checks they are installed.
	Revisions []string
	// WorkDir holds the target's state: PKI, kubeconfig, component logs.
	WorkDir string
	// Kubeconfig of an existing cluster (aks).
	Kubeconfig string
	// AllowMeshWideChanges opts a real cluster in to mesh-wide changes.
	AllowMeshWideChanges bool
	// Azure names the managed cluster for add-on operations on AKS (all three, or none).
	AzureSubscription, AzureResourceGroup, AzureCluster string
	// AllowDisruptive opts a real cluster in to runbooks that change the add-on itself
	// (upgrades, rollbacks); never without it.
	AllowDisruptive bool
}
