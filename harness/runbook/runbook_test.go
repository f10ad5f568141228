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

func TestExplainRecordsEachStepsLatestCompleteConfirmCommand(t *testing.T) {
	Recorded()
	step := Step{Ref: "restart", Confirm: "kubectl get pod -n %s %s", Shows: `"revision":"%[3]s"`}
	step.Explain(seen("before"), "ns1", "old-pod", "asm-1-29")
	step.Explain(seen("after"), "ns1", "new-pod", "asm-1.29")
	step.Explain(seen("something else")) // no arguments: does not replace the complete one
	Step{Ref: "other", Confirm: "kubectl get ns"}.Explain(seen("x"))
	Step{Ref: "no command"}.Explain(seen("x"))
	got := Recorded()
	if len(got) != 2 {
		t.Fatalf("recorded %d commands, want 2: %+v", len(got), got)
	}
	if got[0].Command != "kubectl get pod -n ns1 new-pod" || got[0].Shows != `"revision":"asm-1\.29"` {
		t.Errorf("first: %+v", got[0])
	}
	if got[1].Command != "kubectl get ns" {
		t.Errorf("second: %+v", got[1])
	}
	if again := Recorded(); len(again) != 0 {
		t.Errorf("Recorded does not forget: %+v", again)
	}
}
