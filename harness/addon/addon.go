// Package addon is the add-on's operations as an interface mirroring `az aks mesh`. The
// emulator implements it on local and kind by rendering Istio's own charts into the
// add-on's layout; on AKS it is the real add-on.
package addon

import (
	"context"
	"errors"
	"fmt"
)

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

// Gateway namespaces of the add-on.
const (
	IngressNamespace = "aks-istio-ingress"
	EgressNamespace  = "aks-istio-egress"
)

// IngressType is the kind of managed ingress gateway: external or internal.
type IngressType string

const (
	External IngressType = "external"
	Internal IngressType = "internal"
)

// IngressGateway is the Service name of a managed ingress gateway, shared by all revisions,
// and the value of the `istio:` label Gateways select it by.
func IngressGateway(t IngressType) string { return "aks-istio-ingressgateway-" + string(t) }

// GatewayDeployment is the revision-suffixed Deployment behind a gateway Service.
func GatewayDeployment(gateway, revision string) string { return gateway + "-" + revision }

// EgressGateway names an egress gateway (`az aks mesh enable-egress-gateway
// --istio-egressgateway-name --istio-egressgateway-namespace --gateway-configuration-name`).
type EgressGateway struct {
	Name string
	// Namespace defaults to aks-istio-egress.
	Namespace string
	// GatewayConfigurationName is the Static Egress Gateway configuration its pods use.
	GatewayConfigurationName string
}

// Complete checks the arguments `az aks mesh enable-egress-gateway` requires and fills the
// namespace's default, for every implementation of the operation alike.
func (g EgressGateway) Complete() (EgressGateway, error) {
	if g.Name == "" {
		return g, errors.New("--istio-egressgateway-name is required")
	}
	if g.GatewayConfigurationName == "" {
		return g, errors.New("--gateway-configuration-name is required")
	}
	if g.Namespace == "" {
		g.Namespace = EgressNamespace
	}
	return g, nil
}

// ErrPodSubnetEgress is the add-on's refusal of an egress gateway on a cluster whose pods
// take IPs from an Azure CNI pod subnet (AKS docs, istio-deploy-egress).
var ErrPodSubnetEgress = errors.New("because Static Egress Gateway is currently not supported on Azure CNI Pod Subnet clusters, " +
	"the Istio add-on egress gateway isn't supported on Pod Subnet clusters either")

// Operations are the add-on's operations (`az aks mesh ...`).
type Operations interface {
	// Revisions lists the revisions whose control plane is running.
	Revisions(ctx context.Context) ([]string, error)
	// Enable installs a revision's control plane (`az aks mesh enable --revision`).
	Enable(ctx context.Context, revision string) error
	// EnableIngressGateway creates the managed ingress gateway of a type
	// (`az aks mesh enable-ingress-gateway --ingress-gateway-type`), for every running
	// revision. Enabling again keeps the Service's supported customisations.
	EnableIngressGateway(ctx context.Context, t IngressType) error
	// EnableEgressGateway creates an egress gateway (`az aks mesh enable-egress-gateway`).
	EnableEgressGateway(ctx context.Context, gw EgressGateway) error
	// UpgradeStart starts a canary minor upgrade (`az aks mesh upgrade start --revision`).
	UpgradeStart(ctx context.Context, revision string) error
	// UpgradeComplete removes the old revision (`az aks mesh upgrade complete`).
	UpgradeComplete(ctx context.Context) error
	// UpgradeRollback removes the canary (`az aks mesh upgrade rollback`).
	UpgradeRollback(ctx context.Context) error
	// SetProxyRedirection chooses InitContainers or CNIChaining
	// (`az aks mesh proxy-redirection-mechanism --mechanism`).
	SetProxyRedirection(ctx context.Context, mechanism string) error
}

// PatchUpgrader is implemented where the suite can trigger a patch upgrade of a revision's
// proxy; on AKS the add-on patches on its own schedule.
type PatchUpgrader interface {
	PatchUpgrade(ctx context.Context, revision, proxyTag string) error
}

// RevisionMinor is a revision's Istio minor version (28 for asm-1-28), 0 for a name that
// is not of the add-on's asm-1-<minor> form.
func RevisionMinor(revision string) int {
	var minor int
	if _, err := fmt.Sscanf(revision, "asm-1-%d", &minor); err != nil {
		return 0
	}
	return minor
}

// CompareRevisions orders revisions by minor version (asm-1-9 before asm-1-10), for sorting.
func CompareRevisions(a, b string) int { return RevisionMinor(a) - RevisionMinor(b) }
