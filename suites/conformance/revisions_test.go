package conformance

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/addon/emulator"
	"github.com/aks-istio-conformance/conformance/harness/evidence"
	"github.com/aks-istio-conformance/conformance/harness/profile"
	"github.com/aks-istio-conformance/conformance/harness/runbook"
	"github.com/aks-istio-conformance/conformance/harness/scenario"
)

// Sources: AKS release notes 2026-06-19 and 2026-07-17 (asm-1-30's new defaults), AKS docs
// istio-upgrade (n+1 or n+2), istio-cni (CNI chaining is the default for NEW installations
// from asm-1-30; an upgraded mesh keeps its mechanism), istio-native-sidecar (asm-1-29 and
// later, installs and upgrades), istio-deploy-ingress and istio-deploy-egress (gateway node
// affinity weights, reversed at asm-1-30). The facts per revision are in fixtures/profiles.
// Every verdict here is the emulation's (source `emulated`): which mechanism and sidecar
// shape a revision's render gets, the gateway objects it writes, its lifecycle operations.

const (
	// The n+2 upgrade across asm-1-30 between revisions that build here.
	acrossFrom = "asm-1-29"
	acrossTo   = "asm-1-31"
	// A new installation at a revision past asm-1-30 that builds here.
	freshRevision = "asm-1-31"
)

// Before anything is brought up: a deprecated, end-of-life or unreleased revision is
// announced on the console, and on a target that emulates the add-on (it renders and runs
// Istio built here) a revision without a build is refused in one line, before a cluster is
// started for it. Several ReportBeforeSuite nodes may exist; a failure here skips the suite.
var _ = ReportBeforeSuite(func(Report) {
	revisions := strings.Split(*revisionsFlag, ",")
	for _, line := range profile.SupportWarnings(revisions, time.Now()) {
		fmt.Fprintln(os.Stdout, line)
	}
	if *targetFlag == "local" || *targetFlag == "kind" {
		if err := profile.CheckLocalBuilds(revisions); err != nil {
			Fail(fmt.Sprintf("flag --revisions (ASM_REVISIONS) %s on target %s: %v", *revisionsFlag, *targetFlag, err))
		}
	}
})

// gatewayWeights reads the preferred node-affinity weights of a gateway Deployment, keyed
// "label=value"; ok is false when the Deployment does not exist.
func gatewayWeights(ctx context.Context, w *scenario.World, deployment string) (weights map[string]int32, ok bool) {
	GinkgoHelper()
	var d appsv1.Deployment
	err := w.Client.Get(ctx, client.ObjectKey{Namespace: addon.IngressNamespace, Name: deployment}, &d)
	Expect(client.IgnoreNotFound(err)).To(Succeed())
	if err != nil {
		return nil, false
	}
	weights = map[string]int32{}
	if a := d.Spec.Template.Spec.Affinity; a != nil && a.NodeAffinity != nil {
		for _, term := range a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			for _, e := range term.Preference.MatchExpressions {
				weights[e.Key+"="+strings.Join(e.Values, ",")] = term.Weight
			}
		}
	}
	return weights, true
}

// documentedWeights are the weights a revision's gateway pods carry, per its profile.
func documentedWeights(revision string) map[string]int32 {
	GinkgoHelper()
	p, err := profile.Load(revision)
	Expect(err).NotTo(HaveOccurred())
	return map[string]int32{
		profile.ReplicaPreferredLabel + "=true": p.GatewayNodeAffinity.ReplicaPreferred,
		profile.SystemNodeLabel + "=system":     p.GatewayNodeAffinity.SystemNodes,
	}
}

func weightsStep(revision string) runbook.Step {
	w := documentedWeights(revision)
	// The jsonpath prints the preferred terms as JSON, each key before its term's weight.
	term := func(label string) string {
		return regexp.QuoteMeta(`"`+strings.ReplaceAll(label, "=", `","operator":"In","values":["`)+`"]`) + `[^{]*"weight":` + fmt.Sprint(w[label]) + `\b`
	}
	a, b := term(profile.ReplicaPreferredLabel+"=true"), term(profile.SystemNodeLabel+"=system")
	return runbook.Step{Shows: inAnyOrder(a, b), Ref: "AKS istio-deploy-ingress / istio-deploy-egress: gateway node affinity; release notes 2026-06-19",
		Confirm: "kubectl get deploy -n aks-istio-ingress %s -o jsonpath='{.spec.template.spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution}'",
		Expected: fmt.Sprintf("%s gateway pods prefer %s=true nodes with weight %d and AKS system nodes (%s=system) with weight %d",
			revision, profile.ReplicaPreferredLabel, w[profile.ReplicaPreferredLabel+"=true"], profile.SystemNodeLabel, w[profile.SystemNodeLabel+"=system"]),
		Fix: "the weights are the revision's own: from asm-1-30 100 for istio.replica.preferred nodes and 50 for system nodes, the reverse before"}
}

// expectGatewayWeights asserts that a revision's ingress gateway Deployment carries that
// revision's documented weights.
func expectGatewayWeights(ctx context.Context, w *scenario.World, revision string) {
	GinkgoHelper()
	d := addon.GatewayDeployment(addon.IngressGateway(addon.External), revision)
	got, ok := gatewayWeights(ctx, w, d)
	record(map[string]any{d: got})
	step := weightsStep(revision)
	Expect(ok).To(BeTrue(), step.Explain(list{"no Deployment " + d}, d))
	Expect(got).To(Equal(documentedWeights(revision)), step.Explain(list{fmt.Sprint(got)}, d))
}

func cniDaemonSetExists(ctx context.Context, w *scenario.World) bool {
	GinkgoHelper()
	err := w.Client.Get(ctx, client.ObjectKey{Namespace: addon.RootNamespace, Name: emulator.CNIDaemonSet}, &appsv1.DaemonSet{})
	Expect(client.IgnoreNotFound(err)).To(Succeed())
	return err == nil
}

// nativeProxy is the istio-proxy init container of a natively injected pod, or nil.
func nativeProxy(pod *corev1.Pod) *corev1.Container {
	for i, c := range pod.Spec.InitContainers {
		if c.Name == evidence.ProxyContainer && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			return &pod.Spec.InitContainers[i]
		}
	}
	return nil
}

var _ = Describe("Revisions across asm-1-30: an asm-1-29 mesh upgraded to asm-1-31 (n+2), rolled back, then completed", Ordered, Label("lifecycle", "disruptive", "revisions", "cni"), emulated, func() {
	var (
		lw   *scenario.World
		apps string // labelled with the revision the workloads run on
	)
	BeforeAll(func(ctx SpecContext) {
		lw = ownCluster(ctx, "across-asm-1-30", acrossFrom)
		apps = lw.Namespace(ctx, "apps", map[string]string{addon.RevisionLabel: acrossFrom})
		Expect(lw.Target.Addon().EnableIngressGateway(ctx, addon.External)).To(Succeed())
		lw.Deploy(ctx, apps, scenario.App{Name: "app"})
	})

	It("asm-1-29 installs with init containers and runs istio-proxy as a native sidecar", func(ctx SpecContext) {
		pod := lw.RunningPod(ctx, apps, "app")
		got := evidence.InjectionOf(pod)
		record(got)
		step := runbook.Step{Ref: "AKS istio-cni (init containers are the default up to asm-1-29); istio-native-sidecar (asm-1-29 and later, AKS >= 1.33)",
			Confirm:  confirmInjection,
			Expected: "injected by " + acrossFrom + " with istio-init (NET_ADMIN, NET_RAW), istio-proxy an init container with restartPolicy Always, no " + emulator.CNIDaemonSet + " DaemonSet",
			Fix:      "fixtures/profiles/" + acrossFrom + ".yaml: proxyRedirection InitContainers, nativeSidecars true; on AKS, nodes and control plane must run 1.33 or later for native sidecars"}
		step = redirectedBy(step, acrossFrom, evidence.InitRedirection)
		Expect(got.Revision).To(Equal(acrossFrom), step.Explain(got, apps, pod.Name))
		Expect(got.Redirection).To(Equal(evidence.InitRedirection), step.Explain(got, apps, pod.Name))
		Expect(got.RedirectionCaps).To(ContainElements("NET_ADMIN", "NET_RAW"), step.Explain(got, apps, pod.Name))
		Expect(nativeProxy(pod)).NotTo(BeNil(), step.Explain(got, apps, pod.Name))
		Expect(cniDaemonSetExists(ctx, lw)).To(BeFalse(), step.Explain(list{"the CNI DaemonSet exists"}, apps, pod.Name))
	})

	It("asm-1-29's gateway pods prefer AKS system nodes (100) over istio.replica.preferred nodes (50)", func(ctx SpecContext) {
		expectGatewayWeights(ctx, lw, acrossFrom)
	})

	It("upgrade start to asm-1-31 (n+2) is allowed, and the canary keeps the cluster's init containers", func(ctx SpecContext) {
		err := lw.Target.Addon().UpgradeStart(ctx, acrossTo)
		step := runbook.Step{Ref: "AKS istio-upgrade: n+1 or n+2; istio-cni: the asm-1-30 CNI default applies only to new installations",
			Confirm:  "kubectl get deploy -n aks-istio-system",
			Shows:    `\b` + addon.Istiod(acrossFrom) + `\b[\s\S]*\b` + addon.Istiod(acrossTo) + `\b`,
			Expected: "revisions " + acrossFrom + " and " + acrossTo + "; a pod admitted by " + acrossTo + " gets istio-init and a native istio-proxy; no CNI DaemonSet",
			Fix:      "an upgrade keeps the proxy-redirection mechanism; switch with az aks mesh proxy-redirection-mechanism --mechanism CNIChaining"}
		Expect(err).NotTo(HaveOccurred(), step.Explain(list{fmt.Sprint(err)}))
		revs, err := lw.Target.Addon().Revisions(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(revs).To(Equal([]string{acrossFrom, acrossTo}), step.Explain(list{fmt.Sprint(revs)}))
		canary := lw.Namespace(ctx, "canary", map[string]string{addon.RevisionLabel: acrossTo})
		pod, err := lw.AdmitPod(ctx, canary, scenario.App{Name: "app"})
		Expect(err).NotTo(HaveOccurred())
		got := evidence.InjectionOf(pod)
		record(got)
		dryRun := redirectedBy(admitted(step), acrossTo, evidence.InitRedirection)
		Expect(got.Revision).To(Equal(acrossTo), dryRun.Explain(got, canary))
		Expect(got.Redirection).To(Equal(evidence.InitRedirection), dryRun.Explain(got, canary))
		Expect(nativeProxy(pod)).NotTo(BeNil(), dryRun.Explain(got, canary))
		Expect(cniDaemonSetExists(ctx, lw)).To(BeFalse(), dryRun.Explain(list{"the CNI DaemonSet exists"}, canary))
	})

	It("during the canary each revision's gateway Deployment carries its own revision's weights", func(ctx SpecContext) {
		Expect(documentedWeights(acrossFrom)).NotTo(Equal(documentedWeights(acrossTo)),
			"the profiles of %s and %s must differ in gateway weights for this upgrade to cross asm-1-30", acrossFrom, acrossTo)
		expectGatewayWeights(ctx, lw, acrossFrom)
		expectGatewayWeights(ctx, lw, acrossTo)
	})

	It("upgrade rollback removes asm-1-31 and its gateway Deployment; asm-1-29 keeps its weights and init containers", func(ctx SpecContext) {
		Expect(lw.Target.Addon().UpgradeRollback(ctx)).To(Succeed())
		revs, err := lw.Target.Addon().Revisions(ctx)
		Expect(err).NotTo(HaveOccurred())
		canaryGateway := addon.GatewayDeployment(addon.IngressGateway(addon.External), acrossTo)
		_, canaryLeft := gatewayWeights(ctx, lw, canaryGateway)
		state := list{fmt.Sprintf("revisions %v", revs), fmt.Sprintf("%s exists: %t", canaryGateway, canaryLeft)}
		record(state)
		step := runbook.Step{Ref: "AKS istio-upgrade: az aks mesh upgrade rollback", Confirm: confirmRevisions + "; kubectl get deploy -n aks-istio-ingress",
			Shows: `\b` + addon.Istiod(acrossFrom) + `\b`, Lacks: `\b(` + addon.Istiod(acrossTo) + `|` + canaryGateway + `)\b`,
			Expected: "only " + acrossFrom + " remains, without " + canaryGateway, Fix: "rollback removes the higher revision"}
		Expect(revs).To(Equal([]string{acrossFrom}), step.Explain(state))
		Expect(canaryLeft).To(BeFalse(), step.Explain(state))
		expectGatewayWeights(ctx, lw, acrossFrom)
		got := injectionNow(ctx, lw, apps)
		Expect([]string{got.Revision, got.Redirection}).To(Equal([]string{acrossFrom, evidence.InitRedirection}),
			redirectedBy(admitted(step), acrossFrom, evidence.InitRedirection).Explain(got, apps))
	})

	It("upgrading again and completing leaves asm-1-31 with the cluster's init containers and the new gateway weights", func(ctx SpecContext) {
		Expect(lw.Target.Addon().UpgradeStart(ctx, acrossTo)).To(Succeed())
		lw.LabelNamespace(ctx, apps, map[string]string{addon.RevisionLabel: acrossTo})
		lw.RolloutRestart(ctx, apps, "app")
		pod := lw.RunningPod(ctx, apps, "app")
		got := evidence.InjectionOf(pod)
		record(got)
		step := runbook.Step{Ref: "AKS istio-upgrade: relabel, restart, az aks mesh upgrade complete; istio-cni: upgraded meshes keep their mechanism",
			Confirm:  confirmInjection,
			Expected: "the restarted pod is injected by " + acrossTo + " with istio-init and a native istio-proxy; after complete only " + acrossTo + " runs, with no CNI DaemonSet",
			Fix:      "an upgraded mesh moves to CNI chaining only with az aks mesh proxy-redirection-mechanism --mechanism CNIChaining"}
		step = redirectedBy(step, acrossTo, evidence.InitRedirection)
		Expect(got.Revision).To(Equal(acrossTo), step.Explain(got, apps, pod.Name))
		Expect(got.Redirection).To(Equal(evidence.InitRedirection), step.Explain(got, apps, pod.Name))
		Expect(nativeProxy(pod)).NotTo(BeNil(), step.Explain(got, apps, pod.Name))
		Expect(lw.Target.Addon().UpgradeComplete(ctx)).To(Succeed())
		revs, err := lw.Target.Addon().Revisions(ctx)
		Expect(err).NotTo(HaveOccurred())
		oldGateway := addon.GatewayDeployment(addon.IngressGateway(addon.External), acrossFrom)
		_, oldLeft := gatewayWeights(ctx, lw, oldGateway)
		state := list{fmt.Sprintf("revisions %v", revs), fmt.Sprintf("%s exists: %t", oldGateway, oldLeft),
			fmt.Sprintf("CNI DaemonSet exists: %t", cniDaemonSetExists(ctx, lw))}
		record(state)
		Expect(state).To(Equal(list{fmt.Sprintf("revisions [%s]", acrossTo), oldGateway + " exists: false", "CNI DaemonSet exists: false"}), step.Explain(state))
		expectGatewayWeights(ctx, lw, acrossTo)
		now := injectionNow(ctx, lw, apps)
		Expect(now.Redirection).To(Equal(evidence.InitRedirection), redirectedBy(admitted(step), acrossTo, evidence.InitRedirection).Explain(now, apps))
	})
})

var _ = Describe("Revisions: a new installation at asm-1-31 gets CNI chaining, native sidecars and the new gateway weights", Ordered, Label("lifecycle", "revisions", "cni"), emulated, func() {
	var (
		fw   *scenario.World
		apps string
	)
	BeforeAll(func(ctx SpecContext) {
		fw = ownCluster(ctx, "new-"+freshRevision, freshRevision)
		apps = fw.Namespace(ctx, "apps", map[string]string{addon.RevisionLabel: freshRevision})
		Expect(fw.Target.Addon().EnableIngressGateway(ctx, addon.External)).To(Succeed())
	})

	It("injects istio-validation instead of istio-init and runs the CNI DaemonSet", func(ctx SpecContext) {
		fw.Deploy(ctx, apps, scenario.App{Name: "app"})
		pod := fw.RunningPod(ctx, apps, "app")
		got := evidence.InjectionOf(pod)
		record(got)
		step := runbook.Step{Ref: "AKS istio-cni: CNIChaining is the default for new installations from asm-1-30; release notes 2026-06-19",
			Confirm:  confirmInjection,
			Expected: "istio-validation (drops ALL, uid 1337, non-root, read-only root), no istio-init, DaemonSet " + emulator.CNIDaemonSet + " in aks-istio-system",
			Fix:      "fixtures/profiles/" + freshRevision + ".yaml: proxyRedirection CNIChaining (the new-installation default)"}
		step = redirectedBy(step, freshRevision, evidence.ValidationContainer)
		step.Lacks = regexp.QuoteMeta(evidence.InitRedirection)
		Expect(got.Revision).To(Equal(freshRevision), step.Explain(got, apps, pod.Name))
		Expect(got.Redirection).To(Equal(evidence.ValidationContainer), step.Explain(got, apps, pod.Name))
		Expect(got.InitContainers).NotTo(ContainElement(evidence.InitRedirection), step.Explain(got, apps, pod.Name))
		for _, c := range pod.Spec.InitContainers {
			if c.Name != evidence.ValidationContainer {
				continue
			}
			sc := c.SecurityContext
			Expect(sc).NotTo(BeNil(), step.Explain(got, apps, pod.Name))
			Expect(sc.Capabilities.Drop).To(ContainElement(corev1.Capability("ALL")), step.Explain(got, apps, pod.Name))
			Expect(sc.Capabilities.Add).To(BeEmpty(), step.Explain(got, apps, pod.Name))
			Expect(*sc.RunAsUser).To(BeEquivalentTo(1337), step.Explain(got, apps, pod.Name))
			Expect(*sc.RunAsNonRoot && *sc.ReadOnlyRootFilesystem).To(BeTrue(), step.Explain(got, apps, pod.Name))
		}
		Expect(cniDaemonSetExists(ctx, fw)).To(BeTrue(), runbook.Step{Ref: step.Ref, Expected: step.Expected, Fix: step.Fix,
			Confirm: "kubectl get daemonset -n aks-istio-system " + emulator.CNIDaemonSet, Shows: regexp.QuoteMeta(emulator.CNIDaemonSet)}.Explain(list{"no CNI DaemonSet"}))
	})

	It("runs istio-proxy as a native sidecar: an init container with restartPolicy Always", func(ctx SpecContext) {
		got, err := fw.AdmitPod(ctx, apps, scenario.App{Name: "app"})
		Expect(err).NotTo(HaveOccurred())
		in := evidence.InjectionOf(got)
		record(in)
		step := runbook.Step{Ref: "AKS istio-native-sidecar: asm-1-29 and later, on AKS 1.33 and later", Confirm: confirmInjection,
			Expected: "istio-proxy among the init containers with restartPolicy Always, not among the containers",
			Fix:      "ENABLE_NATIVE_SIDECARS=true on istiod-" + freshRevision + " (kubectl get deploy -n aks-istio-system istiod-" + freshRevision + " -o yaml)"}
		// The second line lists the init containers, then the containers: istio-proxy is
		// among the first, and the app's container comes after it.
		dryRun := injectedBy(admitted(step), freshRevision)
		dryRun.Shows += `.*\bconfirm-admission$`
		Expect(nativeProxy(got)).NotTo(BeNil(), dryRun.Explain(in, apps))
		Expect(in.Containers).NotTo(ContainElement(evidence.ProxyContainer), dryRun.Explain(in, apps))
	})

	It("its gateway pods prefer istio.replica.preferred nodes (100) over AKS system nodes (50)", func(ctx SpecContext) {
		expectGatewayWeights(ctx, fw, freshRevision)
	})
})
