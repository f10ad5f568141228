// Package addon is the add-on's operations as an interface mirroring `az aks mesh`. The
// emulator implements it on local and kind by rendering Istio's own charts into the
// add-on's layout; on AKS it is the real add-on.
package addon

import "context"

// Add-on layout: the names every target shares.
const (
	// RootNamespace holds the control plane and is Istio's root (mesh-wide) namespace.
	RootNamespace = "aks-istio-system"
	// RevisionLabel selects a revision (or a tag) for injection.
	RevisionLabel = "istio.io/rev"
	// LegacyInjectionLabel is upstream's namespace label, which the add-on ignores.
	LegacyInjectionLabel = "istio-injection"
	// TagLabel marks a revision tag's webhook.
	TagLabel = "istio.io/tag"
)

// ManagedMeshConfigMap is the add-on's reconciled mesh config of a revision.
func ManagedMeshConfigMap(revision string) string { return "istio-" + revision }

// SharedMeshConfigMap is the user's overlay of a revision's mesh config (key "mesh").
func SharedMeshConfigMap(revision string) string { return "istio-shared-configmap-" + revision }

// InjectorConfigMap holds a revision's injection template and values.
func InjectorConfigMap(revision string) string { return "istio-sidecar-injector-" + revision }

// InjectorWebhook is a revision's MutatingWebhookConfiguration.
func InjectorWebhook(revision string) string { return "istio-sidecar-injector-" + revision }

// ValidatorWebhook is a revision's ValidatingWebhookConfiguration.
func ValidatorWebhook(revision string) string { return "istio-validator-" + revision }

// Istiod is a revision's control-plane Deployment and Service.
func Istiod(revision string) string { return "istiod-" + revision }

// Operations are the add-on's operations. Later work adds upgrade start/complete/rollback,
// ingress and egress gateways and the proxy-redirection mechanism.
type Operations interface {
	// Revisions lists the revisions whose control plane is running.
	Revisions(ctx context.Context) ([]string, error)
	// Enable installs a revision's control plane (`az aks mesh enable --revision`).
	Enable(ctx context.Context, revision string) error
}
