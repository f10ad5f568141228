package report

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onsi/ginkgo/v2/types"

	"github.com/aks-istio-conformance/conformance/harness/confirm"
	"github.com/aks-istio-conformance/conformance/harness/runbook"
)

func entry(name string, v any) types.ReportEntry {
	return types.ReportEntry{Name: name, Value: types.WrapEntryValue(v)}
}

func TestSummarizeCountsSpecsAndCollectsEvidence(t *testing.T) {
	r := types.Report{SuiteDescription: "s", RunTime: 3 * time.Second, SpecReports: types.SpecReports{
		{LeafNodeType: types.NodeTypeIt, LeafNodeText: "injects", ContainerHierarchyTexts: []string{"Sidecar injection"},
			State: types.SpecStatePassed, RunTime: time.Second,
			ReportEntries: types.ReportEntries{entry(EvidenceEntry, map[string]string{"pod": "p"}), entry(PropagationEntry, 0.1), entry(PropagationEntry, 0.3)}},
		{LeafNodeType: types.NodeTypeIt, LeafNodeText: "rejects", ContainerHierarchyTexts: []string{"Security"},
			State: types.SpecStateFailed, Failure: types.Failure{Message: "expected: x"}},
		{LeafNodeType: types.NodeTypeIt, LeafNodeText: "traffic", ContainerHierarchyTexts: []string{"Security"},
			State: types.SpecStateSkipped, Failure: types.Failure{Message: "needs a data plane"}},
		{LeafNodeType: types.NodeTypeIt, LeafNodeText: "filtered", State: types.SpecStateSkipped},
		{LeafNodeType: types.NodeTypeBeforeSuite, State: types.SpecStatePassed},
	}}
	s := Summarize(r, Run{ID: "asmc-x", Target: "local"})
	if n := s.Totals.States; n["passed"] != 1 || n["failed"] != 1 || n["skipped"] != 1 || n["not selected"] != 1 || len(s.Specs) != 3 {
		t.Fatalf("totals %v, %d specs", s.Totals, len(s.Specs))
	}
	if len(s.Specs[0].Evidence) != 1 || !strings.Contains(string(s.Specs[0].Evidence[0]), `"pod":"p"`) {
		t.Errorf("evidence %s", s.Specs[0].Evidence)
	}
	if p := s.Propagation; p == nil || p.Count != 2 || len(p.Samples) != 2 || p.Max != 0.3 {
		t.Errorf("propagation %+v", p)
	}

	var out bytes.Buffer
	Console(&out, s)
	if !strings.Contains(out.String(), "\nconformance: 1 passed, 1 failed, 1 skipped\n") || !strings.Contains(out.String(), "skipped: needs a data plane") {
		t.Errorf("console summary:\n%s", out.String())
	}

	dir := t.TempDir()
	if err := Write(dir, r, s); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Summary
	if err := json.Unmarshal(data, &back); err != nil || back.Run.ID != "asmc-x" {
		t.Errorf("summary.json round trip: %v %+v", err, back.Run)
	}
	if _, err := os.Stat(filepath.Join(dir, "junit.xml")); err != nil {
		t.Errorf("no junit.xml: %v", err)
	}
}

func TestSummarizeKeepsTheConfirmCommandsAndCountsThem(t *testing.T) {
	ran := []confirm.Result{
		{Filled: runbook.Filled{Ref: "row 10", Command: "istioctl proxy-status --revision asm-1-29 --verbosity 1"}, Verdict: confirm.Passed, Output: "SYNCED"},
		{Filled: runbook.Filled{Ref: "row 8", Command: "istioctl proxy-config listener -n a b"}, Verdict: confirm.NotRunnable, Reason: "`istioctl proxy-config listener -n a b` needs a running istio-proxy", Lacking: []string{"needs a running istio-proxy"}},
	}
	r := types.Report{SpecReports: types.SpecReports{
		{LeafNodeType: types.NodeTypeIt, LeafNodeText: "syncs", State: types.SpecStatePassed, ReportEntries: types.ReportEntries{entry(ConfirmEntry, ran)}},
		{LeafNodeType: types.NodeTypeIt, LeafNodeText: "other", State: types.SpecStatePassed, ReportEntries: types.ReportEntries{entry(ConfirmEntry, ran[:1])}},
	}}
	s := Summarize(r, Run{ID: "asmc-x", Target: "local"})
	if len(s.Specs[0].Confirm) != 2 || s.Specs[0].Confirm[0].Output != "SYNCED" || s.Specs[0].Confirm[1].Lacking[0] != "needs a running istio-proxy" {
		t.Errorf("spec's confirm results: %+v", s.Specs[0].Confirm)
	}
	if c := s.Confirm; c == nil || c.Verdicts[confirm.Passed] != 2 || c.Verdicts[confirm.NotRunnable] != 1 || c.NotRunnable["needs a running istio-proxy"] != 1 {
		t.Fatalf("totals %+v", s.Confirm)
	}
	var out bytes.Buffer
	Console(&out, s)
	if !strings.Contains(out.String(), "confirm commands: 2 ran (2 passed, 0 failed), 1 not runnable here\n  1 needs a running istio-proxy\n") {
		t.Errorf("console:\n%s", out.String())
	}
}
