package conformance

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	meshconfig "istio.io/api/mesh/v1alpha1"
	networkingapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/addon/emulator"
	"github.com/aks-istio-conformance/conformance/harness/runbook"
	"github.com/aks-istio-conformance/conformance/harness/traffic"
	"github.com/aks-istio-conformance/conformance/harness/verdict"
	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// Seed: "Running the Managed Istio Add-on on AKS", section 4 (egress), lab step 4 and
// troubleshooting rows 8, 9 and 12. Verdicts come from the client sidecar's served
// listeners and clusters; nothing is sent to the external hosts named here.

const (
	declaredHost   = "api.contoso.example"
	undeclaredHost = "unknown.contoso.example"
	registryOnly   = "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n"
	// confirmEgress is the outbound catch-all listener: its last filter chain sends
	// undeclared TLS/TCP to PassthroughCluster (ALLOW_ANY) or BlackHoleCluster (REGISTRY_ONLY).
	confirmEgress = "istioctl proxy-config listener -n %s %s --port 15001 -o json"
)

// egressConfirm gives a step the command that shows one egress verdict for host:port:
// undeclared TLS in the catch-all listener, undeclared plain HTTP in the port's route
// (allow_any or block_all virtual host), a declared host by its own cluster.
func egressConfirm(step runbook.Step, host string, port int, tls bool, want string) runbook.Step {
	step.Ref += fmt.Sprintf(" [%s:%d]", host, port)
	catchAll := map[string]string{verdict.Passthrough: "PassthroughCluster", verdict.Blocked: "BlackHoleCluster"}
	vhost := map[string]string{verdict.Passthrough: "allow_any", verdict.Blocked: "block_all"}
	switch {
	case want == verdict.Declared:
		step.Confirm = fmt.Sprintf("istioctl proxy-config cluster -n %%s %%s --fqdn %s --port %d", host, port)
		step.Shows = fmt.Sprintf(`(?m)^%s\s+%d\b`, regexp.QuoteMeta(host), port)
	case tls:
		step.Confirm, step.Shows = confirmEgress, `"cluster":\s*"`+catchAll[want]+`"`
	default:
		step.Confirm = fmt.Sprintf("istioctl proxy-config route -n %%s %%s --name %d -o json", port)
		step.Shows = `"name":\s*"` + vhost[want] + `"`
	}
	return step
}

// egress waits until the client's served config gives want for a call to host:port. A
// declared host must reach its own cluster, outbound|<port>||<host> (Istio's cluster
// naming, as istioctl proxy-config cluster shows it), not merely some registry cluster: a
// call that landed on another service's cluster is not the ServiceEntry re-allowing it.
func egress(ctx context.Context, c workload, host string, port int, tls bool, want string, since time.Time, step runbook.Step) verdict.Egress {
	GinkgoHelper()
	own := fmt.Sprintf("outbound|%d||%s", port, host)
	step = egressConfirm(step, host, port, tls, want)
	return served(ctx, c.proxy, since, step, c.at(), func(s xds.Snapshot) (verdict.Egress, error) {
		got := verdict.Outbound(s, host, port, tls)
		if got.Outcome() != want {
			return got, fmt.Errorf("%s", got)
		}
		if want == verdict.Declared && got.Cluster != own {
			return got, fmt.Errorf("%s: not the host's own cluster %s", got, own)
		}
		return got, nil
	})
}

func serviceEntry(ns, name, host string, exportTo ...string) *networkingv1.ServiceEntry {
	se := &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	se.Spec.Hosts = []string{host}
	se.Spec.Location = networkingapi.ServiceEntry_MESH_EXTERNAL
	se.Spec.Resolution = networkingapi.ServiceEntry_DNS
	se.Spec.Ports = []*networkingapi.ServicePort{{Number: 443, Name: "tls", Protocol: "TLS"}}
	se.Spec.ExportTo = exportTo
	return se
}

var _ = Describe("Egress: outbound traffic policy", Label("egress"), upstream, func() {
	var client workload
	BeforeEach(func(ctx SpecContext) {
		client = deployWorkload(ctx, meshNamespace(ctx, "egress"), "client")
	})

	It("ALLOW_ANY (the default) lets an undeclared external host through", func(ctx SpecContext) {
		step := runbook.Step{Ref: "seed §4: the add-on's default outboundTrafficPolicy is ALLOW_ANY", Confirm: confirmEgress,
			Expected: "TLS and plain HTTP to an undeclared host reach PassthroughCluster / allow_any",
			Fix:      "check outboundTrafficPolicy in istio-shared-configmap-<rev>"}
		egress(ctx, client, undeclaredHost, 443, true, verdict.Passthrough, time.Now(), step)
		egress(ctx, client, undeclaredHost, 80, false, verdict.Passthrough, time.Now(), step)
	})

	It("REGISTRY_ONLY in istio-shared-configmap-<rev> blocks an undeclared host", Label("mesh-config"), func(ctx SpecContext) {
		applied := time.Now()
		world.SetSharedMeshConfig(ctx, world.Revision(), registryOnly)
		step := runbook.Step{Ref: "seed §4 / lab step 4: REGISTRY_ONLY through the shared ConfigMap", Confirm: confirmEgress,
			Expected: "TLS to an undeclared host hits BlackHoleCluster, plain HTTP the block_all virtual host (502)",
			Fix:      "set outboundTrafficPolicy.mode REGISTRY_ONLY under key `mesh` of istio-shared-configmap-<running rev>"}
		egress(ctx, client, undeclaredHost, 443, true, verdict.Blocked, applied, step)
		egress(ctx, client, undeclaredHost, 80, false, verdict.Blocked, applied, step)
	})

	It("a ServiceEntry re-allows exactly its host under REGISTRY_ONLY (row 8)", Label("mesh-config"), func(ctx SpecContext) {
		world.SetSharedMeshConfig(ctx, world.Revision(), registryOnly)
		applied := time.Now()
		world.Create(ctx, serviceEntry(client.ns, "contoso-api", declaredHost))
		step := runbook.Step{Ref: "troubleshooting row 8: 502 to an external host under REGISTRY_ONLY", Confirm: confirmEgress,
			Expected: declaredHost + " reaches its own cluster; " + undeclaredHost + " stays blocked",
			Fix:      "declare each external host with a ServiceEntry (hosts, ports, resolution DNS, location MESH_EXTERNAL)"}
		egress(ctx, client, declaredHost, 443, true, verdict.Declared, applied, step)
		egress(ctx, client, undeclaredHost, 443, true, verdict.Blocked, applied, step)
	})

	It(`exportTo "." keeps a ServiceEntry in its own namespace`, Label("mesh-config"), func(ctx SpecContext) {
		world.SetSharedMeshConfig(ctx, world.Revision(), registryOnly)
		neighbour := deployWorkload(ctx, meshNamespace(ctx, "egress-neighbour"), "client")
		applied := time.Now()
		world.Create(ctx, serviceEntry(client.ns, "contoso-api-local", declaredHost, "."))
		step := runbook.Step{Ref: "seed §4: ServiceEntry exportTo", Confirm: confirmEgress,
			Expected: "the owning namespace reaches " + declaredHost + "; another namespace is still blocked",
			Fix:      "exportTo \".\" limits visibility; use \"*\" or list the namespaces that need the host"}
		egress(ctx, client, declaredHost, 443, true, verdict.Declared, applied, step)
		egress(ctx, neighbour, declaredHost, 443, true, verdict.Blocked, applied, step)
	})

	It("REGISTRY_ONLY in a ConfigMap named for another revision changes nothing (row 9)", Label("mesh-config"), func(ctx SpecContext) {
		requireMeshWideChanges()
		wrong := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: addon.RootNamespace, Name: addon.SharedMeshConfigMap("asm-1-99")},
			Data: map[string]string{"mesh": registryOnly}}
		world.Create(ctx, wrong)
		barrier(ctx, client, "", nil)
		step := runbook.Step{Ref: "troubleshooting row 9: the shared ConfigMap's name must match the running revision",
			Confirm:  "kubectl get cm -n aks-istio-system | grep istio-shared-configmap; " + confirmRevisions,
			Shows:    regexp.QuoteMeta(wrong.Name),
			Expected: "the undeclared host still passes through: no istiod reads " + wrong.Name,
			Fix:      "rename the ConfigMap to istio-shared-configmap-<running revision>"}
		egress(ctx, client, undeclaredHost, 443, true, verdict.Passthrough, time.Now(), step)
		mesh := mergedMesh(ctx)
		Expect(mesh.GetOutboundTrafficPolicy().GetMode().String()).To(Equal("ALLOW_ANY"), step.Explain(list{mesh.GetOutboundTrafficPolicy().String()}))
		// The ConfigMap istiod does read (its SHARED_MESH_CONFIG) names the running revision.
		Expect(wrong.Name).NotTo(Equal(addon.SharedMeshConfigMap(world.Revision())), runbook.Step{Ref: step.Ref, Expected: step.Expected, Fix: step.Fix,
			Confirm: "kubectl get deploy -n aks-istio-system " + addon.Istiod(world.Revision()) + " -o yaml | grep -A1 SHARED_MESH_CONFIG",
			Shows:   `value: ` + regexp.QuoteMeta(addon.SharedMeshConfigMap(world.Revision())) + `\b`}.Explain(list{wrong.Name}))
	})
})

var _ = Describe("Egress: mesh config merge", Label("egress", "mesh-config"), upstream, func() {
	It("the managed istio-<rev> wins over the shared ConfigMap on conflicting fields", func(ctx SpecContext) {
		managed := managedMesh(ctx)
		Expect(managed).To(ContainSubstring("trustDomain"), "the managed ConfigMap should set trustDomain")
		world.SetSharedMeshConfig(ctx, world.Revision(), "trustDomain: shared.example\naccessLogEncoding: JSON\n")
		step := runbook.Step{Ref: "DESIGN §4: defaults < shared ConfigMap < istio-<rev>",
			Confirm:  "kubectl get cm -n aks-istio-system istio-" + world.Revision() + " " + addon.SharedMeshConfigMap(world.Revision()) + " -o yaml",
			Shows:    `(?s)trustDomain: cluster\.local.*trustDomain: shared\.example`,
			Expected: "the merged mesh keeps the managed trustDomain cluster.local while taking the shared accessLogEncoding JSON",
			Fix:      "do not set fields the add-on manages; they are overridden"}
		Eventually(func(g Gomega) {
			mesh := mergedMesh(ctx)
			g.Expect(mesh.GetAccessLogEncoding().String()).To(Equal("JSON"), step.Explain(list{"accessLogEncoding " + mesh.GetAccessLogEncoding().String()}))
			g.Expect(mesh.GetTrustDomain()).To(Equal("cluster.local"), step.Explain(list{"trustDomain " + mesh.GetTrustDomain()}))
			record(map[string]string{"trustDomain": mesh.GetTrustDomain(), "accessLogEncoding": mesh.GetAccessLogEncoding().String()})
		}).WithContext(ctx).WithTimeout(world.Timeout).WithPolling(world.Poll).Should(Succeed())
	})

	It("accessLogFile from the shared ConfigMap reaches the merged mesh config", func(ctx SpecContext) {
		world.SetSharedMeshConfig(ctx, world.Revision(), "accessLogFile: /dev/stdout\n")
		step := runbook.Step{Ref: "seed §8 / AKS istio-meshconfig: accessLogFile is a supported field",
			Confirm:  "kubectl get cm -n aks-istio-system " + addon.SharedMeshConfigMap(world.Revision()) + " -o yaml",
			Shows:    `accessLogFile: /dev/stdout`,
			Expected: "istiod's merged mesh config has accessLogFile /dev/stdout",
			Fix:      "put the field under key `mesh` of istio-shared-configmap-<running rev>"}
		Eventually(func(g Gomega) {
			mesh := mergedMesh(ctx)
			g.Expect(mesh.GetAccessLogFile()).To(Equal("/dev/stdout"), step.Explain(list{"accessLogFile " + mesh.GetAccessLogFile()}))
		}).WithContext(ctx).WithTimeout(world.Timeout).WithPolling(world.Poll).Should(Succeed())
	})
})

// The gateway's objects and the refusal are the add-on's operation: emulated on local. On a
// real cluster the first spec runs against the real operation; the refusal needs a Pod
// Subnet cluster declared, which a real cluster's network fixes, so it does not run there.
var _ = Describe("Egress: gateway", Label("egress", "egress-gateway"), emulated, func() {
	It("enable-egress-gateway creates Service <name> (ClusterIP) and Deployment <name>-<rev> in aks-istio-egress", func(ctx SpecContext) {
		requireAddonOperations()
		name := world.RunID + "-egress"
		Expect(world.Target.Addon().EnableEgressGateway(ctx, addon.EgressGateway{Name: name, GatewayConfigurationName: "conformance-sgc"})).To(Succeed())
		DeferCleanup(deleteGateway, addon.EgressNamespace, name)
		step := runbook.Step{Ref: "seed §4 / AKS istio-deploy-egress", Confirm: "kubectl get svc,deploy -n aks-istio-egress",
			Shows:    `(?s)service/` + name + `\s+ClusterIP\b.*deployment\.apps/` + addon.GatewayDeployment(name, world.Revision()) + `\b`,
			Expected: "Service " + name + " of type ClusterIP and Deployment " + addon.GatewayDeployment(name, world.Revision()),
			Fix:      "az aks mesh enable-egress-gateway --istio-egressgateway-name " + name + " --gateway-configuration-name <static egress gateway config>"}
		var svc corev1.Service
		Expect(world.Client.Get(ctx, client.ObjectKey{Namespace: addon.EgressNamespace, Name: name}, &svc)).To(Succeed(), step.Explain(list{"no Service"}))
		Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeClusterIP), step.Explain(list{"type " + string(svc.Spec.Type)}))
		var d appsv1.Deployment
		Expect(world.Client.Get(ctx, client.ObjectKey{Namespace: addon.EgressNamespace, Name: addon.GatewayDeployment(name, world.Revision())}, &d)).
			To(Succeed(), step.Explain(list{"no revision-suffixed Deployment"}))
		record(map[string]string{"service": svc.Name, "type": string(svc.Spec.Type), "deployment": d.Name})
	})

	It("the emulated add-on refuses it on a cluster declared Azure CNI Pod Subnet, with the add-on's documented error (row 12)", func(ctx SpecContext) {
		requireEmulatedAddon()
		world.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: emulator.ClusterProfileConfigMap},
			Data: map[string]string{emulator.PodSubnetKey: "true"}})
		name := world.RunID + "-podsubnet"
		err := world.Target.Addon().EnableEgressGateway(ctx, addon.EgressGateway{Name: name, GatewayConfigurationName: "conformance-sgc"})
		step := runbook.Step{Ref: "troubleshooting row 12: egress gateway on an Azure CNI Pod Subnet cluster",
			Expected: "the operation fails with the add-on's error and creates nothing", Confirm: "kubectl get svc -n aks-istio-egress",
			Lacks: `\b` + name + `\b`, Shows: `NAME|No resources found`,
			Fix: "use Azure CNI Overlay (or kubenet) networking for clusters that need an egress gateway"}
		Expect(errors.Is(err, addon.ErrPodSubnetEgress)).To(BeTrue(), step.Explain(list{fmt.Sprint(err)}))
		var svc corev1.Service
		Expect(world.Client.Get(ctx, client.ObjectKey{Namespace: addon.EgressNamespace, Name: name}, &svc)).
			To(MatchError(ContainSubstring("not found")), step.Explain(list{"Service " + name + " exists"}))
		record(map[string]string{"error": err.Error()})
	})
})

// externalIP stands for an external host's address in probes: TEST-NET-3 (RFC 5737), which
// never answers, and the address verdict.Outbound simulates. The probe calls it with the
// external host in the Host header rather than by name: curl would have to resolve the name
// first, and the names here never resolve (.example), nor may real ones on a cluster without
// internet. The client's sidecar captures the connection whatever its address and routes
// plain HTTP by the Host header.
const externalIP = "203.0.113.10"

// staticServiceEntry declares host on port 80 (plain HTTP) as a MESH_EXTERNAL service whose
// one endpoint is address:targetPort: a server outside the mesh that the cluster can reach
// without internet access.
func staticServiceEntry(ns, name, host, address string, targetPort uint32) *networkingv1.ServiceEntry {
	se := &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	se.Spec.Hosts = []string{host}
	se.Spec.Location = networkingapi.ServiceEntry_MESH_EXTERNAL
	se.Spec.Resolution = networkingapi.ServiceEntry_STATIC
	se.Spec.Ports = []*networkingapi.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}}
	se.Spec.Endpoints = []*networkingapi.WorkloadEntry{{Address: address, Ports: map[string]uint32{"http": targetPort}}}
	return se
}

var _ = Describe("Egress: traffic", Label("egress", "dataplane"), upstream, func() {
	BeforeEach(requireDataPlane)
	// The Envoy verdict is what is asserted, so that the spec holds on a cluster without
	// internet access: blocked means the client's own Envoy answered 502 itself (the
	// block_all route's direct response, never an upstream's); declared means the request
	// left through the host's own cluster, outbound|80||<host>, and reached the upstream.
	// The upstream is a pod outside the mesh that the ServiceEntry names as the host's
	// endpoint, so "reached" is a 200 there, not whatever the internet does.
	It("answers 502 for a blocked host and 200 after its ServiceEntry, probed from an app container", Label("mesh-config"), func(ctx SpecContext) {
		requireMeshWideChanges()
		client := probeClient(ctx, meshNamespace(ctx, "egress-traffic"), "client")
		external := ready(ctx, deployWorkload(ctx, world.Namespace(ctx, "egress-external", nil), "external", httpPort))
		// Plain HTTP on port 80 is routed by Host only where the sidecar has an HTTP
		// listener for port 80, which a Service with an HTTP port 80 gives it; without one,
		// an undeclared host's connection meets the catch-all TCP chain (a reset, no 502).
		world.Service(ctx, client.ns, "port-80", "nobody", 80)
		accessLogging(ctx, client.workload)
		applied := time.Now()
		world.SetSharedMeshConfig(ctx, world.Revision(), registryOnly)
		step := runbook.Step{Ref: "troubleshooting row 8: 502 to an external host under REGISTRY_ONLY, 200 after its ServiceEntry",
			Expected: "the undeclared host gets 502 from the client's own Envoy; once a ServiceEntry declares it, the request reaches its endpoint through outbound|80||<host> and gets 200",
			Fix:      "declare each external host with a ServiceEntry (hosts, ports, resolution, location MESH_EXTERNAL)"}
		req := traffic.Request{URL: "http://" + externalIP + "/", Host: declaredHost}
		blocked := egress(ctx, client.workload, declaredHost, 80, false, verdict.Blocked, applied, step)
		blockedByEnvoy(ctx, client, req, blocked, step, false)

		applied = time.Now()
		world.Create(ctx, staticServiceEntry(client.ns, "contoso-api", declaredHost, external.pod.Status.PodIP, httpPort))
		declared := egress(ctx, client.workload, declaredHost, 80, false, verdict.Declared, applied, step)
		answered := traffic.Outcome{Code: 200, Flag: "-"}
		res := expectTraffic(ctx, client, req, answered, declared, trafficStep(step, client, req, client.workload, answered))
		own := "outbound|80||" + declaredHost
		Expect(res.Last().Entry.UpstreamCluster).To(Equal(own), step.Explain(observed{res.Last().Entry}))

		// Exactly that host: another undeclared one is still answered 502 by Envoy.
		other := req
		other.Host = undeclaredHost
		blockedByEnvoy(ctx, client, other, egress(ctx, client.workload, undeclaredHost, 80, false, verdict.Blocked, time.Now(), step), step, true)
	})
})

// blockedByEnvoy waits until req, from c, is answered 502 by the client's own Envoy: a
// logged line whose response did not come from an upstream (Envoy logs the block_all
// route's direct response with details direct_response; which response flag it logs for
// one is recorded, not asserted). A host the spec declares afterwards is not blocked when
// the spec ends: its confirm command runs at once (later), not with the others (final).
func blockedByEnvoy(ctx context.Context, c probe, req traffic.Request, served verdict.Egress, step runbook.Step, final bool) {
	GinkgoHelper()
	step.Ref += " [" + req.Host + " blocked]"
	step = trafficStep(step, c, req, c.workload, traffic.Outcome{Code: 502})
	step.Shows = `(?m)^502 exit 0$(?s:.*)" 502 `
	judged := step
	if !final {
		judged.Confirm, judged.Shows = "", ""
	}
	res := awaitTraffic(ctx, c, req, "502 logged by the client's Envoy", func(o traffic.Outcome) bool { return o.Code == 502 && o.Flag != "" }, served, judged)
	entry := res.Last().Entry
	Expect(entry.Details).NotTo(Equal("via_upstream"), judged.Explain(observed{entry}))
	if !final {
		confirmNow(ctx, world, step.Fill())
	}
}

// mergedMesh reads the default revision's merged mesh config from istiod.
func mergedMesh(ctx context.Context) *meshconfig.MeshConfig {
	GinkgoHelper()
	mesh, err := xds.MergedMesh(ctx, world.Istiod(ctx, world.Revision()))
	Expect(err).NotTo(HaveOccurred())
	return mesh
}

// managedMesh is the `mesh` key of the managed istio-<rev> ConfigMap.
func managedMesh(ctx context.Context) string {
	GinkgoHelper()
	var cm corev1.ConfigMap
	Expect(world.Client.Get(ctx, client.ObjectKey{Namespace: addon.RootNamespace, Name: addon.ManagedMeshConfigMap(world.Revision())}, &cm)).To(Succeed())
	return cm.Data["mesh"]
}

// deleteGateway removes a gateway's Service and its per-revision Deployments.
func deleteGateway(ctx SpecContext, namespace, name string) {
	Expect(client.IgnoreNotFound(world.Client.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}))).To(Succeed())
	revisions, err := world.Target.Addon().Revisions(ctx)
	Expect(err).NotTo(HaveOccurred())
	for _, rev := range revisions {
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: addon.GatewayDeployment(name, rev)}}
		Expect(client.IgnoreNotFound(world.Client.Delete(ctx, d))).To(Succeed())
	}
}
