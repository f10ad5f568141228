package conformance

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/aks-istio-conformance/conformance/harness/evidence"
)

// Every spec declares where its verdict comes from (harness/evidence): `upstream` when
// istiod, the API server or Istio's own packages decide it, `emulated` when this project's
// emulation of the add-on does. Containers whose specs all share a source carry the label;
// mixed containers label each spec. The reports (summary.json, JUnit, console) carry it.
var (
	upstream = Label(evidence.Upstream)
	emulated = Label(evidence.Emulated)
)

// A spec that declares no source, or both, fails before it runs instead of being reported
// with a source nobody decided.
var _ = BeforeEach(func() {
	spec := CurrentSpecReport()
	_, err := evidence.SourceOf(spec.Labels(), true)
	Expect(err).NotTo(HaveOccurred(), "spec %q must declare its evidence source", spec.FullText())
})
