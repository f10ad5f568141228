package guard

import (
	"strings"
	"testing"
)

func TestPoliciesCoverTheProfilesKinds(t *testing.T) {
	// The seed-era list: the current one plus EnvoyFilter and Telemetry.
	kinds := []string{"ProxyConfig", "WorkloadEntry", "WorkloadGroup", "IstioOperator", "WasmPlugin", "EnvoyFilter", "Telemetry"}
	policies, bindings, err := Policies(kinds)
	if err != nil {
		t.Fatal(err)
	}
	if len(policies) != 2 || len(bindings) != 2 {
		t.Fatalf("%d policies, %d bindings; want the Wasm policy and the blocked-kinds policy, each bound", len(policies), len(bindings))
	}
	var blocked []string
	for _, p := range policies {
		if p.Name != BlockedKindsPolicy {
			continue
		}
		for _, r := range p.Spec.MatchConstraints.ResourceRules {
			blocked = append(blocked, r.APIGroups[0]+"/"+r.Resources[0])
		}
	}
	for _, want := range []string{"networking.istio.io/envoyfilters", "telemetry.istio.io/telemetries", "install.istio.io/istiooperators", "extensions.istio.io/wasmplugins"} {
		if !strings.Contains(strings.Join(blocked, " "), want) {
			t.Errorf("blocked resources %v lack %s", blocked, want)
		}
	}
	if _, _, err := Policies([]string{"Gateway"}); err == nil || !strings.Contains(err.Error(), "not one the add-on can block") {
		t.Errorf("an unknown kind: %v", err)
	}
}
