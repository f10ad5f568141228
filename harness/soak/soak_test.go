package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aks-istio-conformance/conformance/harness/report"
)

// writeRun writes a run's summary.json the way the suite does (report.Summary, one level
// below the seed directory), so a change in the report's format breaks this test.
func writeRun(t *testing.T, dir string, seed string, s report.Summary) {
	t.Helper()
	runDir := filepath.Join(dir, "seed-"+seed, "20260101-000000-asmc-abcde")
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(runDir, "summary.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func spec(name, state, failure string) report.Spec {
	return report.Spec{Name: name, State: state, Failure: failure, Location: "suites/conformance/x_test.go:1"}
}

func TestAggregateCountsFailuresPerSpecAcrossRuns(t *testing.T) {
	dir := t.TempDir()
	writeRun(t, dir, "11", report.Summary{Specs: []report.Spec{
		spec("Injection restart", "passed", ""), spec("Egress REGISTRY_ONLY", "passed", ""), spec("Traffic 503", "skipped", "needs a data plane"),
	}})
	writeRun(t, dir, "12", report.Summary{Specs: []report.Spec{
		spec("Injection restart", "failed", "expected the new pod\nobserved the old one"), spec("Egress REGISTRY_ONLY", "passed", ""), spec("Traffic 503", "skipped", "needs a data plane"),
	}})
	writeRun(t, dir, "13", report.Summary{Specs: []report.Spec{
		spec("Injection restart", "timedout", "timed out"), spec("Egress REGISTRY_ONLY", "passed", ""), spec("Traffic 503", "skipped", "needs a data plane"),
		spec("Mesh config", "failed", "Unexpected error:\n    <*fmt.wrapError | 0x2d59>: \n    configmaps \"istio-ca-root-cert\" not found\n    {msg: ...}"),
	}})
	// A run that died before reporting leaves its directory without a summary.
	if err := os.MkdirAll(filepath.Join(dir, "seed-14"), 0o755); err != nil {
		t.Fatal(err)
	}

	res, err := Aggregate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Failed() {
		t.Error("Failed() = false with a spec failing in two runs")
	}
	if len(res.Runs) != 4 || res.Runs[3].Seed != 14 || !strings.Contains(res.Runs[3].Error, "no summary.json") {
		t.Fatalf("runs %+v: want 4 in seed order, the last without a summary", res.Runs)
	}
	first := res.Specs[0]
	if first.Name != "Injection restart" || first.Ran != 3 || len(first.FailedSeeds) != 2 || first.FailedSeeds[0] != 12 || first.FailedSeeds[1] != 13 {
		t.Errorf("most failed spec %+v: want Injection restart, ran 3, failed with seeds 12 and 13", first)
	}
	if !strings.HasPrefix(first.FirstFailure, "expected the new pod (") {
		t.Errorf("first failure %q: want the first line of seed 12's failure and its location", first.FirstFailure)
	}
	for _, s := range res.Specs[1:] {
		if s.Name == "Mesh config" {
			if want := `Unexpected error: configmaps "istio-ca-root-cert" not found (`; !strings.HasPrefix(s.FirstFailure, want) {
				t.Errorf("Gomega failure summarised as %q, want it to start with %q", s.FirstFailure, want)
			}
			continue
		}
		if len(s.FailedSeeds) != 0 {
			t.Errorf("%s failed in %v, want no failure", s.Name, s.FailedSeeds)
		}
		if s.Name == "Traffic 503" && s.Ran != 0 {
			t.Errorf("a skipped spec counted %d runs, want 0", s.Ran)
		}
	}

	var out bytes.Buffer
	res.Print(&out)
	for _, want := range []string{"FAILED 2/3  Injection restart", "-ginkgo.seed=12", "run with seed 14: no summary.json", "2 specs failed in at least one run, 1 passed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("printed summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestAggregatePassesWhenEveryRunPassed(t *testing.T) {
	dir := t.TempDir()
	for _, seed := range []string{"1", "2"} {
		writeRun(t, dir, seed, report.Summary{Specs: []report.Spec{spec("Layout names", "passed", "")}})
	}
	res, err := Aggregate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed() {
		t.Errorf("Failed() = true for two passing runs: %+v", res)
	}
}

func TestAggregateRefusesADirectoryWithoutRuns(t *testing.T) {
	if _, err := Aggregate(t.TempDir()); err == nil || !strings.Contains(err.Error(), "seed-") {
		t.Fatalf("got %v, want an error saying runs are seed-<seed> directories", err)
	}
}

// The suite command is a shell script standing in for `go test ... -args`: it writes a
// summary into the -reports-dir it is given, failing its spec when the seed is even, and
// records its arguments.
func TestRunPassesEachRunItsOwnSeedAndReportsDirectory(t *testing.T) {
	dir := t.TempDir()
	script := `
for a in "$@"; do
	case $a in
	-reports-dir=*) d=${a#-reports-dir=} ;;
	-ginkgo.seed=*) seed=${a#-ginkgo.seed=} ;;
	esac
done
echo "$@"
state=passed
[ $((seed % 2)) -eq 0 ] && state=failed
mkdir -p "$d/run" && printf '{"specs":[{"name":"Spec A","state":"%s","failure":"boom"}]}' $state >"$d/run/summary.json"
[ $state = passed ]`
	var progress bytes.Buffer
	res, err := Run(context.Background(), Options{Runs: 3, Dir: dir, Command: []string{"/bin/sh", "-c", script, "suite", "-target=local"},
		FirstSeed: 41, Out: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Runs) != 3 || res.Runs[0].Seed != 41 || res.Runs[2].Seed != 43 {
		t.Fatalf("runs %+v: want seeds 41, 42, 43", res.Runs)
	}
	if len(res.Specs) != 1 || res.Specs[0].Ran != 3 || len(res.Specs[0].FailedSeeds) != 1 || res.Specs[0].FailedSeeds[0] != 42 {
		t.Errorf("specs %+v: want Spec A failing only with seed 42", res.Specs)
	}
	log, err := os.ReadFile(filepath.Join(dir, "seed-42.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"-target=local", "-reports-dir=" + filepath.Join(dir, "seed-42"), "-ginkgo.randomize-all", "-ginkgo.seed=42"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("run 2 got arguments %q, want %s among them", log, want)
		}
	}
	if !strings.Contains(progress.String(), "soak run 3/3, seed 43: 1 passed") {
		t.Errorf("progress lines lack the third run's outcome:\n%s", progress.String())
	}
}
