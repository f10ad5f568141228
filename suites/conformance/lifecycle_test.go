package conformance

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	networkingapi "istio.io/api/networking/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/addon/emulator"
	"github.com/aks-istio-conformance/conformance/harness/evidence"
	"github.com/aks-istio-conformance/conformance/harness/profile"
	"github.com/aks-istio-conformance/conformance/harness/revtag"
	"github.com/aks-istio-conformance/conformance/harness/runbook"
	"github.com/aks-istio-conformance/conformance/harness/scenario"
	"github.com/aks-istio-conformance/conformance/harness/target"
	"github.com/aks-istio-conformance/conformance/harness/targets"
	"github.com/aks-istio-conformance/conformance/harness/telemetry"
	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// Seed: "Running the Managed Istio Add-on on AKS", section 7 (upgrades), the lab and
// troubleshooting row 11; "ADR-0004: Istio CNI Chaining"; the add-on's limitations. These
// runbooks upgrade, roll back and switch the proxy-redirection mechanism: they are
// disruptive, so each runs on a cluster of its own. These two replay an n+1 upgrade
// between revisions that build here (asm-1-28 to asm-1-29), one to completion and one
// rolled back; revisions_test.go replays n+2 across asm-1-30 (asm-1-29 to asm-1-31).

const (
	lifecycleFrom = "asm-1-28"
	lifecycleTo   = "asm-1-29"
	prodTag       = "prod"
)

// revisionAfter names the revision n minors after rev (asm-1-28, 3: asm-1-31).
func revisionAfter(rev string, n int) string {
	return fmt.Sprintf("asm-1-%d", profile.Profile{Revision: rev}.Minor()+n)
}

// ownCluster brings up a cluster of the run's target kind for one Ordered runbook, and
// returns its World. Only emulated targets get one: on a real cluster these runbooks would
// upgrade the user's mesh.
func ownCluster(ctx context.Context, purpose, revision string) *scenario.World {
	GinkgoHelper()
	if !world.Target.Capabilities().EmulatedAddon {
		Skip("upgrades, rolls back and switches the proxy-redirection mechanism: runs only on an emulated cluster of its own, target " +
			world.Target.Name() + " is a real add-on")
	}
	p, err := profile.Load(revision)
	Expect(err).NotTo(HaveOccurred())
	t, err := targets.Open(ctx, target.Options{Name: world.Target.Name(), Revisions: []string{revision},
		WorkDir: filepath.Join(runDir, purpose)})
	if err != nil {
		// One plain line with the cause (the target's error names the component, its check
		// and its log), not a dump of the wrapped error's fields.
		Fail(fmt.Sprintf("bring up the %s cluster: %v", purpose, err))
	}
	DeferCleanup(func(ctx SpecContext) { Expect(t.Close(ctx)).To(Succeed()) }, NodeTimeout(2*time.Minute))
	w := scenario.NewWorld(t, world.RunID, p, world.Timeout, world.Poll)
	confirmOn(w)
	return w
}

// proxyStatus confirms a step with istioctl's sync status of a revision's istiod, which
// must list the proxy given to Explain as (namespace, pod), in sync.
func proxyStatus(step runbook.Step, revision string) runbook.Step {
	step.Confirm, step.Shows, step.Lacks = confirmSync(revision), syncedShows, ""
	return step
}

// injectionNow is what admission would inject into the app in ns now (dry run).
func injectionNow(ctx context.Context, w *scenario.World, ns string) evidence.Injection {
	GinkgoHelper()
	pod, err := w.AdmitPod(ctx, ns, scenario.App{Name: "app"})
	Expect(err).NotTo(HaveOccurred())
	return evidence.InjectionOf(pod)
}

// syncedProxies lists the proxies of ns in a revision's sync status.
func syncedProxies(ctx context.Context, w *scenario.World, revision, ns string) []string {
	GinkgoHelper()
	statuses, err := xds.SyncStatus(ctx, w.Cluster, revision, ns)
	Expect(err).NotTo(HaveOccurred())
	var out []string
	for _, s := range statuses {
		out = append(out, s.Proxy)
	}
	return out
}

func deploymentExists(ctx context.Context, w *scenario.World, ns, name string) bool {
	GinkgoHelper()
	err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &appsv1.Deployment{})
	Expect(client.IgnoreNotFound(err)).To(Succeed())
	return err == nil
}

var _ = Describe("Revision lifecycle: proxy redirection, Safeguards and a canary upgrade to completion", Ordered, Label("lifecycle", "disruptive"), func() {
	var (
		lw     *scenario.World
		apps   string // namespace labelled istio.io/rev=prod
		oldPod *corev1.Pod
	)
	BeforeAll(func(ctx SpecContext) {
		lw = ownCluster(ctx, "lifecycle", lifecycleFrom)
		Expect(revtag.Set(ctx, lw.Target.RESTConfig(), prodTag, lifecycleFrom)).To(Succeed())
		apps = lw.Namespace(ctx, "bookstore", map[string]string{addon.RevisionLabel: prodTag})
		Expect(lw.Target.Addon().EnableIngressGateway(ctx, addon.External)).To(Succeed())
		lw.SetSharedMeshConfig(ctx, lifecycleFrom, registryOnly)
	})

	It("InitContainers injects istio-init with NET_ADMIN and NET_RAW, and runs no CNI DaemonSet", emulated, func(ctx SpecContext) {
		got := injectionNow(ctx, lw, apps)
		record(got)
		step := runbook.Step{Ref: "ADR-0004 / AKS istio-cni: InitContainers", Confirm: confirmInjection,
			Expected: "istio-init adds NET_ADMIN and NET_RAW; no " + emulator.CNIDaemonSet + " DaemonSet",
			Fix:      "az aks mesh proxy-redirection-mechanism --mechanism InitContainers"}
		step = redirectedBy(admitted(step), lifecycleFrom, evidence.InitRedirection)
		Expect(got.Redirection).To(Equal(evidence.InitRedirection), step.Explain(got, apps))
		Expect(got.RedirectionCaps).To(ContainElements("NET_ADMIN", "NET_RAW"), step.Explain(got, apps))
		err := lw.Client.Get(ctx, client.ObjectKey{Namespace: addon.RootNamespace, Name: emulator.CNIDaemonSet}, &appsv1.DaemonSet{})
		Expect(err).To(MatchError(ContainSubstring("not found")), step.Explain(list{"the CNI DaemonSet exists"}, apps))
	})

	It("Deployment Safeguards (emulated by a ValidatingAdmissionPolicy the API server enforces) reject injected istio-init pods and admit the suite's own workload", Label("safeguards"), emulated, func(ctx SpecContext) {
		lw.ApplyFixture(ctx, "safeguards/baseline-capabilities.yaml")
		plain := lw.Namespace(ctx, "plain", nil)
		step := runbook.Step{Ref: "ADR-0004 / AKS deployment-safeguards: Baseline capabilities",
			Confirm:  "kubectl run confirm-admission -n %s --image=registry.k8s.io/pause:3.10 --restart=Never --dry-run=server 2>&1 | grep 'Disallowed capabilities detected'",
			Shows:    "Disallowed capabilities detected: container\\(s\\) istio-init",
			Expected: "the suite's app (no added capabilities) is admitted; an injected pod with istio-init is rejected: Disallowed capabilities detected",
			Fix:      "switch to CNI chaining: az aks mesh proxy-redirection-mechanism --mechanism CNIChaining"}
		Eventually(func(g Gomega) {
			_, err := lw.AdmitPod(ctx, apps, scenario.App{Name: "app"})
			g.Expect(err).To(MatchError(ContainSubstring("Disallowed capabilities detected")), step.Explain(list{fmt.Sprint(err)}, apps))
			record(map[string]string{"rejected": err.Error()})
		}).WithContext(ctx).WithTimeout(lw.Timeout).WithPolling(lw.Poll).Should(Succeed())
		_, err := lw.AdmitPod(ctx, plain, scenario.App{Name: "app"})
		Expect(err).NotTo(HaveOccurred(), notInjected(admitted(step)).Explain(list{fmt.Sprint(err)}, plain))
	})

	It("the emulated Safeguards policy exempts kube-system and the add-on's aks-istio-* namespaces (a fact of the emulation's policy, not of AKS)", Label("safeguards"), emulated, func(ctx SpecContext) {
		privileged := func(ns string) error {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "netadmin-"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "c", Image: "registry.k8s.io/pause:3.10", SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}}}}}
			return lw.Client.Create(ctx, pod, client.DryRunAll)
		}
		step := runbook.Step{Ref: "AKS deployment-safeguards: system namespaces are not user workloads",
			Confirm:  "kubectl get validatingadmissionpolicy aks-managed-baseline-capabilities -o jsonpath='{.spec.matchConditions[*].expression}'",
			Shows:    `request\.namespace == 'kube-system' \|\| request\.namespace\.startsWith\('aks-istio-'\)`,
			Expected: "a NET_ADMIN pod is admitted in kube-system and aks-istio-system, rejected in a user namespace",
			Fix:      "the policy's matchConditions must exempt kube-system and aks-istio-*"}
		// Its own policy (the previous spec's is deleted with it), in force before the
		// exemptions are judged: an admitted pod proves nothing while no policy applies.
		lw.ApplyFixture(ctx, "safeguards/baseline-capabilities.yaml")
		Eventually(func(g Gomega) {
			g.Expect(privileged(apps)).To(MatchError(ContainSubstring("Disallowed capabilities detected")), step.Explain(list{"user namespace admitted"}))
		}).WithContext(ctx).WithTimeout(lw.Timeout).WithPolling(lw.Poll).Should(Succeed())
		Expect(privileged(metav1.NamespaceSystem)).To(Succeed(), step.Explain(list{"kube-system rejected"}))
		Expect(privileged(addon.RootNamespace)).To(Succeed(), step.Explain(list{"aks-istio-system rejected"}))
	})

	It("CNIChaining injects istio-validation instead of istio-init and runs the CNI DaemonSet", Label("cni"), emulated, func(ctx SpecContext) {
		Expect(lw.Target.Addon().SetProxyRedirection(ctx, profile.CNIChaining)).To(Succeed())
		step := runbook.Step{Ref: "ADR-0004 / AKS istio-cni: CNIChaining", Confirm: confirmInjection,
			Expected: "istio-validation (drops ALL, uid 1337, non-root, read-only root), no istio-init, DaemonSet " + emulator.CNIDaemonSet + " in aks-istio-system",
			Fix:      "az aks mesh proxy-redirection-mechanism --mechanism CNIChaining; restart the workloads"}
		step = redirectedBy(admitted(step), lifecycleFrom, evidence.ValidationContainer)
		step.Lacks = regexp.QuoteMeta(evidence.InitRedirection)
		var got evidence.Injection
		var validation *corev1.Container
		probe := lw.Namespace(ctx, "cni-probe", map[string]string{addon.RevisionLabel: lifecycleFrom})
		Eventually(func(g Gomega) {
			pod, err := lw.AdmitPod(ctx, probe, scenario.App{Name: "app"})
			g.Expect(err).NotTo(HaveOccurred())
			got = evidence.InjectionOf(pod)
			g.Expect(got.Redirection).To(Equal(evidence.ValidationContainer), step.Explain(got, probe))
			for i := range pod.Spec.InitContainers {
				if pod.Spec.InitContainers[i].Name == evidence.ValidationContainer {
					validation = &pod.Spec.InitContainers[i]
				}
			}
		}).WithContext(ctx).WithTimeout(lw.Timeout).WithPolling(lw.Poll).Should(Succeed())
		record(got)
		sc := validation.SecurityContext
		Expect(got.InitContainers).NotTo(ContainElement(evidence.InitRedirection), step.Explain(got, probe))
		Expect(sc.Capabilities.Drop).To(ContainElement(corev1.Capability("ALL")), step.Explain(got, probe))
		Expect(*sc.RunAsUser).To(BeEquivalentTo(1337), step.Explain(got, probe))
		Expect(*sc.RunAsNonRoot && *sc.ReadOnlyRootFilesystem).To(BeTrue(), step.Explain(got, probe))
		daemonSet := runbook.Step{Ref: step.Ref, Expected: step.Expected, Fix: step.Fix,
			Confirm: "kubectl get daemonset -n aks-istio-system " + emulator.CNIDaemonSet, Shows: regexp.QuoteMeta(emulator.CNIDaemonSet)}
		Expect(lw.Client.Get(ctx, client.ObjectKey{Namespace: addon.RootNamespace, Name: emulator.CNIDaemonSet}, &appsv1.DaemonSet{})).
			To(Succeed(), daemonSet.Explain(list{"no CNI DaemonSet"}))
	})

	It("with CNIChaining, injected workloads pass Deployment Safeguards", Label("safeguards", "cni"), emulated, func(ctx SpecContext) {
		lw.ApplyFixture(ctx, "safeguards/baseline-capabilities.yaml")
		// Two workloads: app moves to the canary later, ratings stays behind.
		lw.Deploy(ctx, apps, scenario.App{Name: "ratings"})
		lw.Deploy(ctx, apps, scenario.App{Name: "app"})
		oldPod = lw.RunningPod(ctx, apps, "app")
		got := evidence.InjectionOf(oldPod)
		record(got)
		step := runbook.Step{Ref: "ADR-0004: CNI chaining is required under Safeguards", Confirm: confirmInjection,
			Expected: "the injected pod is admitted, with istio-validation", Fix: "enable CNIChaining before Safeguards"}
		step = redirectedBy(step, lifecycleFrom, evidence.ValidationContainer)
		Expect(got.Injected && got.Redirection == evidence.ValidationContainer).To(BeTrue(), step.Explain(got, apps, oldPod.Name))
		Expect(got.Revision).To(Equal(lifecycleFrom), step.Explain(got, apps, oldPod.Name))
	})

	It("copies the shared ConfigMap to the new revision's name before the upgrade", emulated, func(ctx SpecContext) {
		var src corev1.ConfigMap
		Expect(lw.Client.Get(ctx, client.ObjectKey{Namespace: addon.RootNamespace, Name: addon.SharedMeshConfigMap(lifecycleFrom)}, &src)).To(Succeed())
		dst := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: addon.RootNamespace, Name: addon.SharedMeshConfigMap(lifecycleTo)}, Data: src.Data}
		Expect(lw.Client.Create(ctx, dst)).To(Succeed(), "the MeshConfig webhook must admit a copy of an admitted ConfigMap")
		record(map[string]string{"copied": dst.Name})
	})

	It("upgrade start runs both istiods, with gateway Deployments per revision behind one Service", emulated, func(ctx SpecContext) {
		Expect(lw.Target.Addon().UpgradeStart(ctx, lifecycleTo)).To(Succeed())
		revs, err := lw.Target.Addon().Revisions(ctx)
		Expect(err).NotTo(HaveOccurred())
		gw := addon.IngressGateway(addon.External)
		state := list{fmt.Sprintf("revisions %v", revs)}
		for _, rev := range []string{lifecycleFrom, lifecycleTo} {
			for _, d := range []string{addon.Istiod(rev), addon.GatewayDeployment(gw, rev)} {
				ns := addon.RootNamespace
				if strings.HasPrefix(d, gw) {
					ns = addon.IngressNamespace
				}
				state = append(state, fmt.Sprintf("%s/%s exists: %t", ns, d, deploymentExists(ctx, lw, ns, d)))
			}
		}
		record(state)
		step := runbook.Step{Ref: "seed §7 step 2: az aks mesh upgrade start --revision " + lifecycleTo, Confirm: confirmRevisions + "; kubectl get deploy -n aks-istio-ingress",
			Shows: `(?s)\b` + addon.Istiod(lifecycleFrom) + `\b.*\b` + addon.Istiod(lifecycleTo) + `\b.*\b` + addon.GatewayDeployment(addon.IngressGateway(addon.External), lifecycleFrom) +
				`\b.*\b` + addon.GatewayDeployment(addon.IngressGateway(addon.External), lifecycleTo) + `\b`,
			Expected: "revisions " + lifecycleFrom + " and " + lifecycleTo + ", both istiods and both gateway Deployments",
			Fix:      "only n+1 or n+2, and at most two revisions at once"}
		Expect(revs).To(Equal([]string{lifecycleFrom, lifecycleTo}), step.Explain(state))
		Expect(strings.Join(state, ";")).NotTo(ContainSubstring("false"), step.Explain(state))
	})

	It("the canary reads the copied shared ConfigMap (REGISTRY_ONLY)", Label("mesh-config"), upstream, func(ctx SpecContext) {
		mesh, err := xds.MergedMesh(ctx, lw.Istiod(ctx, lifecycleTo))
		Expect(err).NotTo(HaveOccurred())
		step := runbook.Step{Ref: "seed §7 step 1: copy istio-shared-configmap-<old> to <new>",
			Confirm:  "kubectl get cm -n aks-istio-system " + addon.SharedMeshConfigMap(lifecycleTo) + " -o jsonpath='{.data.mesh}'",
			Shows:    `mode: REGISTRY_ONLY`,
			Expected: "istiod-" + lifecycleTo + " runs with outboundTrafficPolicy REGISTRY_ONLY", Fix: "copy the shared ConfigMap before upgrade start"}
		Expect(mesh.GetOutboundTrafficPolicy().GetMode().String()).To(Equal("REGISTRY_ONLY"), step.Explain(list{mesh.GetOutboundTrafficPolicy().String()}))
	})

	It("the emulated add-on refuses a third revision while two run (the emulation's rule, from the AKS upgrade docs)", emulated, func(ctx SpecContext) {
		// n+1 of the canary, n+2 of the original: only the two-revision limit refuses it.
		err := lw.Target.Addon().UpgradeStart(ctx, revisionAfter(lifecycleTo, 1))
		step := runbook.Step{Ref: "AKS istio-upgrade: at most two revisions", Expected: "the add-on's error: Request exceeds maximum allowed number of revisions (2)",
			Fix: "complete or roll back the running upgrade first"}
		Expect(err).To(MatchError(emulator.ErrTooManyRevisions), step.Explain(list{fmt.Sprint(err)}))
	})

	// Which istiod judged the object is read from the istiods themselves: each counts the
	// objects its validating webhook rejected (galley_validation_failed, dry runs excluded).
	It("during the canary the higher revision validates Istio resources", emulated, func(ctx SpecContext) {
		var v admissionregistrationv1.ValidatingWebhookConfiguration
		Expect(lw.Client.Get(ctx, client.ObjectKey{Name: emulator.DefaultValidator}, &v)).To(Succeed())
		step := runbook.Step{Ref: "DESIGN §4: during a canary the higher revision validates",
			Confirm:  "kubectl get validatingwebhookconfiguration " + emulator.DefaultValidator + " -o jsonpath='{.metadata.labels.istio\\.io/rev}'",
			Shows:    `^` + lifecycleTo + `$`,
			Expected: "unlabelled Istio objects are validated by " + lifecycleTo + "'s istiod, which rejects a negative weight; " + lifecycleFrom + "'s istiod judges none of them",
			Fix:      "the default validator must follow the highest revision"}
		Expect(v.Labels).To(HaveKeyWithValue(addon.RevisionLabel, lifecycleTo), step.Explain(list{fmt.Sprint(v.Labels)}))
		rejected := func() map[string]float64 {
			out := map[string]float64{}
			for _, rev := range []string{lifecycleFrom, lifecycleTo} {
				m, err := telemetry.ScrapePushMetrics(ctx, lw.Istiod(ctx, rev))
				Expect(err).NotTo(HaveOccurred(), "read istiod-%s's metrics", rev)
				out[rev] = m.ValidationFailed
			}
			return out
		}
		before := rejected()
		vs := reviewsVirtualService(apps, "reviews", &networkingapi.HTTPRoute{Route: []*networkingapi.HTTPRouteDestination{to("reviews", "", -5)}})
		// A real create, not a dry run: istiod does not count dry-run requests. The webhook
		// rejects it, so nothing is stored; were it admitted, the cleanup removes it.
		DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(lw.Client.Delete(ctx, vs))).To(Succeed()) })
		Eventually(func(g Gomega) {
			err := lw.Client.Create(ctx, vs)
			g.Expect(err).To(MatchError(ContainSubstring("validation.istio.io")), step.Explain(list{fmt.Sprint(err)}))
			record(map[string]string{"rejected": err.Error()})
		}).WithContext(ctx).WithTimeout(lw.Timeout).WithPolling(lw.Poll).Should(Succeed())
		after := rejected()
		judged := list{fmt.Sprintf("galley_validation_failed before %v, after %v", before, after)}
		record(judged)
		Expect(after[lifecycleTo]).To(BeNumerically(">", before[lifecycleTo]), step.Explain(judged))
		Expect(after[lifecycleFrom]).To(Equal(before[lifecycleFrom]), step.Explain(judged))
	})

	It("repointing the tag leaves running pods on the old revision until they restart", upstream, func(ctx SpecContext) {
		Expect(revtag.Set(ctx, lw.Target.RESTConfig(), prodTag, lifecycleTo)).To(Succeed())
		step := runbook.Step{Ref: "seed §7 step 3: istioctl tag set prod --revision " + lifecycleTo + " --overwrite", Confirm: confirmInjection,
			Expected: "istioctl tag list shows prod -> " + lifecycleTo + "; the running pod keeps its " + lifecycleFrom + " sidecar; new admissions get " + lifecycleTo,
			Fix:      "restart the workloads to move them"}
		tags, err := revtag.List(ctx, lw.Target.RESTConfig())
		Expect(err).NotTo(HaveOccurred())
		tagList := step
		tagList.Confirm, tagList.Shows = "istioctl tag list --istioNamespace aks-istio-system", `(?m)^`+prodTag+`\s+`+lifecycleTo+`\b`
		Expect(tags).To(HaveKeyWithValue(prodTag, lifecycleTo), tagList.Explain(list{fmt.Sprint(tags)}))
		still := lw.Pod(ctx, apps, oldPod.Name)
		got := evidence.InjectionOf(still)
		Expect(got.Revision).To(Equal(lifecycleFrom), injectedBy(step, lifecycleFrom).Explain(got, apps, still.Name))
		Eventually(func(g Gomega) {
			now := injectionNow(ctx, lw, apps)
			g.Expect(now.Revision).To(Equal(lifecycleTo), injectedBy(admitted(step), lifecycleTo).Explain(now, apps))
		}).WithContext(ctx).WithTimeout(lw.Timeout).WithPolling(lw.Poll).Should(Succeed())
		record(got)
	})

	It("a rollout restart moves the pods to the new revision, and sync status shows both revisions", upstream, func(ctx SpecContext) {
		behind := lw.RunningPod(ctx, apps, "ratings")
		lw.Proxy(ctx, behind)
		lw.RolloutRestart(ctx, apps, "app")
		pod := lw.RunningPod(ctx, apps, "app")
		got := evidence.InjectionOf(pod)
		record(got)
		step := runbook.Step{Ref: "seed §7 step 4: kubectl rollout restart; istioctl proxy-status", Confirm: confirmInjection,
			Expected: "the restarted pod is injected by " + lifecycleTo + " and dials istiod-" + lifecycleTo + "; ratings, not restarted, stays with " + lifecycleFrom + ": each istiod lists its own proxy",
			Fix:      "restart every workload of the tagged namespaces"}
		step = injectedBy(step, lifecycleTo)
		Expect(got.Revision).To(Equal(lifecycleTo), step.Explain(got, apps, pod.Name))
		Expect(got.DiscoveryAddress).To(HavePrefix(addon.Istiod(lifecycleTo)+"."), step.Explain(got, apps, pod.Name))
		lw.Proxy(ctx, pod)
		Eventually(func(g Gomega) {
			oldSide, newSide := syncedProxies(ctx, lw, lifecycleFrom, apps), syncedProxies(ctx, lw, lifecycleTo, apps)
			mixed := list{fmt.Sprintf("%s: %v; %s: %v", lifecycleFrom, oldSide, lifecycleTo, newSide)}
			g.Expect(oldSide).To(ContainElement(behind.Name+"."+apps), proxyStatus(step, lifecycleFrom).Explain(mixed, apps, behind.Name))
			g.Expect(newSide).To(ContainElement(pod.Name+"."+apps), proxyStatus(step, lifecycleTo).Explain(mixed, apps, pod.Name))
			record(mixed)
		}).WithContext(ctx).WithTimeout(lw.Timeout).WithPolling(lw.Poll).Should(Succeed())
	})

	It("upgrade complete removes the old control plane and its gateway Deployments", emulated, func(ctx SpecContext) {
		Expect(lw.Target.Addon().UpgradeComplete(ctx)).To(Succeed())
		gw := addon.IngressGateway(addon.External)
		revs, err := lw.Target.Addon().Revisions(ctx)
		Expect(err).NotTo(HaveOccurred())
		state := list{fmt.Sprintf("revisions %v", revs),
			fmt.Sprintf("istiod-%s %t", lifecycleFrom, deploymentExists(ctx, lw, addon.RootNamespace, addon.Istiod(lifecycleFrom))),
			fmt.Sprintf("%s %t", addon.GatewayDeployment(gw, lifecycleFrom), deploymentExists(ctx, lw, addon.IngressNamespace, addon.GatewayDeployment(gw, lifecycleFrom))),
			fmt.Sprintf("%s %t", addon.GatewayDeployment(gw, lifecycleTo), deploymentExists(ctx, lw, addon.IngressNamespace, addon.GatewayDeployment(gw, lifecycleTo)))}
		record(state)
		step := runbook.Step{Ref: "seed §7 step 5: az aks mesh upgrade complete", Confirm: "kubectl get deploy -n aks-istio-system; kubectl get deploy -n aks-istio-ingress",
			Shows:    `(?s)\b` + addon.Istiod(lifecycleTo) + `\b.*\b` + addon.GatewayDeployment(gw, lifecycleTo) + `\b`,
			Lacks:    `\b(` + addon.Istiod(lifecycleFrom) + `|` + addon.GatewayDeployment(gw, lifecycleFrom) + `)\b`,
			Expected: "only " + lifecycleTo + " remains: its istiod and gateway Deployment; the old ones are gone", Fix: "complete only after every workload restarted"}
		Expect(revs).To(Equal([]string{lifecycleTo}), step.Explain(state))
		Expect(state[1:]).To(Equal(list{"istiod-" + lifecycleFrom + " false", addon.GatewayDeployment(gw, lifecycleFrom) + " false", addon.GatewayDeployment(gw, lifecycleTo) + " true"}), step.Explain(state))
		Expect(lw.Client.Get(ctx, client.ObjectKey{Namespace: addon.IngressNamespace, Name: gw}, &corev1.Service{})).To(Succeed(), step.Explain(list{"the gateway Service is gone"}))
	})

	It("a namespace labelled with the removed revision gets no injection", emulated, func(ctx SpecContext) {
		ns := lw.Namespace(ctx, "stale", map[string]string{addon.RevisionLabel: lifecycleFrom})
		got := injectionNow(ctx, lw, ns)
		record(got)
		step := runbook.Step{Ref: "seed §7: after complete, labels naming the old revision inject nothing", Confirm: confirmInjection,
			Expected: "no sidecar", Fix: "relabel namespaces with the remaining revision or a tag, then restart"}
		Expect(got.Injected).To(BeFalse(), notInjected(admitted(step)).Explain(got, ns))
	})

	It("removing the tag stops injection in the namespaces that use it", upstream, func(ctx SpecContext) {
		Expect(revtag.Remove(ctx, lw.Target.RESTConfig(), prodTag)).To(Succeed())
		step := runbook.Step{Ref: "istioctl tag remove prod --istioNamespace aks-istio-system", Confirm: "istioctl tag list --istioNamespace aks-istio-system",
			Shows: `TAG\s+REVISION`, Lacks: `(?m)^` + prodTag + `\s`,
			Expected: "istioctl tag list no longer shows prod, and pods of namespaces labelled istio.io/rev=prod are no longer injected",
			Fix:      "relabel the namespaces with a revision or another tag before removing a tag"}
		tags, err := revtag.List(ctx, lw.Target.RESTConfig())
		Expect(err).NotTo(HaveOccurred())
		Expect(tags).NotTo(HaveKey(prodTag), step.Explain(list{fmt.Sprint(tags)}))
		Eventually(func(g Gomega) {
			got := injectionNow(ctx, lw, apps)
			g.Expect(got.Injected).To(BeFalse(), notInjected(admitted(step)).Explain(got, apps))
		}).WithContext(ctx).WithTimeout(lw.Timeout).WithPolling(lw.Poll).Should(Succeed())
		record(tags)
	})

	It("the emulated add-on refuses complete when no upgrade is in progress (the emulation's rule and message)", emulated, func(ctx SpecContext) {
		err := lw.Target.Addon().UpgradeComplete(ctx)
		Expect(err).To(MatchError(emulator.ErrUpgradeNotStarted), runbook.Step{Ref: "az aks mesh upgrade complete",
			Expected: "Azure Service Mesh upgrade is not in progress."}.Explain(list{fmt.Sprint(err)}))
	})
})

var _ = Describe("Revision lifecycle: guardrails of upgrade and a rollback", Ordered, Label("lifecycle", "disruptive"), func() {
	var (
		lw   *scenario.World
		apps string
	)
	BeforeAll(func(ctx SpecContext) {
		lw = ownCluster(ctx, "rollback", lifecycleFrom)
		apps = lw.Namespace(ctx, "apps", map[string]string{addon.RevisionLabel: lifecycleFrom})
		lw.SetSharedMeshConfig(ctx, lifecycleFrom, registryOnly)
	})

	It("the emulated add-on refuses an upgrade that is not to n+1 or n+2 (the emulation's rule, from the AKS upgrade docs)", emulated, func(ctx SpecContext) {
		// n+3 (asm-1-31), a revision that builds here: only the add-on's step rule refuses it.
		jump := revisionAfter(lifecycleFrom, 3)
		err := lw.Target.Addon().UpgradeStart(ctx, jump)
		Expect(err).To(MatchError(ContainSubstring("Requested change in revisions is not allowed")), runbook.Step{Ref: "AKS istio-upgrade: n+1 or n+2 only",
			Expected: "the add-on refuses " + lifecycleFrom + " -> " + jump, Fix: "az aks mesh get-upgrades lists the allowed revisions"}.Explain(list{fmt.Sprint(err)}))
	})

	It("a patch upgrade changes the proxy of restarted pods only", emulated, func(ctx SpecContext) {
		patcher, ok := lw.Target.Addon().(addon.PatchUpgrader)
		if !ok {
			Skip("target " + lw.Target.Name() + " cannot trigger patch upgrades: the add-on applies them itself")
		}
		// The patch AKS moved the revision to (its profile's aksPatch, from the release notes).
		patch := lw.Profile.Istio.AKSPatch
		Expect(patch).NotTo(BeElementOf("", lw.Profile.ProxyImage.Tag),
			"fixtures/profiles/%s.yaml: istio.aksPatch must name a patch other than the build's proxy tag to replay a patch upgrade", lifecycleFrom)
		lw.Deploy(ctx, apps, scenario.App{Name: "app"})
		before := evidence.InjectionOf(lw.RunningPod(ctx, apps, "app"))
		Expect(patcher.PatchUpgrade(ctx, lifecycleFrom, patch)).To(Succeed())
		step := runbook.Step{Ref: "seed §7: patch upgrades roll istiod and gateways; sidecars keep the old proxy until restart",
			Confirm: "kubectl get pod -n %s %s -o jsonpath='{..image}'", Shows: regexp.QuoteMeta(":" + patch + "-distroless"),
			Expected: "the running pod keeps " + before.ProxyImage + "; after a restart it gets the " + patch + " proxy", Fix: "restart workloads after a patch upgrade"}
		Eventually(func(g Gomega) {
			g.Expect(injectionNow(ctx, lw, apps).ProxyImage).To(HaveSuffix(":" + patch + "-distroless"))
		}).WithContext(ctx).WithTimeout(lw.Timeout).WithPolling(lw.Poll).Should(Succeed())
		still := evidence.InjectionOf(lw.Pod(ctx, apps, before.Pod))
		Expect(still.ProxyImage).To(Equal(before.ProxyImage), step.Explain(still, apps, before.Pod))
		lw.RolloutRestart(ctx, apps, "app")
		after := evidence.InjectionOf(lw.RunningPod(ctx, apps, "app"))
		record(map[string]string{"before": before.ProxyImage, "running pod": still.ProxyImage, "after restart": after.ProxyImage})
		Expect(after.ProxyImage).To(HaveSuffix(":"+patch+"-distroless"), step.Explain(after, apps, after.Pod))
	})

	It("without copying the shared ConfigMap the canary ignores REGISTRY_ONLY", Label("mesh-config"), upstream, func(ctx SpecContext) {
		Expect(lw.Target.Addon().UpgradeStart(ctx, lifecycleTo)).To(Succeed())
		meshOf := func(rev string) string {
			mesh, err := xds.MergedMesh(ctx, lw.Istiod(ctx, rev))
			Expect(err).NotTo(HaveOccurred())
			return mesh.GetOutboundTrafficPolicy().GetMode().String()
		}
		old, canary := meshOf(lifecycleFrom), meshOf(lifecycleTo)
		record(map[string]string{lifecycleFrom: old, lifecycleTo: canary})
		step := runbook.Step{Ref: "seed §7 step 1 skipped (troubleshooting row 11)", Confirm: "kubectl get cm -n aks-istio-system | grep istio-shared-configmap",
			Shows: regexp.QuoteMeta(addon.SharedMeshConfigMap(lifecycleFrom)), Lacks: regexp.QuoteMeta(addon.SharedMeshConfigMap(lifecycleTo)),
			Expected: lifecycleFrom + " REGISTRY_ONLY, the canary " + lifecycleTo + " ALLOW_ANY", Fix: "copy istio-shared-configmap-<old> to istio-shared-configmap-<new>"}
		Expect([]string{old, canary}).To(Equal([]string{"REGISTRY_ONLY", "ALLOW_ANY"}), step.Explain(list{old, canary}))
	})

	It("upgrade rollback removes the canary and keeps the original revision", emulated, func(ctx SpecContext) {
		Expect(lw.Target.Addon().UpgradeRollback(ctx)).To(Succeed())
		revs, err := lw.Target.Addon().Revisions(ctx)
		Expect(err).NotTo(HaveOccurred())
		state := list{fmt.Sprintf("revisions %v", revs), fmt.Sprintf("istiod-%s %t", lifecycleTo, deploymentExists(ctx, lw, addon.RootNamespace, addon.Istiod(lifecycleTo)))}
		record(state)
		step := runbook.Step{Ref: "seed §7 step 5: az aks mesh upgrade rollback", Confirm: confirmRevisions,
			Shows: `\b` + addon.Istiod(lifecycleFrom) + `\b`, Lacks: `\b` + addon.Istiod(lifecycleTo) + `\b`,
			Expected: "only " + lifecycleFrom + " remains", Fix: "roll back before restarting workloads onto the canary"}
		Expect(revs).To(Equal([]string{lifecycleFrom}), step.Explain(state))
		Expect(state[1]).To(HaveSuffix("false"), step.Explain(state))
		got := injectionNow(ctx, lw, apps)
		Expect(got.Revision).To(Equal(lifecycleFrom), injectedBy(admitted(step), lifecycleFrom).Explain(got, apps))
	})
})
