package emulator

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/aks-istio-conformance/conformance/harness/kube"
	"github.com/aks-istio-conformance/conformance/harness/profile"
)

func TestRenderFlagsFollowTheProfile(t *testing.T) {
	p, err := profile.Load("asm-1-28")
	if err != nil {
		t.Fatal(err)
	}
	flags := renderFlags(p)
	for _, want := range []string{
		"revision=asm-1-28", "values.global.istioNamespace=aks-istio-system",
		"hub=mcr.microsoft.com/oss/istio", "tag=1.28.3", "values.global.variant=distroless",
		"values.pilot.env.SHARED_MESH_CONFIG=istio-shared-configmap-asm-1-28",
		"values.pilot.env.ENABLE_NATIVE_SIDECARS=true", "components.cni.enabled=false",
	} {
		if !slices.Contains(flags, want) {
			t.Errorf("render flags lack %q: %v", want, flags)
		}
	}
	p.ProxyRedirection, p.NativeSidecars = profile.CNIChaining, false
	flags = renderFlags(p)
	for _, want := range []string{"values.pilot.cni.enabled=true", "components.cni.enabled=true",
		"components.cni.namespace=aks-istio-system", "values.pilot.env.ENABLE_NATIVE_SIDECARS=false"} {
		if !slices.Contains(flags, want) {
			t.Errorf("CNI chaining render flags lack %q: %v", want, flags)
		}
	}
}

func TestAddonLayoutRenamesWebhooksOnly(t *testing.T) {
	objs, err := kube.Decode(strings.NewReader(`
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: istio-sidecar-injector-asm-1-28-aks-istio-system}
---
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: istio-validator-asm-1-28-aks-istio-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio-asm-1-28-aks-istio-system, namespace: aks-istio-system}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 3 {
		t.Fatalf("decoded %d objects, want 3 (empty documents skipped)", len(objs))
	}
	p, _ := profile.Load("asm-1-28")
	var names []string
	for _, o := range toAddonLayout(p, objs) {
		names = append(names, o.GetName())
	}
	want := []string{"istio-sidecar-injector-asm-1-28", "istio-validator-asm-1-28", "istio-asm-1-28-aks-istio-system"}
	if !slices.Equal(names, want) {
		t.Errorf("names %v, want %v", names, want)
	}
	crds, rest := splitCRDs(append(objs, &unstructured.Unstructured{Object: map[string]any{"kind": "CustomResourceDefinition"}}))
	if len(crds) != 1 || len(rest) != 3 {
		t.Errorf("split %d CRDs and %d others", len(crds), len(rest))
	}
}
