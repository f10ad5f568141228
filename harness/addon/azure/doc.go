// Package azure performs the add-on's operations on a real AKS cluster through the Azure
// SDK for Go (armcontainerservice/v8, API version 2025-10-01), with azidentity's default
// credential unless another is given. It implements addon.Operations as `az aks mesh`
// does: every change reads the managed cluster, edits its serviceMeshProfile the way the
// CLI edits it, and PUTs the cluster back (ManagedClusters.BeginCreateOrUpdate, a
// long-running operation polled to completion). The PUT carries the ETag of the read in
// If-Match, so a change made by someone else in between is refused (HTTP 412) instead of
// overwritten. The API has no dedicated mesh operations; the CLI uses the same PUT.
//
// What each operation maps to (properties.serviceMeshProfile is abbreviated smp):
//
//	Revisions            az aks show --query serviceMeshProfile   GET managedClusters/{name}: smp.istio.revisions
//	                                                              (none unless smp.mode is Istio)
//	Enable(rev)          az aks mesh enable --revision rev        PUT smp.mode=Istio, smp.istio.revisions=[rev]
//	EnableIngressGateway az aks mesh enable-ingress-gateway       PUT smp.istio.components.ingressGateways:
//	                       --ingress-gateway-type external|internal  {mode: External|Internal, enabled: true}
//	                                                              (updated in place if that mode is listed)
//	EnableEgressGateway  az aks mesh enable-egress-gateway        PUT smp.istio.components.egressGateways:
//	                       --istio-egressgateway-name/-namespace    {name, namespace, gatewayConfigurationName,
//	                       --gateway-configuration-name              enabled: true}
//	UpgradeStart(rev)    az aks mesh upgrade start --revision rev PUT smp.istio.revisions + [rev]
//	UpgradeComplete      az aks mesh upgrade complete             PUT smp.istio.revisions without the lowest
//	UpgradeRollback      az aks mesh upgrade rollback             PUT smp.istio.revisions without the highest
//	SetProxyRedirection  az aks mesh proxy-redirection-mechanism  smp.istio.components.proxyRedirectionMechanism
//	                       --mechanism                            is not in API 2025-10-01: errors.ErrUnsupported
//	AvailableUpgrades    az aks mesh get-upgrades                 GET managedClusters/{name}/meshUpgradeProfiles
//	MeshRevisionProfiles az aks mesh get-revisions --location     GET locations/{location}/meshRevisionProfiles
//
// Checks made here before anything is sent are the CLI's own (Istio not enabled, upgrade
// not in progress, Istio already enabled, a required argument missing), with its wording.
// Everything else, e.g. "at most two revisions" or "only n+1 or n+2", is the service's to
// decide: its refusal comes back as a one-line error with the HTTP status, the error code
// and the service's message.
//
// Every operation is bounded: Config.Timeout caps the read, the PUT and the polling
// together, and each HTTP try is capped by the SDK's retry policy (Config.ClientOptions,
// with a per-try timeout set here when none is given).
package azure
