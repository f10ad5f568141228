// Package telemetry reads the add-on's telemetry settings: which namespaces Azure Monitor's
// managed Prometheus scrapes by pod annotation, and istiod's own push metrics.
package telemetry

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// AMA metrics settings (Azure Monitor managed Prometheus): ConfigMap
// kube-system/ama-metrics-settings-configmap, key pod-annotation-based-scraping, with a
// line `podannotationnamespaceregex = "<regex>"`. Pods in matching namespaces are scraped
// by their prometheus.io/* annotations.
const (
	AMASettingsConfigMap = "ama-metrics-settings-configmap"
	AMASettingsKey       = "pod-annotation-based-scraping"
	amaRegexSetting      = "podannotationnamespaceregex"
)

// AnnotationScrapeRegex returns the namespace regex of the settings, "" when none is set
// (then no namespace is scraped by annotation).
func AnnotationScrapeRegex(data map[string]string) (string, error) {
	for _, line := range strings.Split(data[AMASettingsKey], "\n") {
		key, value, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(key) != amaRegexSetting {
			continue
		}
		value = strings.TrimSpace(value)
		if len(value) < 2 || value[0] != '"' || value[len(value)-1] != '"' {
			return "", fmt.Errorf("%s: %s must be a quoted regex, got %s", AMASettingsKey, amaRegexSetting, value)
		}
		re := value[1 : len(value)-1]
		if _, err := regexp.Compile(re); err != nil {
			return "", fmt.Errorf("%s: %s %q: %w", AMASettingsKey, amaRegexSetting, re, err)
		}
		return re, nil
	}
	return "", nil
}

// Unscraped returns the namespaces the regex does not match (anchored, as Prometheus
// relabelling matches), sorted.
func Unscraped(regex string, namespaces []string) []string {
	var out []string
	re := regexp.MustCompile("^(?:" + regex + ")$")
	for _, ns := range namespaces {
		if regex == "" || !re.MatchString(ns) {
			out = append(out, ns)
		}
	}
	sort.Strings(out)
	return out
}
