package evidence

import (
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The labels injection webhooks select on (harness/addon names them for scenarios; evidence
// stays free of the add-on's layout).
const (
	revisionLabel        = "istio.io/rev"
	legacyInjectionLabel = "istio-injection"
)

// InjectsWithoutRevision says why an injection webhook would inject a pod that neither its
// namespace nor its own labels assign to a revision (the add-on has no default revision),
// or returns "" when it would not.
func InjectsWithoutRevision(w admissionregistrationv1.MutatingWebhook) string {
	var nsRev, podRev, noLegacy bool
	if s := w.NamespaceSelector; s != nil {
		for _, e := range s.MatchExpressions {
			switch {
			case e.Key == revisionLabel && e.Operator == metav1.LabelSelectorOpIn:
				nsRev = true
			case e.Key == legacyInjectionLabel && e.Operator == metav1.LabelSelectorOpDoesNotExist:
				noLegacy = true
			case e.Key == legacyInjectionLabel && e.Operator == metav1.LabelSelectorOpIn:
				return "selects namespaces labelled istio-injection"
			}
		}
		if s.MatchLabels[legacyInjectionLabel] != "" {
			return "selects namespaces labelled istio-injection"
		}
	}
	if s := w.ObjectSelector; s != nil {
		for _, e := range s.MatchExpressions {
			if e.Key == revisionLabel && e.Operator == metav1.LabelSelectorOpIn {
				podRev = true
			}
		}
	}
	switch {
	case !nsRev && !podRev:
		return "selects neither namespaces nor pods by istio.io/rev"
	case !noLegacy:
		return "does not require istio-injection to be absent"
	}
	return ""
}
