package conformance

import (
	"context"
	"fmt"
	"regexp"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	networkingapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"istio.io/istio/pilot/pkg/simulation"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/runbook"
	"github.com/aks-istio-conformance/conformance/harness/traffic"
	"github.com/aks-istio-conformance/conformance/harness/verdict"
	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// Seed: "Running the Managed Istio Add-on on AKS", section 5 (ingress), lab step 5 and
// troubleshooting row 13. The gateway's verdicts come from the config istiod serves to the
// gateway pod's proxy (a router identity).

const (
	shopHost = "shop.internal.contoso.com"
	// gatewayHTTPPort is the gateway pod's listener for Service port 80 (targetPort 8080:
	// the gateway runs unprivileged and Istio translates Gateway port 80 to it).
	gatewayHTTPPort = 8080
	confirmGateway  = "istioctl proxy-config route -n aks-istio-ingress deploy/%s --name http.8080 -o json --istioNamespace aks-istio-system"
)

// ingressGateway enables a managed ingress gateway (idempotent, as the add-on's operation is)
// and returns a connection as the default revision's gateway pod.
func ingressGateway(ctx context.Context, t addon.IngressType) *xds.Proxy {
	GinkgoHelper()
	requireAddonOperations()
	Expect(world.Target.Addon().EnableIngressGateway(ctx, t)).To(Succeed())
	deployment := addon.GatewayDeployment(addon.IngressGateway(t), world.Revision())
	pod := world.RunningPod(ctx, addon.IngressNamespace, deployment)
	return world.GatewayProxy(ctx, pod)
}

// shopRoute waits until the gateway's served config routes host as wanted: to
// wantCluster, or nowhere when it is "" (Envoy answers 404, flag NR).
func shopRoute(ctx context.Context, gw *xds.Proxy, host, wantCluster string, since time.Time, step runbook.Step) verdict.HTTPRoute {
	GinkgoHelper()
	// The route configuration of the gateway's port 8080 lists the host's virtual host and
	// its cluster, or no virtual host for it.
	step.Confirm = confirmGateway
	if wantCluster != "" {
		step.Shows = `(?s)"` + regexp.QuoteMeta(host) + `".*"cluster":\s*"` + regexp.QuoteMeta(wantCluster) + `"`
	} else {
		step.Shows, step.Lacks = `"name":\s*"http\.8080"`, `"`+regexp.QuoteMeta(host)+`"`
	}
	return served(ctx, gw, since, step, []any{gw.ID.Workload}, func(s xds.Snapshot) (verdict.HTTPRoute, error) {
		got := verdict.Route(s, simulation.CallModeGateway, host, gatewayHTTPPort, "/productpage")
		if got.Cluster != wantCluster || (wantCluster == "" && got.Error == "") {
			return got, fmt.Errorf("%s", got)
		}
		return got, nil
	})
}

func shopGateway(ns, selector string) *networkingv1.Gateway {
	gw := &networkingv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop"}}
	gw.Spec.Selector = map[string]string{"istio": selector}
	gw.Spec.Servers = []*networkingapi.Server{{Port: &networkingapi.Port{Number: 80, Name: "http", Protocol: "HTTP"}, Hosts: []string{shopHost}}}
	return gw
}

func shopVirtualService(ns, host string) *networkingv1.VirtualService {
	vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop"}}
	vs.Spec.Hosts = []string{host}
	vs.Spec.Gateways = []string{ns + "/shop"}
	vs.Spec.Http = []*networkingapi.HTTPRoute{{Route: []*networkingapi.HTTPRouteDestination{{
		Destination: &networkingapi.Destination{Host: "productpage", Port: &networkingapi.PortSelector{Number: 9080}}}}}}
	return vs
}

// gatewayBarrier returns once the gateway serves a route for a marker host bound after the
// spec's own objects: the push that carried it already held them, so "no route" verdicts
// that follow are not made before istiod processed the spec's change.
func gatewayBarrier(ctx context.Context, gw *xds.Proxy, ns string) {
	GinkgoHelper()
	marker := fmt.Sprintf("marker-%d.conformance.example", time.Now().UnixNano()%1_000_000)
	g := shopGateway(ns, addon.IngressGateway(addon.Internal))
	g.Name, g.Spec.Servers[0].Hosts = "marker", []string{marker}
	vs := shopVirtualService(ns, marker)
	vs.Name, vs.Spec.Gateways = "marker", []string{ns + "/marker"}
	world.Create(ctx, g)
	world.Create(ctx, vs)
	want := fmt.Sprintf("outbound|9080||productpage.%s.svc.cluster.local", ns)
	_, err := gw.Await(ctx, time.Now(), world.Timeout, func(s xds.Snapshot) error {
		if r := verdict.Route(s, simulation.CallModeGateway, marker, gatewayHTTPPort, "/"); r.Cluster != want {
			return fmt.Errorf("marker %s: %s", marker, r)
		}
		return nil
	})
	Expect(err).NotTo(HaveOccurred(), "istiod did not push the barrier route %s to the gateway", marker)
}

var _ = Describe("Ingress gateway", Label("ingress"), func() {
	for _, t := range []addon.IngressType{addon.External, addon.Internal} {
		It(fmt.Sprintf("enable-ingress-gateway %s creates the shared Service and a revision-suffixed Deployment", t), emulated, func(ctx SpecContext) {
			requireAddonOperations()
			Expect(world.Target.Addon().EnableIngressGateway(ctx, t)).To(Succeed())
			name := addon.IngressGateway(t)
			step := runbook.Step{Ref: "seed §5 / AKS istio-deploy-ingress", Confirm: "kubectl get svc,deploy -n aks-istio-ingress",
				Shows:    `(?s)service/` + name + `\s+LoadBalancer\s.*\b80:\d+/TCP.*deployment\.apps/` + addon.GatewayDeployment(name, world.Revision()) + `\b`,
				Expected: fmt.Sprintf("LoadBalancer Service %s (ports 15021, 80, 443; selects istio=%s) and Deployment %s", name, name, addon.GatewayDeployment(name, world.Revision())),
				Fix:      "az aks mesh enable-ingress-gateway --ingress-gateway-type " + string(t)}
			var svc corev1.Service
			Expect(world.Client.Get(ctx, client.ObjectKey{Namespace: addon.IngressNamespace, Name: name}, &svc)).To(Succeed(), step.Explain(list{"no Service"}))
			var ports []int32
			for _, p := range svc.Spec.Ports {
				ports = append(ports, p.Port)
			}
			observed := list{fmt.Sprintf("type %s, ports %v, selector %v, annotations %v", svc.Spec.Type, ports, svc.Spec.Selector, svc.Annotations)}
			Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeLoadBalancer), step.Explain(observed))
			Expect(ports).To(ConsistOf(int32(15021), int32(80), int32(443)), step.Explain(observed))
			Expect(svc.Spec.Selector).To(HaveKeyWithValue("istio", name), step.Explain(observed))
			if t == addon.Internal {
				Expect(svc.Annotations).To(HaveKeyWithValue("service.beta.kubernetes.io/azure-load-balancer-internal", "true"), step.Explain(observed))
			}
			var d appsv1.Deployment
			Expect(world.Client.Get(ctx, client.ObjectKey{Namespace: addon.IngressNamespace, Name: addon.GatewayDeployment(name, world.Revision())}, &d)).
				To(Succeed(), step.Explain(list{"no revision-suffixed Deployment"}))
			Expect(d.Spec.Template.Labels).To(HaveKeyWithValue("istio", name), step.Explain(list{fmt.Sprint(d.Spec.Template.Labels)}))
			record(map[string]any{"service": name, "type": svc.Spec.Type, "ports": ports, "deployment": d.Name})
		})
	}

	It("routes shop.internal.contoso.com to productpage:9080 through the internal gateway", upstream, func(ctx SpecContext) {
		gw := ingressGateway(ctx, addon.Internal)
		ns := meshNamespace(ctx, "shop")
		deployWorkload(ctx, ns, "productpage", 9080)
		applied := time.Now()
		world.Create(ctx, shopGateway(ns, addon.IngressGateway(addon.Internal)))
		world.Create(ctx, shopVirtualService(ns, shopHost))
		step := runbook.Step{Ref: "seed §5 / lab step 5: Gateway + VirtualService in the app namespace", Confirm: confirmGateway,
			Expected: "the internal gateway routes Host " + shopHost + " to outbound|9080||productpage.<ns>.svc.cluster.local",
			Fix:      "Gateway.selector istio: aks-istio-ingressgateway-internal, VirtualService.gateways <ns>/shop, matching hosts"}
		shopRoute(ctx, gw, shopHost, fmt.Sprintf("outbound|9080||productpage.%s.svc.cluster.local", ns), applied, step)
	})

	DescribeTable("a mismatch between Gateway, VirtualService and request gives the gateway no route (NR, row 13)",
		func(ctx SpecContext, selector, vsHost string, step runbook.Step) {
			gw := ingressGateway(ctx, addon.Internal)
			ns := meshNamespace(ctx, "shop-nr")
			deployWorkload(ctx, ns, "productpage", 9080)
			world.Create(ctx, shopGateway(ns, selector))
			world.Create(ctx, shopVirtualService(ns, vsHost))
			gatewayBarrier(ctx, gw, ns)
			shopRoute(ctx, gw, shopHost, "", time.Now(), step)
		},
		// Whether the gateway pods lack upstream's istio=ingressgateway label is a fact of the
		// add-on's gateway objects, which the emulator creates on local.
		Entry("a Gateway selecting upstream's label instead of the add-on's", emulated, "ingressgateway", shopHost, runbook.Step{
			Ref:      "troubleshooting row 13: 404 NR at the ingress gateway",
			Expected: "no route for " + shopHost + ": the Gateway selects no add-on gateway",
			Fix:      "select istio: aks-istio-ingressgateway-external or -internal"}),
		Entry("a VirtualService for another host", upstream, addon.IngressGateway(addon.Internal), "shop.contoso.com", runbook.Step{
			Ref:      "troubleshooting row 13: host mismatch between Gateway, VirtualService and request",
			Expected: "no route for " + shopHost + ": the VirtualService binds another host",
			Fix:      "the VirtualService hosts must match the Host header (and a Gateway server host)"}),
	)

	It("keeps the Service's annotations and externalTrafficPolicy Local when enabled again", emulated, func(ctx SpecContext) {
		requireAddonOperations()
		Expect(world.Target.Addon().EnableIngressGateway(ctx, addon.External)).To(Succeed())
		key := client.ObjectKey{Namespace: addon.IngressNamespace, Name: addon.IngressGateway(addon.External)}
		var svc corev1.Service
		Expect(world.Client.Get(ctx, key, &svc)).To(Succeed())
		original := svc.DeepCopy()
		DeferCleanup(func(ctx SpecContext) {
			var now corev1.Service
			Expect(world.Client.Get(ctx, key, &now)).To(Succeed())
			patch := client.MergeFrom(now.DeepCopy())
			now.Annotations, now.Spec.ExternalTrafficPolicy = original.Annotations, original.Spec.ExternalTrafficPolicy
			Expect(world.Client.Patch(ctx, &now, patch)).To(Succeed())
		})
		patch := client.MergeFrom(svc.DeepCopy())
		if svc.Annotations == nil {
			svc.Annotations = map[string]string{}
		}
		svc.Annotations["service.beta.kubernetes.io/azure-pip-name"] = world.RunID + "-pip"
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		Expect(world.Client.Patch(ctx, &svc, patch)).To(Succeed())

		Expect(world.Target.Addon().EnableIngressGateway(ctx, addon.External)).To(Succeed())
		Expect(world.Client.Get(ctx, key, &svc)).To(Succeed())
		step := runbook.Step{Ref: "AKS istio-deploy-ingress: supported Service customisations", Confirm: "kubectl get svc -n aks-istio-ingress " + key.Name + " -o yaml",
			Shows:    `(?s)service\.beta\.kubernetes\.io/azure-pip-name: ` + regexp.QuoteMeta(world.RunID+"-pip") + `\b.*externalTrafficPolicy: Local`,
			Expected: "the annotation and externalTrafficPolicy: Local survive enabling the gateway again",
			Fix:      "only annotations and externalTrafficPolicy are supported customisations; others are reverted"}
		observed := list{fmt.Sprintf("externalTrafficPolicy %s, annotations %v", svc.Spec.ExternalTrafficPolicy, svc.Annotations)}
		Expect(svc.Annotations).To(HaveKeyWithValue("service.beta.kubernetes.io/azure-pip-name", world.RunID+"-pip"), step.Explain(observed))
		Expect(svc.Spec.ExternalTrafficPolicy).To(Equal(corev1.ServiceExternalTrafficPolicyLocal), step.Explain(observed))
		record(map[string]any{"externalTrafficPolicy": svc.Spec.ExternalTrafficPolicy, "annotations": svc.Annotations})
	})
})

var _ = Describe("Ingress gateway: traffic", Label("ingress", "dataplane"), upstream, func() {
	BeforeEach(requireDataPlane)
	// The request goes to the internal gateway Service's cluster IP, the address its load
	// balancer forwards to (a kind cluster's LoadBalancer Services get no external address),
	// from a client in the mesh with the Host header set, as a caller in the VNet does.
	It("answers a request for shop.internal.contoso.com from productpage through the internal load balancer", func(ctx SpecContext) {
		gw := ingressGateway(ctx, addon.Internal)
		readyPod(ctx, addon.IngressNamespace, addon.GatewayDeployment(addon.IngressGateway(addon.Internal), world.Revision()))
		ns := meshNamespace(ctx, "shop-traffic")
		productpage := ready(ctx, deployWorkload(ctx, ns, "productpage", 9080))
		applied := time.Now()
		world.Create(ctx, shopGateway(ns, addon.IngressGateway(addon.Internal)))
		world.Create(ctx, shopVirtualService(ns, shopHost))
		step := runbook.Step{Ref: "seed §5 / lab step 5: a request through the internal gateway",
			Expected: "Host " + shopHost + " sent to the internal gateway is answered by productpage (200)",
			Fix:      "Gateway.selector istio: aks-istio-ingressgateway-internal, VirtualService.gateways <ns>/shop, matching hosts; productpage must serve port 9080"}
		route := shopRoute(ctx, gw, shopHost, "outbound|9080||"+serviceHost(productpage), applied, step)

		caller := probeClient(ctx, meshNamespace(ctx, "shop-client"), "client")
		accessLogging(ctx, caller.workload)
		var svc corev1.Service
		Expect(world.Client.Get(ctx, client.ObjectKey{Namespace: addon.IngressNamespace, Name: addon.IngressGateway(addon.Internal)}, &svc)).To(Succeed())
		req := traffic.Request{URL: fmt.Sprintf("http://%s:80/productpage", svc.Spec.ClusterIP), Host: shopHost}
		answered := traffic.Outcome{Code: 200, Flag: "-"}
		expectTraffic(ctx, caller, req, answered, route, trafficStep(step, caller, req, caller.workload, answered))
	})
})
