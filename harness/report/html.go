package report

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"html/template"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/onsi/ginkgo/v2/reporters"
	"github.com/onsi/ginkgo/v2/types"
)

// report.html is one file with its stylesheet, charts (inline SVG) and its one small
// script inside: it is read from CI artifacts and mail attachments, offline, so it loads
// nothing. CheckHTML verifies that it does not.

//go:embed report.html.tmpl
var pageTemplate string

var pageTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"duration": duration,
	"ms":       func(s float64) string { return fmt.Sprintf("%.0f ms", s*1000) },
	"px":       func(v float64) string { return fmt.Sprintf("%.1f", v) },
	"add":      func(a, b float64) float64 { return a + b },
}).Parse(pageTemplate))

// page is what the template draws.
type page struct {
	Run                              Run
	Start                            string
	Seconds                          float64
	Passed, Failed, Skipped, Pending int
	NotSelected                      int
	Capabilities                     []capability
	Phases                           []phase
	PhaseSeconds                     float64
	Sources                          []sourceTotal
	Failures                         []*row
	Families                         []*family
	SetupNodes                       []*row
	NotRun                           []*row
	Propagation                      *propagationView
	ConfigSize                       *configSizeView
	ControlPlane                     []controlPlane
}

type capability struct {
	Name string
	On   bool
}

type phase struct {
	Name    string
	Seconds float64
	// Width is the bar's length in the page's 240-unit phase bars, relative to the slowest.
	Width float64
}

type sourceTotal struct {
	Source                  string
	Passed, Failed, Skipped int
}

// row is one JUnit testcase as the page shows it.
type row struct {
	ID       string
	Testcase string // the JUnit testcase name: the browser check matches rows by it
	Family   string
	// Name is the spec's text without its family, which the table's heading already says.
	Name     string
	Labels   []string
	Verdict  string
	Class    string // verdict colour: ok, bad, skip
	Source   string
	Seconds  float64
	Reason   string // why a spec was skipped
	Failure  *failureView
	Evidence []string
}

// failureView is a failure split into the runbook fields (harness/runbook) it carries.
type failureView struct {
	Runbook  runbookFields
	Message  string // the whole message, for what the fields leave out
	Location string
}

type family struct {
	Name                    string
	Seconds                 float64
	Passed, Failed, Skipped int
	Rows                    []*row
}

type propagationView struct {
	P         *Propagation
	GoalMet   bool
	Chart     chart
	NoSamples bool // the summary has the figures but not the samples
}

type configSizeView struct {
	Clusters, Bytes chart
	Modes           []string
	Rows            []sizeRow
}

type sizeRow struct {
	Namespaces string
	Cells      []string // per mode: "clusters / bytes"
}

type controlPlane struct {
	Family string
	JSON   string
}

// readJUnit reads the testcases of a junit.xml Ginkgo wrote, in order.
func readJUnit(path string) ([]reporters.JUnitTestCase, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var suites reporters.JUnitTestSuites
	if err := xml.Unmarshal(data, &suites); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var cases []reporters.JUnitTestCase
	for _, s := range suites.TestSuites {
		cases = append(cases, s.TestCases...)
	}
	return cases, nil
}

// writeHTML draws report.html. cases are junit.xml's testcases, one per spec report of r
// in the same order (Ginkgo writes them so).
func writeHTML(path string, r types.Report, s Summary, cases []reporters.JUnitTestCase) error {
	p, err := buildPage(r, s, cases)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := pageTmpl.Execute(&b, p); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func buildPage(r types.Report, s Summary, cases []reporters.JUnitTestCase) (*page, error) {
	if len(cases) != len(r.SpecReports) {
		return nil, fmt.Errorf("junit.xml has %d testcases for %d spec reports", len(cases), len(r.SpecReports))
	}
	p := &page{Run: s.Run, Seconds: s.Seconds, Passed: s.Totals.States["passed"], Skipped: s.Totals.States["skipped"],
		Pending: s.Totals.States["pending"], NotSelected: s.Totals.States["not selected"]}
	if !s.Start.IsZero() {
		p.Start = s.Start.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	families := map[string]*family{}
	next := 0 // the next summary spec: s.Specs follows r's results in order
	for i, sr := range r.SpecReports {
		rw := &row{ID: fmt.Sprintf("s%d", i), Testcase: cases[i].Name, Verdict: sr.State.String(),
			Class: verdictClass(sr.State.String()), Name: specName(sr), Seconds: sr.RunTime.Seconds()}
		switch classify(sr) {
		case omitted:
			p.SetupNodes = append(p.SetupNodes, rw)
			continue
		case notSelected:
			rw.Labels = sr.Labels()
			p.NotRun = append(p.NotRun, rw)
			continue
		}
		if next >= len(s.Specs) || s.Specs[next].Name != rw.Name {
			return nil, fmt.Errorf("the summary does not come from this report: spec %q has no summary entry", rw.Name)
		}
		sp := s.Specs[next]
		next++
		rw.Family, rw.Labels, rw.Source, rw.Seconds = sp.Family, sp.Labels, sp.Source, sp.Seconds
		if rw.Source == "" {
			rw.Source = SourceUnknown
		}
		if sp.Family != "" {
			rw.Name = strings.TrimSpace(strings.TrimPrefix(sp.Name, sp.Family))
		}
		for _, e := range sp.Evidence {
			var pretty bytes.Buffer
			if json.Indent(&pretty, e, "", "  ") != nil {
				pretty.Reset()
				pretty.Write(e)
			}
			rw.Evidence = append(rw.Evidence, pretty.String())
		}
		f := families[sp.Family]
		if f == nil {
			f = &family{Name: sp.Family}
			if f.Name == "" {
				f.Name = "Suite"
			}
			families[sp.Family] = f
			p.Families = append(p.Families, f)
		}
		f.Rows = append(f.Rows, rw)
		f.Seconds += sp.Seconds
		switch {
		case isFailure(sp.State):
			rw.Failure = &failureView{Message: strings.TrimSpace(sp.Failure), Location: sp.Location}
			rw.Failure.Runbook, _ = parseRunbook(sp.Failure)
			p.Failures = append(p.Failures, rw)
			f.Failed++
		case sp.State == "skipped":
			rw.Reason = strings.TrimSpace(sp.Failure)
			f.Skipped++
		case sp.State == "passed":
			f.Passed++
		}
	}
	if next != len(s.Specs) {
		return nil, fmt.Errorf("the summary does not come from this report: %d of its specs are not in the report", len(s.Specs)-next)
	}
	p.Failed = len(p.Failures)
	// Families with failures first, then by name; in each, failures first and the rest in
	// the order they ran.
	sort.SliceStable(p.Families, func(i, j int) bool {
		if (p.Families[i].Failed > 0) != (p.Families[j].Failed > 0) {
			return p.Families[i].Failed > 0
		}
		return p.Families[i].Name < p.Families[j].Name
	})
	for _, f := range p.Families {
		sort.SliceStable(f.Rows, func(i, j int) bool { return f.Rows[i].Failure != nil && f.Rows[j].Failure == nil })
	}
	p.Capabilities = capabilities(s.Run)
	for _, ph := range s.Run.Phases {
		p.PhaseSeconds = max(p.PhaseSeconds, ph.Seconds)
	}
	for _, ph := range s.Run.Phases {
		w := 0.0
		if p.PhaseSeconds > 0 {
			w = max(1, 240*ph.Seconds/p.PhaseSeconds)
		}
		p.Phases = append(p.Phases, phase{Name: ph.Name, Seconds: ph.Seconds, Width: w})
	}
	p.Sources = sourceTotals(s.Totals)
	if s.Propagation != nil {
		p.Propagation = &propagationView{P: s.Propagation, GoalMet: s.Propagation.Median <= s.Propagation.Goal,
			Chart: propagationChart(s.Propagation), NoSamples: len(s.Propagation.Samples) == 0}
	}
	if points, modes := parseConfigSize(s.ConfigSize); len(points) > 0 {
		maxBytes := 0.0
		for _, pt := range points {
			for _, v := range pt.Modes {
				maxBytes = max(maxBytes, v.Bytes)
			}
		}
		v := &configSizeView{Modes: modes,
			Clusters: sizeChart(points, modes, "clusters served", "clusters", func(v sizeValue) float64 { return v.Clusters }, 1, trimFloat),
			Bytes:    sizeChart(points, modes, "bytes served", "bytes", func(v sizeValue) float64 { return v.Bytes }, byteUnit(maxBytes), byteSize)}
		for _, pt := range points {
			sr := sizeRow{Namespaces: trimFloat(pt.Namespaces)}
			for _, m := range modes {
				cell := "–"
				if val, ok := pt.Modes[m]; ok {
					cell = fmt.Sprintf("%s clusters, %s", trimFloat(val.Clusters), byteSize(val.Bytes))
				}
				sr.Cells = append(sr.Cells, cell)
			}
			v.Rows = append(v.Rows, sr)
		}
		p.ConfigSize = v
	}
	for _, f := range sortedKeys(s.ControlPlane) {
		var pretty bytes.Buffer
		if json.Indent(&pretty, s.ControlPlane[f], "", "  ") != nil {
			pretty.Write(s.ControlPlane[f])
		}
		p.ControlPlane = append(p.ControlPlane, controlPlane{Family: f, JSON: pretty.String()})
	}
	return p, nil
}

// capabilities lists the target's capabilities by their JSON names, so a capability added
// to target.Capabilities shows up without a change here.
func capabilities(run Run) []capability {
	data, err := json.Marshal(run.Capabilities)
	if err != nil {
		return nil
	}
	var m map[string]bool
	if json.Unmarshal(data, &m) != nil {
		return nil
	}
	var out []capability
	for _, k := range sortedKeys(m) {
		out = append(out, capability{Name: k, On: m[k]})
	}
	return out
}

func sourceTotals(t Totals) []sourceTotal {
	var out []sourceTotal
	for _, src := range sortedKeys(t.BySource) {
		st := sourceTotal{Source: src, Passed: t.BySource[src]["passed"], Skipped: t.BySource[src]["skipped"]}
		for state, n := range t.BySource[src] {
			if isFailure(state) {
				st.Failed += n
			}
		}
		out = append(out, st)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// isFailure says whether a spec state (types.SpecState's string) is one of Ginkgo's failure
// states: failed, panicked, timedout, interrupted, aborted.
func isFailure(state string) bool {
	var st types.SpecState
	if err := st.UnmarshalJSON([]byte(strconv.Quote(state))); err != nil {
		return false
	}
	return st.Is(types.SpecStateFailureStates)
}

func verdictClass(state string) string {
	switch {
	case state == "passed":
		return "ok"
	case isFailure(state):
		return "bad"
	}
	return "skip"
}

func duration(seconds float64) string {
	d := time.Duration(seconds * float64(time.Second))
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return d.Round(time.Second).String()
}

// runbookFields are the lines runbook.Step.Explain puts in a failure message.
type runbookFields struct {
	Replays, Expected, Observed, Confirm, Fix string
}

// parseRunbook finds the runbook fields in a failure message. Explain writes them as one
// block of "  <key>: <value>" lines; a value (often the observed one) may run over the
// following lines up to the next key. A blank line ends the block. Gomega adds its own
// text before it (e.g. "Timed out after 30s.") and after it (the matcher's message): the
// page shows that in the whole message beside the fields, and a "fix:" inside a matcher's
// dump of some object is not mistaken for the step's. ok is false when there is no block.
func parseRunbook(msg string) (f runbookFields, ok bool) {
	fields := map[string]*string{"replays": &f.Replays, "expected": &f.Expected, "observed": &f.Observed,
		"confirm": &f.Confirm, "fix": &f.Fix}
	var current *string
	for _, line := range strings.Split(msg, "\n") {
		trimmed := strings.TrimSpace(line)
		if key, value, found := strings.Cut(trimmed, ":"); found {
			if dst := fields[key]; dst != nil && *dst == "" {
				*dst, current, ok = strings.TrimSpace(value), dst, true
				continue
			}
		}
		if current != nil {
			if trimmed == "" {
				break
			}
			*current += "\n" + trimmed
		}
	}
	return f, ok
}
