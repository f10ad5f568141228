package runbook

import (
	"strings"
	"testing"
)

type seen string

func (s seen) String() string { return string(s) }

func TestExplainNamesEveryPartOfTheStep(t *testing.T) {
	step := Step{Ref: "truth table: istio-injection=enabled", Expected: "no sidecar",
		Confirm: "kubectl get pod -n %s %s", Fix: "label the namespace istio.io/rev=<rev>"}
	msg := step.Explain(seen("istio-proxy present"), "ns1", "pod1")()
	for _, want := range []string{"replays:  truth table", "expected: no sidecar", "observed: istio-proxy present",
		"confirm:  kubectl get pod -n ns1 pod1", "fix:      label the namespace"} {
		if !strings.Contains(msg, want) {
			t.Errorf("explanation lacks %q:\n%s", want, msg)
		}
	}
}

func TestExplainDropsArgumentsTheCommandDoesNotUse(t *testing.T) {
	msg := Step{Ref: "r", Expected: "e", Confirm: "kubectl get ns"}.Explain(seen("x"), "extra")()
	if !strings.Contains(msg, "confirm:  kubectl get ns\n") || strings.Contains(msg, "EXTRA") {
		t.Errorf("confirm line mangled:\n%s", msg)
	}
}

func TestExplainMarksArgumentsTheSpecDidNotGive(t *testing.T) {
	msg := Step{Confirm: "kubectl get pod -n %s %s"}.Explain(seen("x"), "ns1")()
	if !strings.Contains(msg, "kubectl get pod -n ns1 <name>") {
		t.Errorf("confirm line:\n%s", msg)
	}
}
