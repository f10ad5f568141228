package guard

import (
	"encoding/json"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func request(t *testing.T, name, mesh string) *admissionv1.AdmissionRequest {
	t.Helper()
	raw, err := json.Marshal(corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"mesh": mesh}})
	if err != nil {
		t.Fatal(err)
	}
	return &admissionv1.AdmissionRequest{UID: "u1", Object: runtime.RawExtension{Raw: raw}}
}

func TestReviewAppliesTheAllowList(t *testing.T) {
	for _, tc := range []struct {
		name, mesh string
		allowed    bool
		mentions   string
	}{
		{"istio-shared-configmap-asm-1-28", "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\naccessLogFile: /dev/stdout\n", true, ""},
		{"istio-shared-configmap-asm-1-28", "configSources:\n- address: x\naccessLogFile: /dev/stdout\n", false, "configSources"},
		{"istio-shared-configmap-asm-1-28", "rootNamespace: istio-system\nconfigSources: []\n", false, "configSources, rootNamespace"},
		{"istio-shared-configmap-asm-1-28", "- not a mapping\n", false, "not a YAML mapping"},
		{"some-other-configmap", "configSources: []\n", true, ""},
	} {
		resp := Review(request(t, tc.name, tc.mesh))
		if resp.Allowed != tc.allowed || (tc.mentions != "" && !strings.Contains(resp.Result.Message, tc.mentions)) {
			t.Errorf("%s %q: allowed=%t %v; want allowed=%t mentioning %q", tc.name, tc.mesh, resp.Allowed, resp.Result, tc.allowed, tc.mentions)
		}
		if resp.UID != "u1" {
			t.Errorf("response UID %q, want the request's", resp.UID)
		}
	}
}
