package conformance

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	networkingapi "istio.io/api/networking/v1"
	typeapi "istio.io/api/type/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"istio.io/istio/pilot/pkg/simulation"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/evidence"
	"github.com/aks-istio-conformance/conformance/harness/report"
	"github.com/aks-istio-conformance/conformance/harness/runbook"
	"github.com/aks-istio-conformance/conformance/harness/scenario"
	"github.com/aks-istio-conformance/conformance/harness/telemetry"
	"github.com/aks-istio-conformance/conformance/harness/traffic"
	"github.com/aks-istio-conformance/conformance/harness/verdict"
	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// Seed: "Running the Managed Istio Add-on on AKS", section 2 (discoverySelectors), section
// 8 (telemetry) and troubleshooting row 14 (large config, slow pushes).

var scrapeAnnotations = map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "15020", "prometheus.io/path": "/stats/prometheus"}

// confirmAnnotations prints the annotations admission gives a new pod in a namespace now
// (a server-side dry run: istiod's webhook runs, nothing is created).
const confirmAnnotations = "kubectl run confirm-admission -n %s --image=registry.k8s.io/pause:3.10 --restart=Never --dry-run=server -o jsonpath='{.metadata.annotations}'"

// scrapeShown is what confirmAnnotations prints for a pod Prometheus scrapes through the
// merged metrics port.
const scrapeShown = `"prometheus\.io/scrape":"true"`

// accessLogs waits until the proxy's listeners log to /dev/stdout (want) or nowhere.
func accessLogs(ctx context.Context, w workload, want bool, since time.Time, step runbook.Step) {
	GinkgoHelper()
	// The listeners' JSON names Envoy's file access logger where one is configured.
	step.Confirm = "istioctl proxy-config listener -n %s %s -o json"
	if want {
		step.Shows, step.Lacks = `envoy\.access_loggers\.file`, ""
	} else {
		step.Shows, step.Lacks = `"name":`, `envoy\.access_loggers\.file`
	}
	served(ctx, w.proxy, since, step, w.at(), func(s xds.Snapshot) (map[string][]string, error) {
		logs, err := verdict.FileAccessLogs(s)
		if err != nil {
			return nil, err
		}
		logging := false
		for _, paths := range logs {
			logging = logging || strings.Join(paths, ",") == "/dev/stdout"
		}
		if logging != want {
			return logs, fmt.Errorf("listeners logging to files: %v", logs)
		}
		return logs, nil
	})
}

var _ = Describe("Telemetry: metrics", Label("telemetry"), upstream, func() {
	It("injected pods carry the merged-metrics scrape annotations (the managed config enables merging)", func(ctx SpecContext) {
		Expect(mergedMesh(ctx).GetEnablePrometheusMerge().GetValue()).To(BeTrue(), "the managed istio-<rev> should enable Prometheus merging")
		ns := meshNamespace(ctx, "metrics")
		got := injectionNow(ctx, world, ns)
		pod, err := world.AdmitPod(ctx, ns, scenario.App{Name: "app"})
		Expect(err).NotTo(HaveOccurred())
		record(pod.Annotations)
		step := runbook.Step{Ref: "seed §8: metrics merging", Confirm: confirmAnnotations, Shows: scrapeShown,
			Expected: "prometheus.io/scrape true, port 15020, path /stats/prometheus", Fix: "enablePrometheusMerge is decided by the managed istio-<rev>"}
		for k, v := range scrapeAnnotations {
			Expect(pod.Annotations).To(HaveKeyWithValue(k, v), step.Explain(got, ns))
		}
	})

	It("the shared ConfigMap cannot turn merging off: the managed istio-<rev> wins", Label("mesh-config"), func(ctx SpecContext) {
		world.SetSharedMeshConfig(ctx, world.Revision(), "enablePrometheusMerge: false\naccessLogEncoding: JSON\n")
		ns := meshNamespace(ctx, "metrics-shared")
		step := runbook.Step{Ref: "DESIGN §4 / seed §8: the managed ConfigMap wins on conflicting fields", Confirm: confirmAnnotations, Shows: scrapeShown,
			Expected: "after istiod read the shared ConfigMap (accessLogEncoding JSON), injected pods still carry the scrape annotations",
			Fix:      "metrics merging is the add-on's decision; scrape /stats/prometheus on 15020 regardless"}
		Eventually(func(g Gomega) {
			g.Expect(mergedMesh(ctx).GetAccessLogEncoding().String()).To(Equal("JSON"))
		}).WithContext(ctx).WithTimeout(world.Timeout).WithPolling(world.Poll).Should(Succeed())
		pod, err := world.AdmitPod(ctx, ns, scenario.App{Name: "app"})
		Expect(err).NotTo(HaveOccurred())
		Expect(pod.Annotations).To(HaveKeyWithValue("prometheus.io/scrape", "true"), step.Explain(list{fmt.Sprint(pod.Annotations)}, ns))
		record(pod.Annotations)
	})

	It("when the managed config disables merging, injected pods carry no scrape annotations", Label("mesh-config"), func(ctx SpecContext) {
		requireEmulatedAddon()
		key := client.ObjectKey{Namespace: addon.RootNamespace, Name: addon.ManagedMeshConfigMap(world.Revision())}
		var cm corev1.ConfigMap
		Expect(world.Client.Get(ctx, key, &cm)).To(Succeed())
		original := cm.Data["mesh"]
		DeferCleanup(func(ctx SpecContext) {
			var now corev1.ConfigMap
			Expect(world.Client.Get(ctx, key, &now)).To(Succeed())
			now.Data["mesh"] = original
			Expect(world.Client.Update(ctx, &now)).To(Succeed())
			Eventually(func(g Gomega) { g.Expect(mergedMesh(ctx).GetEnablePrometheusMerge().GetValue()).To(BeTrue()) }).
				WithContext(ctx).WithTimeout(world.Timeout).WithPolling(world.Poll).Should(Succeed())
		})
		cm.Data["mesh"] = strings.Replace(original, "enablePrometheusMerge: true", "enablePrometheusMerge: false", 1)
		Expect(cm.Data["mesh"]).NotTo(Equal(original), "the managed ConfigMap has no enablePrometheusMerge: true to flip")
		Expect(world.Client.Update(ctx, &cm)).To(Succeed())
		ns := meshNamespace(ctx, "metrics-off")
		step := runbook.Step{Ref: "seed §8: no merging, no scrape annotations", Confirm: confirmAnnotations,
			Shows: `sidecar\.istio\.io/status`, Lacks: `prometheus\.io/scrape`,
			Expected: "no prometheus.io/* annotations on injected pods", Fix: "the add-on decides merging in istio-<rev>"}
		Eventually(func(g Gomega) {
			pod, err := world.AdmitPod(ctx, ns, scenario.App{Name: "app"})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(pod.Annotations).NotTo(HaveKey("prometheus.io/scrape"), step.Explain(list{fmt.Sprint(pod.Annotations)}, ns))
			g.Expect(evidence.InjectionOf(pod).Injected).To(BeTrue())
		}).WithContext(ctx).WithTimeout(world.Timeout).WithPolling(world.Poll).Should(Succeed())
	})

	// The settings are Azure Monitor's, read from the cluster as they are: the suite never
	// writes them (a regex it wrote itself would only be read back). Where they exist their
	// syntax is asserted and the mesh namespaces left unscraped are reported, not asserted:
	// which namespaces to scrape is the cluster owner's choice. Where they do not exist the
	// spec says so and is skipped.
	It("reports the mesh namespaces Managed Prometheus would not scrape by annotation, from the cluster's ama-metrics-settings-configmap", func(ctx SpecContext) {
		key := client.ObjectKey{Namespace: metav1.NamespaceSystem, Name: telemetry.AMASettingsConfigMap}
		var cm corev1.ConfigMap
		err := world.Client.Get(ctx, key, &cm)
		if apierrors.IsNotFound(err) {
			record(map[string]string{telemetry.AMASettingsConfigMap: "not found"})
			Skip("no kube-system/" + telemetry.AMASettingsConfigMap + " on target " + world.Target.Name() +
				": Azure Monitor's managed Prometheus is not configured here, so no namespace is scraped by annotation and there is nothing to report")
		}
		Expect(err).NotTo(HaveOccurred())
		step := runbook.Step{Ref: "seed §8: Managed Prometheus opt-in (ama-metrics-settings-configmap)",
			Confirm:  "kubectl get cm -n kube-system " + telemetry.AMASettingsConfigMap + " -o yaml",
			Shows:    `podannotationnamespaceregex`,
			Expected: telemetry.AMASettingsKey + ": podannotationnamespaceregex is a quoted regular expression Azure Monitor can read",
			Fix:      `set podannotationnamespaceregex = "<regex matching every mesh namespace>" under ` + telemetry.AMASettingsKey}
		regex, err := telemetry.AnnotationScrapeRegex(cm.Data)
		Expect(err).NotTo(HaveOccurred(), step.Explain(list{fmt.Sprint(err)}))
		// The mesh namespaces are those a revision or a tag injects.
		var namespaces corev1.NamespaceList
		Expect(world.Client.List(ctx, &namespaces, client.HasLabels{addon.RevisionLabel})).To(Succeed())
		var mesh []string
		for _, ns := range namespaces.Items {
			mesh = append(mesh, ns.Name)
		}
		unscraped := telemetry.Unscraped(regex, mesh)
		record(map[string]any{"podannotationnamespaceregex": regex, "meshNamespaces": len(mesh), "notScraped": unscraped})
		if len(unscraped) > 0 {
			AddReportEntry("not scraped by Managed Prometheus", fmt.Sprintf("%d of %d mesh namespaces fall outside podannotationnamespaceregex %q: %s",
				len(unscraped), len(mesh), regex, strings.Join(unscraped, ", ")))
		}
	})
})

var _ = Describe("Telemetry: access logs", Label("telemetry"), upstream, func() {
	It("accessLogFile in the shared ConfigMap turns on file access logs on the sidecar's listeners", Label("mesh-config"), func(ctx SpecContext) {
		w := deployWorkload(ctx, meshNamespace(ctx, "logs"), "app", httpPort)
		applied := time.Now()
		world.SetSharedMeshConfig(ctx, world.Revision(), "accessLogFile: /dev/stdout\n")
		accessLogs(ctx, w, true, applied, runbook.Step{Ref: "seed §8: access logs through the shared ConfigMap",
			Expected: "HTTP connection managers log to /dev/stdout", Fix: "accessLogFile: /dev/stdout under key mesh of istio-shared-configmap-<rev>"})
	})

	It("without accessLogFile the sidecar has no file access logs", func(ctx SpecContext) {
		w := deployWorkload(ctx, meshNamespace(ctx, "nologs"), "app", httpPort)
		accessLogs(ctx, w, false, time.Now(), runbook.Step{Ref: "seed §8: the add-on's default is no access log",
			Expected: "no file access log on any listener", Fix: "unset accessLogFile or remove the Telemetry resource that enables logging"})
	})

	It("a Telemetry resource turns access logs on in its namespace only", func(ctx SpecContext) {
		on := deployWorkload(ctx, meshNamespace(ctx, "telemetry-on"), "app", httpPort)
		off := deployWorkload(ctx, meshNamespace(ctx, "telemetry-off"), "app", httpPort)
		tel := accessLogTelemetry(on.ns)
		step := runbook.Step{Ref: "seed §8: Telemetry API (allowed in current revisions; the seed-era list blocked it)",
			Expected: "the namespace with the Telemetry resource logs to /dev/stdout; the other does not", Fix: "spec.accessLogging[].providers: envoy"}
		if slices.Contains(world.Profile.BlockedKinds, "Telemetry") {
			err := world.Client.Create(ctx, tel)
			Expect(err).To(MatchError(ContainSubstring("blocked")), step.Explain(list{"the profile blocks Telemetry, but it was admitted"}))
			return
		}
		applied := time.Now()
		world.Create(ctx, tel)
		accessLogs(ctx, on, true, applied, step)
		barrier(ctx, off, "Telemetry", tel)
		elsewhere := step
		elsewhere.Ref += " [the other namespace]"
		accessLogs(ctx, off, false, time.Now(), elsewhere)
	})
})

// flagCase is one response flag: the fault that makes a request end with it, and whose
// istio-proxy log records it.
type flagCase struct {
	want traffic.Outcome
	// atServer: the server's sidecar decides (RBAC), so its log has the flag; otherwise
	// the client's sidecar does.
	atServer bool
	expect   string
	fix      string
	// fault creates what makes the request fail, waits until istiod serves it, and
	// returns the request and that served verdict.
	fault func(ctx context.Context, c probe, server workload, applied time.Time, step runbook.Step) (traffic.Request, any)
}

// confirmServerRoute shows the client's route table for the server's port (namespace and
// pod filled in by the runbook).
var confirmServerRoute = fmt.Sprintf("istioctl proxy-config route -n %%s %%s --name %d -o json --istioNamespace aks-istio-system", httpPort)

// serverVirtualService routes host's traffic by one rule, sent to host itself.
func serverVirtualService(ns, name, host string, rule *networkingapi.HTTPRoute) *networkingv1.VirtualService {
	vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	vs.Spec.Hosts = []string{host}
	rule.Route = []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: host}}}
	vs.Spec.Http = []*networkingapi.HTTPRoute{rule}
	return vs
}

var _ = Describe("Telemetry: traffic", Label("telemetry", "dataplane"), upstream, func() {
	BeforeEach(requireDataPlane)
	// Each flag is produced by a fault that needs nothing outside the cluster, and read,
	// as a person would, from the last access-log line for the service in the deciding
	// sidecar's istio-proxy log (telemetry.LastResponseFlag, through the prober).
	DescribeTable("reads the response flag of the last request to a service from the istio-proxy log (UC, NR, RBAC, URX, UH)",
		func(ctx SpecContext, fc flagCase) {
			ns := meshNamespace(ctx, "flags")
			server := ready(ctx, deployWorkload(ctx, ns, "server", httpPort))
			caller := probeClient(ctx, ns, "client")
			observer := caller.workload
			if fc.atServer {
				observer = server
				caller.observe(server)
			}
			accessLogging(ctx, observer)
			step := runbook.Step{Ref: "seed §8 / troubleshooting: response flag " + fc.want.Flag + " in the istio-proxy access log",
				Expected: fc.expect, Fix: fc.fix}
			req, decided := fc.fault(ctx, caller, server, time.Now(), step)
			expectTraffic(ctx, caller, req, fc.want, decided, trafficStep(step, caller, req, observer, fc.want))
		},
		Entry("UC: the client's sidecar sends plaintext to a STRICT server, which closes the connection", flagCase{
			want:   traffic.Outcome{Code: 503, Flag: "UC"},
			expect: "503 UC in the client's istio-proxy log: the STRICT server closed the plaintext connection (troubleshooting rows 4 and 5)",
			fix:    "send mTLS (no DestinationRule tls DISABLE) or set the server PERMISSIVE",
			fault: func(ctx context.Context, c probe, server workload, applied time.Time, step runbook.Step) (traffic.Request, any) {
				host := serviceHost(server)
				world.Create(ctx, peerAuthentication(server.ns, "server-strict", strict, map[string]string{"app": "server"}))
				world.Create(ctx, destinationRule(c.ns, "to-server", host, networkingapi.ClientTLSSettings_DISABLE))
				tlsStep := step
				tlsStep.Confirm = "istioctl proxy-config cluster -n %s %s --fqdn " + host + " -o json --istioNamespace aks-istio-system"
				sent := clientTLS(ctx, c.workload, host, verdict.Plaintext, applied, tlsStep)
				return traffic.Request{URL: serviceURL(server, httpPort, "/")}, inbound(ctx, server, httpPort, sent, false, applied, step)
			},
		}),
		Entry("NR: no route of the service's VirtualService matches the path", flagCase{
			want:   traffic.Outcome{Code: 404, Flag: "NR"},
			expect: "404 NR in the client's istio-proxy log: the VirtualService routes /only, the request asks for /elsewhere",
			fix:    "add a route (or a catch-all last route) for every path callers use",
			fault: func(ctx context.Context, c probe, server workload, applied time.Time, step runbook.Step) (traffic.Request, any) {
				host := serviceHost(server)
				world.Create(ctx, serverVirtualService(c.ns, "server-only", host, &networkingapi.HTTPRoute{
					Match: []*networkingapi.HTTPMatchRequest{{Uri: &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Prefix{Prefix: "/only"}}}}}))
				step.Confirm = confirmServerRoute
				step.Shows = `"prefix":\s*"/only"`
				own := fmt.Sprintf("outbound|%d||%s", httpPort, host)
				return traffic.Request{URL: serviceURL(server, httpPort, "/elsewhere")},
					served(ctx, c.proxy, applied, step, c.at(), func(s xds.Snapshot) (verdict.HTTPRoute, error) {
						// The VirtualService's own route first, so "no route" is not the
						// state before it arrived.
						if only := verdict.Route(s, simulation.CallModeOutbound, host, httpPort, "/only"); only.Cluster != own {
							return only, fmt.Errorf("/only is not routed to %s yet: %s", own, only)
						}
						got := verdict.Route(s, simulation.CallModeOutbound, host, httpPort, "/elsewhere")
						if got.Error == "" {
							return got, fmt.Errorf("/elsewhere is routed: %s", got)
						}
						return got, nil
					})
			},
		}),
		Entry("RBAC: an ALLOW policy without rules denies the request at the server", flagCase{
			want:     traffic.Outcome{Code: 403, Flag: "RBAC"},
			atServer: true,
			expect:   "403 RBAC in the server's istio-proxy log: an ALLOW policy that matches nothing denies every request (troubleshooting row 6)",
			fix:      "add ALLOW rules for every legitimate caller",
			fault: func(ctx context.Context, c probe, server workload, applied time.Time, step runbook.Step) (traffic.Request, any) {
				nothing := allowPolicy(server.ns, "allow-nothing")
				nothing.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": "server"}}
				world.Create(ctx, nothing)
				step.Confirm = confirmAuthz
				step = authzPolicies(step, server.ns, "allow-nothing")
				req := verdict.Request{Principal: c.principal(), Method: "GET", Path: "/", Port: httpPort}
				return traffic.Request{URL: serviceURL(server, httpPort, "/")}, authorize(ctx, server, req, verdict.MTLS, false, applied, step)
			},
		}),
		Entry("URX: every retry of a 503 fails again", flagCase{
			want:   traffic.Outcome{Code: 503, Flag: "URX"},
			expect: "503 URX in the client's istio-proxy log: the server answers 503, the route retries it twice, and the retries run out",
			fix:    "fix the failing upstream; retries only repeat its answer",
			fault: func(ctx context.Context, c probe, server workload, applied time.Time, step runbook.Step) (traffic.Request, any) {
				host := serviceHost(server)
				world.Create(ctx, serverVirtualService(c.ns, "server-retries", host,
					&networkingapi.HTTPRoute{Retries: &networkingapi.HTTPRetry{Attempts: 2, RetryOn: "5xx"}}))
				step.Confirm = confirmServerRoute
				step.Shows = `"numRetries":\s*2\b`
				// agnhost netexec answers /echo?code=503 with a 503 every time.
				return traffic.Request{URL: serviceURL(server, httpPort, "/echo?code=503")},
					served(ctx, c.proxy, applied, step, c.at(), func(s xds.Snapshot) (verdict.HTTPRoute, error) {
						got := verdict.Route(s, simulation.CallModeOutbound, host, httpPort, "/echo")
						rp := got.Config.GetRoute().GetRetryPolicy()
						if rp.GetNumRetries().GetValue() != 2 || !strings.Contains(rp.GetRetryOn(), "5xx") {
							return got, fmt.Errorf("%s: retry policy %v", got, rp)
						}
						return got, nil
					})
			},
		}),
		Entry("UH: the service has no endpoints", flagCase{
			want:   traffic.Outcome{Code: 503, Flag: "UH"},
			expect: "503 UH in the client's istio-proxy log: the Service selects no pod, so its cluster has no healthy host",
			fix:    "the Service's selector must match Ready pods (kubectl get endpointslices -l kubernetes.io/service-name=<svc>)",
			fault: func(ctx context.Context, c probe, server workload, applied time.Time, step runbook.Step) (traffic.Request, any) {
				world.Service(ctx, server.ns, "nobody", "nobody", httpPort)
				host := fmt.Sprintf("nobody.%s.svc.cluster.local", server.ns)
				name := fmt.Sprintf("outbound|%d||%s", httpPort, host)
				// The client's endpoints for the cluster: a header and no host.
				step.Confirm = `istioctl proxy-config endpoint -n %s %s --cluster "` + name + `" --istioNamespace aks-istio-system`
				step.Shows, step.Lacks = `ENDPOINT`, `HEALTHY`
				return traffic.Request{URL: fmt.Sprintf("http://%s:%d/", host, httpPort)},
					served(ctx, c.proxy, applied, step, c.at(), func(s xds.Snapshot) (string, error) {
						if !slices.Contains(clusterNames(s), name) {
							return "no cluster " + name, fmt.Errorf("no cluster %s yet", name)
						}
						return "cluster " + name + " served", nil
					})
			},
		}),
	)
})

var _ = Describe("Mesh governance", Label("governance"), upstream, func() {
	It("discoverySelectors hide the services of unselected namespaces from proxies", Label("mesh-config"), func(ctx SpecContext) {
		selected := world.Namespace(ctx, "selected", map[string]string{addon.RevisionLabel: world.Revision(), "conformance-discovery": world.RunID})
		hidden := world.Namespace(ctx, "hidden", nil)
		world.Service(ctx, hidden, "ledger", "ledger", 8080)
		world.Service(ctx, selected, "orders", "orders", 8080)
		client := deployWorkload(ctx, selected, "client")
		hiddenCluster := fmt.Sprintf("outbound|8080||ledger.%s.svc.cluster.local", hidden)
		visibleCluster := fmt.Sprintf("outbound|8080||orders.%s.svc.cluster.local", selected)
		applied := time.Now()
		world.SetSharedMeshConfig(ctx, world.Revision(), discoverySelectors(world.RunID))
		step := runbook.Step{Ref: "seed §2 / troubleshooting row 14: discoverySelectors in the shared ConfigMap",
			Confirm: "istioctl proxy-config cluster -n %s %s --istioNamespace aks-istio-system",
			Shows:   `(?m)^orders\.` + regexp.QuoteMeta(selected) + `\.svc\.cluster\.local\s+8080\b`, Lacks: `\bledger\.` + regexp.QuoteMeta(hidden) + `\.`,
			Expected: "the proxy keeps " + visibleCluster + " and loses " + hiddenCluster,
			Fix:      "label every namespace the mesh must see with the selector's label"}
		served(ctx, client.proxy, applied, step, client.at(), func(s xds.Snapshot) (string, error) {
			clusters := clusterNames(s)
			hiddenThere, visibleThere := slices.Contains(clusters, hiddenCluster), slices.Contains(clusters, visibleCluster)
			summary := fmt.Sprintf("%d clusters; hidden present %t, visible present %t", len(clusters), hiddenThere, visibleThere)
			if hiddenThere || !visibleThere {
				return summary, fmt.Errorf("%s", summary)
			}
			return summary, nil
		})
	})

	DescribeTable("served config shrinks with discoverySelectors and with a Sidecar as unselected namespaces grow (row 14)",
		func(ctx SpecContext, n int) {
			requireMeshWideChanges()
			label := map[string]string{addon.RevisionLabel: world.Revision(), "conformance-discovery": world.RunID}
			home := world.Namespace(ctx, fmt.Sprintf("home-%d", n), label)
			client := deployWorkload(ctx, home, "client")
			for i := range n {
				world.Service(ctx, world.Namespace(ctx, fmt.Sprintf("crowd-%d", i), nil), "svc", "svc", 8080)
			}
			// The crowd's services appear (or vanish) as clusters and as virtual hosts of the
			// 8080 route; a size is taken once both agree.
			crowd := func(s xds.Snapshot) (clusters, vhosts int) {
				for _, rc := range s.Routes {
					for _, vh := range rc.GetVirtualHosts() {
						if strings.HasPrefix(vh.GetName(), "svc.") {
							vhosts++
						}
					}
				}
				return countPrefix(clusterNames(s), "outbound|8080||svc."), vhosts
			}
			all := func(s xds.Snapshot) bool { c, v := crowd(s); return c >= n && v >= n }
			none := func(s xds.Snapshot) bool { c, v := crowd(s); return c == 0 && v == 0 }
			full := settle(ctx, client, n, all)

			sidecar := &networkingv1.Sidecar{ObjectMeta: metav1.ObjectMeta{Namespace: home, Name: "default"}}
			sidecar.Spec.Egress = []*networkingapi.IstioEgressListener{{Hosts: []string{"./*", addon.RootNamespace + "/*"}}}
			world.Create(ctx, sidecar)
			scoped := settle(ctx, client, n, none)
			Expect(world.Client.Delete(ctx, sidecar)).To(Succeed())
			settle(ctx, client, n, all)

			world.SetSharedMeshConfig(ctx, world.Revision(), discoverySelectors(world.RunID))
			selected := settle(ctx, client, n, none)

			point := map[string]any{"unselectedNamespaces": n, "full": full, "sidecar": scoped, "discoverySelectors": selected}
			AddReportEntry(report.ConfigSizeEntry, point)
			record(point)
			step := runbook.Step{Ref: "troubleshooting row 14: large served config; remedies discoverySelectors and Sidecar",
				Expected: "both remedies serve fewer clusters and bytes than the full mesh", Confirm: "istioctl proxy-config cluster -n %s %s | wc -l", Shows: `^\s*\d+\s*$`,
				Fix: "scope proxies with a Sidecar egress list, or istiod with discoverySelectors"}
			Expect(scoped.Bytes).To(BeNumerically("<", full.Bytes), step.Explain(list{fmt.Sprint(point)}, home, client.pod.Name))
			Expect(selected.Bytes).To(BeNumerically("<", full.Bytes), step.Explain(list{fmt.Sprint(point)}, home, client.pod.Name))
		},
		Entry("10 namespaces", 10),
		Entry("50 namespaces", 50),
		Entry("200 namespaces", Label("slow"), 200),
	)

	It("istiod reports push metrics and no internal xDS errors", func(ctx SpecContext) {
		m, err := telemetry.ScrapePushMetrics(ctx, world.Istiod(ctx, world.Revision()))
		Expect(err).NotTo(HaveOccurred())
		record(map[string]any{"metrics": m, "meanConvergence": m.MeanConvergence().String()})
		// Through the API server's pod proxy: the add-on's istiod image has no shell or curl
		// to exec into (the seed's `kubectl exec ... curl` does not run on it).
		rev := world.Revision()
		step := runbook.Step{Ref: "seed §8: control-plane health",
			Confirm: "kubectl get --raw /api/v1/namespaces/aks-istio-system/pods/$(kubectl get pod -n aks-istio-system -l app=istiod,istio.io/rev=" + rev +
				" -o jsonpath='{.items[0].metadata.name}'):15014/proxy/metrics | grep -E '^pilot_(xds_pushes|total_xds_internal_errors|proxy_convergence_time_count)'",
			Shows:    `(?m)^pilot_xds_pushes\{`,
			Expected: "pushes counted, convergence measured, no internal errors", Fix: "read istiod's log for the failing pushes"}
		Expect(m.Pushes).To(BeNumerically(">", 0), step.Explain(list{fmt.Sprint(m)}))
		Expect(m.ConvergenceCount).To(BeNumerically(">", 0), step.Explain(list{fmt.Sprint(m)}))
		Expect(m.InternalErrors).To(BeZero(), step.Explain(list{fmt.Sprint(m)}))
	})
})

// discoverySelectors selects the namespaces of this run labelled for discovery, and the
// add-on's own.
func discoverySelectors(run string) string {
	return fmt.Sprintf("discoverySelectors:\n- matchLabels:\n    conformance-discovery: %s\n- matchLabels:\n    kubernetes.io/metadata.name: %s\n", run, addon.RootNamespace)
}

// settle waits until done holds for the proxy's config and returns its size then. A
// crowd of n namespaces takes istiod longer to push: the wait grows with it.
func settle(ctx context.Context, w workload, n int, done func(xds.Snapshot) bool) xds.Size {
	GinkgoHelper()
	var size xds.Size
	_, err := w.proxy.Await(ctx, time.Now(), world.Timeout+time.Duration(n)*100*time.Millisecond, func(s xds.Snapshot) error {
		size = s.Size()
		if !done(s) {
			return fmt.Errorf("not there yet: %+v", size)
		}
		return nil
	})
	Expect(err).NotTo(HaveOccurred())
	return size
}

func clusterNames(s xds.Snapshot) []string {
	var names []string
	for _, c := range s.Clusters {
		names = append(names, c.GetName())
	}
	return names
}

func countPrefix(names []string, prefix string) int {
	n := 0
	for _, name := range names {
		if strings.HasPrefix(name, prefix) {
			n++
		}
	}
	return n
}
