package xds

import (
	"strings"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func rdsListener(t *testing.T, name, routeName string) *listener.Listener {
	t.Helper()
	cfg, err := anypb.New(&hcm.HttpConnectionManager{RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{RouteConfigName: routeName}}})
	if err != nil {
		t.Fatal(err)
	}
	return &listener.Listener{Name: name, FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
		Name: "envoy.filters.network.http_connection_manager", ConfigType: &listener.Filter_TypedConfig{TypedConfig: cfg}}}}}}
}

func TestDanglingRoutesAndSize(t *testing.T) {
	s := Snapshot{
		Listeners: []*listener.Listener{rdsListener(t, "0.0.0.0_9080", "9080"), rdsListener(t, "0.0.0.0_8080", "http.8080")},
		Routes:    []*route.RouteConfiguration{{Name: "9080"}},
	}
	if got := s.danglingRoutes(); len(got) != 1 || got[0] != "http.8080" {
		t.Errorf("dangling %v, want [http.8080]", got)
	}
	s.Routes = append(s.Routes, &route.RouteConfiguration{Name: "http.8080"})
	if got := s.danglingRoutes(); len(got) != 0 {
		t.Errorf("dangling %v, want none", got)
	}
	if z := s.Size(); z.Listeners != 2 || z.Routes != 2 || z.Bytes == 0 {
		t.Errorf("size %+v", z)
	}
}

func TestIdentityOfReadsTheInjectedProxy(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app-1", Namespace: "shop",
		Labels: map[string]string{"app": "app", "pod-template-hash": "abc"}}}
	if _, err := IdentityOf(pod, false, ""); err == nil {
		t.Fatal("a pod without an IP gave an identity")
	}
	pod.Status.PodIP = "10.244.0.7"
	if _, err := IdentityOf(pod, false, ""); err == nil || !strings.Contains(err.Error(), "not injected") {
		t.Fatalf("a pod without istio-proxy: %v, want 'not injected'", err)
	}
	pod.Spec.Containers = []corev1.Container{{Name: "istio-proxy", Image: "mcr.microsoft.com/oss/istio/proxyv2:1.28.3-distroless",
		Env: []corev1.EnvVar{
			{Name: "PROXY_CONFIG", Value: `{"discoveryAddress":"istiod-asm-1-28.aks-istio-system.svc:15012"}`},
			{Name: "ISTIO_META_CLUSTER_ID", Value: "Kubernetes"},
			{Name: "ISTIO_META_WORKLOAD_NAME", Value: "app"},
			{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		}}}
	id, err := IdentityOf(pod, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if id.NodeID() != "sidecar~10.244.0.7~app-1.shop~shop.svc.cluster.local" || id.ServiceAccount != "default" {
		t.Errorf("node id %s, service account %s", id.NodeID(), id.ServiceAccount)
	}
	if id.DiscoveryHost != "istiod-asm-1-28.aks-istio-system.svc" || id.IstioVersion != "1.28.3" || id.Workload != "app" {
		t.Errorf("discovery host %q, version %q, workload %q", id.DiscoveryHost, id.IstioVersion, id.Workload)
	}
	meta := id.Meta.AsMap()
	if meta["CLUSTER_ID"] != "Kubernetes" || meta["NAMESPACE"] != "shop" || meta["ISTIO_VERSION"] != "1.28.3" {
		t.Errorf("metadata %v: want CLUSTER_ID, NAMESPACE and ISTIO_VERSION from the container", meta)
	}
	labels, _ := meta["LABELS"].(map[string]any)
	if labels["app"] != "app" || labels["pod-template-hash"] != nil {
		t.Errorf("labels %v: want the pod's, without pod-template-hash", labels)
	}
	if _, ok := meta["PROXY_CONFIG"]; !ok {
		t.Errorf("metadata %v has no PROXY_CONFIG: istiod lists a proxy in sync status only with one", meta)
	}
}

func TestIdentityOfAGatewayReadsItsMountedMeshConfig(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "gw-1", Namespace: "aks-istio-ingress"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "istio-proxy", Image: "proxyv2:1.28.3",
				VolumeMounts: []corev1.VolumeMount{{Name: "config-volume", MountPath: "/etc/istio/config"}}}},
			Volumes: []corev1.Volume{{Name: "config-volume", VolumeSource: corev1.VolumeSource{
				ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "istio-asm-1-28"}}}}},
		},
		Status: corev1.PodStatus{PodIP: "10.244.0.9"}}
	if got := MeshConfigMapOf(pod); got != "istio-asm-1-28" {
		t.Fatalf("mesh ConfigMap %q, want istio-asm-1-28", got)
	}
	id, err := IdentityOf(pod, true, "defaultConfig:\n  discoveryAddress: istiod-asm-1-28.aks-istio-system.svc:15012\n")
	if err != nil {
		t.Fatal(err)
	}
	if id.DiscoveryHost != "istiod-asm-1-28.aks-istio-system.svc" || !strings.HasPrefix(id.NodeID(), "router~") {
		t.Errorf("discovery host %q, node id %s", id.DiscoveryHost, id.NodeID())
	}
}
