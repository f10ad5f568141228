package main

import (
	"strings"
	"testing"

	"github.com/aks-istio-conformance/conformance/harness/report"
	"github.com/aks-istio-conformance/conformance/harness/target"
)

func summary(tgt string, dataPlane bool, specs ...report.Spec) report.Summary {
	return report.Summary{Run: report.Run{Target: tgt, Capabilities: target.Capabilities{DataPlane: dataPlane}}, Specs: specs}
}

func TestAgreement(t *testing.T) {
	a := summary("local", false,
		report.Spec{Family: "f", Name: "same", State: "passed"},
		report.Spec{Family: "f", Name: "ops", State: "passed"},
	)
	b := summary("aks", false,
		report.Spec{Family: "f", Name: "same", State: "passed"},
		report.Spec{Family: "f", Name: "ops", State: "skipped", Failure: "performs an add-on operation"},
	)
	problems, agreed, skipped := agreement(a, b)
	if len(problems) != 0 || agreed != 1 || len(skipped) != 1 || !strings.Contains(skipped[0], "add-on operation") {
		t.Fatalf("problems %v, agreed %d, skipped %v", problems, agreed, skipped)
	}
	b.Specs[0].State, b.Specs[0].Failure = "failed", "expected X"
	if problems, _, _ := agreement(a, b); len(problems) != 2 {
		t.Errorf("a spec passed on one and failed on the other: %v, want the failure and the disagreement", problems)
	}
	b.Specs[0] = report.Spec{Family: "f", Name: "same", State: "passed", Labels: []string{"dataplane"}}
	if problems, _, _ := agreement(a, b); len(problems) != 1 || !strings.Contains(problems[0], "without a data plane") {
		t.Errorf("a dataplane spec passed without a data plane: %v", problems)
	}
	b.Specs = b.Specs[1:]
	if problems, _, _ := agreement(a, b); len(problems) != 1 || !strings.Contains(problems[0], "did not run") {
		t.Errorf("a spec missing on one side: %v", problems)
	}
}
