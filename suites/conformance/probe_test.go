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

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aks-istio-conformance/conformance/harness/cluster"
	"github.com/aks-istio-conformance/conformance/harness/evidence"
	"github.com/aks-istio-conformance/conformance/harness/runbook"
	"github.com/aks-istio-conformance/conformance/harness/traffic"
)

// The dataplane specs' shared steps: a probe client, access logging for the pods whose
// istio-proxy log gives a request's response flag, and the judgement of a probe's outcome
// beside the served-config verdict for the same fact. They run only where pods really run
// (requireDataPlane).

// probe is a client pod whose app container sends a spec's requests.
type probe struct {
	workload // proxy is nil when the client is not injected
	prober   *traffic.Prober
}

// probeClient runs the probe client (traffic.ClientDeployment: it passes Deployment
// Safeguards and its readiness probe proves curl runs) in ns and returns it once its pod is
// Ready, so that its sidecar, when injected, already holds its configuration. The client's
// own istio-proxy log is the observer unless a spec says otherwise (observe).
func probeClient(ctx context.Context, ns, name string) probe {
	GinkgoHelper()
	img, err := traffic.ClientImageFromEnv()
	Expect(err).NotTo(HaveOccurred())
	world.Create(ctx, traffic.ClientDeployment(ns, name, img))
	pod := readyPod(ctx, ns, name)
	c, err := traffic.NewClient(pod, traffic.AppContainer)
	Expect(err).NotTo(HaveOccurred())
	w := workload{ns: ns, pod: pod}
	if evidence.InjectionOf(pod).Injected {
		w.proxy = world.Proxy(ctx, pod)
	}
	return probe{workload: w, prober: traffic.NewProber(world.Cluster, c)}
}

// observe makes the server's istio-proxy log the one the probe reads flags from: for
// decisions the server's sidecar takes (RBAC).
func (p probe) observe(server workload) {
	p.prober.Observer = traffic.Observer{Namespace: server.ns, Pod: server.pod.Name}
}

// readyPod waits until the Deployment's current pod is Ready (its sidecar's readiness
// included) and returns it: requests sent before would measure start-up, not the mesh.
func readyPod(ctx context.Context, ns, deployment string) *corev1.Pod {
	GinkgoHelper()
	pod := world.CurrentPod(ctx, ns, deployment)
	Eventually(func(g Gomega) {
		g.Expect(world.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
		g.Expect(cluster.Ready(pod)).To(BeTrue(), "pod %s/%s is not Ready: phase %s, containers %s", ns, pod.Name, pod.Status.Phase, containerStates(pod))
	}).WithContext(ctx).WithTimeout(max(world.Timeout, podStartTimeout)).WithPolling(world.Poll).Should(Succeed())
	return pod
}

// podStartTimeout bounds a pod's start where it really runs: on a real cluster the node
// may pull the app's and the proxy's images first.
const podStartTimeout = 3 * time.Minute

// ready is w once its pod is Ready.
func ready(ctx context.Context, w workload) workload {
	GinkgoHelper()
	w.pod = readyPod(ctx, w.ns, w.pod.Labels["app"])
	return w
}

func containerStates(pod *corev1.Pod) string {
	var parts []string
	for _, s := range append(slices.Clone(pod.Status.InitContainerStatuses), pod.Status.ContainerStatuses...) {
		parts = append(parts, fmt.Sprintf("%s ready=%t restarts=%d", s.Name, s.Ready, s.RestartCount))
	}
	return strings.Join(parts, ", ")
}

// accessLogTelemetry turns on Envoy's file access log (the mesh's `envoy` provider, to
// /dev/stdout in Istio's default text format) for the workloads of one namespace.
func accessLogTelemetry(ns string) *unstructured.Unstructured {
	tel := &unstructured.Unstructured{}
	tel.SetAPIVersion("telemetry.istio.io/v1")
	tel.SetKind("Telemetry")
	tel.SetNamespace(ns)
	tel.SetName("access-logs")
	_ = unstructured.SetNestedSlice(tel.Object, []any{map[string]any{"providers": []any{map[string]any{"name": "envoy"}}}}, "spec", "accessLogging")
	return tel
}

// accessLogging turns on access logs in the namespaces of the observed workloads (a
// Telemetry resource each: nothing mesh-wide changes) and waits until istiod serves each
// of them a file access log, so that probes read flags rather than wait for lines that
// cannot come.
func accessLogging(ctx context.Context, observed ...workload) {
	GinkgoHelper()
	if slices.Contains(world.Profile.BlockedKinds, "Telemetry") {
		Skip("reads response flags from istio-proxy access logs, which this spec turns on with a Telemetry resource; revision " +
			world.Revision() + "'s profile says the add-on blocks Telemetry")
	}
	applied := time.Now()
	var done []string
	for _, w := range observed {
		if !slices.Contains(done, w.ns) {
			world.Create(ctx, accessLogTelemetry(w.ns))
			done = append(done, w.ns)
		}
	}
	for _, w := range observed {
		accessLogs(ctx, w, true, applied, runbook.Step{Ref: "seed §8: access logs for the traffic probe (Telemetry, provider envoy)",
			Expected: "the observed proxy's HTTP connection managers log to /dev/stdout",
			Fix:      "spec.accessLogging[].providers: envoy in a Telemetry resource of the namespace"})
	}
}

// serviceURL is the in-mesh URL of a workload's Service (named after its app).
func serviceURL(w workload, port int, path string) string {
	return fmt.Sprintf("http://%s:%d%s", serviceHost(w), port, path)
}

func serviceHost(w workload) string {
	return fmt.Sprintf("%s.%s.svc.cluster.local", w.pod.Labels["app"], w.ns)
}

// trafficEvidence is what a spec records of a probe: the outcome it converged on, every
// attempt, and the served-config verdict for the same fact, so that a report shows both
// and a disagreement names both.
type trafficEvidence struct {
	Request  string            `json:"request"`
	Outcome  string            `json:"outcome"`
	History  string            `json:"history"`
	Attempts []traffic.Attempt `json:"attempts"`
	Served   any               `json:"servedVerdict,omitempty"`
}

func (e trafficEvidence) String() string {
	s := fmt.Sprintf("traffic %s: %s", e.Request, e.History)
	if n := len(e.Attempts); n > 0 && e.Attempts[n-1].Note != "" {
		s += " (last attempt: " + e.Attempts[n-1].Note + ")"
	}
	if e.Served != nil {
		s += fmt.Sprintf("; served config: %v", e.Served)
	}
	return s
}

// expectTraffic sends req from c until it ends as want three times in a row (the prober's
// convergence: configuration that is still propagating is retried, never slept on), and
// records the attempts beside served, the served-config verdict awaited before. The spec
// fails when the traffic does not show what the served config decided.
func expectTraffic(ctx context.Context, c probe, req traffic.Request, want traffic.Outcome, served any, step runbook.Step) traffic.Result {
	GinkgoHelper()
	res, err := c.prober.Expect(ctx, req, want)
	return judgeTraffic(res, err, req, served, step)
}

// awaitTraffic is expectTraffic for facts more than one outcome shows (accept).
func awaitTraffic(ctx context.Context, c probe, req traffic.Request, what string, accept func(traffic.Outcome) bool, served any, step runbook.Step) traffic.Result {
	GinkgoHelper()
	res, err := c.prober.Await(ctx, req, what, accept)
	return judgeTraffic(res, err, req, served, step)
}

func judgeTraffic(res traffic.Result, err error, req traffic.Request, served any, step runbook.Step) traffic.Result {
	GinkgoHelper()
	described := req.URL
	if req.Host != "" {
		described += " (Host " + req.Host + ")"
	}
	ev := trafficEvidence{Request: described, Outcome: res.Outcome.String(), History: res.History(), Attempts: res.Attempts, Served: served}
	record(ev)
	Expect(err).NotTo(HaveOccurred(), step.Explain(ev))
	return res
}

// curlConfirm is a probe's request as a person sends it by hand: curl from the client's
// app container, printing the status and curl's exit code ("403 exit 0"; "000 exit 56"
// for a reset). It is a finished command: its % signs are escaped for runbook.Explain.
func curlConfirm(c probe, req traffic.Request) string {
	host := ""
	if req.Host != "" {
		host = ` -H "Host: ` + req.Host + `"`
	}
	// -s without -S: curl's error message would land between the status and the exit
	// code. No "; " inside: harness/confirm splits a line into commands there.
	cmd := fmt.Sprintf(`kubectl exec -n %s %s -c %s -- sh -c 'curl -s -o /dev/null -w "%%{http_code}"%s --max-time 5 "%s" && echo " exit 0" || echo " exit $?"'`,
		c.ns, c.pod.Name, traffic.AppContainer, host, req.URL)
	return strings.ReplaceAll(cmd, "%", "%%")
}

// proxyLogConfirm reads the last access-log lines of a pod's istio-proxy, where the
// probe's requests and their response flags are.
func proxyLogConfirm(w workload) string {
	return fmt.Sprintf("kubectl logs -n %s %s -c istio-proxy --tail=200", w.ns, w.pod.Name)
}

// trafficStep gives a step the commands that show a probe's fact by hand: the request
// from the client, then the observer's access log. The output shows the status curl saw
// and a logged line with the status and flag.
func trafficStep(step runbook.Step, c probe, req traffic.Request, observer workload, want traffic.Outcome) runbook.Step {
	step.Confirm, step.Lacks = curlConfirm(c, req)+"; "+proxyLogConfirm(observer), ""
	step.Shows = fmt.Sprintf(`(?m)^%03d exit 0$(?s:.*)" %d %s `, want.Code, want.Code, regexp.QuoteMeta(want.Flag))
	return step
}
