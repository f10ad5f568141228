package confirm

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aks-istio-conformance/conformance/harness/runbook"
)

func TestNeedOfNamesWhatACommandNeedsBesidesTheAPIServer(t *testing.T) {
	for cmd, want := range map[string]Need{
		"kubectl get pod -n a b -o yaml":                                       NeedsNothing,
		"istioctl proxy-status --istioNamespace aks-istio-system --revision x": NeedsNothing,
		"istioctl proxy-config listener -n a b --port 15006 -o json":           NeedsDataPlane,
		"istioctl x authz check -n a b":                                        NeedsDataPlane,
		"kubectl logs -n a b -c istio-proxy --tail=50":                         NeedsDataPlane,
		"az aks mesh get-revisions":                                            NeedsAzure,
		"kubectl get cm | grep x; az aks show -g rg -n c":                      NeedsAzure,
		"kubectl get --raw /api/v1/namespaces/n/pods/p:15014/proxy/metrics":    NeedsPodNetwork,
		"kubectl get --raw /api/v1/namespaces/n/pods/$(kubectl get pod -n n -l app=istiod -o jsonpath='{.items[0].metadata.name}'):15014/proxy/metrics | grep x": NeedsPodNetwork,
		"kubectl get cm -n kube-system azure-config": NeedsNothing,
	} {
		if got := NeedOf(cmd); got != want {
			t.Errorf("NeedOf(%q) = %q, want %q", cmd, got, want)
		}
	}
}

func run(t *testing.T, env Env, f runbook.Filled) Result {
	t.Helper()
	if env.Timeout == 0 {
		env.Timeout = 10 * time.Second
	}
	return env.Run(context.Background(), f)
}

func TestRunJudgesExitAndOutput(t *testing.T) {
	for _, c := range []struct {
		name    string
		f       runbook.Filled
		verdict string
		reason  string
	}{
		{"shows the fact", runbook.Filled{Command: "echo revision asm-1-29", Shows: `asm-1-29`}, Passed, ""},
		{"exits non-zero", runbook.Filled{Command: "echo x; exit 3", Shows: `x`}, Failed, "exited 3, not 0"},
		{"the first of two commands fails", runbook.Filled{Command: "false; echo x", Shows: `x`}, Failed, "exited 1"},
		{"a grep that finds it", runbook.Filled{Command: "printf 'a\\nb\\n' | grep b", Shows: `^b`}, Passed, ""},
		{"output without the fact", runbook.Filled{Command: "echo asm-1-28", Shows: `asm-1-29`}, Failed, "does not show the fact"},
		{"output with the opposite", runbook.Filled{Command: "echo app istio-proxy", Shows: `app`, Lacks: `istio-proxy`}, Failed, "shows the opposite"},
		{"nothing says what shows the fact", runbook.Filled{Ref: "r", Command: "true"}, Failed, "gives no Shows or Lacks"},
		{"a placeholder left", runbook.Filled{Command: "kubectl get pod -n <name>", Shows: "x"}, Failed, "cannot be run as printed: <name>"},
		{"an expected failure status", runbook.Filled{Command: "echo 'exit status 79'; exit 1", Exit: 1, Shows: `exit status 79`}, Passed, ""},
		{"a data-plane command", runbook.Filled{Command: "istioctl proxy-config route -n a b", Shows: "x"}, NotRunnable, "running istio-proxy"},
		{"an Azure command", runbook.Filled{Command: "az aks mesh get-upgrades", Shows: "x"}, NotRunnable, "Azure CLI"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, Env{}, c.f)
			if r.Verdict != c.verdict || !strings.Contains(r.Reason, c.reason) {
				t.Errorf("verdict %q, reason %q; want %q with %q", r.Verdict, r.Reason, c.verdict, c.reason)
			}
		})
	}
}

func TestRunRunsTheRunnablePartOfALineAndNamesTheRest(t *testing.T) {
	r := run(t, Env{}, runbook.Filled{Command: "echo synced; kubectl logs -n a b -c istio-proxy", Shows: `synced`})
	if r.Verdict != Passed || !strings.Contains(r.Reason, "kubectl logs -n a b -c istio-proxy") {
		t.Errorf("verdict %q, reason %q", r.Verdict, r.Reason)
	}
	r = run(t, Env{DataPlane: true}, runbook.Filled{Command: "echo synced; echo -c istio-proxy", Shows: `synced\n-c istio-proxy`})
	if r.Verdict != Passed || r.Reason != "" {
		t.Errorf("with a data plane: verdict %q, reason %q", r.Verdict, r.Reason)
	}
}

func TestRunReachesTheClusterThroughTheKubeconfigAndTools(t *testing.T) {
	dir := t.TempDir()
	r := run(t, Env{Kubeconfig: "/path/kubeconfig", Tools: []string{dir}, Dir: dir},
		runbook.Filled{Command: `echo "$KUBECONFIG"; echo "${PATH%%:*}"; pwd`, Shows: "^/path/kubeconfig\n" + dir + "\n" + dir})
	if r.Verdict != Passed {
		t.Errorf("verdict %q, reason %q, output %q", r.Verdict, r.Reason, r.Output)
	}
}

func TestRunStopsACommandThatHangs(t *testing.T) {
	start := time.Now()
	r := run(t, Env{Timeout: 300 * time.Millisecond}, runbook.Filled{Command: "sleep 30", Shows: "x"})
	if r.Verdict != Failed || !strings.Contains(r.Reason, "did not finish within 300ms") || time.Since(start) > 10*time.Second {
		t.Errorf("verdict %q, reason %q after %s", r.Verdict, r.Reason, time.Since(start))
	}
}

func TestFailuresShowCommandReasonAndOutput(t *testing.T) {
	msg := Failures([]Result{
		{Filled: runbook.Filled{Ref: "row 10", Command: "istioctl proxy-status"}, Verdict: Failed, Reason: "exited 1", Output: "Error: no running Istio pods"},
		{Filled: runbook.Filled{Command: "kubectl get ns"}, Verdict: Passed},
	})
	for _, want := range []string{"istioctl proxy-status", "row 10", "exited 1", "no running Istio pods"} {
		if !strings.Contains(msg, want) {
			t.Errorf("failure message lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "kubectl get ns") {
		t.Errorf("a passed command is listed:\n%s", msg)
	}
}
