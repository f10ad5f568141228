package telemetry

import (
	"bytes"
	"context"
	"fmt"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// PushMetrics are istiod's control-plane health figures, summed over labels.
type PushMetrics struct {
	// Pushes is pilot_xds_pushes: xDS responses pushed.
	Pushes float64 `json:"pilot_xds_pushes"`
	// InternalErrors is pilot_total_xds_internal_errors.
	InternalErrors float64 `json:"pilot_total_xds_internal_errors"`
	// Rejects is pilot_total_xds_rejects: config proxies NACKed.
	Rejects float64 `json:"pilot_total_xds_rejects"`
	// ConvergenceCount and ConvergenceSum are pilot_proxy_convergence_time's histogram
	// count and sum (seconds); their ratio is the mean convergence time.
	ConvergenceCount float64 `json:"pilot_proxy_convergence_time_count"`
	ConvergenceSum   float64 `json:"pilot_proxy_convergence_time_sum"`
	// ValidationPassed and ValidationFailed are galley_validation_passed and _failed: the
	// objects this istiod's validating webhook admitted and rejected. They say which istiod
	// judged an object when several revisions run.
	ValidationPassed float64 `json:"galley_validation_passed"`
	ValidationFailed float64 `json:"galley_validation_failed"`
}

// MeanConvergence is the mean time from a config change to a proxy receiving it, as istiod
// measures it.
func (m PushMetrics) MeanConvergence() time.Duration {
	if m.ConvergenceCount == 0 {
		return 0
	}
	return time.Duration(m.ConvergenceSum / m.ConvergenceCount * float64(time.Second))
}

// MetricsSource is an istiod replica's HTTP endpoints (a *cluster.Istiod, reached
// through a port-forward to its monitoring port).
type MetricsSource interface {
	Get(ctx context.Context, path string) ([]byte, error)
}

// ScrapePushMetrics reads istiod's /metrics.
func ScrapePushMetrics(ctx context.Context, istiod MetricsSource) (PushMetrics, error) {
	var m PushMetrics
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	body, err := istiod.Get(ctx, "/metrics")
	if err != nil {
		return m, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return m, fmt.Errorf("parse istiod metrics: %w", err)
	}
	sum := func(name string) float64 {
		var total float64
		for _, metric := range families[name].GetMetric() {
			total += value(metric)
		}
		return total
	}
	m.Pushes, m.InternalErrors, m.Rejects = sum("pilot_xds_pushes"), sum("pilot_total_xds_internal_errors"), sum("pilot_total_xds_rejects")
	m.ValidationPassed, m.ValidationFailed = sum("galley_validation_passed"), sum("galley_validation_failed")
	for _, metric := range families["pilot_proxy_convergence_time"].GetMetric() {
		m.ConvergenceCount += float64(metric.GetHistogram().GetSampleCount())
		m.ConvergenceSum += metric.GetHistogram().GetSampleSum()
	}
	return m, nil
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}
