package azure

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/containerservice/armcontainerservice/v8"

	"github.com/aks-istio-conformance/conformance/harness/addon"
)

var _ addon.Operations = (*Operations)(nil)

// The CLI's refusals, made before anything is sent, in its words
// (azure-cli, acs/managed_cluster_decorator.py).
var (
	ErrNotEnabled = errors.New("Istio has not been enabled for this cluster, please refer to " +
		"https://aka.ms/asm-aks-addon-docs for more details on enabling Azure Service Mesh.")
	ErrAlreadyEnabled = errors.New("Istio has already been enabled for this cluster, please refer to " +
		"https://aka.ms/asm-aks-upgrade-docs for more details on updating the mesh profile.")
	ErrUpgradeNotStarted = errors.New("Azure Service Mesh upgrade is not in progress.")
	// ErrGatewayAlreadyEnabled: enable-egress-gateway for a gateway that is already
	// enabled with the same gateway configuration.
	ErrGatewayAlreadyEnabled = errors.New("egress gateway is already enabled")
)

// APIVersion is the ManagedCluster API version armcontainerservice/v8 speaks.
const APIVersion = "2025-10-01"

// Revisions lists smp.istio.revisions, lowest first; none when the mesh is not in
// mode Istio (a disabled mesh may keep its last revisions in the profile).
func (o *Operations) Revisions(ctx context.Context) ([]string, error) {
	ctx, cancel := o.bound(ctx)
	defer cancel()
	mc, err := o.get(ctx, "az aks show --query serviceMeshProfile")
	if err != nil {
		return nil, err
	}
	p := profileOf(mc)
	if !istioMode(p) || p.Istio == nil {
		return nil, nil
	}
	return sortedRevisions(p.Istio.Revisions), nil
}

// Enable sets mode Istio with the revision (`az aks mesh enable --revision`); an empty
// revision lets the service choose, as the CLI does without --revision. Like the CLI it
// refuses a cluster whose mesh is already in mode Istio (ErrAlreadyEnabled).
func (o *Operations) Enable(ctx context.Context, revision string) error {
	return o.update(ctx, command("enable", "--revision", revision), func(p *armcontainerservice.ServiceMeshProfile) error {
		if istioMode(p) {
			return ErrAlreadyEnabled
		}
		p.Mode = to.Ptr(armcontainerservice.ServiceMeshModeIstio)
		istio := ensureIstio(p)
		if revision != "" {
			istio.Revisions = []*string{to.Ptr(revision)}
		}
		return nil
	})
}

// EnableIngressGateway enables the ingress gateway of a type (`az aks mesh
// enable-ingress-gateway --ingress-gateway-type`). As with the CLI, enabling again sends
// the change again (the service reconciles the gateway), and it puts the mesh in mode
// Istio if it was not.
func (o *Operations) EnableIngressGateway(ctx context.Context, t addon.IngressType) error {
	var mode armcontainerservice.IstioIngressGatewayMode
	switch t {
	case addon.External:
		mode = armcontainerservice.IstioIngressGatewayModeExternal
	case addon.Internal:
		mode = armcontainerservice.IstioIngressGatewayModeInternal
	default:
		return fmt.Errorf("ingress gateway type %q: use %s or %s", t, addon.External, addon.Internal)
	}
	op := command("enable-ingress-gateway", "--ingress-gateway-type", string(t))
	return o.update(ctx, op, func(p *armcontainerservice.ServiceMeshProfile) error {
		p.Mode = to.Ptr(armcontainerservice.ServiceMeshModeIstio)
		c := ensureComponents(ensureIstio(p))
		for _, g := range c.IngressGateways {
			if g != nil && g.Mode != nil && *g.Mode == mode {
				g.Enabled = to.Ptr(true)
				return nil
			}
		}
		c.IngressGateways = append(c.IngressGateways, &armcontainerservice.IstioIngressGateway{Mode: to.Ptr(mode), Enabled: to.Ptr(true)})
		return nil
	})
}

// EnableEgressGateway enables an egress gateway (`az aks mesh enable-egress-gateway`),
// in aks-istio-egress unless gw.Namespace says otherwise. A gateway already listed under
// that name and namespace is enabled in place with the new gateway configuration; one
// already enabled with the same configuration is refused, as the CLI refuses it.
func (o *Operations) EnableEgressGateway(ctx context.Context, gw addon.EgressGateway) error {
	gw, err := gw.Complete()
	if err != nil {
		return fmt.Errorf("az aks mesh enable-egress-gateway: %w", err)
	}
	op := command("enable-egress-gateway", "--istio-egressgateway-name", gw.Name,
		"--istio-egressgateway-namespace", gw.Namespace, "--gateway-configuration-name", gw.GatewayConfigurationName)
	return o.update(ctx, op, func(p *armcontainerservice.ServiceMeshProfile) error {
		p.Mode = to.Ptr(armcontainerservice.ServiceMeshModeIstio)
		c := ensureComponents(ensureIstio(p))
		for _, g := range c.EgressGateways {
			if g == nil || deref(g.Name) != gw.Name || deref(g.Namespace) != gw.Namespace {
				continue
			}
			if deref(g.Enabled) && deref(g.GatewayConfigurationName) == gw.GatewayConfigurationName {
				return fmt.Errorf("%w: %s in namespace %s, with gateway configuration name %s",
					ErrGatewayAlreadyEnabled, gw.Name, gw.Namespace, gw.GatewayConfigurationName)
			}
			g.Enabled = to.Ptr(true)
			g.GatewayConfigurationName = to.Ptr(gw.GatewayConfigurationName)
			return nil
		}
		c.EgressGateways = append(c.EgressGateways, &armcontainerservice.IstioEgressGateway{
			Enabled:                  to.Ptr(true),
			Name:                     to.Ptr(gw.Name),
			Namespace:                to.Ptr(gw.Namespace),
			GatewayConfigurationName: to.Ptr(gw.GatewayConfigurationName),
		})
		return nil
	})
}

// UpgradeStart adds the revision to smp.istio.revisions (`az aks mesh upgrade start
// --revision`). Which revisions may run side by side (at most two, n+1 or n+2) is the
// service's to decide; its refusal is returned.
func (o *Operations) UpgradeStart(ctx context.Context, revision string) error {
	if revision == "" {
		return errors.New("az aks mesh upgrade start: --revision is required")
	}
	return o.update(ctx, command("upgrade start", "--revision", revision), func(p *armcontainerservice.ServiceMeshProfile) error {
		if !istioMode(p) {
			return ErrNotEnabled
		}
		istio := ensureIstio(p)
		istio.Revisions = append(istio.Revisions, to.Ptr(revision))
		return nil
	})
}

// UpgradeComplete keeps the newest revision (`az aks mesh upgrade complete`).
func (o *Operations) UpgradeComplete(ctx context.Context) error {
	return o.finishUpgrade(ctx, "upgrade complete", func(sorted []string) string { return sorted[0] })
}

// UpgradeRollback keeps the oldest revision (`az aks mesh upgrade rollback`).
func (o *Operations) UpgradeRollback(ctx context.Context) error {
	return o.finishUpgrade(ctx, "upgrade rollback", func(sorted []string) string { return sorted[len(sorted)-1] })
}

// finishUpgrade removes one revision of a canary upgrade, chosen from the revisions
// sorted lowest first.
func (o *Operations) finishUpgrade(ctx context.Context, sub string, remove func(sorted []string) string) error {
	return o.update(ctx, command(sub), func(p *armcontainerservice.ServiceMeshProfile) error {
		if !istioMode(p) {
			return ErrNotEnabled
		}
		istio := ensureIstio(p)
		if len(istio.Revisions) < 2 {
			return ErrUpgradeNotStarted
		}
		gone := remove(sortedRevisions(istio.Revisions))
		istio.Revisions = slices.DeleteFunc(istio.Revisions, func(r *string) bool { return deref(r) == gone })
		return nil
	})
}

// SetProxyRedirection would set smp.istio.components.proxyRedirectionMechanism (`az aks
// mesh proxy-redirection-mechanism --mechanism`). API 2025-10-01, the one
// armcontainerservice/v8 speaks, has no such field (2025-10-02-preview has it), and an
// SDK model cannot carry a field it does not know, so this is unsupported here.
func (o *Operations) SetProxyRedirection(ctx context.Context, mechanism string) error {
	// The values of the API's ProxyRedirectionMechanism (2025-10-02-preview), which the
	// CLI's --mechanism takes.
	if mechanism != "CNIChaining" && mechanism != "InitContainers" {
		return fmt.Errorf("--mechanism %q: use CNIChaining or InitContainers", mechanism)
	}
	return fmt.Errorf("%s on %s: %w: the ManagedCluster API %s (armcontainerservice/v8) has no "+
		"serviceMeshProfile.istio.components.proxyRedirectionMechanism; run the az command by hand",
		command("proxy-redirection-mechanism", "--mechanism", mechanism), o, errors.ErrUnsupported, APIVersion)
}

// RevisionInfo is one revision as `az aks mesh get-upgrades` and `get-revisions` show it.
type RevisionInfo struct {
	Revision string
	// Upgrades are the revisions it can be upgraded to.
	Upgrades []string
	// CompatibleWith: product (e.g. kubernetes) to the versions the revision supports.
	CompatibleWith map[string][]string
}

// AvailableUpgrades is what `az aks mesh get-upgrades` shows: the first of the
// cluster's mesh upgrade profiles (ManagedClusters.ListMeshUpgradeProfiles).
func (o *Operations) AvailableUpgrades(ctx context.Context) (RevisionInfo, error) {
	ctx, cancel := o.bound(ctx)
	defer cancel()
	op := command("get-upgrades")
	pager := o.clusters.NewListMeshUpgradeProfilesPager(o.cfg.ResourceGroup, o.cfg.Cluster, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return RevisionInfo{}, o.explain(ctx, op, stepProfile, err)
		}
		for _, p := range page.Value {
			if p != nil && p.Properties != nil {
				return revisionInfo(p.Properties.Revision, p.Properties.Upgrades, p.Properties.CompatibleWith), nil
			}
		}
	}
	return RevisionInfo{}, fmt.Errorf("%s on %s: Azure lists no mesh upgrade profile (is the mesh enabled? az aks mesh get-upgrades -g %s -n %s)",
		op, o, o.cfg.ResourceGroup, o.cfg.Cluster)
}

// MeshRevisionProfiles is what `az aks mesh get-revisions --location` shows: the mesh
// revisions of the first mesh revision profile of a region
// (ManagedClusters.ListMeshRevisionProfiles). An empty location means the cluster's.
func (o *Operations) MeshRevisionProfiles(ctx context.Context, location string) ([]RevisionInfo, error) {
	ctx, cancel := o.bound(ctx)
	defer cancel()
	if location == "" {
		op := command("get-revisions")
		mc, err := o.get(ctx, op)
		if err != nil {
			return nil, err
		}
		location = deref(mc.Location)
		if location == "" {
			return nil, fmt.Errorf("%s on %s: the cluster has no location; give one", op, o)
		}
	}
	op := command("get-revisions", "--location", location)
	pager := o.clusters.NewListMeshRevisionProfilesPager(location, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, o.explain(ctx, op, stepProfile, err)
		}
		for _, p := range page.Value {
			if p == nil || p.Properties == nil {
				continue
			}
			var out []RevisionInfo
			for _, r := range p.Properties.MeshRevisions {
				if r != nil {
					out = append(out, revisionInfo(r.Revision, r.Upgrades, r.CompatibleWith))
				}
			}
			return out, nil
		}
	}
	return nil, nil
}

func revisionInfo(revision *string, upgrades []*string, compat []*armcontainerservice.CompatibleVersions) RevisionInfo {
	info := RevisionInfo{Revision: deref(revision), Upgrades: derefAll(upgrades)}
	for _, c := range compat {
		if c == nil {
			continue
		}
		if info.CompatibleWith == nil {
			info.CompatibleWith = map[string][]string{}
		}
		info.CompatibleWith[deref(c.Name)] = derefAll(c.Versions)
	}
	return info
}

// command names the az command an operation stands for, for its errors.
func command(sub string, args ...string) string {
	s := "az aks mesh " + sub
	for i := 0; i+1 < len(args); i += 2 {
		if args[i+1] != "" {
			s += " " + args[i] + " " + args[i+1]
		}
	}
	return s
}

func profileOf(mc armcontainerservice.ManagedCluster) *armcontainerservice.ServiceMeshProfile {
	if mc.Properties == nil {
		return nil
	}
	return mc.Properties.ServiceMeshProfile
}

func istioMode(p *armcontainerservice.ServiceMeshProfile) bool {
	return p != nil && p.Mode != nil && *p.Mode == armcontainerservice.ServiceMeshModeIstio
}

func ensureIstio(p *armcontainerservice.ServiceMeshProfile) *armcontainerservice.IstioServiceMesh {
	if p.Istio == nil {
		p.Istio = &armcontainerservice.IstioServiceMesh{}
	}
	return p.Istio
}

func ensureComponents(i *armcontainerservice.IstioServiceMesh) *armcontainerservice.IstioComponents {
	if i.Components == nil {
		i.Components = &armcontainerservice.IstioComponents{}
	}
	return i.Components
}

// sortedRevisions orders revisions by minor, as the CLI does (asm-1-9 before asm-1-10;
// a string order would put asm-1-10 first).
func sortedRevisions(revs []*string) []string {
	out := derefAll(revs)
	slices.SortStableFunc(out, addon.CompareRevisions)
	return out
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func derefAll(ps []*string) []string {
	var out []string
	for _, p := range ps {
		if p != nil {
			out = append(out, *p)
		}
	}
	return out
}
