package xds

import (
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

func TestIdentityOfNeedsARunningPod(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app-1", Namespace: "shop"}}
	if _, err := IdentityOf(pod, "app", "1.28.3"); err == nil {
		t.Fatal("a pod without an IP gave an identity")
	}
	pod.Status.PodIP = "10.244.0.7"
	id, err := IdentityOf(pod, "app", "1.28.3")
	if err != nil || id.ServiceAccount != "default" || id.NodeID() != "sidecar~10.244.0.7~app-1.shop~shop.svc.cluster.local" {
		t.Errorf("identity %+v (%s), %v", id, id.NodeID(), err)
	}
}
