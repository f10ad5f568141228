package conformance

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/aks-istio-conformance/conformance/harness/runbook"
	"github.com/aks-istio-conformance/conformance/harness/xds"
)

// observed prints any verdict in a failure message.
type observed struct{ v any }

func (o observed) String() string { return fmt.Sprint(o.v) }

// served waits until judge accepts what istiod serves to proxy, then records the verdict
// and the time since the change was applied (the propagation time). On timeout the step
// explains the last verdict; confirm fills the step's confirm command.
func served[T any](ctx context.Context, proxy *xds.Proxy, since time.Time, step runbook.Step, confirm []any, judge func(xds.Snapshot) (T, error)) T {
	GinkgoHelper()
	var got T
	arrival, err := proxy.Await(ctx, since, world.Timeout, func(s xds.Snapshot) error {
		var err error
		got, err = judge(s)
		return err
	})
	Expect(err).NotTo(HaveOccurred(), step.Explain(observed{got}, confirm...))
	propagation(arrival)
	record(got)
	return got
}

// at is the confirm-command arguments naming a workload's pod.
func (w workload) at() []any { return []any{w.ns, w.pod.Name} }
