// Package report writes a run's results for the three audiences: JUnit XML for CI, a JSON
// summary for machines (per spec: result, duration, evidence; per run: target, revisions,
// bring-up phases, per-family time) and a console summary for people.
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
	Totals   map[string]int     `json:"totals"`
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
}

// Report entries specs attach besides evidence and propagation.
const (
	ConfigSizeEntry   = "config-size"
	ControlPlaneEntry = "istiod-metrics"
)

// Propagation is a distribution of propagation times, in seconds.
type Propagation struct {
	Samples int     `json:"samples"`
	Median  float64 `json:"medianSeconds"`
	P90     float64 `json:"p90Seconds"`
	Max     float64 `json:"maxSeconds"`
	// Goal is 2x istiod's default debounce (PILOT_DEBOUNCE_AFTER=100ms), the target the
	// median is compared with; it is reported, not asserted.
	Goal float64 `json:"goalSeconds"`
}

// PropagationEntry is the ReportEntry name under which specs record propagation times
// (seconds, as a float).
const PropagationEntry = "propagation"

func summarizePropagation(samples []float64) *Propagation {
	if len(samples) == 0 {
		return nil
	}
	sort.Float64s(samples)
	at := func(q float64) float64 { return samples[int(q*float64(len(samples)-1)+0.5)] }
	return &Propagation{Samples: len(samples), Median: at(0.5), P90: at(0.9), Max: samples[len(samples)-1], Goal: 0.2}
}

// Spec is one spec's result.
type Spec struct {
	Family   string            `json:"family"`
	Name     string            `json:"name"`
	Labels   []string          `json:"labels"`
	State    string            `json:"state"`
	Seconds  float64           `json:"seconds"`
	Failure  string            `json:"failure,omitempty"`
	Location string            `json:"location,omitempty"`
	Evidence []json.RawMessage `json:"evidence,omitempty"`
}

// Summarize turns Ginkgo's report into the summary. Setup nodes (BeforeSuite, report
// nodes) count only when they failed, so a broken bring-up is visible.
func Summarize(r types.Report, run Run) Summary {
	s := Summary{Run: run, Start: r.StartTime, Seconds: r.RunTime.Round(time.Millisecond).Seconds(),
		Totals: map[string]int{}, Families: map[string]float64{}}
	var propagation []float64
	for _, sr := range r.SpecReports {
		if sr.LeafNodeType != types.NodeTypeIt && !sr.State.Is(types.SpecStateFailureStates) {
			continue
		}
		if sr.State == types.SpecStateSkipped && sr.Failure.Message == "" {
			s.Totals["not selected"]++ // filtered out by labels or focus: not part of this run
			continue
		}
		spec := Spec{Name: sr.FullText(), Labels: sr.Labels(), State: sr.State.String(),
			Seconds: sr.RunTime.Round(time.Millisecond).Seconds()}
		if spec.Name == "" {
			spec.Name = sr.LeafNodeType.String()
		}
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
		for _, e := range sr.ReportEntries {
			if v, ok := e.Value.GetRawValue().(float64); ok && e.Name == PropagationEntry {
				propagation = append(propagation, v)
				continue
			}
			data, err := json.Marshal(e.Value.GetRawValue())
			if err != nil {
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
		s.Totals[spec.State]++
		s.Families[spec.Family] += spec.Seconds
		s.Specs = append(s.Specs, spec)
	}
	s.Propagation = summarizePropagation(propagation)
	return s
}

// EvidenceEntry is the ReportEntry name under which specs attach their evidence.
const EvidenceEntry = "evidence"

// Write writes junit.xml and summary.json into dir.
func Write(dir string, r types.Report, s Summary) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := reporters.GenerateJUnitReportWithConfig(r, filepath.Join(dir, "junit.xml"), reporters.JunitReportConfig{
		OmitTimelinesForSpecState: types.SpecStatePassed,
	}); err != nil {
		return fmt.Errorf("junit report: %w", err)
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "summary.json"), data, 0o644)
}

// Console prints the summary people read at the end of a run: one line per spec, the
// failures with their messages, and the timings.
func Console(w io.Writer, s Summary) {
	fmt.Fprintf(w, "\n=== AKS Istio add-on conformance: target %s, revisions %s, run %s\n",
		s.Run.Target, strings.Join(s.Run.Revisions, ","), s.Run.ID)
	if s.Run.Error != "" {
		fmt.Fprintf(w, "target could not be brought up: %s\n", s.Run.Error)
	}
	for _, sp := range s.Specs {
		fmt.Fprintf(w, "%-8s %6.1fs  %s\n", strings.ToUpper(sp.State), sp.Seconds, sp.Name)
		if sp.State == "skipped" && sp.Failure != "" {
			fmt.Fprintf(w, "         skipped: %s\n", firstLine(sp.Failure))
		}
	}
	var failed []Spec
	for _, sp := range s.Specs {
		if sp.Failure != "" && sp.State != "skipped" {
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
			p.Median*1000, p.P90*1000, p.Max*1000, p.Samples, p.Goal*1000)
	}
	fmt.Fprintf(w, "run time: %.1fs\n", s.Seconds)
	// The closing line has the plain "N passed, N failed[, N skipped]" form CI reads.
	line := fmt.Sprintf("conformance: %d passed, %d failed", s.Totals["passed"], len(failed))
	if n := s.Totals["skipped"]; n > 0 {
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
