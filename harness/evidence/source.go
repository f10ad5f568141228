package evidence

import "fmt"

// Evidence sources: what decides a spec's verdict. Every spec carries exactly one of these
// as a Ginkgo label, so `-ginkgo.label-filter=upstream` runs only the specs whose verdict
// the emulation cannot have produced, and the reports say which is which.
const (
	// Upstream: istiod (its served xDS, its injection and validation webhooks, its merged
	// mesh config and metrics), the API server or Istio's own packages decide the verdict.
	// The project's emulation only installed what they judge.
	Upstream = "upstream"
	// Emulated: the project's emulation of the add-on decides the verdict: the gateway
	// objects it creates, its lifecycle operations and their refusals, the Safeguards and
	// guardrail policies it installs, the Azure network facts it declares, the names it
	// gives the layout. On a real cluster such a spec either asserts the real add-on's
	// behaviour (Microsoft's webhooks, policies and operations decide, so it is Upstream
	// there) or does not run.
	Emulated = "emulated"
)

// SourceOf reads a spec's evidence source from its labels. emulatedTarget says whether the
// add-on is emulated on the run's target: on a real cluster an emulated spec that runs
// judges the real add-on, so its source is upstream. A spec with neither label, or both,
// has an error: its evidence would be misreported.
func SourceOf(labels []string, emulatedTarget bool) (string, error) {
	var up, emu bool
	for _, l := range labels {
		up = up || l == Upstream
		emu = emu || l == Emulated
	}
	switch {
	case up && emu:
		return "", fmt.Errorf("labels %v name both %q and %q: a spec's verdict has one source", labels, Upstream, Emulated)
	case up:
		return Upstream, nil
	case emu && emulatedTarget:
		return Emulated, nil
	case emu:
		return Upstream, nil
	}
	return "", fmt.Errorf("labels %v name no evidence source: label the spec %q or %q", labels, Upstream, Emulated)
}
