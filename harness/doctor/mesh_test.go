package doctor

import (
	"strings"
	"testing"

	meshconfig "istio.io/api/mesh/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const root = "aks-istio-system"

// Row 9: istiod reads only istio-shared-configmap-<its revision>, key mesh; the add-on
// accepts only the fields of its allow-list.
func TestSharedConfigMaps(t *testing.T) {
	mesh := map[string]string{"mesh": "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n"}
	t.Run("named for a revision that is not running, and the running one has none", func(t *testing.T) {
		s := newSnapshot("asm-1-28").configMap(root, "istio-shared-configmap-asm-1-27", mesh).
			configMap(root, "istio-asm-1-28", map[string]string{"mesh": "{}"})
		f := expectFindings(t, s, "ASM0011 ConfigMap aks-istio-system/istio-shared-configmap-asm-1-27")[0]
		mustContain(t, "ASM0011 fix", f.Fix, "kubectl create configmap -n aks-istio-system istio-shared-configmap-asm-1-28",
			"kubectl get configmap -n aks-istio-system istio-shared-configmap-asm-1-27 -o jsonpath='{.data.mesh}'")
	})
	t.Run("a leftover beside the running revision's own", func(t *testing.T) {
		s := newSnapshot("asm-1-28").configMap(root, "istio-shared-configmap-asm-1-27", mesh).
			configMap(root, "istio-shared-configmap-asm-1-28", mesh)
		expectFindings(t, s, "ASM0012 ConfigMap aks-istio-system/istio-shared-configmap-asm-1-27")
	})
	t.Run("fields outside the allow-list, a missing key, a key that is not a mapping", func(t *testing.T) {
		s := newSnapshot("asm-1-28").
			configMap(root, "istio-shared-configmap-asm-1-28", map[string]string{"mesh": "accessLogFile: /dev/stdout\nconfigSources:\n- address: k8s://\n"})
		f := expectFindings(t, s, "ASM0013 ConfigMap aks-istio-system/istio-shared-configmap-asm-1-28")[0]
		mustContain(t, "ASM0013", f.Message, "configSources")
		if strings.Contains(f.Message, "accessLogFile") {
			t.Errorf("accessLogFile is a supported field: %s", f.Message)
		}
		s = newSnapshot("asm-1-28").configMap(root, "istio-shared-configmap-asm-1-28", map[string]string{"meshConfig": "accessLogFile: /dev/stdout"})
		mustContain(t, "ASM0013", expectFindings(t, s, "ASM0013 ConfigMap aks-istio-system/istio-shared-configmap-asm-1-28")[0].Message, "no key mesh")
		s = newSnapshot("asm-1-28").configMap(root, "istio-shared-configmap-asm-1-28", map[string]string{"mesh": "- a list"})
		expectFindings(t, s, "ASM0013 ConfigMap aks-istio-system/istio-shared-configmap-asm-1-28")
	})
	t.Run("a canary without the copy", func(t *testing.T) {
		s := newSnapshot("asm-1-28", "asm-1-29").configMap(root, "istio-shared-configmap-asm-1-28", mesh)
		f := expectFindings(t, s, "ASM0016 Deployment aks-istio-system/istiod-asm-1-29")[0]
		mustContain(t, "ASM0016 fix", f.Fix, "kubectl create configmap -n aks-istio-system istio-shared-configmap-asm-1-29")
		expectFindings(t, s.configMap(root, "istio-shared-configmap-asm-1-29", mesh))
	})
	t.Run("no shared ConfigMap at all is the add-on's default", func(t *testing.T) {
		expectFindings(t, newSnapshot("asm-1-28", "asm-1-29").configMap(root, "istio-asm-1-28", map[string]string{"mesh": "{}"}))
	})
}

// Row 11: a sidecar keeps the revision that injected it until the pod is recreated.
func TestSidecarRevision(t *testing.T) {
	s := newSnapshot("asm-1-28", "asm-1-29").tag("prod", "asm-1-29").
		ns("moved", "istio.io/rev", "asm-1-29").
		pod("moved", "web-1", "web", injectedBy("asm-1-28")).
		pod("moved", "api-1", "api", injectedBy("asm-1-29")).
		ns("tagged", "istio.io/rev", "prod").
		pod("tagged", "cart-1", "cart", nativeInjectedBy("asm-1-28")).
		ns("stay", "istio.io/rev", "asm-1-28").
		pod("stay", "db-1", "db", injectedBy("asm-1-28")).
		pod("stay", "old-1", "old", injectedBy("asm-1-27"))
	fs := expectFindings(t, s,
		"ASM0014 Deployment moved/web",
		"ASM0014 Deployment tagged/cart",
		"ASM0015 Deployment stay/old",
	)
	moved := find(t, fs, "ASM0014")
	mustContain(t, "ASM0014", moved.Message, "asm-1-28", "asm-1-29")
	mustContain(t, "ASM0014 confirm", moved.Confirm, `sidecar\.istio\.io/status`)
	mustContain(t, "ASM0014 fix", moved.Fix, "kubectl rollout restart deployment/")
}

// Row 13: a LoadBalancer gateway without an address cannot be reached.
func TestGatewayAddress(t *testing.T) {
	s := newSnapshot("asm-1-28").
		rawService(lbService("aks-istio-ingress", "aks-istio-ingressgateway-external")).
		rawService(lbService("aks-istio-ingress", "aks-istio-ingressgateway-internal", "10.224.0.7")).
		rawService(corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "aks-istio-egress", Name: "egress"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP}}).
		rawService(lbService("shop", "own-lb"))
	f := expectFindings(t, s, "ASM0017 Service aks-istio-ingress/aks-istio-ingressgateway-external")[0]
	mustContain(t, "ASM0017", f.Message, "1h0m0s")
}

// Row 14: sidecars OOMKilled or restarted; the app's own restarts are not the mesh's.
func TestSidecarHealth(t *testing.T) {
	s := newSnapshot("asm-1-28").ns("shop", "istio.io/rev", "asm-1-28").
		pod("shop", "web-1", "web", injectedBy("asm-1-28"), proxyRestarts(3, "OOMKilled")).
		pod("shop", "api-1", "api", injectedBy("asm-1-28"), proxyRestarts(1, "Error")).
		pod("shop", "cart-1", "cart", nativeInjectedBy("asm-1-28"), proxyRestarts(2, "Error")).
		pod("shop", "db-1", "db", injectedBy("asm-1-28"), appRestarts(4))
	fs := expectFindings(t, s, "ASM0018 Pod shop/web-1", "ASM0019 Pod shop/api-1", "ASM0019 Pod shop/cart-1")
	mustContain(t, "ASM0018", find(t, fs, "ASM0018").Message, "OOMKilled", "3 restarts")
}

// Row 14: no discoverySelectors on a cluster with many namespaces (the doctor's threshold).
func TestDiscoverySelectors(t *testing.T) {
	s := newSnapshot("asm-1-28").ns("a").ns("b").ns("c")
	s.Meshes = map[string]*meshconfig.MeshConfig{"asm-1-28": {}}
	s.ManyNamespaces = 3
	f := expectFindings(t, s, "ASM0020 ConfigMap aks-istio-system/istio-shared-configmap-asm-1-28")[0]
	mustContain(t, "ASM0020", f.Message, "3 namespaces", "threshold is 3")
	s.ManyNamespaces = 4
	expectFindings(t, s)
	s.ManyNamespaces = -1
	expectFindings(t, s)
	s.ManyNamespaces = 3
	s.Meshes["asm-1-28"].DiscoverySelectors = []*meshconfig.LabelSelector{{MatchLabels: map[string]string{"mesh": "on"}}}
	expectFindings(t, s)
}

// -namespaces limits the namespaced findings; mesh-wide ones stay.
func TestScope(t *testing.T) {
	s := newSnapshot("asm-1-28").
		ns("mine", "istio-injection", "enabled").
		ns("theirs", "istio-injection", "enabled").
		configMap(root, "istio-shared-configmap-asm-1-27", map[string]string{"mesh": "{}"})
	s.Select([]string{"mine"})
	expectFindings(t, s, "ASM0001 Namespace mine", "ASM0011 ConfigMap aks-istio-system/istio-shared-configmap-asm-1-27")
}

// Findings come worst first; within a level by code.
func TestOrder(t *testing.T) {
	s := newSnapshot("asm-1-28").ns("b", "istio-injection", "enabled").ns("a", "istio-injection", "enabled").
		ns("shop", "istio.io/rev", "asm-1-28").pod("shop", "web-1", "web").
		configMap(root, "istio-shared-configmap-asm-1-27", map[string]string{"mesh": "{}"})
	var order []string
	for _, f := range Evaluate(s) {
		order = append(order, f.Level+" "+f.Code+" "+f.Objects[0])
	}
	want := []string{"Error ASM0001 Namespace a", "Error ASM0001 Namespace b",
		"Error ASM0011 ConfigMap aks-istio-system/istio-shared-configmap-asm-1-27", "Warning ASM0005 Deployment shop/web"}
	if strings.Join(order, "|") != strings.Join(want, "|") {
		t.Fatalf("order:\n  got  %q\n  want %q", order, want)
	}
}
