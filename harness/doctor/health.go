package doctor

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/aks-istio-conformance/conformance/harness/evidence"
)

// Sidecar health: troubleshooting row 14. A sidecar's memory grows with the configuration
// istiod serves it; one that is OOMKilled or restarting drops its pod's traffic meanwhile.

// proxyStatus is the istio-proxy container's status, native sidecar or not.
func proxyStatus(p *corev1.Pod) (corev1.ContainerStatus, bool) {
	for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
		if cs.Name == evidence.ProxyContainer {
			return cs, true
		}
	}
	return corev1.ContainerStatus{}, false
}

func oomKilled(cs corev1.ContainerStatus) bool {
	return (cs.LastTerminationState.Terminated != nil && cs.LastTerminationState.Terminated.Reason == "OOMKilled") ||
		(cs.State.Terminated != nil && cs.State.Terminated.Reason == "OOMKilled")
}

func confirmProxyStatus(p *corev1.Pod) string {
	return fmt.Sprintf("kubectl get pod -n %s %s -o jsonpath='{range .status.initContainerStatuses[*]}{.name} restarts={.restartCount} last={.lastState.terminated.reason}{\"\\n\"}{end}{range .status.containerStatuses[*]}{.name} restarts={.restartCount} last={.lastState.terminated.reason}{\"\\n\"}{end}'",
		p.Namespace, p.Name)
}

func sidecarOOMKilled(s *Snapshot) []Finding {
	var out []Finding
	for i := range s.Pods {
		p := &s.Pods[i]
		cs, ok := proxyStatus(p)
		if !live(p) || !ok || !oomKilled(cs) {
			continue
		}
		out = append(out, Finding{Namespace: p.Namespace, Objects: []string{Object("Pod", p.Namespace, p.Name)},
			Message: fmt.Sprintf("the istio-proxy of pod %s/%s was OOMKilled (%s so far): its memory limit is below what the configuration istiod serves it needs",
				p.Namespace, p.Name, plural(int(cs.RestartCount), "restart")),
			Confirm: confirmProxyStatus(p), Shows: `(?m)^istio-proxy restarts=\d+ last=OOMKilled$`,
			Fix: "shrink what the sidecar receives (a Sidecar egress list in its namespace, or discoverySelectors in the shared ConfigMap), or raise its limit with the pod annotation sidecar.istio.io/proxyMemoryLimit"})
	}
	return out
}

func sidecarRestarted(s *Snapshot) []Finding {
	var out []Finding
	for i := range s.Pods {
		p := &s.Pods[i]
		cs, ok := proxyStatus(p)
		if !live(p) || !ok || cs.RestartCount == 0 || oomKilled(cs) {
			continue
		}
		reason := "no termination reason recorded"
		if t := cs.LastTerminationState.Terminated; t != nil {
			reason = fmt.Sprintf("last exit: %s, code %d", t.Reason, t.ExitCode)
		}
		out = append(out, Finding{Namespace: p.Namespace, Objects: []string{Object("Pod", p.Namespace, p.Name)},
			Message: fmt.Sprintf("the istio-proxy of pod %s/%s restarted %s (%s): the pod's traffic fails while it does",
				p.Namespace, p.Name, plural(int(cs.RestartCount), "time"), reason),
			Confirm: confirmProxyStatus(p) + fmt.Sprintf("; kubectl logs -n %s %s -c istio-proxy --previous --tail=50", p.Namespace, p.Name),
			Shows:   `(?m)^istio-proxy restarts=[1-9]`,
			Fix:     "the previous istio-proxy log says why it exited (a failed readiness on xDS, a certificate error, memory)"})
	}
	return out
}
