package emulator

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/aks-istio-conformance/conformance/harness/kube"
)

// The in-cluster runtime leaves the rendered webhooks calling istiod's Service, lowers
// istiod's requests for a kind node, and records the images the revision renders.
func TestInClusterAdaptKeepsServiceWebhooksAndRecordsImages(t *testing.T) {
	objs, err := kube.Decode(strings.NewReader(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: istiod-asm-1-28, namespace: aks-istio-system}
spec:
  template:
    spec:
      containers:
      - name: discovery
        image: mcr.microsoft.com/oss/istio/pilot:1.28.3-distroless
        resources: {requests: {cpu: 500m, memory: 2048Mi}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: azure-service-mesh-istio-cni-addon-node, namespace: aks-istio-system}
spec:
  template:
    spec:
      containers: [{name: install-cni, image: mcr.microsoft.com/oss/istio/install-cni:1.28.3-distroless}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: aks-istio-ingressgateway-external-asm-1-28, namespace: aks-istio-ingress}
spec:
  template:
    spec:
      containers: [{name: istio-proxy, image: auto}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: istio-sidecar-injector-asm-1-28}
webhooks:
- name: rev.namespace.sidecar-injector.istio.io
  clientConfig: {service: {name: istiod-asm-1-28, namespace: aks-istio-system, path: /inject, port: 443}}
`))
	if err != nil {
		t.Fatal(err)
	}
	rt := NewInCluster(nil, nil)
	if err := rt.Adapt("asm-1-28", objs); err != nil {
		t.Fatal(err)
	}
	want := []string{"mcr.microsoft.com/oss/istio/install-cni:1.28.3-distroless", "mcr.microsoft.com/oss/istio/pilot:1.28.3-distroless"}
	if got := rt.Images("asm-1-28"); !slices.Equal(got, want) {
		t.Errorf("images %v, want %v (a gateway's image: auto is the injector's)", got, want)
	}
	containers, _, _ := unstructured.NestedSlice(objs[0].Object, "spec", "template", "spec", "containers")
	if cpu, _, _ := unstructured.NestedString(containers[0].(map[string]any), "resources", "requests", "cpu"); cpu != "100m" {
		t.Errorf("istiod requests cpu %q", cpu)
	}
	service, _, _ := unstructured.NestedSlice(objs[3].Object, "webhooks")
	if _, found, _ := unstructured.NestedMap(service[0].(map[string]any), "clientConfig", "service"); !found {
		t.Errorf("the webhook no longer calls istiod's Service: %v", service)
	}
}

func TestInClusterNamesAnImageTheNodesCannotPull(t *testing.T) {
	rt := NewInCluster(nil, nil)
	rt.PullHint = "set ASM_KIND_IMAGE_MIRROR=docker.io/istio"
	pods := []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Namespace: "aks-istio-system", Name: "istiod-asm-1-28-abc"},
		Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{
			Image: "mcr.microsoft.com/oss/istio/pilot:1.28.3-distroless",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "manifest unknown"}}}}}}}
	err := rt.pullFailure(pods)
	if err == nil || !strings.Contains(err.Error(), "pilot:1.28.3-distroless") || !strings.Contains(err.Error(), "manifest unknown") || !strings.Contains(err.Error(), "ASM_KIND_IMAGE_MIRROR") {
		t.Errorf("pull failure: %v", err)
	}
	pods[0].Status.ContainerStatuses[0].State.Waiting.Reason = "ContainerCreating"
	if err := rt.pullFailure(pods); err != nil {
		t.Errorf("a container being created is not a pull failure: %v", err)
	}
	if s := podStates(pods); s != "istiod-asm-1-28-abc Pending (ContainerCreating)" {
		t.Errorf("states %q", s)
	}
}

func TestInClusterServesTheHarnessWebhookOnlyWhereTheAPIServerReachesIt(t *testing.T) {
	rt := NewInCluster(nil, nil)
	if _, _, err := rt.ServeValidation("/validate-meshconfig", http.NotFoundHandler()); !errors.Is(err, ErrNoWebhookHost) {
		t.Errorf("no host: %v", err)
	}
	// Loopback stands in for the nodes' gateway address here.
	rt.WebhookHost, rt.PKIDir = "127.0.0.1", t.TempDir()
	defer rt.Close()
	url, ca, err := rt.ServeValidation("/validate-meshconfig", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "judged "+r.URL.Path)
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(url, "https://127.0.0.1:") || !strings.HasSuffix(url, "/validate-meshconfig") {
		t.Errorf("url %s", url)
	}
	// The API server trusts exactly the returned bundle.
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		t.Fatalf("bundle does not parse")
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "judged /validate-meshconfig" {
		t.Errorf("answer %q", body)
	}
	if _, err := (&http.Client{}).Get(url); err == nil {
		t.Errorf("a client without the bundle trusted the webhook's certificate")
	}
}
