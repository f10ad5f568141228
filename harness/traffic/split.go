package traffic

import (
	"fmt"
	"math"
	"net"

	"github.com/aks-istio-conformance/conformance/harness/telemetry"
)

// BinomialInterval is the range that the number of successes of n independent trials,
// each succeeding with probability p, falls in with at least the given confidence: the
// central interval [lo, hi] with P(X < lo) ≤ α/2 and P(X > hi) ≤ α/2, α = 1 - confidence,
// each bound as tight as the exact binomial distribution allows. A weighted split is judged
// by it: with weight 10% over 1000 requests, the count of the 10% side lies in it 99 runs
// in 100 when the proxy really splits 90/10, so a count outside it is evidence of another
// split, not bad luck.
func BinomialInterval(n int, p, confidence float64) (lo, hi int, err error) {
	switch {
	case n < 0:
		return 0, 0, fmt.Errorf("n %d: want at least 0 trials", n)
	case p < 0 || p > 1 || math.IsNaN(p):
		return 0, 0, fmt.Errorf("p %v: want a probability in [0, 1]", p)
	case confidence <= 0 || confidence >= 1 || math.IsNaN(confidence):
		return 0, 0, fmt.Errorf("confidence %v: want a value in (0, 1)", confidence)
	case p == 0:
		return 0, 0, nil
	case p == 1:
		return n, n, nil
	}
	tail := (1 - confidence) / 2
	// Walk in from each end, adding probability mass while it stays within the tail.
	lo, mass := 0, 0.0
	for lo < n && mass+binomialPMF(n, lo, p) <= tail {
		mass += binomialPMF(n, lo, p)
		lo++
	}
	hi, mass = n, 0.0
	for hi > 0 && mass+binomialPMF(n, hi, p) <= tail {
		mass += binomialPMF(n, hi, p)
		hi--
	}
	return lo, hi, nil
}

// binomialPMF is P(X = k) for X ~ Binomial(n, p), 0 < p < 1, computed in logarithms so
// that n in the thousands neither overflows nor underflows before the end.
func binomialPMF(n, k int, p float64) float64 {
	lg := func(x int) float64 { v, _ := math.Lgamma(float64(x) + 1); return v }
	return math.Exp(lg(n) - lg(k) - lg(n-k) + float64(k)*math.Log(p) + float64(n-k)*math.Log1p(-p))
}

// Split is how a batch of requests was spread across a route's subsets, read from the
// client's access-log lines.
type Split struct {
	Requests int `json:"requests"`
	// BySubset counts answered requests by the DestinationRule subset of the upstream
	// cluster Envoy picked for each (telemetry.Subset; "" for a cluster without one).
	BySubset map[string]int `json:"bySubset"`
	// Unanswered describes requests that got no 200 or whose line was not found.
	Unanswered []string `json:"unanswered,omitempty"`
	// Mismatched describes answered requests whose upstream host is not a pod of the
	// subset's version: the subset's endpoints would be wrong, not only its weight.
	Mismatched []string `json:"mismatched,omitempty"`
}

// TallySplit counts attempts by subset. versions maps the IP of each backend pod to its
// version label, so that each count is also checked against the pod that answered.
func TallySplit(attempts []Attempt, versions map[string]string) Split {
	s := Split{Requests: len(attempts), BySubset: map[string]int{}}
	for i, a := range attempts {
		if a.Code != 200 || a.Entry == nil {
			s.Unanswered = append(s.Unanswered, fmt.Sprintf("request %d: %s %s", i+1, a.Outcome, a.Note))
			continue
		}
		subset := telemetry.Subset(a.Entry.UpstreamCluster)
		s.BySubset[subset]++
		host, _, err := net.SplitHostPort(a.Entry.UpstreamHost)
		if err != nil {
			host = a.Entry.UpstreamHost
		}
		if v, ok := versions[host]; !ok || v != subset {
			s.Mismatched = append(s.Mismatched, fmt.Sprintf("request %d: cluster %s answered by %s (version %q)", i+1, a.Entry.UpstreamCluster, a.Entry.UpstreamHost, v))
		}
	}
	return s
}
