// Package report writes a run's results for its audiences: JUnit XML for CI, a JSON summary
// for machines (per spec: result, duration, evidence and its source; per run: target,
// revisions, bring-up phases, per-family time), a self-contained report.html for people
// (html.go) and a console summary. CheckHTML (check.go) renders report.html in a headless
// browser and checks it against junit.xml.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/onsi/ginkgo/v2/reporters"
	"github.com/onsi/ginkgo/v2/types"

	"github.com/aks-istio-conformance/conformance/harness/confirm"
	"github.com/aks-istio-conformance/conformance/harness/evidence"
	"github.com/aks-istio-conformance/conformance/harness/target"
	"github.com/aks-istio-conformance/conformance/harness/timing"
)

// Run describes what was tested, as the suite knows it.
type Run struct {
	ID           string              `json:"id"`
	Target       string              `json:"target"`
	Revisions    []string            `json:"revisions"`
	Capabilities target.Capabilities `json:"capabilities"`
	Phases       []timing.Phase      `json:"bringUpPhases"`
	// Error is set when the target could not be brought up.
	Error string `json:"error,omitempty"`
}

// Summary is the JSON document.
type Summary struct {
	Run      Run                `json:"run"`
	Start    time.Time          `json:"start"`
	Seconds  float64            `json:"seconds"`
	Totals   Totals             `json:"totals"`
	Families map[string]float64 `json:"familySeconds"`
	Specs    []Spec             `json:"specs"`
	// Propagation summarises the time from applying an object to a proxy receiving config
	// that reflects it, over every change the run measured.
	Propagation *Propagation `json:"propagation,omitempty"`
	// ConfigSize is the served-config size curve (ConfigSizeEntry), in the order measured.
	ConfigSize []json.RawMessage `json:"configSizeCurve,omitempty"`
	// ControlPlane is istiod's push metrics after each family (ControlPlaneEntry): the last
	// sample taken in the family.
	ControlPlane map[string]json.RawMessage `json:"controlPlaneAfterFamily,omitempty"`
	// Confirm counts the confirm commands run (-run-confirm) by verdict, and the ones not
	// runnable here by what they need; absent when none ran.
	Confirm *ConfirmTotals `json:"confirmCommands,omitempty"`
}

// ConfirmTotals counts confirm commands: by verdict (confirm.Passed, ...), and the not
// runnable ones by what the target lacks for them.
type ConfirmTotals struct {
	Verdicts    map[string]int `json:"verdicts"`
	NotRunnable map[string]int `json:"notRunnableBecause,omitempty"`
}

func (s *Summary) countConfirm(results []confirm.Result) {
	if s.Confirm == nil {
		s.Confirm = &ConfirmTotals{Verdicts: map[string]int{}}
	}
	for _, r := range results {
		s.Confirm.Verdicts[r.Verdict]++
		if r.Verdict == confirm.NotRunnable {
			if s.Confirm.NotRunnable == nil {
				s.Confirm.NotRunnable = map[string]int{}
			}
			for _, why := range r.Lacking {
				s.Confirm.NotRunnable[why]++
			}
		}
	}
}

// Totals counts the run's specs by state ("passed", "failed", "skipped", "not selected",
// ...): States is written as the keys of the JSON object, as before sources were counted,
// and BySource under "bySource" (source, then state, then count; SourceUnknown for specs
// that named no source).
type Totals struct {
	States   map[string]int
	BySource map[string]map[string]int
}

func (t Totals) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	for k, v := range t.States {
		m[k] = v
	}
	if len(t.BySource) > 0 {
		m[bySourceKey] = t.BySource
	}
	return json.Marshal(m)
}

func (t *Totals) UnmarshalJSON(data []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	*t = Totals{States: map[string]int{}}
	for k, v := range raw {
		var err error
		if k == bySourceKey {
			err = json.Unmarshal(v, &t.BySource)
		} else {
			var n int
			err = json.Unmarshal(v, &n)
			t.States[k] = n
		}
		if err != nil {
			return fmt.Errorf("totals %q: %w", k, err)
		}
	}
	return nil
}

const bySourceKey = "bySource"

func (t *Totals) count(state, source string) {
	t.States[state]++
	if source == "" {
		source = SourceUnknown
	}
	if t.BySource == nil {
		t.BySource = map[string]map[string]int{}
	}
	if t.BySource[source] == nil {
		t.BySource[source] = map[string]int{}
	}
	t.BySource[source][state]++
}

// SourceUnknown stands for the evidence source of a spec whose labels name none (see
// evidence.SourceOf) in the totals and on the page.
const SourceUnknown = "unknown"

// Report entries specs attach besides evidence and propagation.
const (
	ConfigSizeEntry   = "config-size"
	ControlPlaneEntry = "istiod-metrics"
)

// Propagation is a distribution of propagation times, in seconds.
type Propagation struct {
	// Count is how many changes were measured. (Until the samples were kept, "samples" held
	// this count; it now holds the samples themselves.)
	Count int `json:"count"`
	// Samples are the measured times in the order the run took them.
	Samples []float64 `json:"samples,omitempty"`
	Median  float64   `json:"medianSeconds"`
	P90     float64   `json:"p90Seconds"`
	Max     float64   `json:"maxSeconds"`
	// Goal is 2x istiod's default debounce (PILOT_DEBOUNCE_AFTER=100ms), the target the
	// median is compared with; it is reported, not asserted.
	Goal float64 `json:"goalSeconds"`
	// AlreadyHeld counts the checks that held at the first look: nothing had to travel,
	// so they are not samples (they would flatter the median).
	AlreadyHeld int `json:"alreadyHeld"`
}

// PropagationEntry is the ReportEntry name under which specs record propagation times
// (seconds, as a float).
const PropagationEntry = "propagation"

// PropagationHeldEntry marks a check that already held when first looked at (no sample).
const PropagationHeldEntry = "propagation-held"

func summarizePropagation(samples []float64) *Propagation {
	if len(samples) == 0 {
		return nil
	}
	sorted := append([]float64(nil), samples...)
	sort.Float64s(sorted)
	at := func(q float64) float64 { return sorted[int(q*float64(len(sorted)-1)+0.5)] }
	return &Propagation{Count: len(samples), Samples: samples, Median: at(0.5), P90: at(0.9),
		Max: sorted[len(sorted)-1], Goal: 0.2}
}

// Spec is one spec's result.
type Spec struct {
	Family string   `json:"family"`
	Name   string   `json:"name"`
	Labels []string `json:"labels"`
	State  string   `json:"state"`
	// Source is the evidence source that decided the spec (evidence.Upstream or
	// evidence.Emulated, from its labels), empty when its labels name none.
	Source   string            `json:"source,omitempty"`
	Seconds  float64           `json:"seconds"`
	Failure  string            `json:"failure,omitempty"`
	Location string            `json:"location,omitempty"`
	Evidence []json.RawMessage `json:"evidence,omitempty"`
	// Confirm holds what running the spec's confirm commands showed (ConfirmEntry).
	Confirm []confirm.Result `json:"confirm,omitempty"`
}

// Summarize turns Ginkgo's report into the summary. Setup nodes (BeforeSuite, report
// nodes) count only when they failed, so a broken bring-up is visible.
func Summarize(r types.Report, run Run) Summary {
	s := Summary{Run: run, Start: r.StartTime, Seconds: r.RunTime.Round(time.Millisecond).Seconds(),
		Totals: Totals{States: map[string]int{}}, Families: map[string]float64{}}
	var propagation []float64
	held := 0
	for _, sr := range r.SpecReports {
		switch classify(sr) {
		case omitted:
			continue
		case notSelected:
			s.Totals.States["not selected"]++ // filtered out by labels or focus: not part of this run
			continue
		}
		spec := Spec{Name: specName(sr), Labels: sr.Labels(), State: sr.State.String(),
			Seconds: sr.RunTime.Round(time.Millisecond).Seconds()}
		if len(sr.ContainerHierarchyTexts) > 0 {
			spec.Family = sr.ContainerHierarchyTexts[0]
		}
		if sr.State.Is(types.SpecStateFailureStates) {
			spec.Failure = sr.Failure.Message
			spec.Location = sr.Failure.Location.String()
		}
		if sr.State == types.SpecStateSkipped && sr.Failure.Message != "" {
			spec.Failure = sr.Failure.Message // the skip's reason
		}
		// The source labels say what decided the spec; a spec that names none, or both,
		// is left without one and shown as unknown rather than failing the report.
		spec.Source, _ = evidence.SourceOf(spec.Labels, run.Capabilities.EmulatedAddon)
		for _, e := range sr.ReportEntries {
			if v, ok := e.Value.GetRawValue().(float64); ok && e.Name == PropagationEntry {
				propagation = append(propagation, v)
				continue
			}
			if e.Name == PropagationHeldEntry {
				held++
				continue
			}
			data, err := json.Marshal(e.Value.GetRawValue())
			if err != nil {
				continue
			}
			if e.Name == ConfirmEntry {
				var results []confirm.Result
				if json.Unmarshal(data, &results) == nil {
					spec.Confirm = append(spec.Confirm, results...)
					s.countConfirm(results)
				}
				continue
			}
			switch e.Name {
			case EvidenceEntry:
				spec.Evidence = append(spec.Evidence, data)
			case ConfigSizeEntry:
				s.ConfigSize = append(s.ConfigSize, data)
			case ControlPlaneEntry:
				if s.ControlPlane == nil {
					s.ControlPlane = map[string]json.RawMessage{}
				}
				s.ControlPlane[spec.Family] = data
			}
		}
		s.Totals.count(spec.State, spec.Source)
		s.Families[spec.Family] += spec.Seconds
		s.Specs = append(s.Specs, spec)
	}
	s.Propagation = summarizePropagation(propagation)
	if s.Propagation == nil && held > 0 {
		s.Propagation = &Propagation{Goal: 0.2}
	}
	if s.Propagation != nil {
		s.Propagation.AlreadyHeld = held
	}
	return s
}

// kind says what a spec report is to the summary.
type kind int

const (
	omitted     kind = iota // a setup or report node that passed: not a result
	notSelected             // skipped without a reason: left out by labels or focus
	result                  // a spec of this run (or a setup node that failed)
)

// classify is the one place that decides which spec reports are results, so that the
// summary and report.html agree on it.
func classify(sr types.SpecReport) kind {
	switch {
	case sr.LeafNodeType != types.NodeTypeIt && !sr.State.Is(types.SpecStateFailureStates):
		return omitted
	case sr.State == types.SpecStateSkipped && sr.Failure.Message == "":
		return notSelected
	}
	return result
}

func specName(sr types.SpecReport) string {
	if name := sr.FullText(); name != "" {
		return name
	}
	return sr.LeafNodeType.String()
}

// EvidenceEntry is the ReportEntry name under which specs attach their evidence.
const EvidenceEntry = "evidence"

// ConfirmEntry is the ReportEntry name of a spec's confirm command results ([]confirm.Result).
const ConfirmEntry = "confirm"

// Write writes junit.xml, summary.json and report.html into dir. s must be Summarize's
// summary of r.
func Write(dir string, r types.Report, s Summary) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := reporters.GenerateJUnitReportWithConfig(withSources(r, s.Run), filepath.Join(dir, "junit.xml"), reporters.JunitReportConfig{
		OmitTimelinesForSpecState: types.SpecStatePassed,
	}); err != nil {
		return fmt.Errorf("junit report: %w", err)
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.json"), data, 0o644); err != nil {
		return err
	}
	// report.html names each spec by its JUnit testcase (so the browser check can match
	// them): read the names back from the file Ginkgo just wrote rather than re-deriving
	// Ginkgo's naming.
	cases, err := readJUnit(filepath.Join(dir, "junit.xml"))
	if err != nil {
		return err
	}
	if err := writeHTML(filepath.Join(dir, HTMLFile), r, s, cases); err != nil {
		return fmt.Errorf("report.html: %w", err)
	}
	return nil
}

// HTMLFile is the name of the page Write writes beside summary.json.
const HTMLFile = "report.html"

// Console prints the summary people read at the end of a run: one line per spec, the
// failures with their messages, and the timings.
func Console(w io.Writer, s Summary) {
	fmt.Fprintf(w, "\n=== AKS Istio add-on conformance: target %s, revisions %s, run %s\n",
		s.Run.Target, strings.Join(s.Run.Revisions, ","), s.Run.ID)
	if s.Run.Error != "" {
		fmt.Fprintf(w, "target could not be brought up: %s\n", s.Run.Error)
	}
	for _, sp := range s.Specs {
		fmt.Fprintf(w, "%-8s %6.1fs  %-8s  %s\n", strings.ToUpper(sp.State), sp.Seconds, consoleSource(sp), sp.Name)
		if sp.State == "skipped" && sp.Failure != "" {
			fmt.Fprintf(w, "         skipped: %s\n", firstLine(sp.Failure))
		}
	}
	var failed []Spec
	for _, sp := range s.Specs {
		if isFailure(sp.State) {
			failed = append(failed, sp)
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(w, "\n--- what failed\n")
		for _, sp := range failed {
			fmt.Fprintf(w, "%s (%s)\n%s\n\n", sp.Name, sp.Location, indent(sp.Failure))
		}
	}
	var phases []string
	for _, p := range s.Run.Phases {
		phases = append(phases, fmt.Sprintf("%s %.1fs", p.Name, p.Seconds))
	}
	if len(phases) > 0 {
		fmt.Fprintf(w, "bring-up: %s\n", strings.Join(phases, ", "))
	}
	var fams []string
	for f := range s.Families {
		fams = append(fams, f)
	}
	sort.Strings(fams)
	for _, f := range fams {
		fmt.Fprintf(w, "family %q: %.1fs\n", f, s.Families[f])
	}
	for _, point := range s.ConfigSize {
		fmt.Fprintf(w, "config size: %s\n", point)
	}
	if p := s.Propagation; p != nil {
		fmt.Fprintf(w, "propagation (apply -> proxy config): median %.0f ms, p90 %.0f ms, max %.0f ms over %d changes (goal: median <= %.0f ms)\n",
			p.Median*1000, p.P90*1000, p.Max*1000, p.Count, p.Goal*1000)
	}
	consoleSources(w, s.Totals)
	if c := s.Confirm; c != nil {
		ran := c.Verdicts[confirm.Passed] + c.Verdicts[confirm.Failed]
		fmt.Fprintf(w, "confirm commands: %d ran (%d passed, %d failed), %d not runnable here\n",
			ran, c.Verdicts[confirm.Passed], c.Verdicts[confirm.Failed], c.Verdicts[confirm.NotRunnable])
		reasons := make([]string, 0, len(c.NotRunnable))
		for r := range c.NotRunnable {
			reasons = append(reasons, r)
		}
		sort.Strings(reasons)
		for _, r := range reasons {
			fmt.Fprintf(w, "  %d %s\n", c.NotRunnable[r], r)
		}
	}
	fmt.Fprintf(w, "run time: %.1fs\n", s.Seconds)
	// The closing line has the plain "N passed, N failed[, N skipped]" form CI reads.
	line := fmt.Sprintf("conformance: %d passed, %d failed", s.Totals.States["passed"], len(failed))
	if n := s.Totals.States["skipped"]; n > 0 {
		line += fmt.Sprintf(", %d skipped", n)
	}
	fmt.Fprintln(w, line)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n    ")
}
