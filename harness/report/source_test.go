package report

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onsi/ginkgo/v2/types"

	"github.com/aks-istio-conformance/conformance/harness/evidence"
	"github.com/aks-istio-conformance/conformance/harness/target"
)

func TestJUnitAndConsoleCarryEachSpecsSource(t *testing.T) {
	spec := func(text string, labels ...string) types.SpecReport {
		return types.SpecReport{LeafNodeType: types.NodeTypeIt, LeafNodeText: text, LeafNodeLabels: labels,
			ContainerHierarchyTexts: []string{"Family"}, State: types.SpecStatePassed}
	}
	r := types.Report{SuiteDescription: "s", SpecReports: types.SpecReports{
		spec("istiod decides", evidence.Upstream),
		spec("the emulator decides", evidence.Emulated),
		spec("nobody said", "family"),
	}}
	for _, tc := range []struct {
		emulatedTarget bool
		want           map[string]string
	}{
		{true, map[string]string{"istiod decides": evidence.Upstream, "the emulator decides": evidence.Emulated, "nobody said": SourceUnknown}},
		// On a real cluster an emulated spec that runs judges Microsoft's add-on.
		{false, map[string]string{"istiod decides": evidence.Upstream, "the emulator decides": evidence.Upstream, "nobody said": SourceUnknown}},
	} {
		run := Run{ID: "asmc-x", Target: "t", Capabilities: target.Capabilities{EmulatedAddon: tc.emulatedTarget}}
		s := Summarize(r, run)
		dir := t.TempDir()
		if err := Write(dir, r, s); err != nil {
			t.Fatal(err)
		}
		cases, err := readJUnit(filepath.Join(dir, "junit.xml"))
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, c := range cases {
			if c.Properties == nil {
				continue
			}
			for text := range tc.want {
				if strings.Contains(c.Name, text) {
					got[text] = strings.Trim(c.Properties.WithName(SourceEntry), `"`)
				}
			}
		}
		for text, want := range tc.want {
			if got[text] != want {
				t.Errorf("emulated target %t: testcase %q has JUnit property source %q, want %q", tc.emulatedTarget, text, got[text], want)
			}
		}
		if len(r.SpecReports[0].ReportEntries) != 0 {
			t.Errorf("Write changed the suite's own report: %v", r.SpecReports[0].ReportEntries)
		}

		var out bytes.Buffer
		Console(&out, s)
		for text, want := range tc.want {
			named := false
			for _, line := range strings.Split(out.String(), "\n") {
				if strings.HasSuffix(line, "Family "+text) {
					named = strings.Contains(line, " "+want+" ")
				}
			}
			if !named {
				t.Errorf("console line of %q does not name source %q:\n%s", text, want, out.String())
			}
		}
		if !strings.Contains(out.String(), "by source: ") {
			t.Errorf("console has no per-source totals:\n%s", out.String())
		}
	}
}
