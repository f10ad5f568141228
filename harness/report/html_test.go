package report

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"

	"github.com/aks-istio-conformance/conformance/harness/runbook"
	"github.com/aks-istio-conformance/conformance/harness/target"
	"github.com/aks-istio-conformance/conformance/harness/timing"
)

type observed string

func (o observed) String() string { return string(o) }

var strictStep = runbook.Step{Ref: "troubleshooting row 3: STRICT mTLS breaks un-injected callers",
	Expected: "a plaintext connection to port 8080 is rejected", Confirm: "istioctl proxy-config listener -n %s %s --port 15006",
	Fix: "inject the caller, or set PERMISSIVE on the server's namespace"}

// failureMessage is the message Gomega gives Ginkgo when an assertion carrying a runbook
// explanation fails: the page must find the runbook fields in real messages, not in ones
// written to fit the parser.
func failureMessage(t *testing.T, eventually bool) string {
	t.Helper()
	var msg string
	g := gomega.NewGomega(func(message string, _ ...int) { msg = message })
	explain := strictStep.Explain(observed("plaintext on port 8080 accepted by filter chain \"virtualInbound-catchall-http\""), "ns-a", "client-1")
	if eventually {
		g.Eventually(func() bool { return true }).WithTimeout(30*time.Millisecond).WithPolling(5*time.Millisecond).
			Should(gomega.BeFalse(), explain)
	} else {
		g.Expect(true).To(gomega.BeFalse(), explain)
	}
	if msg == "" {
		t.Fatal("the assertion did not fail")
	}
	return msg
}

// syntheticReport is a run with every kind of testcase: a passed set-up node, passed,
// failed (runbook fields), timed out, skipped with a reason, not selected, and entries
// for the propagation and config-size charts.
func syntheticReport(t *testing.T) (types.Report, Run) {
	t.Helper()
	loc := types.CodeLocation{FileName: "/src/suites/conformance/security_test.go", LineNumber: 42}
	var samples types.ReportEntries
	for _, ms := range []float64{80, 95, 110, 120, 130, 150, 170, 240, 410} {
		samples = append(samples, entry(PropagationEntry, ms/1000))
	}
	size := func(n, full, scoped int) types.ReportEntry {
		return entry(ConfigSizeEntry, map[string]any{"unselectedNamespaces": n,
			"full":               map[string]int{"listeners": 12, "clusters": full, "routes": 4, "bytes": full * 900},
			"sidecar":            map[string]int{"listeners": 12, "clusters": scoped, "routes": 4, "bytes": scoped * 900},
			"discoverySelectors": map[string]int{"listeners": 12, "clusters": scoped + 1, "routes": 4, "bytes": (scoped + 1) * 900}})
	}
	it := func(family, text string, labels []string, state types.SpecState, secs float64) types.SpecReport {
		return types.SpecReport{LeafNodeType: types.NodeTypeIt, ContainerHierarchyTexts: []string{family}, LeafNodeText: text,
			ContainerHierarchyLabels: [][]string{labels[:1]}, LeafNodeLabels: labels[1:], State: state,
			RunTime: time.Duration(secs * float64(time.Second))}
	}
	passed := it("Sidecar injection", "injects pods of a namespace labelled istio.io/rev", []string{"injection", "upstream"}, types.SpecStatePassed, 1.25)
	passed.ReportEntries = append(types.ReportEntries{entry(EvidenceEntry, map[string]string{"pod": "client-1", "sidecar": "native"})}, samples...)
	failed := it("mTLS", "rejects plaintext under STRICT", []string{"mtls", "upstream"}, types.SpecStateFailed, 2.5)
	failed.Failure = types.Failure{Message: failureMessage(t, false), Location: loc}
	timedout := it("Guardrails", "rejects NET_ADMIN in user namespaces", []string{"guardrails", "emulated"}, types.SpecStateTimedout, 30)
	timedout.Failure = types.Failure{Message: failureMessage(t, true), Location: loc}
	skipped := it("Traffic", "returns 502 for undeclared hosts under REGISTRY_ONLY", []string{"dataplane", "upstream"}, types.SpecStateSkipped, 0)
	skipped.Failure = types.Failure{Message: "needs a data plane: target local has none"}
	unlabelled := it("Sidecar injection", "ignores istio-injection=enabled", []string{"injection"}, types.SpecStatePassed, 0.4)
	notSelected := it("Lifecycle", "rolls back a canary upgrade", []string{"lifecycle", "emulated"}, types.SpecStateSkipped, 0)
	size10 := it("Telemetry", "served config shrinks (10 namespaces)", []string{"telemetry", "upstream"}, types.SpecStatePassed, 6)
	size10.ReportEntries = types.ReportEntries{size(10, 40, 8)}
	size50 := it("Telemetry", "served config shrinks (50 namespaces)", []string{"telemetry", "upstream"}, types.SpecStatePassed, 21)
	size50.ReportEntries = types.ReportEntries{size(50, 120, 8)}

	r := types.Report{SuiteDescription: "AKS Istio add-on conformance", StartTime: time.Date(2026, 11, 23, 5, 0, 0, 0, time.UTC),
		RunTime: 95 * time.Second, SpecReports: types.SpecReports{
			{LeafNodeType: types.NodeTypeBeforeSuite, State: types.SpecStatePassed, RunTime: 14 * time.Second},
			passed, failed, timedout, skipped, unlabelled, notSelected, size10, size50,
		}}
	run := Run{ID: "asmc-test1", Target: "local", Revisions: []string{"asm-1-28", "asm-1-27"},
		Capabilities: target.Capabilities{MeshWideChanges: true, AddonOperations: true, EmulatedAddon: true},
		Phases:       []timing.Phase{{Name: "etcd ready", Seconds: 0.4}, {Name: "kube-apiserver ready", Seconds: 4.2}, {Name: "istiod asm-1-28 ready", Seconds: 6.1}}}
	return r, run
}

func writeSynthetic(t *testing.T) (dir string, r types.Report, s Summary) {
	t.Helper()
	r, run := syntheticReport(t)
	s = Summarize(r, run)
	dir = t.TempDir()
	if err := Write(dir, r, s); err != nil {
		t.Fatal(err)
	}
	return dir, r, s
}

func TestParseRunbookReadsGomegaFailures(t *testing.T) {
	for _, eventually := range []bool{false, true} {
		msg := failureMessage(t, eventually)
		f, ok := parseRunbook(msg)
		want := runbookFields{Replays: strictStep.Ref, Expected: strictStep.Expected,
			Observed: `plaintext on port 8080 accepted by filter chain "virtualInbound-catchall-http"`,
			Confirm:  "istioctl proxy-config listener -n ns-a client-1 --port 15006", Fix: strictStep.Fix}
		if !ok || f != want {
			t.Errorf("eventually=%t: parsed %+v (ok %t)\nfrom %q", eventually, f, ok, msg)
		}
	}
	if _, ok := parseRunbook("Expected\n    <bool>: true\nto be false"); ok {
		t.Error("a failure without runbook fields was read as having them")
	}
	// A value that runs over lines keeps them; the matcher's text after the block is not
	// taken for a field even when it contains a key.
	f, _ := parseRunbook("\n  expected: one\n  observed: first line\n    second line\n  fix: do it\n\nExpected\n  fix: not the step's")
	if f.Observed != "first line\nsecond line" || f.Fix != "do it" {
		t.Errorf("parsed %+v", f)
	}
}

func TestSummaryCarriesSourcesAndSamples(t *testing.T) {
	dir, _, s := writeSynthetic(t)
	sources := map[string]string{}
	for _, sp := range s.Specs {
		sources[sp.Name] = sp.Source
	}
	if got := sources["Guardrails rejects NET_ADMIN in user namespaces"]; got != "emulated" {
		t.Errorf("emulated-labelled spec on an emulated target has source %q", got)
	}
	if got := sources["Sidecar injection ignores istio-injection=enabled"]; got != "" {
		t.Errorf("a spec without a source label has source %q", got)
	}
	data, err := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	// The JSON keeps the state counts where they were and adds the per-source counts.
	var doc struct {
		Totals      map[string]json.RawMessage `json:"totals"`
		Propagation struct {
			Count   int       `json:"count"`
			Samples []float64 `json:"samples"`
		} `json:"propagation"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if string(doc.Totals["passed"]) != "4" || string(doc.Totals["not selected"]) != "1" {
		t.Errorf("totals %s", data)
	}
	var bySource map[string]map[string]int
	if err := json.Unmarshal(doc.Totals["bySource"], &bySource); err != nil ||
		bySource["upstream"]["passed"] != 3 || bySource["upstream"]["failed"] != 1 || bySource["emulated"]["timedout"] != 1 || bySource["unknown"]["passed"] != 1 {
		t.Errorf("totals by source %v (%v)", bySource, err)
	}
	if doc.Propagation.Count != 9 || len(doc.Propagation.Samples) != 9 || doc.Propagation.Samples[0] != 0.08 {
		t.Errorf("propagation %+v: want 9 samples in the order measured", doc.Propagation)
	}
	var back Summary
	if err := json.Unmarshal(data, &back); err != nil || back.Totals.States["passed"] != 4 || back.Totals.BySource["emulated"]["timedout"] != 1 {
		t.Errorf("summary.json round trip: %v %+v", err, back.Totals)
	}
}

func TestReportHTMLShowsEveryTestcase(t *testing.T) {
	dir, r, _ := writeSynthetic(t)
	res, err := CheckStatic(dir)
	if err != nil {
		t.Fatalf("the page as written fails the check: %v", err)
	}
	if res.Testcases != len(r.SpecReports) {
		t.Errorf("checked %d testcases, the run has %d", res.Testcases, len(r.SpecReports))
	}
	data, err := os.ReadFile(filepath.Join(dir, HTMLFile))
	if err != nil {
		t.Fatal(err)
	}
	page := string(data)
	for _, want := range []string{
		`4 passed</span>, <span class="n-bad">2 failed</span>, <span class="n-skip">1 skipped`,
		// failures carry the runbook fields, the confirm command as code
		"<dt>expected</dt><dd>a plaintext connection to port 8080 is rejected</dd>",
		"<dt>observed</dt><dd>plaintext on port 8080 accepted by filter chain &#34;virtualInbound-catchall-http&#34;</dd>",
		`<dd class="confirm"><code>istioctl proxy-config listener -n ns-a client-1 --port 15006</code>`,
		"<dt>fix</dt><dd>inject the caller, or set PERMISSIVE on the server&#39;s namespace</dd>",
		"security_test.go:42",
		// skipped specs say why; sources are shown, unknown when a spec names none
		"skipped: needs a data plane: target local has none",
		`<span class="source">emulated</span>`, `<span class="source">unknown</span>`,
		// the run: target, revisions, capabilities, phases with times
		"<strong>asm-1-27</strong>", `<span class="chip on" title="yes">emulatedAddon</span>`,
		`<span class="chip off" title="no">dataPlane</span>`, "<td>kube-apiserver ready</td><td class=\"num\">4.20 s</td>",
		// propagation figures and chart; one line per config-size mode
		"median <strong>130 ms</strong>, p90 <strong>240 ms</strong>, max <strong>410 ms</strong> over 9 changes",
		`<polyline class="series-0"`, `<polyline class="series-2"`, "<td>40 clusters, 35.2 KB</td>",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("report.html lacks %q", want)
		}
	}
	if n := strings.Count(page, `<circle class="strip"`); n != 9 {
		t.Errorf("propagation strip has %d dots, want one per sample (9)", n)
	}
	if n := strings.Count(page, "<polyline"); n != 6 {
		t.Errorf("%d config-size lines, want 3 modes × 2 charts", n)
	}
	// Failures first: the failed family precedes the passed ones, and "What failed" lists
	// both failures before the families.
	if i, j := strings.Index(page, "<h3>mTLS</h3>"), strings.Index(page, "<h3>Sidecar injection</h3>"); i < 0 || j < 0 || i > j {
		t.Errorf("family with a failure is not listed first (%d, %d)", i, j)
	}
}

func TestCheckFindsWhatThePageGetsWrong(t *testing.T) {
	dir, _, _ := writeSynthetic(t)
	path := filepath.Join(dir, HTMLFile)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	failedRow := `data-testcase="[It] mTLS rejects plaintext under STRICT [mtls, upstream]" data-verdict="failed">
        <td><span class="verdict bad">failed</span></td>`
	if !strings.Contains(string(good), failedRow) {
		t.Fatalf("the failed spec's row is not where this test expects it:\n%s", good)
	}
	for name, tc := range map[string]struct{ old, new, want string }{
		"wrong verdict": {failedRow, strings.ReplaceAll(failedRow, "failed", "passed"), "the page shows passed, junit.xml says failed"},
		"missing row": {`data-testcase="[It] Traffic returns 502`, `data-x="`,
			`testcase "[It] Traffic returns 502 for undeclared hosts under REGISTRY_ONLY [dataplane, upstream]" (skipped in junit.xml) appears 0 times`},
		"wrong headline": {`<span class="n-bad">2 failed`, `<span class="n-bad">0 failed`, "junit.xml has 4 passed, 2 failed, 1 skipped"},
		"remote script":  {"</body>", `<script src="https://cdn.example.com/x.js"></script></body>`, `<script src="https://cdn.example.com/x.js">`},
		"remote font":    {"</style>", `@font-face { font-family: x; src: url(https://fonts.example.com/x.woff2); }</style>`, "url(https://fonts.example.com/x.woff2)"},
		"failures last":  {`<section id="failures">`, `<section id="failures-moved">`, "failures section must come before"},
	} {
		bad := strings.Replace(string(good), tc.old, tc.new, 1)
		if bad == string(good) {
			t.Fatalf("%s: the page has no %q", name, tc.old)
		}
		if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := CheckStatic(dir); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: check error %v, want one containing %q", name, err, tc.want)
		}
	}
}

func TestConfigSizeCurveIsOrderedWithOneLinePerMode(t *testing.T) {
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	points, modes := parseConfigSize([]json.RawMessage{
		raw(`{"unselectedNamespaces": 50, "full": {"clusters": 120, "bytes": 9000}, "sidecar": {"clusters": 8, "bytes": 700}}`),
		raw(`{"unselectedNamespaces": 10, "full": {"clusters": 40, "bytes": 3000}, "sidecar": {"clusters": 8, "bytes": 700}, "note": "x"}`),
		raw(`{"full": {"clusters": 1, "bytes": 1}}`), // no namespace count: cannot be placed
	})
	if len(points) != 2 || points[0].Namespaces != 10 || points[1].Modes["full"].Clusters != 120 {
		t.Errorf("points %+v", points)
	}
	if strings.Join(modes, ",") != "full,sidecar" {
		t.Errorf("modes %v: want full first, then the remedies", modes)
	}
	c := sizeChart(points, modes, "t", "clusters", func(v sizeValue) float64 { return v.Clusters }, 1, trimFloat)
	if len(c.Series) != 2 || len(c.Series[0].Dots) != 2 || !(c.Series[0].Dots[1].Y < c.Series[0].Dots[0].Y) {
		t.Errorf("series %+v: the full mode's line must rise from 10 to 50 namespaces", c.Series)
	}
	for _, tc := range []struct{ raw, want float64 }{{0.7, 1}, {3, 5}, {12, 20}, {0.03, 0.05}} {
		if got := niceStep(tc.raw); got != tc.want {
			t.Errorf("niceStep(%v) = %v, want %v", tc.raw, got, tc.want)
		}
	}
}
