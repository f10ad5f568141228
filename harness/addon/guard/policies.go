package guard

import (
	"fmt"
	"sort"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kindResources maps the kinds the add-on can block to their API group and resource.
var kindResources = map[string][2]string{
	"ProxyConfig":   {"networking.istio.io", "proxyconfigs"},
	"WorkloadEntry": {"networking.istio.io", "workloadentries"},
	"WorkloadGroup": {"networking.istio.io", "workloadgroups"},
	"EnvoyFilter":   {"networking.istio.io", "envoyfilters"},
	"WasmPlugin":    {"extensions.istio.io", "wasmplugins"},
	"Telemetry":     {"telemetry.istio.io", "telemetries"},
	"IstioOperator": {"install.istio.io", "istiooperators"},
}

// Resource returns the API group and resource of a blockable kind.
func Resource(kind string) (group, resource string, ok bool) {
	gr, ok := kindResources[kind]
	return gr[0], gr[1], ok
}

// Names of the emulated guardrails.
const (
	BlockedKindsPolicy    = "aks-istio-blocked-resources"
	WasmEnvoyFilterPolicy = "aks-istio-envoyfilter-wasm"
	MeshConfigValidator   = "aks-istio-meshconfig-validator"
	// WasmType is the typed config the add-on refuses in EnvoyFilters.
	WasmType = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
)

// Policies returns the admission policies and bindings that block kinds (a profile's list)
// and Wasm EnvoyFilters. They are non-bypassable: every namespace, every user.
func Policies(blockedKinds []string) ([]*admissionregistrationv1.ValidatingAdmissionPolicy, []*admissionregistrationv1.ValidatingAdmissionPolicyBinding, error) {
	fail := admissionregistrationv1.Fail
	ops := []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}
	var rules []admissionregistrationv1.NamedRuleWithOperations
	kinds := append([]string(nil), blockedKinds...)
	sort.Strings(kinds)
	for _, k := range kinds {
		group, resource, ok := Resource(k)
		if !ok {
			return nil, nil, fmt.Errorf("blocked kind %q is not one the add-on can block (have: ProxyConfig, WorkloadEntry, WorkloadGroup, EnvoyFilter, WasmPlugin, Telemetry, IstioOperator)", k)
		}
		rules = append(rules, admissionregistrationv1.NamedRuleWithOperations{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
			Operations: ops, Rule: admissionregistrationv1.Rule{APIGroups: []string{group}, APIVersions: []string{"*"}, Resources: []string{resource}}}})
	}
	policy := func(name string, rules []admissionregistrationv1.NamedRuleWithOperations, v admissionregistrationv1.Validation) *admissionregistrationv1.ValidatingAdmissionPolicy {
		return &admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{FailurePolicy: &fail,
				MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: rules},
				Validations:      []admissionregistrationv1.Validation{v}}}
	}
	wasm := policy(WasmEnvoyFilterPolicy, []admissionregistrationv1.NamedRuleWithOperations{{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
		Operations: ops, Rule: admissionregistrationv1.Rule{APIGroups: []string{"networking.istio.io"}, APIVersions: []string{"*"}, Resources: []string{"envoyfilters"}}}}},
		admissionregistrationv1.Validation{
			Expression: "!has(object.spec.configPatches) || object.spec.configPatches.all(p, !has(p.patch) || !has(p.patch.value) || " +
				"!has(p.patch.value.typed_config) || !('@type' in p.patch.value.typed_config) || p.patch.value.typed_config['@type'] != '" + WasmType + "')",
			Message: `envoy filter with type "` + WasmType + `" is not allowed`,
		})
	policies := []*admissionregistrationv1.ValidatingAdmissionPolicy{wasm}
	if len(rules) > 0 {
		policies = append(policies, policy(BlockedKindsPolicy, rules, admissionregistrationv1.Validation{
			Expression:        "false",
			MessageExpression: "object.kind + ' is blocked by the Istio-based service mesh add-on for AKS (blocked: " + strings.Join(kinds, ", ") + ")'",
		}))
	}
	var bindings []*admissionregistrationv1.ValidatingAdmissionPolicyBinding
	for _, p := range policies {
		bindings = append(bindings, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: p.Name},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: p.Name,
				ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}}})
	}
	return policies, bindings, nil
}

// MeshConfigWebhookConfiguration routes writes of the shared mesh ConfigMaps in the root
// namespace to the MeshConfig webhook at url.
func MeshConfigWebhookConfiguration(rootNamespace, url string, caBundle []byte) *admissionregistrationv1.ValidatingWebhookConfiguration {
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	return &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: MeshConfigValidator},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         "meshconfig.validation.aks-istio.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}}}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": rootNamespace}},
			MatchConditions: []admissionregistrationv1.MatchCondition{{Name: "shared-mesh-configmap",
				Expression: "object.metadata.name.startsWith('" + SharedConfigMapPrefix + "')"}},
			FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"},
		}}}
}
