package conformance

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/yaml"

	"github.com/aks-istio-conformance/conformance/harness/binaries"
	"github.com/aks-istio-conformance/conformance/harness/confirm"
	"github.com/aks-istio-conformance/conformance/harness/profile"
	"github.com/aks-istio-conformance/conformance/harness/report"
	"github.com/aks-istio-conformance/conformance/harness/runbook"
	"github.com/aks-istio-conformance/conformance/harness/scenario"
	"github.com/aks-istio-conformance/conformance/harness/target"
)

// confirmEnv is where the specs' confirm commands run (-run-confirm); nil when they do not.
var confirmEnv *confirm.Env

// newConfirmEnv puts the clients that match the cluster first on PATH: the revision's
// istioctl and the Kubernetes toolchain's kubectl from the binaries cache, where they are
// built; otherwise whatever the user's PATH has.
func newConfirmEnv(t target.Target, p profile.Profile) *confirm.Env {
	env := &confirm.Env{Kubeconfig: t.KubeconfigPath(), Timeout: 2 * time.Minute,
		DataPlane: t.Capabilities().DataPlane, Azure: t.Capabilities().AddonOperations && !t.Capabilities().EmulatedAddon}
	for _, tool := range []struct{ toolchain, name string }{{p.Istio.Toolchain, binaries.Istioctl}, {binaries.Kubernetes, binaries.Kubectl}} {
		if path, err := binaries.Path(tool.toolchain, tool.name); err == nil {
			env.Tools = append(env.Tools, filepath.Dir(path))
		} else if _, lookErr := exec.LookPath(tool.name); lookErr != nil {
			GinkgoWriter.Printf("confirm commands: no %s (%v; none on PATH either): commands using it will fail\n", tool.name, err)
		}
	}
	// The repository root: doctor confirm lines are `go run ./cmd/asm-conformance ...`.
	if wd, err := os.Getwd(); err == nil {
		env.Dir = filepath.Join(wd, "..", "..")
	}
	return env
}

// At the end of each spec, before its cleanup (DeferCleanup runs after every AfterEach),
// the confirm commands its steps printed run against the target as printed: a command
// that does not work fails the spec, with the command and its output in the failure.
var _ = JustAfterEach(func(ctx SpecContext) {
	filled := runbook.Recorded()
	spec := CurrentSpecReport()
	if confirmEnv == nil || len(filled) == 0 || spec.State.Is(types.SpecStateSkipped) {
		return
	}
	runConfirm(ctx, confirmKubeconfig, !spec.Failed(), filled...)
}, NodeTimeout(10*time.Minute))

// confirmKubeconfig is the cluster the spec's confirm commands run against when it is not
// the run's target: the cluster of their own that lifecycle runbooks bring up (ownCluster).
var confirmKubeconfig string

// confirmOn makes the confirm commands of the specs that follow (an Ordered container's)
// run against w's cluster, until the container ends.
func confirmOn(w *scenario.World) {
	confirmKubeconfig = w.Target.KubeconfigPath()
	DeferCleanup(func() { confirmKubeconfig = "" })
}

// confirmNow runs confirm commands at once against w's cluster, for facts the spec changes
// again before it ends (a doctor finding it then fixes).
func confirmNow(ctx context.Context, w *scenario.World, filled ...runbook.Filled) {
	GinkgoHelper()
	if confirmEnv == nil || CurrentSpecReport().Failed() {
		return
	}
	runConfirm(ctx, w.Target.KubeconfigPath(), true, filled...)
}

// runConfirm runs filled against the cluster of kubeconfig ("" for the run's target),
// records the results in the report and, when judge is set, fails the spec on a command
// that does not work as printed, with the command and its output.
func runConfirm(ctx context.Context, kubeconfig string, judge bool, filled ...runbook.Filled) {
	GinkgoHelper()
	env := *confirmEnv
	if kubeconfig != "" {
		env.Kubeconfig = kubeconfig
	}
	results := make([]confirm.Result, 0, len(filled))
	for _, f := range filled {
		results = append(results, env.Run(ctx, f))
	}
	AddReportEntry(report.ConfirmEntry, results, types.ReportEntryVisibilityNever)
	if msg := confirm.Failures(results); judge && msg != "" {
		Fail("a confirm command this spec prints does not work as printed:" + msg)
	}
}

// The confirm commands several families print, and what they show.

// confirmInjection prints a pod's sidecar status annotation (which revision injected it),
// then its init containers and containers.
const confirmInjection = "kubectl get pod -n %s %s -o jsonpath='{.metadata.annotations.sidecar\\.istio\\.io/status}{\"\\n\"}{.spec.initContainers[*].name} {.spec.containers[*].name}'"

// confirmAdmission prints what admission injects into a new pod in a namespace now: a
// server-side dry run goes through istiod's webhook and creates nothing.
const confirmAdmission = "kubectl run confirm-admission -n %s --image=registry.k8s.io/pause:3.10 --restart=Never --dry-run=server -o jsonpath='{.metadata.annotations.sidecar\\.istio\\.io/status}{\"\\n\"}{.spec.initContainers[*].name} {.spec.containers[*].name}'"

// injectedBy says what confirmInjection and confirmAdmission print for a pod rev injected:
// the status annotation names rev, and istio-proxy is among the containers.
func injectedBy(step runbook.Step, rev string) runbook.Step {
	step.Shows, step.Lacks = `"revision":"`+regexp.QuoteMeta(rev)+`"[^\n]*\n.*\bistio-proxy\b`, ""
	return step
}

// redirectedBy adds, to injectedBy, the init container that sets up traffic redirection
// (istio-init, or istio-validation under CNI chaining): the second line lists the init
// containers first, so it comes before istio-proxy (native or not).
func redirectedBy(step runbook.Step, rev, container string) runbook.Step {
	step.Shows, step.Lacks = `"revision":"`+regexp.QuoteMeta(rev)+`"[^\n]*\n.*\b`+regexp.QuoteMeta(container)+`\b.*\bistio-proxy\b`, ""
	return step
}

// notInjected says what they print for a pod without a sidecar: its containers, none of
// them istio-proxy.
func notInjected(step runbook.Step) runbook.Step {
	step.Shows, step.Lacks = `\b(app|confirm-admission)\b`, `istio-proxy`
	return step
}

// admitted confirms what a dry-run admission returned: the pod it shows does not exist, so
// the command is confirmAdmission (placeholders: namespace).
func admitted(step runbook.Step) runbook.Step {
	step.Confirm = confirmAdmission
	return step
}

// confirmRevisions lists the revisions a cluster runs: their istiod Deployments. (The
// seed's `az aks mesh get-revisions` lists the revisions a region offers, not the ones a
// cluster runs; `az aks show --query serviceMeshProfile.istio.revisions` does, with Azure
// access.)
const confirmRevisions = "kubectl get deploy -n aks-istio-system -L istio.io/rev"

// confirmSync is istioctl's sync status of a revision's istiod, with a column per xDS type.
// The add-on has no default revision, so istioctl needs --revision besides --istioNamespace
// to find istiod; and since istioctl 1.28 the default table lists the types a proxy
// subscribed to, not whether each is SYNCED: --verbosity 1 shows that.
func confirmSync(revision string) string {
	return "istioctl proxy-status --istioNamespace aks-istio-system --revision " + revision + " --verbosity 1"
}

// syncedShows is what confirmSync shows for a proxy in sync, given (namespace, pod) to
// Explain: its line, with CDS (the first type column, after the cluster) SYNCED.
const syncedShows = `(?m)^%[2]s\.%[1]s\s+\S+\s+SYNCED\b`

// inAnyOrder is a regular expression matching text that contains every one of parts, in
// whatever order (a report sorts its lines by its own rules). RE2 has no lookahead, so
// it lists the orders: fine for the few parts a confirm command shows.
func inAnyOrder(parts ...string) string {
	var orders []string
	var permute func(done, rest []string)
	permute = func(done, rest []string) {
		if len(rest) == 0 {
			orders = append(orders, strings.Join(done, "(?s:.*)"))
			return
		}
		for i := range rest {
			others := append(slices.Clone(rest[:i]), rest[i+1:]...)
			permute(append(slices.Clone(done), rest[i]), others)
		}
	}
	permute(nil, parts)
	return "(?:" + strings.Join(orders, "|") + ")"
}

// manifestFile writes an object a spec submitted (a YAML document, or an object) to the
// run's report directory and returns its path, so that the spec's confirm command can
// submit the same object with `kubectl ... -f <path>`, during the run and after it.
func manifestFile(name string, obj any) string {
	GinkgoHelper()
	var data []byte
	switch o := obj.(type) {
	case string:
		data = []byte(o)
	default:
		var err error
		data, err = yaml.Marshal(o)
		Expect(err).NotTo(HaveOccurred())
	}
	dir := filepath.Join(runDir, "confirm-manifests")
	Expect(os.MkdirAll(dir, 0o755)).To(Succeed())
	path := filepath.Join(dir, name+".yaml")
	Expect(os.WriteFile(path, data, 0o644)).To(Succeed())
	return path
}

// namedDoc gives a YAML document without metadata the name kubectl needs (the API accepts
// generateName; `kubectl apply` does not).
func namedDoc(doc, name string) string {
	GinkgoHelper()
	var obj map[string]any
	Expect(yaml.Unmarshal([]byte(doc), &obj)).To(Succeed())
	obj["metadata"] = map[string]any{"name": name}
	data, err := yaml.Marshal(obj)
	Expect(err).NotTo(HaveOccurred())
	return string(data)
}
