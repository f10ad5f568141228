package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	meshconfig "istio.io/api/mesh/v1alpha1"
	networkingapi "istio.io/api/networking/v1"
	v3 "istio.io/istio/pilot/pkg/xds/v3"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/addon"
	"github.com/aks-istio-conformance/conformance/harness/doctor"
	"github.com/aks-istio-conformance/conformance/harness/kube"
	"github.com/aks-istio-conformance/conformance/harness/revtag"
	"github.com/aks-istio-conformance/conformance/harness/runbook"
	"github.com/aks-istio-conformance/conformance/harness/scenario"
	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// Issue #12: `asm-conformance doctor`, the read-only check of a cluster against the add-on's
// troubleshooting table. Each spec seeds faults (the rows' causes, as users make them) and
// runs the verb as a user would, through the cluster's kubeconfig alone, then compares its
// doctor.json with exactly what was seeded: a check that misses a fault or reports one that
// is not there fails. Namespaced faults are read through -namespaces (the run's label and a
// per-spec one), since other specs' namespaces exist at the same time; mesh-wide faults are
// compared with the doctor's findings before they were seeded.

// doctorLabel marks the namespaces of one doctor spec.
const doctorLabel = "aks-istio-conformance/doctor"

// doctorRun is one run of the verb.
type doctorRun struct {
	report doctor.Report
	code   int
	table  string
}

// runDoctor runs `asm-conformance doctor` against w's cluster with its kubeconfig and the
// given flags, and reads the doctor.json it wrote.
func runDoctor(ctx context.Context, w *scenario.World, flags ...string) doctorRun {
	GinkgoHelper()
	r, err := doctorOnce(ctx, w, flags...)
	Expect(err).NotTo(HaveOccurred())
	return r
}

// doctorOnce is runDoctor for use inside Eventually: a run that could not complete is an
// error, not a failed spec.
func doctorOnce(ctx context.Context, w *scenario.World, flags ...string) (doctorRun, error) {
	dir := GinkgoT().TempDir()
	var out, errs bytes.Buffer
	args := append([]string{"-kubeconfig", w.Target.KubeconfigPath(), "-report-dir", dir, "-sync-window", "3s"}, flags...)
	var r doctorRun
	r.code = doctor.Command(ctx, args, &out, &errs)
	r.table = out.String()
	if r.code != doctor.ExitOK && r.code != doctor.ExitFindings {
		return r, fmt.Errorf("asm-conformance doctor %s: exit %d: %s", strings.Join(args, " "), r.code, errs.String())
	}
	data, err := os.ReadFile(filepath.Join(dir, doctor.JSONFile))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(data, &r.report); err != nil {
		return r, fmt.Errorf("doctor.json: %w", err)
	}
	AddReportEntry("doctor "+strings.Join(flags, " "), r.table)
	return r, nil
}

// keys names findings "CODE first-object", sorted.
func (r doctorRun) keys(keep func(doctor.Finding) bool) []string {
	out := []string{}
	for _, f := range r.report.Findings {
		if keep == nil || keep(f) {
			out = append(out, f.Code+" "+f.Objects[0])
		}
	}
	slices.Sort(out)
	return out
}

func (r doctorRun) String() string { return r.table }

// meshWide reports whether a finding's check is mesh-wide (not filtered by -namespaces).
func meshWide(f doctor.Finding) bool {
	for _, c := range doctor.Checks() {
		if c.Code == f.Code {
			return c.Scope == doctor.MeshWide
		}
	}
	return false
}

// doctorNamespace creates a namespace of this spec's doctor scope.
func doctorNamespace(ctx context.Context, scope, purpose string, labels map[string]string) string {
	GinkgoHelper()
	all := map[string]string{doctorLabel: scope}
	for k, v := range labels {
		all[k] = v
	}
	return world.Namespace(ctx, purpose, all)
}

// doctorScope is a -namespaces selector for one spec's namespaces, and its label value.
func doctorScope(name string) (selector, value string) {
	value = world.RunID + "-" + name
	return fmt.Sprintf("%s=%s,%s=%s", kube.RunLabel, world.RunID, doctorLabel, value), value
}

// confirmDoctor runs the doctor from the repository (where confirm commands run). Its
// report goes beside the run's reports, not into the working directory.
func confirmDoctor() string {
	return "go run ./cmd/asm-conformance doctor -report-dir " + filepath.Join(runDir, "confirm-doctor")
}

// confirmRunnable runs each finding's confirm line through the suite's confirm runner
// (confirm_test.go) at once, against w's cluster, before the spec changes what they show:
// the doctor promises commands that run as printed on the add-on and show what it found
// (each finding's Shows and Lacks).
func confirmRunnable(ctx context.Context, w *scenario.World, findings []doctor.Finding) {
	GinkgoHelper()
	var filled []runbook.Filled
	for _, f := range findings {
		filled = append(filled, runbook.Filled{Ref: "doctor " + f.Code + " " + f.Objects[0], Command: f.Confirm, Shows: f.Shows, Lacks: f.Lacks})
	}
	confirmNow(ctx, w, filled...)
}

// patchEnv gives the app container of a Deployment an environment variable (a rollout).
func patchEnv(ctx context.Context, ns, deployment, name, value string) {
	GinkgoHelper()
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"app","env":[{"name":%q,"value":%q}]}]}}}}`, name, value)
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: deployment}}
	Expect(world.Client.Patch(ctx, d, client.RawPatch(types.StrategicMergePatchType, []byte(patch)))).To(Succeed())
}

var _ = Describe("Doctor", Label("doctor"), func() {
	It("reports exactly the faults seeded in its namespaces, each with a runnable confirm command (rows 1, 2, 4, 5, 7)", upstream, func(ctx SpecContext) {
		selector, scope := doctorScope("ns")
		rev := world.Revision()
		// Row 1 and the truth table.
		legacy := doctorNamespace(ctx, scope, "legacy", map[string]string{addon.LegacyInjectionLabel: "enabled"})
		both := doctorNamespace(ctx, scope, "both", map[string]string{addon.LegacyInjectionLabel: "enabled", addon.RevisionLabel: rev})
		gone := doctorNamespace(ctx, scope, "gone", map[string]string{addon.RevisionLabel: revisionBelowOldest(ctx)})
		// Row 2: a workload that ran before its namespace was labelled.
		late := doctorNamespace(ctx, scope, "late", nil)
		world.Deploy(ctx, late, scenario.App{Name: "web"})
		world.RunningPod(ctx, late, "web")
		world.LabelNamespace(ctx, late, map[string]string{addon.RevisionLabel: rev})
		// Rows 4 and 7: a STRICT server, called by a client outside the mesh (its
		// environment names the server) and possibly by an opted-out job beside it; its
		// proxy rejects the clusters istiod pushes.
		shop := doctorNamespace(ctx, scope, "shop", map[string]string{addon.RevisionLabel: rev})
		server := deployWorkload(ctx, shop, "server", httpPort)
		world.Create(ctx, peerAuthentication(shop, "default", strict, nil))
		world.Deploy(ctx, shop, scenario.App{Name: "batch", PodAnnotations: map[string]string{"sidecar.istio.io/inject": "false"}})
		world.RunningPod(ctx, shop, "batch")
		callers := doctorNamespace(ctx, scope, "callers", nil)
		world.Deploy(ctx, callers, scenario.App{Name: "client"})
		patchEnv(ctx, callers, "client", "SERVER_URL", fmt.Sprintf("http://server.%s:%d/", shop, httpPort))
		Expect(world.RunningPod(ctx, callers, "client").Spec.Containers[0].Env).NotTo(BeEmpty())
		server.proxy.Reject(v3.ClusterType, true)
		world.Service(ctx, shop, "push-trigger", "nobody", 7070) // a new Service: a cluster push to reject
		// istioctl shows the NACKed type as ERROR (a type never acknowledged as STALE).
		awaitSyncStatus(ctx, server, runbook.Step{Ref: "troubleshooting row 10", Shows: `(?m)^%[2]s\.%[1]s\s+\S+\s+(STALE|ERROR)\b`},
			func(s xds.ProxyStatus) bool { return s.Types["CDS"] == xds.Stale })
		// Row 5: injected clients told to send plaintext to it.
		front := doctorNamespace(ctx, scope, "front", map[string]string{addon.RevisionLabel: rev})
		world.Create(ctx, destinationRule(front, "to-server", fmt.Sprintf("server.%s.svc.cluster.local", shop), networkingapi.ClientTLSSettings_DISABLE))
		// A namespace without a fault.
		fine := doctorNamespace(ctx, scope, "fine", map[string]string{addon.RevisionLabel: rev})
		deployWorkload(ctx, fine, "api", httpPort)

		got := runDoctor(ctx, world, "-namespaces", selector)
		ours := []string{legacy, both, gone, late, shop, callers, front, fine}
		step := runbook.Step{Ref: "issue #12: asm-conformance doctor -namespaces " + selector,
			Expected: "exactly the seeded faults in the selected namespaces, none elsewhere, exit 79 (errors at the default threshold)",
			Confirm:  "KUBECONFIG=" + world.Target.KubeconfigPath() + " " + confirmDoctor() + " -namespaces " + selector,
			// go run exits 1 when the program exits non-zero, and says with which status.
			Exit: 1, Shows: inAnyOrder(`ASM0001 `, `ASM0010 `) + `(?s:.*)exit status 79`,
			Fix: "the check whose code is missing or extra (asm-conformance doctor -list) misreads the add-on's contract"}
		Expect(got.keys(func(f doctor.Finding) bool { return !meshWide(f) })).To(Equal(sorted(
			"ASM0001 Namespace "+legacy,
			"ASM0002 Namespace "+both,
			"ASM0003 Namespace "+gone,
			"ASM0005 Deployment "+late+"/web",
			"ASM0007 Service "+shop+"/server",
			"ASM0008 Service "+shop+"/server",
			"ASM0009 DestinationRule "+front+"/to-server",
			"ASM0010 Pod "+shop+"/"+server.pod.Name,
		)), step.Explain(got))
		for _, f := range got.report.Findings {
			Expect(meshWide(f) || slices.Contains(ours, f.Namespace)).To(BeTrue(), step.Explain(got))
		}
		Expect(got.code).To(Equal(doctor.ExitFindings), step.Explain(got))
		Expect(got.report.InScope).To(Equal(len(ours)), step.Explain(got))
		record(got.report)
		confirmRunnable(ctx, world, got.report.Findings)

		// The exit code follows the threshold and the suppressions: with every error
		// silenced (and the mesh-wide checks, which other specs' state decides), the
		// warnings fail only at -failure-threshold warning.
		var silence []string
		for _, c := range doctor.Checks() {
			if c.Scope == doctor.MeshWide || c.Level.String() == "Error" {
				silence = append(silence, c.Code+"=*")
			}
		}
		quiet := runDoctor(ctx, world, "-namespaces", selector, "-suppress", strings.Join(silence, ","))
		Expect(quiet.keys(nil)).To(Equal(sorted("ASM0005 Deployment "+late+"/web", "ASM0008 Service "+shop+"/server")), step.Explain(quiet))
		Expect(quiet.code).To(Equal(doctor.ExitOK), step.Explain(quiet))
		strictRun := runDoctor(ctx, world, "-namespaces", selector, "-suppress", strings.Join(silence, ","), "-failure-threshold", "warning")
		Expect(strictRun.code).To(Equal(doctor.ExitFindings), step.Explain(strictRun))
	})

	It("reports sidecars OOMKilled or restarted (row 14)", upstream, func(ctx SpecContext) {
		if world.Target.Capabilities().DataPlane {
			Skip("seeds the fault by writing pod status, which a real kubelet owns and corrects on target " + world.Target.Name())
		}
		selector, scope := doctorScope("health")
		ns := doctorNamespace(ctx, scope, "health", map[string]string{addon.RevisionLabel: world.Revision()})
		world.Deploy(ctx, ns, scenario.App{Name: "oom"})
		world.Deploy(ctx, ns, scenario.App{Name: "flaky"})
		oom, flaky := world.RunningPod(ctx, ns, "oom"), world.RunningPod(ctx, ns, "flaky")
		// What the kubelet records when istio-proxy is killed for memory, or exits.
		for pod, reason := range map[*corev1.Pod]string{oom: "OOMKilled", flaky: "Error"} {
			Eventually(func(g Gomega) {
				g.Expect(world.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
				setProxyTermination(pod, reason)
				g.Expect(world.Client.Status().Update(ctx, pod)).To(Succeed())
			}).WithContext(ctx).WithTimeout(world.Timeout).WithPolling(world.Poll).Should(Succeed())
		}
		got := runDoctor(ctx, world, "-namespaces", selector)
		step := runbook.Step{Ref: "troubleshooting row 14: sidecar memory and restarts", Expected: "ASM0018 for the OOMKilled sidecar, ASM0019 for the restarted one",
			Confirm: "kubectl get pod -n " + ns + " -o wide", Shows: inAnyOrder(`\b`+regexp.QuoteMeta(oom.Name)+`\b`, `\b`+regexp.QuoteMeta(flaky.Name)+`\b`), Fix: "the sidecar checks read istio-proxy's status, native sidecar or not"}
		Expect(got.keys(func(f doctor.Finding) bool { return !meshWide(f) })).To(Equal(sorted(
			"ASM0018 Pod "+ns+"/"+oom.Name, "ASM0019 Pod "+ns+"/"+flaky.Name)), step.Explain(got))
		confirmRunnable(ctx, world, got.report.Findings)
	})

	It("reports mesh-wide faults: a policy in istio-system, a shared ConfigMap no revision reads, no discoverySelectors (rows 3, 9, 14)", Label("mesh-wide"), upstream, func(ctx SpecContext) {
		requireMeshWideChanges()
		// Nothing namespaced is in scope: a selector no namespace carries.
		selector, _ := doctorScope("mesh-none")
		before := runDoctor(ctx, world, "-namespaces", selector, "-many-namespaces", "0")
		world.SharedNamespace(ctx, "istio-system")
		pa := peerAuthentication("istio-system", world.RunID+"-doctor", strict, nil)
		world.Create(ctx, pa)
		orphan := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: addon.RootNamespace, Name: addon.SharedMeshConfigMap(world.RunID + "-doctor")},
			Data: map[string]string{"mesh": "accessLogFile: /dev/stdout\n"}}
		world.Create(ctx, orphan)
		// Which row-9 code applies depends on whether a running revision has its own shared
		// ConfigMap (then the orphan is a leftover) or none does (then its settings apply nowhere).
		revisions, err := world.Target.Addon().Revisions(ctx)
		Expect(err).NotTo(HaveOccurred())
		orphanCode := "ASM0011"
		for _, r := range revisions {
			if err := world.Client.Get(ctx, client.ObjectKey{Namespace: addon.RootNamespace, Name: addon.SharedMeshConfigMap(r)}, &corev1.ConfigMap{}); err == nil {
				orphanCode = "ASM0012"
			}
		}
		seeded := []string{"ASM0006 PeerAuthentication istio-system/" + pa.Name, orphanCode + " ConfigMap " + addon.RootNamespace + "/" + orphan.Name}
		// With a threshold of one namespace, every revision without discoverySelectors (the
		// add-on's default mesh config sets none) is reported.
		for _, r := range revisions {
			if len(mergedMeshOf(ctx, r).GetDiscoverySelectors()) == 0 {
				seeded = append(seeded, "ASM0020 ConfigMap "+addon.RootNamespace+"/"+addon.SharedMeshConfigMap(r))
			}
		}
		after := runDoctor(ctx, world, "-namespaces", selector, "-many-namespaces", "1")
		step := runbook.Step{Ref: "troubleshooting rows 3, 9 and 14", Expected: "the findings before the faults were seeded, plus exactly the seeded ones",
			// At the spec's end the faults are fixed again: the commands show them gone.
			Confirm: "kubectl get peerauthentication -n istio-system; kubectl get cm -n aks-istio-system", Shows: `\b` + addon.ManagedMeshConfigMap(world.Revision()) + `\b`,
			Lacks: `\b(` + regexp.QuoteMeta(pa.Name) + `|` + regexp.QuoteMeta(orphan.Name) + `)\b`, Fix: "see the missing or extra code's check"}
		Expect(after.keys(nil)).To(Equal(sorted(append(before.keys(nil), seeded...)...)), step.Explain(after))
		confirmRunnable(ctx, world, after.report.Findings)

		// Fixed, they are gone again.
		Expect(world.Client.Delete(ctx, pa)).To(Succeed())
		Expect(world.Client.Delete(ctx, orphan)).To(Succeed())
		fixed := runDoctor(ctx, world, "-namespaces", selector, "-many-namespaces", "0")
		Expect(fixed.keys(nil)).To(Equal(before.keys(nil)), step.Explain(fixed))
	})

	It("reports a LoadBalancer gateway without an address until it has one (row 13)", emulated, func(ctx SpecContext) {
		requireAddonOperations()
		requireEmulatedAddon()
		// The emulated cluster has no load-balancer controller: the gateway's Service never
		// gets an address, exactly row 13's fault.
		Expect(world.Target.Addon().EnableIngressGateway(ctx, addon.Internal)).To(Succeed())
		key := client.ObjectKey{Namespace: addon.IngressNamespace, Name: addon.IngressGateway(addon.Internal)}
		selector, _ := doctorScope("gateway-none")
		finding := "ASM0017 Service " + key.Namespace + "/" + key.Name
		// An address of the VNet's range, as the provider would write it: status only,
		// nothing dials it.
		const lbAddress = "10.224.0.7"
		step := runbook.Step{Ref: "troubleshooting row 13", Expected: finding + " while the Service has no load-balancer address, and not after",
			Confirm: "kubectl get svc -n " + key.Namespace + " " + key.Name, Shows: `\b` + regexp.QuoteMeta(lbAddress) + `\b`, Fix: "the gateway check reads status.loadBalancer.ingress of the add-on's gateway Services"}
		without := runDoctor(ctx, world, "-namespaces", selector, "-many-namespaces", "0")
		Expect(without.keys(nil)).To(ContainElement(finding), step.Explain(without))
		Expect(without.code).To(Equal(doctor.ExitFindings), step.Explain(without))
		// What a cloud provider writes once the load balancer exists.
		setAddress := func(ctx context.Context, ip string) {
			Eventually(func(g Gomega) {
				var svc corev1.Service
				g.Expect(world.Client.Get(ctx, key, &svc)).To(Succeed())
				svc.Status.LoadBalancer.Ingress = nil
				if ip != "" {
					svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
				}
				g.Expect(world.Client.Status().Update(ctx, &svc)).To(Succeed())
			}).WithContext(ctx).WithTimeout(world.Timeout).WithPolling(world.Poll).Should(Succeed())
		}
		setAddress(ctx, lbAddress)
		DeferCleanup(func(ctx SpecContext) { setAddress(ctx, "") })
		with := runDoctor(ctx, world, "-namespaces", selector, "-many-namespaces", "0")
		Expect(with.keys(nil)).NotTo(ContainElement(finding), step.Explain(with))
		Expect(with.keys(nil)).To(Equal(without.keys(func(f doctor.Finding) bool { return f.Code+" "+f.Objects[0] != finding })), step.Explain(with))
	})
})

// An upgrade's troubleshooting (row 11) needs two revisions: it runs on a cluster of its own,
// which also shows the doctor silent on a cluster with nothing wrong. Tags are the user's:
// the add-on's upgrade leaves them where they point.
var _ = Describe("Doctor through a canary upgrade", Ordered, Label("doctor", "disruptive"), emulated, func() {
	const (
		mesh      = "accessLogFile: /dev/stdout\n"
		prod      = "prod"
		forgotten = "forgotten" // a tag nobody repoints before upgrade complete
	)
	var (
		lw             *scenario.World
		tagged, direct string
	)
	// settled runs the doctor until the pods a rollout replaced are gone (until then
	// they are still due a restart), and requires exactly want.
	settled := func(ctx context.Context, step runbook.Step, want ...string) doctorRun {
		GinkgoHelper()
		var got doctorRun
		Eventually(func(g Gomega) {
			var err error
			got, err = doctorOnce(ctx, lw)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got.keys(nil)).To(Equal(sorted(want...)), step.Explain(got))
		}).WithContext(ctx).WithTimeout(lw.Timeout).WithPolling(time.Second).Should(Succeed())
		return got
	}
	BeforeAll(func(ctx SpecContext) {
		lw = ownCluster(ctx, "doctor", lifecycleFrom)
		for _, tag := range []string{prod, forgotten} {
			Expect(revtag.Set(ctx, lw.Target.RESTConfig(), tag, lifecycleFrom)).To(Succeed())
		}
		tagged = lw.Namespace(ctx, "tagged", map[string]string{addon.RevisionLabel: prod})
		direct = lw.Namespace(ctx, "direct", map[string]string{addon.RevisionLabel: lifecycleFrom})
		for _, ns := range []string{tagged, direct} {
			lw.Deploy(ctx, ns, scenario.App{Name: "app", Ports: []int32{httpPort}})
			lw.RunningPod(ctx, ns, "app")
		}
		lw.SetSharedMeshConfig(ctx, lifecycleFrom, mesh)
	})

	It("finds nothing on a cluster whose workloads are labelled, injected and current", func(ctx SpecContext) {
		got := runDoctor(ctx, lw)
		step := runbook.Step{Ref: "issue #12: nothing on a clean cluster", Expected: "no finding, exit 0",
			Confirm: confirmDoctor() + " -kubeconfig " + lw.Target.KubeconfigPath(), Shows: `doctor: 0 error, 0 warning, 0 info\b.*: passed`,
			Fix: "the reported check fires on the add-on's documented normal state"}
		Expect(got.keys(nil)).To(BeEmpty(), step.Explain(got))
		Expect(got.code).To(Equal(doctor.ExitOK), step.Explain(got))
	})

	It("after upgrade start and the relabel, reports the sidecars due a restart and the uncopied shared ConfigMap (row 11)", func(ctx SpecContext) {
		Expect(lw.Target.Addon().UpgradeStart(ctx, lifecycleTo)).To(Succeed())
		Expect(revtag.Set(ctx, lw.Target.RESTConfig(), prod, lifecycleTo)).To(Succeed())
		lw.LabelNamespace(ctx, direct, map[string]string{addon.RevisionLabel: lifecycleTo})
		got := runDoctor(ctx, lw)
		step := runbook.Step{Ref: "troubleshooting row 11; seed §7 steps 1, 3 and 4",
			Expected: "ASM0014 for both workloads (sidecars of " + lifecycleFrom + ", namespaces now selecting " + lifecycleTo + ") and ASM0016 for the canary without a shared ConfigMap",
			Confirm:  confirmDoctor() + " -kubeconfig " + lw.Target.KubeconfigPath(), Exit: 1, Shows: inAnyOrder(`ASM0014 `, `ASM0016 `) + `(?s:.*)exit status 79`,
			Fix: "see the missing or extra code's check"}
		Expect(got.keys(nil)).To(Equal(sorted(
			"ASM0014 Deployment "+direct+"/app",
			"ASM0014 Deployment "+tagged+"/app",
			"ASM0016 Deployment "+addon.RootNamespace+"/"+addon.Istiod(lifecycleTo),
		)), step.Explain(got))
		Expect(got.code).To(Equal(doctor.ExitFindings), step.Explain(got))
		confirmRunnable(ctx, lw, got.report.Findings)
		// The fix below changes what the doctor finds: confirm the step's command now.
		confirmNow(ctx, lw, runbook.Recorded()...)

		// The fix the doctor prints for ASM0016, run as printed, is the copy the runbook asks
		// for (the command before its parenthesis).
		for _, f := range got.report.Findings {
			if f.Code != "ASM0016" {
				continue
			}
			copyCmd, _, _ := strings.Cut(f.Fix, " (")
			sh := exec.CommandContext(ctx, "sh", "-c", copyCmd)
			sh.Env = append(os.Environ(), "KUBECONFIG="+lw.Target.KubeconfigPath())
			out, err := sh.CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), "fix %q: %s", copyCmd, out)
			var copied corev1.ConfigMap
			Expect(lw.Client.Get(ctx, client.ObjectKey{Namespace: addon.RootNamespace, Name: addon.SharedMeshConfigMap(lifecycleTo)}, &copied)).To(Succeed())
			// The shell's $(...) drops the final newline; the YAML is the same.
			Expect(copied.Data).To(HaveKeyWithValue("mesh", strings.TrimSpace(mesh)), "the fix copies the key mesh")
		}
	})

	It("after upgrade complete, reports the sidecars left on the removed revision, the tag still pointing at it and its shared ConfigMap (rows 11 and 9)", func(ctx SpecContext) {
		lw.RolloutRestart(ctx, direct, "app")
		lw.RunningPod(ctx, direct, "app")
		Expect(lw.Target.Addon().UpgradeComplete(ctx)).To(Succeed())
		var hooks admissionregistrationv1.MutatingWebhookConfigurationList
		Expect(lw.Client.List(ctx, &hooks, client.MatchingLabels{"istio.io/tag": forgotten})).To(Succeed())
		Expect(hooks.Items).To(HaveLen(1), "the tag %s is the user's: the upgrade leaves its webhook", forgotten)
		step := runbook.Step{Ref: "troubleshooting rows 11 and 9; seed §7 step 5",
			Expected: "ASM0015 for the workload not restarted, ASM0004 for tag " + forgotten + ", ASM0012 for istio-shared-configmap-" + lifecycleFrom,
			Confirm:  confirmDoctor() + " -kubeconfig " + lw.Target.KubeconfigPath(), Exit: 1, Shows: inAnyOrder(`ASM0004 `, `ASM0012 `, `ASM0015 `) + `(?s:.*)exit status 79`,
			Fix: "see the missing or extra code's check"}
		got := settled(ctx, step,
			"ASM0004 MutatingWebhookConfiguration "+hooks.Items[0].Name,
			"ASM0012 ConfigMap "+addon.RootNamespace+"/"+addon.SharedMeshConfigMap(lifecycleFrom),
			"ASM0015 Deployment "+tagged+"/app",
		)
		confirmRunnable(ctx, lw, got.report.Findings)
	})

	It("after the last restart and removing what the upgrade left, finds nothing again", func(ctx SpecContext) {
		lw.RolloutRestart(ctx, tagged, "app")
		lw.RunningPod(ctx, tagged, "app")
		Expect(revtag.Remove(ctx, lw.Target.RESTConfig(), forgotten)).To(Succeed())
		Expect(lw.Client.Delete(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: addon.RootNamespace, Name: addon.SharedMeshConfigMap(lifecycleFrom)}})).To(Succeed())
		got := settled(ctx, runbook.Step{Ref: "issue #12: nothing on a clean cluster", Expected: "no finding"})
		Expect(got.code).To(Equal(doctor.ExitOK))
	})
})

// setProxyTermination records a terminated istio-proxy in a pod's status, as the kubelet
// does, adding the container's status if the fake node did not report it.
func setProxyTermination(pod *corev1.Pod, reason string) {
	term := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: reason, ExitCode: 137}}
	native := slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == "istio-proxy" })
	statuses := &pod.Status.ContainerStatuses
	if native {
		statuses = &pod.Status.InitContainerStatuses
	}
	for i := range *statuses {
		if (*statuses)[i].Name == "istio-proxy" {
			(*statuses)[i].RestartCount, (*statuses)[i].LastTerminationState = 1, term
			return
		}
	}
	*statuses = append(*statuses, corev1.ContainerStatus{Name: "istio-proxy", RestartCount: 1, LastTerminationState: term, Ready: true})
}

// mergedMeshOf reads a revision's merged mesh config from its istiod.
func mergedMeshOf(ctx context.Context, revision string) *meshconfig.MeshConfig {
	GinkgoHelper()
	mesh, err := xds.MergedMesh(ctx, world.Istiod(ctx, revision))
	Expect(err).NotTo(HaveOccurred())
	return mesh
}

// sorted is keys in order, never nil: "no finding" compares equal to an empty list.
func sorted(keys ...string) []string {
	out := append([]string{}, keys...)
	slices.Sort(out)
	return out
}
