package conformance

import (
	"context"
	"fmt"
	"regexp"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/evidence"
	"github.com/aks-istio-conformance/conformance/harness/profile"
	"github.com/aks-istio-conformance/conformance/harness/revtag"
	"github.com/aks-istio-conformance/conformance/harness/runbook"
	"github.com/aks-istio-conformance/conformance/harness/scenario"
)

// Seed: "Running the Managed Istio Add-on on AKS", section 1 (sidecar injection) and its
// truth table. Every verdict is read from the pod that istiod's webhook admitted through
// Deployment -> ReplicaSet -> Pod.

// injectionRow is one row of the seed's injection truth table.
type injectionRow struct {
	nsLabels       func(rev string) map[string]string
	podLabels      func(rev string) map[string]string
	podAnnotations map[string]string
	// belowOldest labels the namespace istio.io/rev with the revision just below the oldest
	// running one, instead of nsLabels.
	belowOldest bool
	injected    bool
	step        runbook.Step
}

var fixRevisionLabel = "label the namespace `istio.io/rev=<running revision>` (see `az aks mesh get-revisions`), remove `istio-injection`, then `kubectl rollout restart deployment -n <ns>`"

// revisionBelowOldest is the revision just below the oldest running one (asm-1-26 beside
// asm-1-27): the label a namespace left behind by a completed upgrade still carries. It is
// computed from the running revisions, so it names a real add-on revision the cluster is not
// running rather than an invented one.
func revisionBelowOldest(ctx context.Context) string {
	GinkgoHelper()
	revisions, err := world.Target.Addon().Revisions(ctx)
	Expect(err).NotTo(HaveOccurred())
	Expect(revisions).NotTo(BeEmpty(), "the add-on reports no running revision")
	oldest := profile.Profile{Revision: revisions[0]}.Minor()
	for _, r := range revisions {
		oldest = min(oldest, profile.Profile{Revision: r}.Minor())
	}
	below := fmt.Sprintf("asm-1-%d", oldest-1)
	Expect(revisions).NotTo(ContainElement(below))
	return below
}

// The truth table, restarts and tags are decided by the API server's webhook selection and
// istiod's injector; the sidecar's shape compares it with the profile the emulator rendered.
var _ = Describe("Sidecar injection", Label("injection"), func() {
	DescribeTable("the namespace and pod labels decide injection at admission", upstream,
		func(ctx SpecContext, row injectionRow) {
			rev := world.Revision()
			var nsLabels, podLabels map[string]string
			if row.nsLabels != nil {
				nsLabels = row.nsLabels(rev)
			}
			if row.podLabels != nil {
				podLabels = row.podLabels(rev)
			}
			if row.belowOldest {
				nsLabels = map[string]string{addon.RevisionLabel: revisionBelowOldest(ctx)}
			}
			ns := world.Namespace(ctx, "inject", nsLabels)
			world.Deploy(ctx, ns, scenario.App{Name: "app", PodLabels: podLabels, PodAnnotations: row.podAnnotations})
			pod := world.CurrentPod(ctx, ns, "app")
			got := evidence.InjectionOf(pod)
			record(got)

			step := notInjected(row.step)
			if row.injected {
				step = injectedBy(row.step, rev)
			}
			Expect(got.Injected).To(Equal(row.injected), step.Explain(got, ns, pod.Name))
			if row.injected {
				Expect(got.Revision).To(Equal(rev), step.Explain(got, ns, pod.Name))
			}
		},
		Entry("istio.io/rev=<running revision> on the namespace injects", injectionRow{
			nsLabels: func(rev string) map[string]string { return map[string]string{addon.RevisionLabel: rev} },
			injected: true,
			step: runbook.Step{Ref: "seed §1 truth table: namespace istio.io/rev=<rev>",
				Expected: "istio-proxy injected by that revision", Confirm: confirmInjection,
				Fix: "check `kubectl get mutatingwebhookconfigurations -l istio.io/rev` lists the revision and istiod-<rev> is Ready"},
		}),
		Entry("istio-injection=enabled is ignored by the add-on", injectionRow{
			nsLabels: func(string) map[string]string { return map[string]string{addon.LegacyInjectionLabel: "enabled"} },
			step: runbook.Step{Ref: "seed §1 truth table: namespace istio-injection=enabled",
				Expected: "no sidecar: the add-on has no default revision", Confirm: confirmInjection, Fix: fixRevisionLabel},
		}),
		Entry("a namespace with both labels is not injected", injectionRow{
			nsLabels: func(rev string) map[string]string {
				return map[string]string{addon.LegacyInjectionLabel: "enabled", addon.RevisionLabel: rev}
			},
			step: runbook.Step{Ref: "seed §1 truth table: both istio-injection and istio.io/rev",
				Expected: "no sidecar: every revision webhook requires istio-injection to be absent", Confirm: confirmInjection,
				Fix: "`kubectl label namespace <ns> istio-injection-` and restart the workloads"},
		}),
		Entry("istio.io/rev naming the revision below the oldest running one (left by a completed upgrade) is not injected", injectionRow{
			belowOldest: true,
			step: runbook.Step{Ref: "seed §1 truth table: istio.io/rev=<revision not installed>, e.g. asm-1-26 beside asm-1-27",
				Expected: "no sidecar, and no error: no webhook selects that revision", Confirm: confirmInjection,
				Fix: "relabel with a revision from `az aks mesh get-revisions` (or a tag that points to one)"},
		}),
		Entry("a namespace without labels is not injected", injectionRow{
			step: runbook.Step{Ref: "seed §1 truth table: no label",
				Expected: "no sidecar", Confirm: confirmInjection, Fix: fixRevisionLabel},
		}),
		Entry("the pod annotation sidecar.istio.io/inject=false opts out in a labelled namespace", injectionRow{
			nsLabels:       func(rev string) map[string]string { return map[string]string{addon.RevisionLabel: rev} },
			podAnnotations: map[string]string{"sidecar.istio.io/inject": "false"},
			step: runbook.Step{Ref: "seed §1 control surfaces: pod annotation sidecar.istio.io/inject: \"false\"",
				Expected: "no sidecar on that pod", Confirm: confirmInjection,
				Fix: "the injector must honour the annotation: check the revision's injection template (ConfigMap istio-sidecar-injector-<rev>)"},
		}),
		Entry("the pod label istio.io/rev injects in an unlabelled namespace", injectionRow{
			podLabels: func(rev string) map[string]string { return map[string]string{addon.RevisionLabel: rev} },
			injected:  true,
			step: runbook.Step{Ref: "seed §1 control surfaces: pod label istio.io/rev=<rev>",
				Expected: "istio-proxy injected by that revision", Confirm: confirmInjection,
				Fix: "check the revision's object-selector webhook (rev.object.sidecar-injector.istio.io) in istio-sidecar-injector-<rev>"},
		}),
	)

	// On local the image, native-sidecar setting, discovery address and redirection are the
	// profile's facts the emulator rendered into the injector: the spec checks the emulation
	// (on a real cluster, the add-on's injector).
	It("injects the profile's sidecar shape, image and discovery address", emulated, func(ctx SpecContext) {
		p := world.Profile
		ns := world.Namespace(ctx, "shape", map[string]string{addon.RevisionLabel: p.Revision})
		world.Deploy(ctx, ns, scenario.App{Name: "app"})
		pod := world.CurrentPod(ctx, ns, "app")
		got := evidence.InjectionOf(pod)
		record(got)

		redirection := evidence.InitRedirection
		if p.ProxyRedirection == profile.CNIChaining {
			redirection = evidence.ValidationContainer
		}
		explain := func(expected, fix string) func() string {
			return redirectedBy(runbook.Step{Ref: "profile " + p.Revision + " (AKS docs istio-native-sidecar, istio-cni, istio-support-policy)",
				Expected: expected, Confirm: confirmInjection, Fix: fix}, p.Revision, redirection).Explain(got, ns, pod.Name)
		}
		Expect(got.Injected).To(BeTrue(), explain("istio-proxy injected", fixRevisionLabel))
		Expect(got.Native).To(Equal(p.NativeSidecars), explain(
			fmt.Sprintf("istio-proxy as a native sidecar (init container, restartPolicy Always): %t", p.NativeSidecars),
			"istiod's ENABLE_NATIVE_SIDECARS must follow the revision's default"))
		Expect(got.ProxyImage).To(Equal(p.ProxyImageRef()), explain("proxy image "+p.ProxyImageRef(),
			"the injector's global.hub/tag/variant must be the add-on's"))
		Expect(got.DiscoveryAddress).To(Equal(addon.Istiod(p.Revision)+"."+addon.RootNamespace+".svc:15012"), explain(
			"the proxy dials istiod-<rev>.aks-istio-system.svc:15012", "the injector's values.global.istioNamespace and revision"))
		switch p.ProxyRedirection {
		case profile.InitContainers:
			Expect(got.Redirection).To(Equal(evidence.InitRedirection), explain("istio-init redirects traffic (InitContainers)", "set the proxy-redirection mechanism"))
			Expect(got.RedirectionCaps).To(ContainElements("NET_ADMIN", "NET_RAW"), explain("istio-init adds NET_ADMIN and NET_RAW", "istio-init needs them to write iptables rules"))
		case profile.CNIChaining:
			Expect(got.Redirection).To(Equal(evidence.ValidationContainer), explain("istio-validation, no istio-init (CNIChaining)", "enable the CNI component and pilot.cni.enabled"))
			Expect(got.RedirectionCaps).To(BeEmpty(), explain("istio-validation adds no capability", "the injection template must not add capabilities under CNI"))
		}
	})

	It("labelling a namespace changes nothing until a rollout restart", upstream, func(ctx SpecContext) {
		rev := world.Revision()
		step := runbook.Step{Ref: "seed §1: injection happens at pod admission; relabelling needs a restart",
			Confirm: confirmInjection, Fix: "`kubectl rollout restart deployment -n <ns>` after labelling"}
		ns := world.Namespace(ctx, "relabel", nil)
		world.Deploy(ctx, ns, scenario.App{Name: "app"})
		before := world.CurrentPod(ctx, ns, "app")

		world.LabelNamespace(ctx, ns, map[string]string{addon.RevisionLabel: rev})
		still := world.Pod(ctx, ns, before.Name)
		got := evidence.InjectionOf(still)
		step.Expected = "the running pod keeps its spec: no sidecar before a restart"
		Expect(still.UID).To(Equal(before.UID), step.Explain(got, ns, still.Name))
		Expect(got.Injected).To(BeFalse(), step.Explain(got, ns, still.Name))

		world.RolloutRestart(ctx, ns, "app")
		after := world.CurrentPod(ctx, ns, "app")
		got = evidence.InjectionOf(after)
		record(got)
		step.Expected = "after the restart the new pod is injected by " + rev
		step = injectedBy(step, rev)
		Expect(after.Name).NotTo(Equal(before.Name), step.Explain(got, ns, after.Name))
		Expect(got.Injected).To(BeTrue(), step.Explain(got, ns, after.Name))
		Expect(got.Revision).To(Equal(rev), step.Explain(got, ns, after.Name))
	})

	It("a revision tag injects once it exists and points at a running revision", upstream, func(ctx SpecContext) {
		rev := world.Revision()
		tag := world.RunID + "-tag" // unique per run: tags are cluster-wide objects
		step := runbook.Step{Ref: "seed §1 truth table: namespace istio.io/rev=<tag>",
			Confirm: "kubectl get mutatingwebhookconfigurations -l istio.io/tag=" + tag + "; " + confirmInjection,
			Fix:     "istioctl tag set <tag> --revision <rev> --istioNamespace aks-istio-system, then restart the workloads"}
		ns := world.Namespace(ctx, "tagged", map[string]string{addon.RevisionLabel: tag})
		world.Deploy(ctx, ns, scenario.App{Name: "app"})
		got := evidence.InjectionOf(world.CurrentPod(ctx, ns, "app"))
		step.Expected = "no sidecar while the tag does not exist"
		Expect(got.Injected).To(BeFalse(), step.Explain(got, ns, got.Pod))

		Expect(revtag.Set(ctx, world.Target.RESTConfig(), tag, rev)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) {
			Expect(revtag.Remove(ctx, world.Target.RESTConfig(), tag)).To(Succeed())
		})
		world.RolloutRestart(ctx, ns, "app")
		got = evidence.InjectionOf(world.CurrentPod(ctx, ns, "app"))
		record(got)
		step.Expected = "after `tag set` and a restart, istio-proxy injected by " + rev
		step = injectedBy(step, rev)
		step.Shows = regexp.QuoteMeta(tag) + `[\s\S]*` + step.Shows // the webhook list comes first
		Expect(got.Injected).To(BeTrue(), step.Explain(got, ns, got.Pod))
		Expect(got.Revision).To(Equal(rev), step.Explain(got, ns, got.Pod))
	})

	It("the shared ConfigMap's defaultConfig reaches newly injected pods", Label("mesh-config"), upstream, func(ctx SpecContext) {
		rev := world.Revision()
		ns := world.Namespace(ctx, "meshcfg", map[string]string{addon.RevisionLabel: rev})
		marker := world.RunID
		world.SetSharedMeshConfig(ctx, rev, "defaultConfig:\n  proxyMetadata:\n    CONFORMANCE_RUN: "+marker+"\n")
		step := runbook.Step{Ref: "DESIGN §4: istiod merges istio-shared-configmap-<rev> (SHARED_MESH_CONFIG) live",
			Expected: "the injected istio-proxy carries env CONFORMANCE_RUN=" + marker + " from the shared ConfigMap's defaultConfig.proxyMetadata",
			Confirm:  "kubectl get cm -n aks-istio-system " + addon.SharedMeshConfigMap(rev) + " -o yaml; kubectl get deploy -n aks-istio-system " + addon.Istiod(rev) + " -o yaml | grep -A1 SHARED_MESH_CONFIG",
			Shows:    "CONFORMANCE_RUN: " + regexp.QuoteMeta(marker) + `[\s\S]*SHARED_MESH_CONFIG[\s\S]*` + regexp.QuoteMeta(addon.SharedMeshConfigMap(rev)),
			Fix:      "name the ConfigMap after a running revision (istio-shared-configmap-<rev>), key `mesh`, and restart the workloads"}
		var got evidence.Injection
		// istiod watches the ConfigMap; each dry-run admission shows what a restart would inject now.
		Eventually(func(g Gomega) {
			pod, err := world.AdmitPod(ctx, ns, scenario.App{Name: "app"})
			g.Expect(err).NotTo(HaveOccurred())
			got = evidence.InjectionOf(pod)
			g.Expect(evidence.ProxyEnv(pod, "CONFORMANCE_RUN")).To(Equal(marker), step.Explain(got))
		}).WithContext(ctx).WithTimeout(world.Timeout).WithPolling(world.Poll).Should(Succeed())
		record(got)
	})
})
