package traffic

import (
	"math"
	"strings"
	"testing"

	"github.com/aks-istio-conformance/conformance/harness/telemetry"
)

// cdf is P(X ≤ k) for X ~ Binomial(n, p), summed from the pmf by its recurrence
// P(k+1) = P(k)·(n-k)/(k+1)·p/(1-p): independent of binomialPMF's logarithms. Above
// p = 0.5, (1-p)^n underflows: the mirror image n - X ~ Binomial(n, 1-p) is summed.
func cdf(n, k int, p float64) float64 {
	if k < 0 {
		return 0
	}
	if k >= n {
		return 1
	}
	if p > 0.5 {
		return 1 - cdf(n, n-k-1, 1-p)
	}
	term := math.Pow(1-p, float64(n))
	sum := term
	for i := 0; i < k && i < n; i++ {
		term *= float64(n-i) / float64(i+1) * p / (1 - p)
		sum += term
	}
	return sum
}

func TestBinomialIntervalIsTheTightestCentralInterval(t *testing.T) {
	for _, tc := range []struct {
		n       int
		p, conf float64
		lo, hi  int // -1: check only the defining properties
	}{
		// Binomial(10, 0.5): P(X ≤ 1) = 11/1024 ≤ 5% < P(X ≤ 2) = 56/1024.
		{n: 10, p: 0.5, conf: 0.90, lo: 2, hi: 8},
		{n: 1000, p: 0.1, conf: 0.99, lo: -1, hi: -1},
		{n: 1000, p: 0.9, conf: 0.99, lo: -1, hi: -1},
		{n: 200, p: 0.25, conf: 0.95, lo: -1, hi: -1},
	} {
		lo, hi, err := BinomialInterval(tc.n, tc.p, tc.conf)
		if err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		if tc.lo >= 0 && (lo != tc.lo || hi != tc.hi) {
			t.Errorf("Binomial(%d, %v) at %v: [%d, %d], want [%d, %d]", tc.n, tc.p, tc.conf, lo, hi, tc.lo, tc.hi)
		}
		tail := (1 - tc.conf) / 2
		below, belowNext := cdf(tc.n, lo-1, tc.p), cdf(tc.n, lo, tc.p)
		above, aboveNext := 1-cdf(tc.n, hi, tc.p), 1-cdf(tc.n, hi-1, tc.p)
		if below > tail+1e-12 || belowNext <= tail {
			t.Errorf("Binomial(%d, %v): lo %d: P(X < lo) = %g, P(X ≤ lo) = %g; want the first ≤ %g < the second", tc.n, tc.p, lo, below, belowNext, tail)
		}
		if above > tail+1e-12 || aboveNext <= tail {
			t.Errorf("Binomial(%d, %v): hi %d: P(X > hi) = %g, P(X ≥ hi) = %g; want the first ≤ %g < the second", tc.n, tc.p, hi, above, aboveNext, tail)
		}
		if mean := float64(tc.n) * tc.p; float64(lo) > mean || float64(hi) < mean {
			t.Errorf("Binomial(%d, %v): [%d, %d] does not hold the mean %v", tc.n, tc.p, lo, hi, mean)
		}
	}
}

func TestBinomialIntervalOfThe9010Split(t *testing.T) {
	// The routing spec's bound: v2's count of 1000 requests at weight 10%. The normal
	// approximation gives 100 ± 2.576·√90 ≈ [75.6, 124.4]; the exact binomial bounds are
	// [76, 125] (the upper tail is the longer one).
	lo, hi, err := BinomialInterval(1000, 0.1, 0.99)
	if err != nil || lo != 76 || hi != 125 {
		t.Errorf("[%d, %d], %v; want [76, 125]", lo, hi, err)
	}
	// The two sides of one split are mirror images.
	lo9, hi9, _ := BinomialInterval(1000, 0.9, 0.99)
	if lo9 != 1000-hi || hi9 != 1000-lo {
		t.Errorf("v1's interval [%d, %d] is not 1000 minus v2's [%d, %d]", lo9, hi9, lo, hi)
	}
}

func TestBinomialIntervalEdgesAndBadInput(t *testing.T) {
	if lo, hi, err := BinomialInterval(50, 0, 0.99); err != nil || lo != 0 || hi != 0 {
		t.Errorf("p 0: [%d, %d], %v", lo, hi, err)
	}
	if lo, hi, err := BinomialInterval(50, 1, 0.99); err != nil || lo != 50 || hi != 50 {
		t.Errorf("p 1: [%d, %d], %v", lo, hi, err)
	}
	for _, bad := range []struct {
		n       int
		p, conf float64
	}{{-1, 0.5, 0.9}, {10, 1.5, 0.9}, {10, math.NaN(), 0.9}, {10, 0.5, 1}, {10, 0.5, 0}} {
		if _, _, err := BinomialInterval(bad.n, bad.p, bad.conf); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestTallySplitCountsSubsetsAndChecksThePodThatAnswered(t *testing.T) {
	line := func(code int, cluster, host string) Attempt {
		return Attempt{Outcome: Outcome{Code: code, Flag: "-"}, Entry: &telemetry.AccessLogEntry{Code: code, UpstreamCluster: cluster, UpstreamHost: host}}
	}
	const v1, v2 = "outbound|9080|v1|reviews.ns.svc.cluster.local", "outbound|9080|v2|reviews.ns.svc.cluster.local"
	versions := map[string]string{"10.244.0.11": "v1", "10.244.0.12": "v2", "fd00::12": "v2"}
	s := TallySplit([]Attempt{
		line(200, v1, "10.244.0.11:8080"),
		line(200, v1, "10.244.0.11:8080"),
		line(200, v2, "[fd00::12]:8080"),
		line(200, v2, "10.244.0.11:8080"), // v2's cluster, v1's pod
		line(503, v1, "10.244.0.11:8080"),
		{Outcome: Outcome{Failure: "connection reset"}},
	}, versions)
	if s.Requests != 6 || s.BySubset["v1"] != 2 || s.BySubset["v2"] != 2 {
		t.Errorf("counts %+v", s)
	}
	if len(s.Unanswered) != 2 || len(s.Mismatched) != 1 || !strings.Contains(s.Mismatched[0], "request 4") {
		t.Errorf("unanswered %q, mismatched %q", s.Unanswered, s.Mismatched)
	}
}
