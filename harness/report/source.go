package report

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/onsi/ginkgo/v2/types"

	"github.com/aks-istio-conformance/conformance/harness/evidence"
)

// SourceEntry is the JUnit property that carries a testcase's evidence source (upstream or
// emulated, see evidence.SourceOf), so CI can tell which verdicts the emulation decided.
const SourceEntry = "source"

// withSources returns a copy of r in which every result spec carries its evidence source
// as a report entry: Ginkgo's JUnit writer turns a spec's report entries into the
// testcase's properties. r itself is left as the suite recorded it.
func withSources(r types.Report, run Run) types.Report {
	out := r
	out.SpecReports = make(types.SpecReports, len(r.SpecReports))
	for i, sr := range r.SpecReports {
		if classify(sr) == result {
			source, err := evidence.SourceOf(sr.Labels(), run.Capabilities.EmulatedAddon)
			if err != nil {
				source = SourceUnknown
			}
			sr.ReportEntries = append(slices.Clone(sr.ReportEntries), types.ReportEntry{
				Name: SourceEntry, Value: types.WrapEntryValue(source), Visibility: types.ReportEntryVisibilityNever})
		}
		out.SpecReports[i] = sr
	}
	return out
}

// consoleSource is a spec's source as the console prints it.
func consoleSource(sp Spec) string {
	if sp.Source == "" {
		return SourceUnknown
	}
	return sp.Source
}

// consoleSources prints the results per evidence source, e.g.
// "by source: emulated 20 passed; upstream 78 passed, 1 failed, 3 skipped".
func consoleSources(w io.Writer, t Totals) {
	if len(t.BySource) == 0 {
		return
	}
	var parts []string
	for _, src := range sortedKeys(t.BySource) {
		var states []string
		for _, st := range sortedKeys(t.BySource[src]) {
			states = append(states, fmt.Sprintf("%d %s", t.BySource[src][st], st))
		}
		parts = append(parts, src+" "+strings.Join(states, ", "))
	}
	fmt.Fprintf(w, "by source: %s\n", strings.Join(parts, "; "))
}
