package evidence

import (
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestInjectionOfReadsNativeAndClassicSidecars(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	proxyEnv := []corev1.EnvVar{{Name: "PROXY_CONFIG", Value: `{"discoveryAddress":"istiod-asm-1-28.aks-istio-system.svc:15012"}`}}
	native := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "n", Annotations: map[string]string{
			"sidecar.istio.io/status": `{"revision":"asm-1-28","initContainers":["istio-init","istio-proxy"]}`}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{
				{Name: "istio-init", SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}}}},
				{Name: "istio-proxy", Image: "mcr.microsoft.com/oss/istio/proxyv2:1.28.3-distroless", RestartPolicy: &always, Env: proxyEnv},
			},
			Containers: []corev1.Container{{Name: "app"}},
		},
	}
	got := InjectionOf(native)
	if !got.Injected || !got.Native || got.Revision != "asm-1-28" || got.Redirection != InitRedirection ||
		len(got.RedirectionCaps) != 2 || got.DiscoveryAddress != "istiod-asm-1-28.aks-istio-system.svc:15012" {
		t.Errorf("native sidecar read as %+v", got)
	}

	classic := &corev1.Pod{Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "istio-validation"}},
		Containers:     []corev1.Container{{Name: "app"}, {Name: "istio-proxy", Env: append(proxyEnv, corev1.EnvVar{Name: "X", Value: "1"})}},
	}}
	got = InjectionOf(classic)
	if !got.Injected || got.Native || got.Redirection != ValidationContainer || len(got.RedirectionCaps) != 0 {
		t.Errorf("classic sidecar under CNI read as %+v", got)
	}
	if ProxyEnv(classic, "X") != "1" || ProxyEnv(classic, "Y") != "" {
		t.Errorf("ProxyEnv misread istio-proxy's environment")
	}

	plain := InjectionOf(&corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}})
	if plain.Injected || plain.Redirection != "" {
		t.Errorf("uninjected pod read as %+v", plain)
	}
}

func TestInjectsWithoutRevision(t *testing.T) {
	expr := func(key string, op metav1.LabelSelectorOperator, values ...string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: key, Operator: op, Values: values}
	}
	sel := func(reqs ...metav1.LabelSelectorRequirement) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchExpressions: reqs}
	}
	for name, tc := range map[string]struct {
		hook admissionregistrationv1.MutatingWebhook
		ok   bool
	}{
		"namespace revision webhook": {admissionregistrationv1.MutatingWebhook{
			NamespaceSelector: sel(expr("istio.io/rev", metav1.LabelSelectorOpIn, "asm-1-28"), expr("istio-injection", metav1.LabelSelectorOpDoesNotExist)),
		}, true},
		"pod revision webhook": {admissionregistrationv1.MutatingWebhook{
			NamespaceSelector: sel(expr("istio.io/rev", metav1.LabelSelectorOpDoesNotExist), expr("istio-injection", metav1.LabelSelectorOpDoesNotExist)),
			ObjectSelector:    sel(expr("istio.io/rev", metav1.LabelSelectorOpIn, "asm-1-28")),
		}, true},
		"upstream default webhook": {admissionregistrationv1.MutatingWebhook{
			NamespaceSelector: sel(expr("istio-injection", metav1.LabelSelectorOpIn, "enabled")),
		}, false},
		"revision without the istio-injection guard": {admissionregistrationv1.MutatingWebhook{
			NamespaceSelector: sel(expr("istio.io/rev", metav1.LabelSelectorOpIn, "asm-1-28")),
		}, false},
		"selects everything": {admissionregistrationv1.MutatingWebhook{}, false},
	} {
		if got := InjectsWithoutRevision(tc.hook); (got == "") != tc.ok {
			t.Errorf("%s: got %q, want ok=%t", name, got, tc.ok)
		}
	}
}
